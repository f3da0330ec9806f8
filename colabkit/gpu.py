"""The accelerator report: which GPUs the driver sees, what each framework sees, TPUs, and fixes.

The driver's view comes from ``nvidia-smi`` (the same query Colab's resource monitor runs), parsed
by a pure function tested on output in nvidia-smi's exact CSV format, or from NVML
(``nvidia-ml-py``) where ``nvidia-smi`` is missing. Output colabkit cannot read is an error
finding, never "no GPU": a silent CPU fallback turns a one-hour run into a twelve-hour one. The
frameworks' views come from :mod:`colabkit.frameworks` (subprocesses), TPUs from
:mod:`colabkit.tpu`.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from colabkit.errors import AcceleratorError
from colabkit.findings import Finding
from colabkit.frameworks import FRAMEWORKS, FrameworkView, check_frameworks
from colabkit.tpu import TpuInfo, detect_tpu

logger = logging.getLogger(__name__)

LOW_FREE_FRACTION = 0.10
NO_GPU_FIX = "Runtime → Change runtime type → GPU (T4 on the free plan), then run again."

QUERY_FIELDS = (
    "index",
    "name",
    "driver_version",
    "memory.total",
    "memory.used",
    "memory.free",
    "utilization.gpu",
)
NVIDIA_SMI_ARGS = (f"--query-gpu={','.join(QUERY_FIELDS)}", "--format=csv,noheader,nounits")
NVIDIA_SMI_TIMEOUT_S = 20.0
_NOT_AVAILABLE = {
    "[n/a]",
    "n/a",
    "[not supported]",
    "[unknown error]",
    "[insufficient permissions]",
}

UNREADABLE_FIX = "Update colabkit; if that does not help, report the output of `nvidia-smi`."

GpuSource = Literal["nvidia-smi", "nvml", "none"]


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as the driver reports it (memory in MiB; None where the driver says N/A)."""

    index: int
    name: str
    driver_version: str
    memory_total_mib: int | None
    memory_used_mib: int | None
    memory_free_mib: int | None
    utilization_pct: int | None


@dataclass(frozen=True)
class GpuQuery:
    """The driver's answer: GPUs found, from which source, and a problem if it could not answer."""

    gpus: tuple[GpuInfo, ...]
    source: GpuSource
    problem: Finding | None = None


def parse_nvidia_smi(text: str) -> tuple[GpuInfo, ...]:
    """Parses ``nvidia-smi --query-gpu=<QUERY_FIELDS> --format=csv,noheader,nounits`` output.

    Raises:
        AcceleratorError: A line does not have the expected fields or numbers. Unreadable output
            must never be mistaken for "no GPU".
    """
    gpus = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = [part.strip() for part in line.split(",")]
        try:
            if len(fields) != len(QUERY_FIELDS) or not fields[1]:
                raise ValueError(f"expected {len(QUERY_FIELDS)} fields")
            index, name, driver, *numbers = fields
            gpus.append(GpuInfo(int(index), name, driver, *(_number(n) for n in numbers)))
        except ValueError as e:
            raise AcceleratorError(
                f"nvidia-smi printed a line colabkit cannot read: line {number} {line!r} ({e}). "
                f"{UNREADABLE_FIX}"
            ) from None
    return tuple(gpus)


def _number(field: str) -> int | None:
    if field.lower() in _NOT_AVAILABLE:
        return None
    return int(float(field))


def run_nvidia_smi(
    *,
    which: Callable[[str], str | None] = shutil.which,
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
    timeout: float = NVIDIA_SMI_TIMEOUT_S,
) -> GpuQuery | None:
    """Asks ``nvidia-smi``; None when it is not installed (no NVIDIA driver here)."""
    path = which("nvidia-smi")
    if path is None:
        return None
    argv = [path, *NVIDIA_SMI_ARGS]
    try:
        proc = run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return GpuQuery((), "nvidia-smi", _driver_problem(f"did not answer in {timeout:.0f} s"))
    except OSError as e:
        return GpuQuery((), "nvidia-smi", _driver_problem(f"could not run: {e}"))
    output = (proc.stdout or "") + (proc.stderr or "")
    if proc.returncode != 0:
        if "no devices were found" in output.lower():
            return GpuQuery((), "nvidia-smi")
        last = output.strip().splitlines()[-1:] or ["no output"]
        return GpuQuery((), "nvidia-smi", _driver_problem(f"exit {proc.returncode}: {last[0]}"))
    if not proc.stdout.strip():
        return GpuQuery((), "nvidia-smi", _driver_problem("exit 0 but printed nothing"))
    try:
        return GpuQuery(parse_nvidia_smi(proc.stdout), "nvidia-smi")
    except AcceleratorError as e:
        message = str(e).removesuffix(f". {UNREADABLE_FIX}")
        problem = Finding("error", "nvidia-smi-unreadable", message, UNREADABLE_FIX, True)
        return GpuQuery((), "nvidia-smi", problem)


def _driver_problem(detail: str) -> Finding:
    return Finding(
        "error",
        "nvidia-driver-failed",
        f"nvidia-smi failed ({detail}), so the GPU state is unknown",
        "The NVIDIA driver is not answering: Runtime → Disconnect and delete runtime gives a "
        "fresh VM; on your own machine, check the driver with `nvidia-smi`.",
        blocks_gpu=True,
    )


