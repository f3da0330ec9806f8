"""The tf.data pipelines colabkit.fit hands model.fit run with tf.data's autotuning off.

Keras makes new iterators of its input every epoch; with autotuning on, each runs a thread that
models the pipeline, and freeing the iterator waits for it: on TensorFlow 2.20 the first step of
some epochs took 2-2.5 s more (BENCHMARKS.md, run F). colabkit's pipelines (arrays in the
(seed, epoch) order; the reader of a tf.data stream, a dataset_fn's epochs) are small and need
no tuning, so they switch it off; the user's own dataset is read through one iterator for the
whole call and keeps its options. Read here where Keras meets them: the ``x`` that
``model.fit`` receives, through a model whose ``fit`` records it.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import colabkit  # noqa: E402


class Recording(keras.Sequential):
    """A model whose ``fit`` notes what it was given (colabkit calls ``model.fit``)."""

    def fit(self, x=None, *args, **kwargs):
        self.given.append(x)
        return super().fit(x, *args, **kwargs)


def make_model() -> Recording:
    model = Recording([keras.Input((2,)), keras.layers.Dense(1)])
    model.given = []
    model.compile(optimizer="sgd", loss="mse")
    return model


X = np.arange(64, dtype="float32").reshape(32, 2) / 64
Y = X[:, :1] - X[:, 1:]


def dataset(epoch: int = 0):
    return tf.data.Dataset.from_tensor_slices((X, Y)).shuffle(32, seed=epoch).batch(8)


@pytest.mark.parametrize(
    ("inputs", "kwargs"),
    [
        ((X, Y), {"batch_size": 8, "seed": 1}),
        ((dataset(),), {}),
        ((dataset,), {}),  # a dataset_fn(epoch): one model.fit call an epoch
        ((dataset().repeat(),), {"steps_per_epoch": 3}),
    ],
    ids=["arrays", "tf.data", "dataset_fn", "repeated"],
)
def test_what_model_fit_iterates_runs_without_autotuning(tmp_path, inputs, kwargs):
    model = make_model()
    colabkit.fit(model, *inputs, run_dir=tmp_path / "run", epochs=2, verbose=0, **kwargs)
    assert model.given, "colabkit.fit did not call model.fit"
    for given in model.given:
        if isinstance(given, keras.utils.PyDataset):  # arrays off TensorFlow: no tf.data
            assert keras.backend.backend() != "tensorflow" and inputs[0] is X
            continue
        assert isinstance(given, tf.data.Dataset)
        assert given.options().autotune.enabled is False


def test_a_resumed_epoch_runs_without_autotuning_too(tmp_path):
    """Resumed mid-epoch in a new call: the epoch's first batch, read before fit, then the
    rest of the stream (another pipeline than an epoch from its start)."""
    import os
    import signal

    class CtrlC(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        colabkit.fit(make_model(), dataset(), run_dir=tmp_path / "run", epochs=2, verbose=0,
                     callbacks=[CtrlC()])  # fmt: skip
    model = make_model()
    history = colabkit.fit(model, dataset(), run_dir=tmp_path / "run", epochs=2, verbose=0)
    assert history.resumes[0]["step"] == 2
    assert [given.options().autotune.enabled for given in model.given] == [False, False]
