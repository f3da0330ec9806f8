"""One run directory (or URL), one place: ``fit``, the callbacks, ``colabkit status`` and
``colabkit ckpt`` find a run's checkpoints the same way (``colabkit.checkpoint.runs``).

A store URL given as ``run_dir`` is the store itself, as ``store=`` takes it: never a local
folder named after the scheme (``./gdrive:/...``), which would die with the VM.
"""

from __future__ import annotations

import numpy as np
import pytest

import colabkit
from colabkit.callbacks import Checkpoint
from colabkit.cli import main
from colabkit.errors import ConfigError

keras = pytest.importorskip("keras")


def make_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(32, 4)).astype("float32"), rng.integers(0, 2, 32)


def nothing_named_after_a_scheme(folder):
    return [p for p in folder.rglob("*") if ":" in p.name]


def test_fit_with_a_gdrive_url_as_run_dir_checkpoints_to_drive_not_to_a_local_folder(
    drive, signed_in, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    x, y = data()
    history = colabkit.fit(
        make_model(), x, y, run_dir="gdrive://colabkit/mnist", epochs=2, batch_size=16,
        cache_dir=tmp_path / "cache", verbose=0,
    )  # fmt: skip
    assert history.durable and history.completed
    assert nothing_named_after_a_scheme(tmp_path) == []
    on_drive = [f.name for f in drive.files.values() if f.name.startswith("ckpt-")]
    assert on_drive and all(f.parents == [drive.path("colabkit/mnist").id] for f in
                            drive.files.values() if f.name.startswith("ckpt-"))  # fmt: skip

    # the callback and `colabkit status` find the same run in the same place
    assert Checkpoint("gdrive://colabkit/mnist").store.url == "gdrive://colabkit/mnist"
    report = colabkit.status("gdrive://colabkit/mnist")
    assert report.state == "finished" and report.epoch == 2


def test_a_url_of_no_known_store_as_run_dir_is_one_line_and_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, y = data()
    with pytest.raises(ConfigError) as error:
        colabkit.fit(make_model(), x, y, run_dir="ftp://host/run", epochs=1, verbose=0)
    message = str(error.value)
    assert "`run_dir`" in message and "ftp://host/run" in message and "\n" not in message
    with pytest.raises(ConfigError, match="`directory`"):
        Checkpoint("ftp://host/run")
    assert list(tmp_path.iterdir()) == []


def test_train_mnist_refuses_a_url_as_its_run_directory(tmp_path, monkeypatch, capsys):
    """The outputs (model, predictions, plot) are written in --run-dir: it is a folder; Drive
    through the API is --store."""
    monkeypatch.chdir(tmp_path)
    code = main(["train", "mnist", "--run-dir", "gdrive://colabkit/mnist", "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 1  # as every bad value of the CLI: "Error: ..." on one line
    assert "--run-dir" in err and "--store gdrive://" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoints_folder_given_as_run_dir_is_the_run_not_a_new_one_inside_it(tmp_path):
    x, y = data()
    colabkit.fit(make_model(), x, y, run_dir=tmp_path / "run", epochs=1, batch_size=16, verbose=0)
    checkpoints = tmp_path / "run" / "checkpoints"
    history = colabkit.fit(
        make_model(), x, y, run_dir=checkpoints, epochs=2, batch_size=16, verbose=0
    )
    assert len(history.history["loss"]) == 2  # epoch 1 came from the run, not trained again
    assert not (checkpoints / "checkpoints").exists()
    assert history.resumes and history.resumes[0]["epoch"] == 1


@pytest.mark.parametrize("command", [["status"], ["ckpt", "ls"], ["ckpt", "purge"]])
def test_reading_a_mistyped_drive_run_is_one_line_and_creates_no_folder_on_drive(
    drive, signed_in, capsys, command
):
    drive.add_folder("colabkit")
    before = {f.id for f in drive.files.values()}
    assert main([*command, "gdrive://colabkit/typo-run"]) == 1
    err = capsys.readouterr().err
    assert "No run at gdrive://colabkit/typo-run" in err and len(err.strip().splitlines()) == 1
    assert {f.id for f in drive.files.values()} == before  # nothing created on the user's Drive
