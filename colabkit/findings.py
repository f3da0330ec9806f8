"""Findings: one problem (or note) each, with the one-line fix a user can act on.

Pure functions from what was measured (GPUs, framework views, TPU) to findings, so every rule is
tested without a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # pragma: no cover
    from colabkit.frameworks import FrameworkView
    from colabkit.gpu import GpuInfo
    from colabkit.tpu import TpuInfo

Severity = Literal["error", "warning", "info"]
LOW_FREE_FRACTION = 0.10
NO_GPU_FIX = "Runtime → Change runtime type → GPU (T4 on the free plan), then run again."


@dataclass(frozen=True)
class Finding:
    """A problem or note found by a check.

    Attributes:
        severity: ``"error"`` (something will not work), ``"warning"`` (it works, worse than it
            should) or ``"info"``.
        code: A stable identifier for scripts, e.g. ``"no-gpu"``.
        message: What was found, with the values measured.
        fix: What to do about it.
        blocks_gpu: Whether this finding means Keras cannot train on a GPU here.
    """

    severity: Severity
    code: str
    message: str
    fix: str
    blocks_gpu: bool = False


def gpu_findings(
    gpus: Sequence[GpuInfo],
    problem: Finding | None,
    tpu: TpuInfo,
    *,
    low_free_fraction: float = LOW_FREE_FRACTION,
) -> list[Finding]:
    """Findings about the driver's view: no GPU, an unreadable driver, little free memory."""
    if problem is not None:
        return [problem]
    if not gpus:
        if tpu.present:
            return [
                Finding(
                    "info",
                    "no-gpu",
                    "No GPU: this is a TPU runtime",
                    "Train on the TPU (tf.distribute.TPUStrategy or the JAX backend), or "
                    f"for a GPU: {NO_GPU_FIX}",
                    blocks_gpu=True,
                )
            ]
        return [Finding("warning", "no-gpu", "No NVIDIA GPU found", NO_GPU_FIX, blocks_gpu=True)]
    return [f for gpu in gpus if (f := _low_memory(gpu, low_free_fraction)) is not None]


def _low_memory(gpu: GpuInfo, low_free_fraction: float) -> Finding | None:
    total, free = gpu.memory_total_mib, gpu.memory_free_mib
    if not total or free is None or free >= low_free_fraction * total:
        return None
    return Finding(
        "warning",
        "low-gpu-memory",
        f"GPU {gpu.index} ({gpu.name}) has {free} MiB free of {total} MiB",
        "Another process holds GPU memory (an earlier model in this notebook, another "
        "kernel): Runtime → Restart session frees it.",
    )


def framework_findings(
    gpus: Sequence[GpuInfo], views: Sequence[FrameworkView], keras_backend: str
) -> list[Finding]:
    """Findings about frameworks: a broken install, or a GPU the framework cannot see.

    A framework that cannot see the driver's GPU is an error for Keras' backend (training would
    silently run on the CPU) and a warning for the others.
    """
    findings = []
    for view in views:
        if view.error is not None:
            findings.append(
                Finding(
                    "error" if view.name == keras_backend else "warning",
                    f"{view.name}-check-failed",
                    f"{view.name} could not be asked for its devices: {view.error}",
                    f"Reinstall {view.name}, or in Colab: Runtime → Disconnect and delete "
                    "runtime to get Colab's own build back.",
                    blocks_gpu=view.name == keras_backend and bool(gpus),
                )
            )
        elif gpus and view.checked and view.gpu_count == 0:
            findings.append(_cannot_see_gpu(view, keras_backend))
    return findings


def _cannot_see_gpu(view: FrameworkView, keras_backend: str) -> Finding:
    build = " (a CPU-only build)" if view.built_with_cuda is False else ""
    return Finding(
        "error" if view.name == keras_backend else "warning",
        f"{view.name}-cannot-see-gpu",
        f"nvidia-smi sees a GPU but {view.name} {view.version}{build} does not",
        _CANNOT_SEE_FIX[view.name].format(version=view.version),
        blocks_gpu=view.name == keras_backend,
    )


_CANNOT_SEE_FIX = {
    "tensorflow": (
        "TensorFlow was probably reinstalled over Colab's build (a `pip install` that pulled "
        "another tensorflow): Runtime → Disconnect and delete runtime restores Colab's own, and "
        "then do not pip install tensorflow; or run "
        "`pip install 'tensorflow[and-cuda]=={version}'` and Runtime → Restart session."
    ),
    "jax": (
        "Install the CUDA build: `pip install -U 'jax[cuda12]'`, then Runtime → Restart "
        "session; or Runtime → Disconnect and delete runtime for Colab's own jax."
    ),
    "torch": (
        "torch was probably reinstalled without CUDA: Runtime → Disconnect and delete runtime "
        "restores Colab's own; elsewhere install the CUDA wheel from pytorch.org."
    ),
}
