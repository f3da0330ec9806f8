"""deterministic=True per backend: the warning a JAX GPU run needs, in a real subprocess.

On a GPU, JAX is deterministic only with ``XLA_FLAGS=--xla_gpu_deterministic_ops=true`` set
before JAX starts; colabkit cannot switch it on later, so it warns. There is no GPU here: the
subprocess makes JAX report one (``jax.default_backend``) while the arrays stay on the CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

JOB = """
import sys
import jax
jax.default_backend = lambda: sys.argv[2]  # what JAX says it runs on
import keras, numpy as np, colabkit
model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
model.compile(optimizer="sgd", loss="mse")
history = colabkit.fit(model, np.zeros((8, 3)), np.zeros((8, 1)), run_dir=sys.argv[1], epochs=1,
                       seed=0, deterministic=True, session_limit=False, verbose=0)
print("TRAINED", len(history.history["loss"]))
"""

FLAG = "--xla_gpu_deterministic_ops=true"


@pytest.mark.parametrize(
    ("platform", "xla_flags", "warned"),
    [
        ("gpu", "", True),
        ("gpu", "--xla_force_host_platform_device_count=1", True),  # other flags, not this one
        ("gpu", f"--xla_force_host_platform_device_count=1 {FLAG}", False),
        ("cpu", "", False),  # XLA on the CPU is deterministic already
    ],
)
def test_a_jax_gpu_run_without_the_xla_flag_is_warned(tmp_path, platform, xla_flags, warned):
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "XLA_FLAGS": xla_flags, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", JOB, str(tmp_path / "run"), platform],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert "TRAINED 1" in proc.stdout, proc.stderr[-3000:]
    warning = f"deterministic=True on JAX needs XLA_FLAGS={FLAG}"
    assert (warning in proc.stderr) is warned, proc.stderr[-3000:]
