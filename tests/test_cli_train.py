"""``colabkit train mnist`` as a user runs it: bad inputs, a real run, a kill and a resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fakes import mount_table

from colabkit.cli import main

REPO = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),  # fit's local cache stays in tmp
    }


def _run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "colabkit", "train", "mnist", *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
        env=env,
    )


def _results(run_dir: Path) -> tuple[float, float]:
    lines = (run_dir / "outputs" / "results.txt").read_text().splitlines()
    assert lines[0].startswith("Test loss: ") and lines[1].startswith("Test accuracy: ")
    return float(lines[0].split(": ")[1]), float(lines[1].split(": ")[1])


# --- bad inputs: one line, exit 1 or 2, nothing written -------------------------------------


def _one_resume_line(finished: subprocess.CompletedProcess) -> bool:
    """A resume is said once: which checkpoint, its step, and where in the run that is."""
    output = finished.stdout + finished.stderr
    lines = [line for line in output.splitlines() if "esuming from" in line]
    return len(lines) == 1 and re.search(r"resuming from ckpt-\d{12}\.ckpt \(step \d+\)", lines[0])


def _bad_npz(tmp_path: Path) -> str:
    path = tmp_path / "partial.npz"
    np.savez(path, x_train=np.zeros((4, 28, 28), np.uint8), y_train=np.zeros(4, np.uint8))
    return str(path)


@pytest.mark.parametrize(
    ("args", "expected_code", "message"),
    [
        (["--dataset", "fashion"], 1, "--dataset. Received: 'fashion'"),
        (["--dataset", "{bad_npz}"], 1, "lacks x_test, y_test"),
        (["--epochs", "0"], 1, "--epochs. Received: 0"),
        (["--epochs", "-1"], 1, "--epochs. Received: -1"),
        (["--epochs", "ten"], 2, "argument --epochs: invalid int value: 'ten'"),
        (["--batch-size", "0"], 1, "--batch-size. Received: 0"),
        (["--keep", "0"], 1, "--keep. Received: 0"),
        (["--save-every", "sometimes"], 1, "--save-every. Received: 'sometimes'"),
        (["--session-limit", "0h"], 1, "--session-limit"),
        (["--session-limit", "10m"], 1, "longer than the margin"),
        (["--store", "ftp://host/run"], 1, "--store. Received: 'ftp://host/run'"),
        (["--store", "gdrive://"], 1, "--store. Received: 'gdrive://'"),
        (["--store", "memory://run"], 1, "a durable store"),
        (["--run-dir", ""], 1, "--run-dir. Received: ''"),
        (["--run-dir", "{file}"], 1, "this path is a file"),
        (["--run-dir", "/sys/colabkit-run"], 1, "Cannot write to the run directory"),
    ],
)
def test_bad_input_gets_one_clear_line_and_writes_nothing(
    tmp_path, capsys, args, expected_code, message
):
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("keep me")
    run_dir = tmp_path / "run"
    args = [a.format(bad_npz=_bad_npz(tmp_path), file=a_file) for a in args]
    if "--run-dir" not in args:
        args += ["--run-dir", str(run_dir)]
    before = sorted(p.name for p in tmp_path.iterdir())

    if expected_code == 2:  # argparse's usage errors exit by themselves
        with pytest.raises(SystemExit) as exited:
            main(["train", "mnist", *args])
        code = exited.value.code
    else:
        code = main(["train", "mnist", *args])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == expected_code
    assert message in err[-1]
    if expected_code == 1:
        assert len(err) == 1 and err[0].startswith("Error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert a_file.read_text() == "keep me"


def test_bad_input_fails_before_keras_or_tensorflow_is_imported(tmp_path):
    script = (
        "import sys\n"
        "from colabkit.cli import main\n"
        "code = main(['train', 'mnist', '--epochs', '0', '--run-dir', sys.argv[1]])\n"
        "heavy = [m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules]\n"
        "print(code, heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.stdout.strip() == "1 []"


# --- real runs ------------------------------------------------------------------------------

QUICK = ["--dataset", "mnist-5k", "--limit", "600", "--batch-size", "128"]  # 5 steps per epoch


@pytest.mark.slow
def test_run_rerun_and_fresh(tmp_path):
    run_dir = tmp_path / "run"
    args = [*QUICK, "--run-dir", str(run_dir), "--epochs", "2", "--seed", "3"]

    first = _run_cli(*args, env=_env(tmp_path))
    assert first.returncode == 0, first.stderr
    outputs = sorted(p.name for p in (run_dir / "outputs").iterdir())
    assert outputs == [
        "history.json",
        "learning_curve.png",
        "mnist_model.keras",
        "predictions.npy",
        "results.txt",
    ]
    assert np.load(run_dir / "outputs" / "predictions.npy").shape == (1000, 10)
    history = json.loads((run_dir / "outputs" / "history.json").read_text())
    assert history["epochs"] == [1, 2] and history["resumes"] == []
    assert "Epoch 2/2" in first.stdout  # Keras' own progress bar is shown
    assert "Test accuracy: " in first.stdout
    # one line says what is durable at the end, not a line per save among Keras' bars
    assert re.search(r"run finished at epoch 2/2; its last checkpoint \(ckpt-\d{12}\.ckpt\) is "
                     r"durable in file://", first.stdout)  # fmt: skip
    assert "is durable in" not in first.stderr
    first_results = (run_dir / "outputs" / "results.txt").read_text()

    again = _run_cli(*args, env=_env(tmp_path))  # finished: prints its results, no training
    assert again.returncode == 0, again.stderr
    assert "Epoch 1/2" not in again.stdout
    assert again.stdout.splitlines()[-3:-1] == first.stdout.splitlines()[-3:-1]

    fresh = _run_cli(*args, "--fresh", env=_env(tmp_path))
    assert fresh.returncode == 0, fresh.stderr
    assert "Epoch 1/2" in fresh.stdout
    archived = list((run_dir / "checkpoints" / "archive").rglob("*.ckpt"))
    assert len(archived) >= 1  # the old run was archived, not deleted
    (old_outputs,) = (run_dir / "outputs" / "archive").iterdir()  # its outputs too
    assert (old_outputs / "results.txt").read_text() == first_results
    assert fresh.stderr.count("Archived the previous checkpoints under archive/") == 1
    assert "Archived the previous outputs under" in fresh.stderr


def test_fresh_on_a_new_run_directory_archives_nothing(tmp_path):
    run_dir = tmp_path / "new"
    done = _run_cli(*QUICK, "--run-dir", str(run_dir), "--epochs", "1", "--fresh",
                    env=_env(tmp_path))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Archived" not in done.stderr
    assert "no checkpoint to archive; starting a new run" in done.stderr
    assert not (run_dir / "checkpoints" / "archive").exists()
    assert not (run_dir / "outputs" / "archive").exists()


KILLER = """
import os, signal, sys
from colabkit.storage import atomic
from colabkit.cli import main

