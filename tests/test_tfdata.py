"""tf.data input to colabkit.fit: SIGKILLed mid-epoch in a real subprocess, then resumed.

The job (tests/tfdata_worker.py) counts, in a model variable saved with every checkpoint, how
often each element was trained; "exactly once per epoch" is read from it after the kills.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

WORKER = Path(__file__).with_name("tfdata_worker.py")
ROOT = Path(__file__).resolve().parents[1]
EPOCHS, STEPS = 3, 12  # tfdata_worker: 96 elements, batches of 8


def worker(backend, run_dir, out, kind, *, kill=None, images=None):
    env = {
        **os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
        "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT),
    }  # fmt: skip
    command = [sys.executable, str(WORKER), str(run_dir), str(out), kind]
    command += [f"--kill-after-step={kill}"] if kill else []
    command += [f"--images={images}"] if images else []
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    if proc.returncode not in (0, -9):
        raise AssertionError(proc.stderr[-3000:])
    return proc


def result(path):
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files if k not in ("history", "resumes")}
        return json.loads(str(f["history"])), json.loads(str(f["resumes"])), arrays


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """96 8x8 PNGs in two class folders; pixel (0, 0) holds the image's id."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(96):
        pixels = rng.integers(0, 256, size=(8, 8, 1), dtype=np.uint8)
        pixels[0, 0, 0] = i
        folder = root / ("a" if i % 3 else "b")
        folder.mkdir(exist_ok=True)
        (folder / f"{i:03d}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    return root


BACKENDS = ["tensorflow", pytest.param("jax", marks=pytest.mark.skipif(
    __import__("importlib").util.find_spec("jax") is None, reason="needs jax"))]  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["slices", "fn", "images"])
def test_killed_mid_epoch_resumes_bitwise_equal_and_trains_each_element_once_per_epoch(
    tmp_path, backend, kind, images
):
    """from_tensor_slices + shuffle(seed) + map + batch + prefetch; a dataset_fn(epoch);
    image_dataset_from_directory(seed=...): SIGKILL in epoch 2 (after step 17 of 36, saving
    every step), resume; the weights, optimizer and history equal the uninterrupted run's, bit
    for bit, and every element was trained exactly once in each of the 3 epochs."""
    folder = images if kind == "images" else None
    worker(backend, tmp_path / "ref", tmp_path / "ref.npz", kind, images=folder)
    killed = worker(backend, tmp_path / "run", tmp_path / "out.npz", kind, kill=17, images=folder)
    assert killed.returncode == -9
    resumed = worker(backend, tmp_path / "run", tmp_path / "out.npz", kind, images=folder)

    ref_history, _, ref = result(tmp_path / "ref.npz")
    history, resumes, got = result(tmp_path / "out.npz")
    # Saved after every step: the newest complete checkpoint is one of epoch 2's first steps.
    assert [r["epoch"] for r in resumes] == [1] and 0 < resumes[0]["step"] <= 5
    assert "another order" not in resumed.stderr  # no "may come in another order" warning
    np.testing.assert_array_equal(got["counts"], np.full(96, EPOCHS))
    assert history == ref_history
    for key in ref:
        np.testing.assert_array_equal(got[key], ref[key], err_msg=key)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_repeated_dataset_is_one_stream_across_epochs_and_kills(tmp_path, backend):
    """ds.repeat() with steps_per_epoch=9 (passes of 12 batches), as model.fit takes it: the
    epochs are consecutive 9-batch slices of one stream, so the 27 steps of 3 epochs train two
    whole passes and 3 batches of the third; no batch is left out because epochs restart the
    pass. Killed in epoch 2 and resumed (the stream replayed to there): bitwise equal."""
    worker(backend, tmp_path / "ref", tmp_path / "ref.npz", "repeat")
    killed = worker(backend, tmp_path / "run", tmp_path / "out.npz", "repeat", kill=14)
    assert killed.returncode == -9
    resumed = worker(backend, tmp_path / "run", tmp_path / "out.npz", "repeat")

    ref_history, _, ref = result(tmp_path / "ref.npz")
    history, resumes, got = result(tmp_path / "out.npz")
    assert [r["epoch"] for r in resumes] == [1] and 0 < resumes[0]["step"] <= 5
    assert "another order" not in resumed.stderr
    counts = got["counts"]
    assert sorted(set(counts.tolist())) == [2.0, 3.0] and (counts == 3).sum() == 3 * 8
    assert len(history["loss"]) == EPOCHS and history == ref_history
    for key in ref:
        np.testing.assert_array_equal(got[key], ref[key], err_msg=key)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_unseeded_shuffle_resumes_its_remaining_steps_and_says_the_order_may_differ(
    tmp_path, backend
):
    """No seed: the resumed epoch cannot have the interrupted order. It trains exactly its
    remaining steps (36 steps in all, none twice, none lost), with one warning line."""
    killed = worker(backend, tmp_path / "run", tmp_path / "out.npz", "unseeded", kill=17)
    assert killed.returncode == -9
    resumed = worker(backend, tmp_path / "run", tmp_path / "out.npz", "unseeded")

    _, resumes, got = result(tmp_path / "out.npz")
    warnings = [line for line in resumed.stderr.splitlines() if "another order" in line]
    assert len(warnings) == 1
    assert f"epoch 2 (from step {resumes[0]['step']} of 12)" in warnings[0]
    assert resumes[0]["order_may_differ"] is True
    assert got["counts"].sum() == EPOCHS * 96  # 36 steps of 8: each step trained once


