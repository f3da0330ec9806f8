"""One tf.data.Dataset object given to colabkit.fit twice in one kernel: a notebook cell run again
without restarting the runtime (the dataset's cell not run again). TensorFlow draws each pass's
order of a seeded shuffle from the seed and the passes the object already made, so colabkit must
count the passes the first call made: the second call continues the run with the orders an
uninterrupted run would have had, or says that it cannot.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import colabkit  # noqa: E402

STEPS = 6  # batches of 8 of 48 elements


def make_dataset():
    """A seeded shuffle, as in the tutorials: each pass (epoch) in another order."""
    x = np.arange(96, dtype="float32").reshape(48, 2) / 96
    y = (x[:, :1] * 3 - x[:, 1:] + 0.5).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(48, seed=7).batch(8)


def make_model(weights=None):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.3), loss="mse")
    if weights is not None:
        model.set_weights(weights)
    return model


def assert_same_weights(a, b):
    for got, want in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """4 epochs in one call, on a dataset object that made no pass before."""
    model = make_model()
    start = model.get_weights()
    run = tmp_path_factory.mktemp("uninterrupted")
    history = colabkit.fit(model, make_dataset(), run_dir=run, epochs=4, verbose=0)
    return start, model, history.history


def test_a_second_call_with_more_epochs_continues_the_orders_of_one_call(tmp_path, uninterrupted):
    """fit(epochs=2), then the same cell with epochs=4 on the same dataset object: epochs 3
    and 4 are the object's 3rd and 4th passes, as in one call of 4 epochs: the same weights,
    bit for bit, and the same history."""
    start, reference, reference_history = uninterrupted
    data, model = make_dataset(), make_model(start)
    colabkit.fit(model, data, run_dir=tmp_path / "run", epochs=2, verbose=0)
    history = colabkit.fit(model, data, run_dir=tmp_path / "run", epochs=4, verbose=0)
    assert [r["epoch"] for r in history.resumes] == [2]
    assert_same_weights(model, reference)
    assert history.history == reference_history


def test_a_second_call_in_a_new_model_resumes_the_same_orders(tmp_path, uninterrupted):
    """The same, with the model built again in the second call (its cell re-run too)."""
    start, reference, _ = uninterrupted
    data = make_dataset()
    colabkit.fit(make_model(start), data, run_dir=tmp_path / "run", epochs=3, verbose=0)
    again = make_model()  # other initial weights: the checkpoint's are loaded
    colabkit.fit(again, data, run_dir=tmp_path / "run", epochs=4, verbose=0)
    assert_same_weights(again, reference)


def test_a_finished_run_called_again_reads_nothing_and_a_longer_one_still_continues_exactly(
    tmp_path, uninterrupted
):
    """Run all twice: the second call of a finished run returns at once, reading nothing of
    the dataset; a third call with more epochs still gets the passes an uninterrupted run
    had (the finished call's return made no pass)."""
    start, reference, _ = uninterrupted
    data, model = make_dataset(), make_model(start)
    colabkit.fit(model, data, run_dir=tmp_path / "run", epochs=2, verbose=0)
    colabkit.fit(make_model(), data, run_dir=tmp_path / "run", epochs=2, verbose=0)
    colabkit.fit(model, data, run_dir=tmp_path / "run", epochs=4, verbose=0)
    assert_same_weights(model, reference)


class CtrlC(keras.callbacks.Callback):
    """The stop button of the cell, pressed after ``at`` steps of training."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.seen = at, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.at:
            os.kill(os.getpid(), signal.SIGINT)


def test_a_call_stopped_mid_epoch_and_called_again_trains_each_remaining_step_once_and_says_so(
    tmp_path, capfd
):
    """Stopped in epoch 2 and run again on the same object: that epoch's pass was made, and
    TensorFlow gives no pass twice; the resumed epoch trains exactly its remaining steps, and
    one line says its order may differ."""
    data, model = make_dataset(), make_model()
    with pytest.raises(KeyboardInterrupt):
        colabkit.fit(model, data, run_dir=tmp_path / "run", epochs=3, verbose=0,
                     callbacks=[CtrlC(at=STEPS + 3)])  # fmt: skip
    capfd.readouterr()
    history = colabkit.fit(model, data, run_dir=tmp_path / "run", epochs=3, verbose=0)
    err = capfd.readouterr().err
    assert history.resumes[0]["global_step"] == STEPS + 3
    assert int(model.optimizer.iterations.numpy()) == 3 * STEPS  # none twice, none lost
    warnings = [line for line in err.splitlines() if "may come in another order" in line]
    assert len(warnings) == 1
    assert f"epoch 2 (from step 3 of {STEPS})" in warnings[0]
    assert "this dataset object already made 2 passes in this process" in warnings[0]
    assert history.resumes[0]["order_may_differ"] is True
