"""Every dtype a Keras variable can hold saves and restores bitwise through colabkit.fit, on
TensorFlow and JAX; and the checkpoint file keeps every dtype Keras uses, by name.

The cases are in tests/dtype_worker.py: float32, float16, float64, bfloat16 (policy and one
layer's dtype), mixed_float16 with a LossScaleOptimizer, ``model.quantize`` in float8, int8 and
int4 (int8 and int4 also with LoRA on top), and a custom layer whose non-trainable int32, int64,
uint8, bool (and int8, int16, uint16, uint32, uint64, complex64, complex128, float8) variables
change at every step. Each one resumes a run interrupted after its first epoch, and reloads a
finished one, and compares every model and optimizer variable with an uninterrupted run.

The backend is fixed per process: the cases of the pytest process's backend run in-process; the
other backend's run in one subprocess (dtype_worker.py, all cases at once), whose JSON results
the tests read; under pytest-xdist the workers share that one subprocess run.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import dtype_worker
import keras
import numpy as np
import pytest

from colabkit.checkpoint.format import read_checkpoint, verify, write_checkpoint

WORKER = Path(__file__).with_name("dtype_worker.py")
BACKENDS = ("tensorflow", "jax")


def runs_in_process(backend: str, name: str) -> bool:
    """This process's backend, unless the case needs JAX's 64-bit mode and it is off here."""
    if backend != keras.backend.backend():
        return False
    if backend == "jax" and dtype_worker.CASES[name].x64:
        import jax

        return bool(jax.config.jax_enable_x64)
    return True


@contextlib.contextmanager
def exclusive(lock: Path):
    """Held by one pytest-xdist worker at a time (no lock where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover -- not POSIX: each worker runs its own subprocess
        yield
        return
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_RESULTS: dict[str, dict] = {}


def worker_results(backend: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The worker's results for ``backend``: one subprocess per test session, all cases."""
    if backend in _RESULTS:
        return _RESULTS[backend]
    pytest.importorskip(backend)
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the folder every xdist worker's basetemp is in
    out = shared / f"dtype-worker-{backend}.json"
    with exclusive(shared / f"dtype-worker-{backend}.lock"):
        if not out.exists():
            env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
            env["PYTHONPATH"] = os.pathsep.join(
                [str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")]
            )
            command = [sys.executable, str(WORKER), str(out), str(shared / f"dtype-runs-{backend}")]
            try:
                proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
                crash = f"dtype_worker.py exited with {proc.returncode}:\n{proc.stderr[-3000:]}"
            except subprocess.TimeoutExpired:
                crash = "dtype_worker.py took more than 600 s"
            if not out.exists():  # written only when every case ran: the others fail at once
                out.write_text(json.dumps({"crash": crash}))
    _RESULTS[backend] = json.loads(out.read_text())
    return _RESULTS[backend]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(dtype_worker.CASES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_interrupted_and_finished_runs_restore_every_variable_bitwise(
    backend, name, tmp_path, tmp_path_factory
):
    if runs_in_process(backend, name):
        try:
            problems = dtype_worker.run_case(name, tmp_path)
        except dtype_worker.Unsupported as e:
            pytest.skip(f"{backend}: {e}")
    else:
        results = worker_results(backend, tmp_path_factory)
        if "crash" in results:
            pytest.fail(results["crash"], pytrace=False)
        result = results["cases"][name]
        if result["status"] == "skip":
            pytest.skip(f"{backend}: {result['reason']}")
        if result["status"] == "error":
            pytest.fail(
                f"{backend} (dtype_worker.py), case {name}: {result['error']}\n\n"
                f"{result['traceback']}",
                pytrace=False,
            )
        problems = result["problems"]
    assert not problems, f"{backend}, case {name}:\n" + "\n".join(problems)


# ------------------------------------------------------------------------- the file itself


def raw(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array).tobytes()


def bit_patterns(dtype, shape=(3, 5), seed=0) -> np.ndarray:
    """Random bytes seen as ``dtype``: NaN payloads, infinities, -0.0 and subnormals included."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape)) * dtype.itemsize
    data = np.random.default_rng(seed).integers(0, 256, size=count, dtype=np.uint8)
    return data.view(dtype).reshape(shape)


def every_dtype() -> dict[str, np.ndarray]:
    import ml_dtypes

    arrays: dict[str, np.ndarray] = {}
    numpy_types = [
        "float16", "float32", "float64", "int8", "int16", "int32", "int64",
        "uint8", "uint16", "uint32", "uint64", "complex64", "complex128",
    ]  # fmt: skip
    for i, name in enumerate(numpy_types):
        arrays[f"numpy/{name}"] = bit_patterns(name, seed=i)
    arrays["numpy/bool"] = np.random.default_rng(99).random((3, 5)) > 0.5
    ml_types = ["bfloat16", "float8_e4m3fn", "float8_e5m2"]
    for i, name in enumerate(ml_types):
        dtype = getattr(ml_dtypes, name)
        arrays[f"ml_dtypes/{name}"] = bit_patterns(dtype, seed=100 + i)
        arrays[f"ml_dtypes/{name}-scalar"] = bit_patterns(dtype, shape=(), seed=200 + i)
        arrays[f"ml_dtypes/{name}-empty"] = np.zeros((0, 4), dtype=dtype)
        arrays[f"ml_dtypes/{name}-fortran"] = np.asfortranarray(
            bit_patterns(dtype, shape=(4, 3), seed=300 + i)
        )
    if hasattr(ml_dtypes, "int4"):  # one value per byte; only -8..7 are int4 values
        arrays["ml_dtypes/int4"] = np.arange(-8, 8).astype(ml_dtypes.int4).reshape(4, 4)
    return arrays


def test_checkpoint_file_keeps_every_dtype_keras_uses_bitwise(tmp_path):
    arrays = every_dtype()
    path = tmp_path / "ckpt-000000000001.ckpt"
    write_checkpoint(path, arrays, {"epoch": 1})
    back = read_checkpoint(path).arrays
    assert list(back) == list(arrays)
    for name, expected in arrays.items():
        got = back[name]
        assert got.dtype == expected.dtype, f"{name}: read back as {got.dtype!r}"
        assert got.shape == expected.shape, name
        assert raw(got) == raw(expected), f"{name}: bytes differ"
        assert got.flags.writeable, name


def legacy_checkpoint(path: Path, arrays: dict[str, np.ndarray], state: dict) -> None:
    """A checkpoint exactly as colabkit 0.2.0's format 1 wrote it (independent of the writer):
    state.json, one standard .npy per array, then manifest.json with every member's sha256."""
    members: dict[str, dict] = {}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        contents = [("state.json", json.dumps(state, sort_keys=True).encode())]
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            contents.append((f"arrays/{name}.npy", buffer.getvalue()))
        for member, data in contents:
            zf.writestr(member, data)
            members[member] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        manifest = {"format_version": 1, "members": members}
        zf.writestr("manifest.json", json.dumps(manifest, sort_keys=True, indent=1))


def test_a_checkpoint_in_todays_format_still_loads(tmp_path):
    arrays = {
        "model/0000": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
        "model/0001": np.array([0.5, -0.0, np.inf], dtype=np.float32),
        "model/0002": np.array([7, 9], dtype=np.int64),  # a TensorFlow seed generator state
        "optimizer/0000": np.array(12, dtype=np.int64),
        "optimizer/0001": np.array(0.001, dtype=np.float32),
        "metrics/0000": np.array(3.25, dtype=np.float32),
    }
    state = {
        "epoch": 2, "global_step": 12, "step_in_epoch": 0, "history": {"loss": [0.7, 0.5]},
        "colabkit_version": "0.2.0", "format_version": 1, "created": 1_700_000_000.0,
    }  # fmt: skip
    path = tmp_path / "ckpt-000000000012.ckpt"
    legacy_checkpoint(path, arrays, state)
    assert verify(path)["global_step"] == 12
    contents = read_checkpoint(path)
    assert contents.state["history"] == {"loss": [0.7, 0.5]}
    assert list(contents.arrays) == list(arrays)
    for name, expected in arrays.items():
        got = contents.arrays[name]
        assert got.dtype == expected.dtype and got.shape == expected.shape, name
        assert raw(got) == raw(expected), name
