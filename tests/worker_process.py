"""Running a training worker script as a real subprocess, as the SIGKILL tests do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker_env(backend: str) -> dict[str, str]:
    """This environment with the Keras backend chosen, TensorFlow quiet and colabkit importable."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def run_script(script: Path, backend: str, *args: str, timeout: float = 300) -> int:
    """Runs ``script`` with ``args``; returns 0, or -9 when it killed itself with SIGKILL.

    Raises:
        AssertionError: any other exit, with the end of its stderr.
    """
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        env=worker_env(backend),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode not in (0, -9):
        raise AssertionError(f"worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.returncode
