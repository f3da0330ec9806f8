"""TPU runtime detection, without importing any framework.

Today's Colab TPU runtimes are TPU VMs: the chips are local devices (``/dev/accel*`` on v2-v4,
VFIO groups under ``/dev/vfio`` on v5e and later) and the runtime sets ``TPU_*`` variables.
``COLAB_TPU_ADDR`` belonged to the retired TPU-node runtime, where the TPU was a remote host.
"""

from __future__ import annotations

import glob as _glob
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from colabkit.findings import Finding

# Not TPU_SKIP_MDS_QUERY or TPU_ML_PLATFORM: `import tensorflow` sets those in os.environ on any
# machine, so a doctor run from a process (or notebook) that imported TensorFlow saw a "TPU".
TPU_ENV_VARS = ("TPU_ACCELERATOR_TYPE", "TPU_NAME", "TPU_WORKER_HOSTNAMES")


@dataclass(frozen=True)
class TpuInfo:
    """Whether this is a TPU runtime, which kind, and why colabkit thinks so."""

    present: bool
    runtime: Literal["tpu-vm", "tpu-node"] | None = None
    evidence: tuple[str, ...] = ()
    findings: tuple[Finding, ...] = ()


def detect_tpu(
    environ: Mapping[str, str],
    *,
    glob: Callable[[str], list[str]] = _glob.glob,
    find_spec: Callable[[str], object | None] = importlib.util.find_spec,
) -> TpuInfo:
    """Detects a TPU runtime from device files and environment variables.

    A bare ``/dev/vfio`` group is common on GPU and CPU hosts too, so it only counts together
    with another sign (a ``TPU_*`` variable or an installed ``libtpu``).
    """
    accel = sorted(glob("/dev/accel[0-9]*"))
    vfio = sorted(glob("/dev/vfio/[0-9]*"))
    variables = [f"{name}={environ[name]}" for name in TPU_ENV_VARS if environ.get(name)]
    evidence = [*accel, *variables]
    if vfio and (variables or find_spec("libtpu") is not None):
        evidence += [*vfio, *([] if variables else ["libtpu installed"])]
    if evidence:
        return TpuInfo(True, "tpu-vm", tuple(evidence))
    if environ.get("COLAB_TPU_ADDR"):
        retired = Finding(
            "warning",
            "tpu-node-retired",
            f"COLAB_TPU_ADDR={environ['COLAB_TPU_ADDR']}: the retired TPU-node runtime",
            "Runtime → Change runtime type → a current TPU (a TPU VM), then run again.",
        )
        evidence = [f"COLAB_TPU_ADDR={environ['COLAB_TPU_ADDR']}"]
        return TpuInfo(True, "tpu-node", tuple(evidence), (retired,))
    return TpuInfo(False)
