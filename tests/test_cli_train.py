"""``colabkit train mnist`` as a user runs it: bad inputs, a real run, a kill and a resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from colabkit.cli import main

REPO = Path(__file__).resolve().parents[1]
OFFLINE = "http://127.0.0.1:9/mnist.npz"


def _run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 240
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "colabkit", "train", "mnist", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or REPO,
        env=_env(),
    )


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def _results(run_dir: Path) -> tuple[float, float]:
    lines = (run_dir / "outputs" / "results.txt").read_text().splitlines()
    assert lines[0].startswith("Test loss: ") and lines[1].startswith("Test accuracy: ")
    return float(lines[0].split(": ")[1]), float(lines[1].split(": ")[1])


# --- bad inputs: one line, exit 1 or 2, nothing written -------------------------------------


def _bad_npz(tmp_path: Path) -> str:
    path = tmp_path / "partial.npz"
    np.savez(path, x_train=np.zeros((4, 28, 28), np.uint8), y_train=np.zeros(4, np.uint8))
    return str(path)


@pytest.mark.parametrize(
    ("args", "expected_code", "message"),
    [
        (["--dataset", "fashion"], 1, "`dataset`. Received: dataset='fashion'"),
        (["--dataset", "{bad_npz}"], 1, "lacks x_test, y_test"),
        (["--epochs", "0"], 1, "`epochs`. Received: epochs=0"),
        (["--epochs", "-1"], 1, "`epochs`. Received: epochs=-1"),
        (["--epochs", "ten"], 2, "argument --epochs: invalid int value: 'ten'"),
        (["--batch-size", "0"], 1, "`batch_size`. Received: batch_size=0"),
        (["--keep", "0"], 1, "`keep`. Received: keep=0"),
        (["--save-every", "sometimes"], 1, "`save_every`"),
        (["--session-limit", "0h"], 1, "`session_limit`"),
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