def query_nvml(import_module: Callable[[str], Any] = importlib.import_module) -> GpuQuery:
    """Asks NVML through ``nvidia-ml-py`` (module ``pynvml``); used where nvidia-smi is absent."""
    try:
        nvml = import_module("pynvml")
        nvml.nvmlInit()
    except Exception as e:  # NVMLError_LibraryNotFound etc.: no usable driver
        return GpuQuery((), "none", _nvml_problem(e))
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        gpus = tuple(_nvml_gpu(nvml, i, driver) for i in range(nvml.nvmlDeviceGetCount()))
    except Exception as e:
        return GpuQuery((), "nvml", _nvml_problem(e))
    finally:
        nvml.nvmlShutdown()
    return GpuQuery(gpus, "nvml")


def _nvml_gpu(nvml: Any, index: int, driver: str) -> GpuInfo:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    try:
        utilization: int | None = int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except Exception:  # not supported on some boards and MIG slices
        utilization = None
    mib = 1024 * 1024
    return GpuInfo(
        index=index,
        name=_text(nvml.nvmlDeviceGetName(handle)),
        driver_version=driver,
        memory_total_mib=int(memory.total) // mib,
        memory_used_mib=int(memory.used) // mib,
        memory_free_mib=int(memory.free) // mib,
        utilization_pct=utilization,
    )


def _nvml_problem(error: Exception) -> Finding | None:
    name = type(error).__name__
    if "LibraryNotFound" in name or "DriverNotLoaded" in name:
        return None  # no NVIDIA driver: simply no GPU
    return Finding(
        "warning",
        "nvml-failed",
        f"NVML could not list GPUs ({name}: {error})",
        "Install nvidia-smi, or check the NVIDIA driver.",
    )


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def query_gpus() -> GpuQuery:
    """The driver's view: nvidia-smi, else NVML when ``pynvml`` is importable, else none."""
    answer = run_nvidia_smi()
    if answer is not None:
        return answer
    if importlib.util.find_spec("pynvml") is not None:
        return query_nvml()
    return GpuQuery((), "none")


@dataclass(frozen=True)
class AcceleratorReport:
    """Everything colabkit knows about accelerators, with a finding (and fix) per problem.

    Attributes:
        gpus: GPUs the driver sees.
        gpu_source: ``"nvidia-smi"``, ``"nvml"`` or ``"none"`` (no driver tool found).
        frameworks: What each framework sees (empty when not checked).
        tpu: TPU runtime detection.
        keras_backend: The framework Keras will use (``KERAS_BACKEND``, default tensorflow).
        findings: Problems and notes, most severe first.
    """

    gpus: tuple[GpuInfo, ...]
    gpu_source: GpuSource
    frameworks: tuple[FrameworkView, ...]
    tpu: TpuInfo
    keras_backend: str
    findings: tuple[Finding, ...]

    @property
    def has_gpu(self) -> bool:
        """Whether the driver sees at least one GPU."""
        return bool(self.gpus)

    @property
    def gpu_usable(self) -> bool:
        """Whether a GPU is present and nothing stops Keras' backend from using it."""
        return self.has_gpu and not any(f.blocks_gpu for f in self.findings)


def accelerator_report(
    *,
    frameworks: Iterable[str] = FRAMEWORKS,
    environ: Mapping[str, str] | None = None,
    gpu_query: Callable[[], GpuQuery] = query_gpus,
    framework_check: Callable[[Sequence[str]], tuple[FrameworkView, ...]] = check_frameworks,
    tpu_probe: Callable[[Mapping[str, str]], TpuInfo] = detect_tpu,
) -> AcceleratorReport:
    """Builds the accelerator report.

    Args:
        frameworks: Which frameworks to ask (each in a subprocess; ``()`` to skip: then no
            framework, not even tensorflow, is imported anywhere).
        environ: Environment variables (``KERAS_BACKEND``, ``TPU_*``); ``os.environ`` by default.
        gpu_query: The driver's view (injected in tests).
        framework_check: Asks the frameworks (injected in tests).
        tpu_probe: Detects a TPU runtime (injected in tests).
    """
    environ = os.environ if environ is None else environ
    backend = environ.get("KERAS_BACKEND", "tensorflow") or "tensorflow"
    names = tuple(frameworks)
    query = gpu_query()
    views = framework_check(names) if names else ()
    tpu = tpu_probe(environ)
    findings = [*gpu_findings(query.gpus, query.problem, tpu)]
    findings += framework_findings(query.gpus, views, backend)
    findings += tpu.findings
    order = {"error": 0, "warning": 1, "info": 2}
    findings.sort(key=lambda f: order[f.severity])
    report = AcceleratorReport(query.gpus, query.source, views, tpu, backend, tuple(findings))
    names = ", ".join(g.name for g in query.gpus) or "none"
    logger.info("GPUs (%s): %s; %d finding(s)", query.source, names, len(findings))
    return report


def require_gpu(report: AcceleratorReport | None = None) -> AcceleratorReport:
    """Returns the report when a GPU is usable; raises with the fix otherwise.

    Without a report, asks the driver and only Keras' backend framework (one subprocess).

    Raises:
        AcceleratorError: No GPU, an unreadable driver, or Keras' backend cannot see the GPU.
    """
    if report is None:
        backend = os.environ.get("KERAS_BACKEND", "tensorflow") or "tensorflow"
        report = accelerator_report(frameworks=[backend] if backend in FRAMEWORKS else [])
    if report.gpu_usable:
        return report
    blocking = [f for f in report.findings if f.blocks_gpu]
    finding = blocking[0] if blocking else None
    if finding is None:
        raise AcceleratorError("No usable GPU. Fix: Runtime → Change runtime type → GPU.")
    raise AcceleratorError(f"No usable GPU: {finding.message}. Fix: {finding.fix}")


# ------------------------------------------------------------------- findings (pure rules)


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
