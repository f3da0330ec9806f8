"""The example scripts run as documented, and re-running them continues instead of restarting."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def local_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # fit's snapshots stay in tmp


@pytest.mark.slow
def test_train_mnist_script_trains_and_writes_outputs(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    command = [sys.executable, str(EXAMPLES / "train_mnist.py"), "--run-dir", str(run_dir)]
    command += ["--dataset", "mnist-5k", "--epochs", "1", "--limit", "300"]

    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)

    assert done.returncode == 0, done.stderr
    assert "Test accuracy:" in done.stdout
    assert (run_dir / "outputs" / "results.txt").read_text().startswith("Test loss: ")
    assert json.loads((run_dir / "outputs" / "history.json").read_text())["epochs"] == [1]


@pytest.mark.slow
def test_custom_model_with_colabkit_fit_continues_when_run_again(
    tmp_path, local_cache, monkeypatch
):
    from colabkit.training.data import ArrayBatches

    example = _load("custom_model")
    x, y = example.make_data(samples=400)
    begun = []  # epochs whose batch order was set up for training, per call (both backends)
    original = ArrayBatches._epoch_changed

    def counting(self):
        begun[-1].append(self.epoch)
        return original(self)

    monkeypatch.setattr(ArrayBatches, "_epoch_changed", counting)

    begun.append([])
    first = example.with_colabkit_fit(tmp_path / "fit", x, y, epochs=2)
    begun.append([])
    second = example.with_colabkit_fit(tmp_path / "fit", x, y, epochs=3)

    assert len(first["loss"]) == 2 and len(second["loss"]) == 3
    assert second["loss"][:2] == first["loss"]  # the history of epochs 1-2 is kept
    # ... and they were restored, not retrained (a deterministic retrain gives the same losses):
    # the second call trains epoch 3 alone.
    assert begun == [[0, 1], [2]], begun


@pytest.mark.slow
def test_custom_model_with_its_own_model_fit_continues_when_run_again(
    tmp_path, local_cache, capsys
):
    example = _load("custom_model")
    x, y = example.make_data(samples=400)

    example.with_own_model_fit(tmp_path / "own", x, y, epochs=2)
    second = example.with_own_model_fit(tmp_path / "own", x, y, epochs=3)

    assert len(second["loss"]) == 1  # only epoch 3 ran: epochs 1-2 were restored
    assert "epochs run this time: [3]" in capsys.readouterr().out


@pytest.mark.slow
def test_mnist_images_example_stages_the_png_folder_and_trains_on_the_copy(tmp_path):
    """image_dataset_from_directory over a folder staged first; run again, the copy is reused
    (its record untouched) and the finished run is not trained again."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    command = [sys.executable, str(EXAMPLES / "mnist_images.py"), "--images",
               str(tmp_path / "drive" / "png"), "--run-dir", str(tmp_path / "run"),
               "--epochs", "1", "--limit", "300"]  # fmt: skip
    first = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert first.returncode == 0, first.stderr
    local = tmp_path / "cache" / "colabkit" / "data" / "png"
    assert f"Training on {local}\n" in first.stdout and len(list(local.rglob("*.png"))) == 300
    record = local.parent / ".colabkit-stage" / "png.json"
    written = record.stat().st_mtime_ns
    again = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert again.returncode == 0, again.stderr
    assert f"Training on {local}\n" in again.stdout and record.stat().st_mtime_ns == written
    assert "Validation accuracy:" in again.stdout