store, kill_at = sys.argv[1], int(sys.argv[2])
commits = []

def kill_during_a_save(event, path):
    if event == "replace" and path.startswith(store) and path.endswith(".ckpt"):
        commits.append(path)
        if len(commits) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # before the rename: a kill mid-save

atomic.set_io_hook(kill_during_a_save)
sys.exit(main(sys.argv[3:]))
"""


DETERMINISTIC = [*QUICK, "--epochs", "2", "--seed", "11", "--deterministic"]


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory) -> Path:
    tmp_path = tmp_path_factory.mktemp("uninterrupted")
    run_dir = tmp_path / "run"
    done = _run_cli(*DETERMINISTIC, "--run-dir", str(run_dir), env=_env(tmp_path))
    assert done.returncode == 0, done.stderr
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize(
    ("save_every", "kill_at_commit"),
    [("epoch", 1), ("2steps", 3)],  # killed saving epoch 1's end; saving step 6 (mid-epoch 2)
)
def test_a_run_killed_mid_save_and_resumed_ends_like_an_uninterrupted_one(
    tmp_path, uninterrupted_run, save_every, kill_at_commit
):
    run_dir, env = tmp_path / "run", _env(tmp_path)
    command = ["train", "mnist", *DETERMINISTIC, "--save-every", save_every]
    command += ["--run-dir", str(run_dir)]
    store = str(run_dir / "checkpoints")
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, store, str(kill_at_commit), *command],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=REPO,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (run_dir / "outputs").exists()

    finished = subprocess.run(
        [sys.executable, "-m", "colabkit", *command],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=REPO,
    )

    assert finished.returncode == 0, finished.stderr
    assert _one_resume_line(finished)
    assert _results(run_dir) == _results(uninterrupted_run)
    history = json.loads((run_dir / "outputs" / "history.json").read_text())
    reference = json.loads((uninterrupted_run / "outputs" / "history.json").read_text())
    assert history["history"] == reference["history"]
    assert len(history["resumes"]) == 1
    assert (history["resumes"][0]["step"] > 0) == (save_every == "2steps")  # mid-epoch or not


@pytest.mark.slow
def test_the_full_15_epoch_job_on_the_5k_sample_reaches_95_percent(tmp_path):
    # Seeded and deterministic, so the figure is reproducible: over seeds 0-5 this job reached
    # 0.954-0.959, but unseeded runs spread down to 0.950, too close to the bar to test.
    run_dir = tmp_path / "run"

    done = _run_cli(
        "--dataset", "mnist-5k", "--epochs", "15", "--seed", "1", "--deterministic",
        "--run-dir", str(run_dir),
        env=_env(tmp_path),
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    loss, accuracy = _results(run_dir)
    assert accuracy >= 0.95, (loss, accuracy)


def test_session_limit_stops_cleanly_without_outputs_and_the_next_run_finishes(tmp_path):
    """A session of 15 min 1 s with the 15-minute margin: the deadline passes a second after the
    process starts, so the run saves after its first step and stops with EX_TEMPFAIL (75),
    writing no half-baked outputs."""
    run_dir = tmp_path / "run"
    common = ["--run-dir", str(run_dir), "--dataset", "mnist-5k", "--limit", "256", "--epochs", "1"]
    stopped = _run_cli(*common, "--session-limit", "15m1s", env=_env(tmp_path))
    assert stopped.returncode == 75, stopped.stderr[-2000:]
    assert "session limit near" in stopped.stdout and "again" in stopped.stderr
    assert not (run_dir / "outputs" / "results.txt").exists()
    assert list((run_dir / "checkpoints").glob("ckpt-*.ckpt"))
    finished = _run_cli(*common, "--session-limit", "24h", env=_env(tmp_path))
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert _one_resume_line(finished)
    assert _results(run_dir)[1] > 0


def test_strategy_mirrored_trains_in_the_strategy_scope(tmp_path):
    run_dir = tmp_path / "run"
    done = _run_cli(
        "--run-dir", str(run_dir), "--dataset", "mnist-5k", "--limit", "256", "--epochs", "1",
        "--strategy", "mirrored",
        env=_env(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert _results(run_dir)[1] > 0


def test_a_run_dir_on_drive_before_it_is_mounted_is_one_line_and_writes_nothing(
    tmp_path, capsys, monkeypatch
):
    """`!colabkit train mnist --run-dir /content/drive/...` in a new session, Drive not mounted
    yet: the command cannot show the consent dialog, and what it wrote would be local disk."""
    import colabkit.env

    monkeypatch.setattr(colabkit.env, "COLAB_DRIVE_MOUNTPOINT", tmp_path / "drive")
    mount_table(monkeypatch, tmp_path)  # Drive is not in it
    run_dir = tmp_path / "drive" / "MyDrive" / "colabkit" / "mnist"
    assert main(["train", "mnist", "--run-dir", str(run_dir), "--epochs", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is on Google Drive, which is not mounted" in err[0]
    assert "mount it in the notebook first" in err[0] and "--store gdrive://" in err[0]
    assert not (tmp_path / "drive").exists()