# -- arguments ------------------------------------------------------------------------------


def _model():
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def _pairs(n=8):
    x = np.arange(2 * n, dtype="float32").reshape(n, 2)
    return tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(2)


@pytest.mark.parametrize(
    ("data", "kwargs", "message"),
    [
        (_pairs().repeat(), {}, "repeats forever, so an epoch has no end. Pass steps_per_epoch"),
        (_pairs().filter(lambda x, y: True), {}, "cannot tell how many batches"),
        (_pairs(), {"steps_per_epoch": 9}, "steps_per_epoch=9, but the dataset has only 4"),
        (_pairs(), {"y": np.zeros(8)}, "y='ndarray'. Expected None when x is a tf.data"),
        (_pairs(), {"validation_split": 0.1}, "0 when x is a tf.data.Dataset (pass validation"),
        (lambda epoch: [1, 2], {}, "dataset_fn(0) returned list, not a tf.data.Dataset"),
        (_pairs().take(0), {}, "the dataset is empty"),
    ],
)
def test_tf_data_input_that_cannot_be_resumed_is_refused_in_one_line(
    tmp_path, data, kwargs, message
):
    import colabkit
    from colabkit.errors import ConfigError

    with pytest.raises(ConfigError) as raised:
        colabkit.fit(_model(), data, run_dir=tmp_path / "run", epochs=1, **kwargs)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert not (tmp_path / "run").exists()  # refused before the store is opened


