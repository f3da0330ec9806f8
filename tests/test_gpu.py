"""The accelerator report: nvidia-smi/NVML parsing, framework views, TPU, findings, require_gpu."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import types

import pytest
from fakes import nvidia_smi_output

from colabkit.errors import AcceleratorError
from colabkit.frameworks import FrameworkView, check_frameworks, parse_framework_output
from colabkit.gpu import (
    GpuQuery,
    accelerator_report,
    parse_nvidia_smi,
    query_nvml,
    require_gpu,
    run_nvidia_smi,
)
from colabkit.tpu import TpuInfo, detect_tpu


@pytest.mark.parametrize(
    ("board", "name", "total", "free"),
    [
        ("t4", "Tesla T4", 15360, 15101),
        ("l4", "NVIDIA L4", 23034, 22563),
        ("a100", "NVIDIA A100-SXM4-40GB", 40960, 40506),
        ("h100", "NVIDIA H100 80GB HBM3", 81559, 80994),
    ],
)
def test_parse_each_board_in_nvidia_smi_csv_format(board, name, total, free):
    (gpu,) = parse_nvidia_smi(nvidia_smi_output(board))
    assert (gpu.index, gpu.name) == (0, name)
    assert (gpu.memory_total_mib, gpu.memory_free_mib) == (total, free)
    assert gpu.driver_version.count(".") == 2
    assert gpu.utilization_pct == 0


def test_parse_two_gpus_and_not_available_fields():
    busy, idle = parse_nvidia_smi(nvidia_smi_output("a100x2-busy"))
    assert (busy.index, busy.memory_free_mib, busy.utilization_pct) == (0, 3287, 97)
    assert idle.index == 1
    (na,) = parse_nvidia_smi(nvidia_smi_output("na-fields"))
    assert na.memory_total_mib is None and na.utilization_pct is None


@pytest.mark.parametrize(
    "text",
    [
        nvidia_smi_output("with-header"),
        "0, Tesla T4, 535.104.05, 15360\n",  # too few fields
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n",
        "zero, Tesla T4, 535.104.05, 15360, 0, 15101, 0\n",
        "0, Tesla T4, 535.104.05, lots, 0, 15101, 0\n",
    ],
)
def test_malformed_output_is_an_error_never_no_gpu(text):
    with pytest.raises(AcceleratorError, match="nvidia-smi printed a line colabkit cannot read"):
        parse_nvidia_smi(text)


def smi(stdout: str = "", returncode: int = 0, stderr: str = ""):
    """A fake subprocess.run for nvidia-smi that records its argv."""
    seen: list[list[str]] = []

    def run(argv, **kwargs):
        seen.append(list(argv))
        return subprocess.CompletedProcess(argv, returncode, stdout, stderr)

    run.seen = seen
    return run


def test_nvidia_smi_absent_means_no_answer():
    assert run_nvidia_smi(which=lambda name: None, run=smi()) is None


def test_nvidia_smi_query_and_parse():
    run = smi(nvidia_smi_output("a100"))
    answer = run_nvidia_smi(which=lambda name: "/usr/bin/nvidia-smi", run=run)
    assert answer.source == "nvidia-smi" and answer.problem is None
    assert answer.gpus[0].name == "NVIDIA A100-SXM4-40GB"
    assert run.seen[0][1].startswith("--query-gpu=index,name,")


def test_no_devices_found_is_no_gpu_without_a_problem():
    answer = run_nvidia_smi(
        which=lambda name: "nvidia-smi", run=smi("No devices were found\n", returncode=6)
    )
    assert answer.gpus == () and answer.problem is None


@pytest.mark.parametrize(
    ("run", "detail"),
    [
        (
            smi(nvidia_smi_output("driver-failed"), returncode=9),
            "exit 9: NVIDIA-SMI has failed",
        ),
        (smi("", returncode=0), "printed nothing"),
    ],
)
def test_a_failing_driver_blocks_the_gpu_with_a_fix(run, detail):
    answer = run_nvidia_smi(which=lambda name: "nvidia-smi", run=run)
    assert answer.problem.code == "nvidia-driver-failed"
    assert detail in answer.problem.message
    assert answer.problem.blocks_gpu and "Disconnect and delete runtime" in answer.problem.fix


def test_nvidia_smi_timeout_and_unreadable_output_are_problems_not_no_gpu():
    def hang(argv, **kwargs):
        raise subprocess.TimeoutExpired(argv, kwargs["timeout"])

    slow = run_nvidia_smi(which=lambda name: "nvidia-smi", run=hang, timeout=3)
    assert "did not answer in 3 s" in slow.problem.message
    garbled = run_nvidia_smi(which=lambda n: "nvidia-smi", run=smi("0, Tesla T4\n"))
    assert garbled.problem.code == "nvidia-smi-unreadable" and garbled.problem.blocks_gpu


def fake_pynvml(count: int = 1, fail_init: Exception | None = None) -> types.ModuleType:
    nvml = types.ModuleType("pynvml")
    gib = 1024**3
    nvml.shutdown_calls = 0

    def init():
        if fail_init is not None:
            raise fail_init

    def shutdown():
        nvml.shutdown_calls += 1

    def utilization(handle):
        raise RuntimeError("NVMLError_NotSupported")

    nvml.nvmlInit = init
    nvml.nvmlShutdown = shutdown
    nvml.nvmlSystemGetDriverVersion = lambda: b"550.54.15"
    nvml.nvmlDeviceGetCount = lambda: count
    nvml.nvmlDeviceGetHandleByIndex = lambda i: i
    nvml.nvmlDeviceGetName = lambda h: "NVIDIA L4"
    nvml.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(
        total=22 * gib, used=2 * gib, free=20 * gib
    )
    nvml.nvmlDeviceGetUtilizationRates = utilization
    return nvml


def test_nvml_lists_gpus_and_shuts_down():
    nvml = fake_pynvml(count=2)
    answer = query_nvml(import_module=lambda name: nvml)
    assert answer.source == "nvml" and len(answer.gpus) == 2
    assert answer.gpus[1].memory_free_mib == 20 * 1024
    assert answer.gpus[0].utilization_pct is None and answer.gpus[0].driver_version == "550.54.15"
    assert nvml.shutdown_calls == 1


def test_nvml_without_a_driver_is_no_gpu():
    error = type("NVMLError_LibraryNotFound", (Exception,), {})("libnvidia-ml.so.1 not found")
    answer = query_nvml(import_module=lambda name: fake_pynvml(fail_init=error))
    assert answer.gpus == () and answer.problem is None


def test_uninstalled_frameworks_are_reported_without_starting_anything():
    def runner(*args):
        raise AssertionError("no subprocess for a framework that is not installed")

    views = check_frameworks(["tensorflow", "torch"], find_spec=lambda n: None, runner=runner)
    assert [(v.name, v.installed, v.checked) for v in views] == [
        ("tensorflow", False, False),
        ("torch", False, False),
    ]


def test_a_hanging_framework_times_out_into_an_error_view():
    def runner(argv, timeout, env):
        assert env["TF_CPP_MIN_LOG_LEVEL"] == "3"
        raise subprocess.TimeoutExpired(argv, timeout)

    (view,) = check_frameworks(["tensorflow"], timeout=7, find_spec=lambda n: 1, runner=runner)
    assert view.installed and view.checked and view.error == "no answer within 7 s"


def test_a_broken_import_reports_its_last_error_line():
    stderr = (
        "Traceback (most recent call last):\n  ...\nImportError: libcudart.so.12: cannot open\n"
    )
    view = parse_framework_output("tensorflow", 1, "2025-01-01 noise\n", stderr)
    assert view.error == "ImportError: libcudart.so.12: cannot open"


def test_real_jax_check_in_a_subprocess():
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")
    (view,) = check_frameworks(["jax"], timeout=60)
    assert view.error is None
    assert view.version == importlib.metadata.version("jax")
    assert view.gpu_count == 0 and view.devices  # this machine has no GPU


def test_tpu_vm_from_device_files_and_variables():
    tpu = detect_tpu({}, glob=lambda pattern: ["/dev/accel0"] if "accel" in pattern else [])
    assert tpu.present and tpu.runtime == "tpu-vm" and tpu.evidence == ("/dev/accel0",)
    vfio_only = detect_tpu(
        {}, glob=lambda p: ["/dev/vfio/0"] if "vfio" in p else [], find_spec=lambda n: None
    )
    assert not vfio_only.present  # a VFIO group alone is common on non-TPU hosts
    with_env = detect_tpu(
        {"TPU_ACCELERATOR_TYPE": "v5litepod-1"},
        glob=lambda p: ["/dev/vfio/0"] if "vfio" in p else [],
    )
    assert with_env.present and "/dev/vfio/0" in with_env.evidence


def test_variables_tensorflow_sets_on_import_are_not_a_tpu():
    """`import tensorflow` puts TPU_SKIP_MDS_QUERY and TPU_ML_PLATFORM into os.environ on any
    machine; a doctor started from such a process must not report a TPU."""
    environ = {"TPU_SKIP_MDS_QUERY": "1", "TPU_ML_PLATFORM": "Tensorflow"}
    assert not detect_tpu(environ, glob=lambda p: [], find_spec=lambda n: None).present


def test_retired_tpu_node_runtime_is_flagged():
    tpu = detect_tpu({"COLAB_TPU_ADDR": "10.0.0.2:8470"}, glob=lambda p: [])
    assert tpu.runtime == "tpu-node"
    assert tpu.findings[0].code == "tpu-node-retired"


NO_TPU = TpuInfo(False)


def report(board: str | None, views=(), tpu=NO_TPU, environ=None, problem=None):
    gpus = parse_nvidia_smi(nvidia_smi_output(board)) if board else ()
    return accelerator_report(
        frameworks=[v.name for v in views],
        environ=environ or {},
        gpu_query=lambda: GpuQuery(gpus, "nvidia-smi", problem),
        framework_check=lambda names: tuple(views),
        tpu_probe=lambda environ: tpu,
    )


def tf_view(gpu_count: int, cuda: bool = True) -> FrameworkView:
    return FrameworkView("tensorflow", True, True, "2.21.0", gpu_count, (), cuda)


def test_no_gpu_finding_and_require_gpu_fix():
    r = report(None)
    assert [f.code for f in r.findings] == ["no-gpu"]
    assert r.findings[0].severity == "warning"  # training still works on the CPU
    with pytest.raises(AcceleratorError, match="Runtime → Change runtime type → GPU"):
        require_gpu(r)


def test_gpu_that_tensorflow_cannot_see_is_an_error_with_the_reinstall_fix():
    r = report("t4", views=[tf_view(0, cuda=False)])
    (finding,) = r.findings
    assert finding.code == "tensorflow-cannot-see-gpu" and finding.severity == "error"
    assert "CPU-only" in finding.message
    assert "pip install 'tensorflow[and-cuda]==2.21.0'" in finding.fix
    assert "Disconnect and delete runtime" in finding.fix
    with pytest.raises(AcceleratorError, match="tensorflow 2.21.0 .* does not"):
        require_gpu(r)


def test_other_frameworks_blind_to_the_gpu_only_warn_when_keras_uses_tensorflow():
    jax = FrameworkView("jax", True, True, "0.10.2", 0, ("cpu:0",))
    r = report("l4", views=[tf_view(1), jax])
    assert [(f.code, f.severity) for f in r.findings] == [("jax-cannot-see-gpu", "warning")]
    assert require_gpu(r) is r
    as_backend = report("l4", views=[tf_view(1), jax], environ={"KERAS_BACKEND": "jax"})
    assert not as_backend.gpu_usable and "jax[cuda12]" in as_backend.findings[0].fix


def test_low_free_gpu_memory_is_a_warning_per_gpu():
    r = report("a100x2-busy", views=[tf_view(2)])
    (finding,) = r.findings
    assert finding.code == "low-gpu-memory"
    assert finding.message == "GPU 0 (NVIDIA A100-SXM4-80GB) has 3287 MiB free of 81920 MiB"
    assert "Restart session" in finding.fix
    assert r.gpu_usable


def test_tpu_runtime_without_gpu_is_a_note_not_a_warning():
    r = report(None, tpu=TpuInfo(True, "tpu-vm", ("/dev/accel0",)))
    assert [(f.code, f.severity) for f in r.findings] == [("no-gpu", "info")]


def test_driver_problem_is_reported_instead_of_no_gpu():
    problem = run_nvidia_smi(which=lambda n: "x", run=smi("0, Tesla T4\n")).problem
    r = report(None, problem=problem)
    assert [f.code for f in r.findings] == ["nvidia-smi-unreadable"]
    with pytest.raises(AcceleratorError, match="cannot read"):
        require_gpu(r)


def test_frameworks_may_be_any_iterable_and_empty_asks_none():
    asked = []
    common = dict(
        environ={},
        gpu_query=lambda: GpuQuery((), "none"),
        framework_check=lambda names: asked.append(names) or (),
        tpu_probe=lambda environ: NO_TPU,
    )
    accelerator_report(frameworks=(name for name in ["jax"]), **common)
    accelerator_report(frameworks=(), **common)
    assert asked == [("jax",)]
