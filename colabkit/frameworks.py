"""What each installed deep-learning framework sees: TensorFlow, JAX, torch.

Each framework is asked in its own subprocess, with a timeout, because importing one is slow
(TensorFlow: seconds), grabs GPU memory, can hang or crash on a broken install, and must never
leak into the caller's process (``import colabkit`` stays free of tensorflow). A framework that
is not installed is reported from ``importlib.util.find_spec`` without starting anything.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

logger = logging.getLogger(__name__)

FRAMEWORKS = ("tensorflow", "jax", "torch")
DEFAULT_TIMEOUT_S = 60.0
_MARKER = "COLABKIT_FRAMEWORK_JSON:"

# Each script prints one marker line of JSON: version, GPU-like devices, all device names.
_SCRIPTS = {
    "tensorflow": (
        "import tensorflow as tf\n"
        "gpus = tf.config.list_physical_devices('GPU')\n"
        "devs = [d.name for d in tf.config.list_physical_devices()]\n"
        "cuda = tf.sysconfig.get_build_info().get('cuda_version')\n"
        "out = dict(version=tf.__version__, gpu_count=len(gpus), devices=devs,\n"
        "           built_with_cuda=tf.test.is_built_with_cuda(), cuda_version=cuda)\n"
    ),
    "jax": (
        "import jax\n"
        "devs = jax.devices()\n"
        "gpus = [d for d in devs if d.platform in ('gpu', 'cuda', 'rocm')]\n"
        "out = dict(version=jax.__version__, gpu_count=len(gpus),\n"
        "           devices=[f'{d.platform}:{d.id}' for d in devs],\n"
        "           backend=jax.default_backend())\n"
    ),
    "torch": (
        "import torch\n"
        "n = torch.cuda.device_count() if torch.cuda.is_available() else 0\n"
        "out = dict(version=torch.__version__, gpu_count=n,\n"
        "           devices=[torch.cuda.get_device_name(i) for i in range(n)],\n"
        "           built_with_cuda=torch.version.cuda is not None,\n"
        "           cuda_version=torch.version.cuda)\n"
    ),
}

Runner = Callable[[Sequence[str], float, dict[str, str]], subprocess.CompletedProcess[str]]


@dataclass(frozen=True)
class FrameworkView:
    """What one framework reported.

    Attributes:
        name: ``"tensorflow"``, ``"jax"`` or ``"torch"``.
        installed: Whether the package can be found.
        checked: Whether it was asked (installed, and the check was requested).
        version: Its version, when the check ran.
        gpu_count: How many GPUs it can use, or None when unknown.
        devices: Device names as the framework prints them.
        built_with_cuda: Whether the build supports CUDA, where the framework says so.
        error: Why the check failed (timeout, import error), or None.
    """

    name: str
    installed: bool
    checked: bool = False
    version: str | None = None
    gpu_count: int | None = None
    devices: tuple[str, ...] = ()
    built_with_cuda: bool | None = None
    error: str | None = None


def _run_subprocess(
    argv: Sequence[str], timeout: float, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def check_frameworks(
    names: Iterable[str] = FRAMEWORKS,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    find_spec: Callable[[str], object | None] = importlib.util.find_spec,
    runner: Runner = _run_subprocess,
) -> tuple[FrameworkView, ...]:
    """Asks every installed framework in ``names`` what it sees, in parallel subprocesses.

    Returns one view per name, in order; never raises for a broken or slow framework (the view
    carries the error), because a diagnosis must report everything it can.
    """
    names = tuple(names)
    installed = [name for name in names if find_spec(name) is not None]
    with ThreadPoolExecutor(max_workers=max(1, len(installed))) as pool:
        futures = {name: pool.submit(_check_one, name, timeout, runner) for name in installed}
        checked = {name: future.result() for name, future in futures.items()}
    return tuple(checked.get(name, FrameworkView(name=name, installed=False)) for name in names)


def _check_one(name: str, timeout: float, runner: Runner) -> FrameworkView:
    script = _SCRIPTS[name] + f"print({_MARKER!r} + __import__('json').dumps(out))\n"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
    try:
        proc = runner([sys.executable, "-c", script], timeout, env)
    except subprocess.TimeoutExpired:
        logger.warning("%s did not answer within %.0f s", name, timeout)
        return FrameworkView(name, True, True, error=f"no answer within {timeout:.0f} s")
    except OSError as e:
        return FrameworkView(name, True, True, error=f"could not start Python: {e}")
    return parse_framework_output(name, proc.returncode, proc.stdout, proc.stderr)


def parse_framework_output(name: str, returncode: int, stdout: str, stderr: str) -> FrameworkView:
    """Turns one check's output into a view; a failed import becomes its last error line."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(_MARKER):
            data = json.loads(line[len(_MARKER) :])
            return FrameworkView(
                name=name,
                installed=True,
                checked=True,
                version=str(data.get("version")),
                gpu_count=int(data.get("gpu_count", 0)),
                devices=tuple(str(d) for d in data.get("devices", ())),
                built_with_cuda=data.get("built_with_cuda"),
            )
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    reason = lines[-1] if lines else f"exited with status {returncode} and no output"
    return FrameworkView(name, True, True, error=reason[:300])