@pytest.mark.parametrize(
    "data",
    [_pairs().repeat(), _pairs(), _pairs().filter(lambda x, y: True)],
    ids=["repeated", "finite", "unknown-size"],
)
def test_steps_per_epoch_takes_consecutive_slices_of_the_dataset_as_model_fit_does(tmp_path, data):
    """4 batches, 3 steps per epoch, 3 epochs: batches 0-2, then 3, 0, 1, then 2, 3, 0 (no
    batch left out), as plain model.fit trains ds.repeat() with steps_per_epoch=3: the same
    weights. A finite dataset, or one of unknown size, is read as repeated, not cut short."""
    import colabkit

    model, plain = _model(), _model()
    plain.set_weights(model.get_weights())
    history = colabkit.fit(model, data, steps_per_epoch=3, run_dir=tmp_path, epochs=3, verbose=0)
    plain.fit(data.repeat(), steps_per_epoch=3, epochs=3, verbose=0, shuffle=False)
    assert history.params["steps"] == 3 and len(history.history["loss"]) == 3
    for got, want in zip(model.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("validation", ["tf.data", "tuple", "PyDataset"])
def test_validation_data_of_every_kind_model_fit_takes(tmp_path, validation):
    import keras

    import colabkit

    x = np.arange(16, dtype="float32").reshape(8, 2)
    y = x[:, :1]

    class Pairs(keras.utils.PyDataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return x[4 * i : 4 * i + 4], y[4 * i : 4 * i + 4]

    data = {"tf.data": _pairs(), "tuple": (x, y), "PyDataset": Pairs()}[validation]
    history = colabkit.fit(
        _model(), _pairs(), validation_data=data, run_dir=tmp_path, epochs=2, verbose=0
    )
    assert len(history.history["val_loss"]) == 2


def test_a_finished_run_on_tf_data_returns_at_once_with_its_weights(tmp_path):
    import colabkit

    def unbuilt():  # no Input: built from the first batch, as in many notebooks
        import keras

        model = keras.Sequential([keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        return model

    first = unbuilt()
    done = colabkit.fit(first, _pairs(), run_dir=tmp_path, epochs=2, verbose=0)
    again = unbuilt()  # Run all in a new session
    assert not again.built
    history = colabkit.fit(again, _pairs(), run_dir=tmp_path, epochs=2, verbose=0)

    assert history.history == done.history and history.resumes == []
    for a, b in zip(first.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_tf_data_under_a_tf_distribute_strategy_is_refused_in_one_line(tmp_path):
    """tf.distribute copies the pipeline per device, where colabkit's iterator cannot be read
    (seen failing with OutOfRangeError on two CPU devices): refused before anything is written."""
    import keras

    import colabkit
    from colabkit.errors import ConfigError

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ConfigError, match="strategy=MirroredStrategy: colabkit cannot yet") as e:
        colabkit.fit(model, _pairs(), run_dir=tmp_path / "run", epochs=1, strategy=strategy)
    assert "\n" not in str(e.value) and not (tmp_path / "run").exists()


def _passes(dataset, n):
    return [[batch.tolist() for batch in dataset.as_numpy_iterator()] for _ in range(n)]


def _keras_epochs(epochs, data, first, end, steps):
    """Reads ``data`` the way Keras' fit does: per epoch, a new iterator read ``steps`` times,
    then one more made and dropped unread."""
    got = []
    for epoch in range(first, end):
        epochs.epoch = epoch  # the training loop's on_epoch_begin
        iterator = iter(data)
        got.append([next(iterator).numpy().tolist() for _ in range(steps)])
        iter(data)  # Keras' look-ahead iterator, never read
    return got


def test_every_epoch_of_a_seeded_dataset_is_its_next_pass_as_model_fit_reads_it():
    """Epoch e of a seeded shuffle is the dataset's (e + 1)-th pass, the order a fresh dataset
    gives when iterated again and again, also when colabkit starts at epoch 2, or mid-epoch 1;
    the model is built from the element spec (no pass spent on it); and the fingerprint of each
    epoch's first batch is recorded when fit reads it."""
    from colabkit.training.tfdata import DatasetEpochs, fingerprint

    def make():
        return tf.data.Dataset.range(24).shuffle(24, seed=3).batch(4).map(lambda b: b * 10)

    want = _passes(make(), 4)
    assert len({str(p) for p in want}) == 4  # each pass its own order

    epochs = DatasetEpochs(make())
    assert epochs.epochs_per_fit is None  # one model.fit call for all epochs
    assert isinstance(epochs.batch(0)[0], tf.TensorSpec)
    epochs.start_epoch(0)
    data = epochs.for_fit(0)
    assert _keras_epochs(epochs, data, 0, 4, 6) == want
    assert epochs.epoch_fingerprint() == fingerprint(tf.constant(want[3][0], tf.int64))

    later = DatasetEpochs(make())  # a resume at the start of epoch 3 (index 2), new process
    later.start_epoch(2, resuming=True)
    assert _keras_epochs(later, later.for_fit(2), 2, 4, 6) == want[2:]

    middle = DatasetEpochs(make())  # a resume after step 2 of epoch 2 (index 1)
    middle.start_step = 2
    middle.start_epoch(1, resuming=True, expected_fingerprint=fingerprint(
        tf.constant(want[1][0], tf.int64)))  # fmt: skip
    assert not middle.order_changed
    middle.epoch = 1
    assert [b.tolist() for b in middle.for_fit(1).as_numpy_iterator()] == want[1][2:]
    middle.start_step = 0
    middle.start_epoch(2)  # the next fit call: on the same stream
    assert _keras_epochs(middle, middle.for_fit(2), 2, 4, 6) == want[2:]
