"""A MirroredStrategy job over two logical CPU devices, for the scale-out tests (a subprocess).

Usage: python distribute_worker.py RUN_DIR OUT.npz [KILL_AFTER_STEP]

With TF_CONFIG set, the job runs under MultiWorkerMirroredStrategy instead (one CPU device).
With KERAS_BACKEND=jax, it runs under the keras.distribution that colabkit.distribute.strategy()
picks (DataParallel; XLA_FLAGS=--xla_force_host_platform_device_count=2 gives two CPU devices).

KILL_AFTER_STEP: SIGKILL right after that global step, once the newest checkpoint before it is in
RUN_DIR, so that the resume point is that checkpoint (not an older one while the newest is still
being copied when the kill lands). OUT.npz holds the history, the weights (``w0``, ``w1``, ...)
and, after each step this process trained, every replica's metric accumulators (``acc-NNNN``:
one row per metric variable, one column per replica).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

JAX = os.environ.get("KERAS_BACKEND") == "jax"
MULTIWORKER = bool(os.environ.get("TF_CONFIG"))
if not JAX:
    import tensorflow as tf

    if not MULTIWORKER:
        cpu = tf.config.list_physical_devices("CPU")[0]
        logical = [tf.config.LogicalDeviceConfiguration()] * 2
        tf.config.set_logical_device_configuration(cpu, logical)

import keras  # noqa: E402

import colabkit  # noqa: E402

STEPS_PER_EPOCH = 12
SAVE_EVERY = 4  # steps


def replica_values(model: keras.Model, variable) -> list[np.ndarray]:
    """The variable's value on each replica: under tf.distribute a metric accumulator holds one
    partial sum per replica (sync on read), which a read adds up."""
    if JAX:
        return [np.asarray(variable.value)]
    local = model.distribute_strategy.experimental_local_results(variable.value)
    return [np.asarray(value) for value in local]


def wait_for_checkpoint(run_dir: str, step: int, timeout: float = 120) -> None:
    """Returns once the checkpoint of ``step`` is committed (renamed into place) in the run."""
    path = Path(run_dir, "checkpoints", f"ckpt-{step:012d}.ckpt")
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} was not committed within {timeout} s")
        time.sleep(0.02)


def main() -> int:
    run_dir, out = sys.argv[1], sys.argv[2]
    kill_after = int(sys.argv[3]) if len(sys.argv) > 3 else -1
    if JAX:
        import jax

        strategy = colabkit.distribute.strategy("auto")
        assert isinstance(strategy, keras.distribution.DataParallel), strategy
        assert len(jax.devices()) == 2, jax.devices()
        keras.distribution.set_distribution(strategy)
        scope = contextlib.nullcontext()
    else:
        strategy = colabkit.distribute.strategy("multiworker" if MULTIWORKER else "mirrored")
        assert strategy.num_replicas_in_sync == (1 if MULTIWORKER else 2)
        scope = strategy.scope()
    keras.utils.set_random_seed(1)
    with scope:
        model = keras.Sequential(
            [
                keras.Input((12,)),
                keras.layers.Dense(32, activation="relu"),
                keras.layers.Dropout(0.3),
                keras.layers.Dense(3, activation="softmax"),
            ]
        )
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy")
    rng = np.random.default_rng(7)
    x = rng.normal(size=(400, 12)).astype("float32")
    y = np.eye(3, dtype="float32")[(x[:, 0] > 0).astype(int) + (x[:, 1] > 1).astype(int)]
    accumulators: dict[str, np.ndarray] = {}

    class RecordAndKill(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            step = self.epoch * STEPS_PER_EPOCH + batch + 1
            accumulators[f"acc-{step:04d}"] = np.stack(
                [np.stack(replica_values(self.model, v)) for v in self.model.metrics_variables]
            )
            if step == kill_after:
                newest = (step - 1) // SAVE_EVERY * SAVE_EVERY
                if newest > 0:
                    wait_for_checkpoint(run_dir, newest)
                os.kill(os.getpid(), 9)

    history = colabkit.fit(
        model, x, y, run_dir=run_dir, cache_dir=run_dir + "-cache", epochs=3, batch_size=32,
        validation_split=0.1, seed=3, save_every=f"{SAVE_EVERY}steps", deterministic=True,
        session_limit=False, verbose=0, callbacks=[RecordAndKill()], strategy=strategy,
    )  # fmt: skip
    weights = {f"w{i}": np.asarray(w) for i, w in enumerate(model.get_weights())}
    np.savez(out, history=json.dumps(history.history), **weights, **accumulators)
    return 0


if __name__ == "__main__":
    sys.exit(main())
