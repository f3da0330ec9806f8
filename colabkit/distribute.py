"""Scale-out on existing engines: ``tf.distribute`` (TensorFlow), ``keras.distribution`` (JAX).

colabkit never distributes anything itself. It picks the engine's strategy for the hardware it
finds, and ``colabkit.fit(..., strategy=...)`` checks that the model was built in that strategy's
scope, saves from the chief only, and lets every worker restore the same checkpoint. The batch
order stays a function of (seed, epoch, step) over *global* batches, so a run resumes exactly
whatever the number of replicas that splits each batch.

    strategy = colabkit.distribute.strategy()      # TPU, several GPUs, TF_CONFIG, or default
    with strategy.scope():
        model = build_and_compile()
    colabkit.fit(model, x, y, run_dir=..., epochs=..., strategy=strategy)

Known limit (Keras 3.15, TensorFlow 2.21): Keras' own ``model.fit`` fails under
``MultiWorkerMirroredStrategy`` (its symbolic build reduces a per-replica batch, then the train
step's loss reduction fails), so multi-worker training through Keras is not possible on this
stack; ``colabkit.fit`` refuses it up front with that explanation instead of crashing mid-setup.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from colabkit.errors import ColabkitError, invalid_argument

KINDS = ("auto", "default", "mirrored", "multiworker", "tpu")


def strategy(kind: str = "auto", *, environ: Mapping[str, str] | None = None) -> Any:
    """The engine's distribution strategy for ``kind`` on this machine.

    ``"auto"``: a TPU runtime → TPUStrategy; ``TF_CONFIG`` set → MultiWorkerMirroredStrategy;
    more than one GPU → MirroredStrategy; otherwise the default strategy. On the JAX backend:
    ``keras.distribution.DataParallel`` over all devices (set it active with
    ``keras.distribution.set_distribution`` *before* building the model), or None on one device.

    Raises:
        ConfigError: an unknown ``kind``.
    """
    if kind not in KINDS:
        raise invalid_argument("strategy", kind, f"one of {', '.join(KINDS)}")
    environ = os.environ if environ is None else environ
    import keras

    if keras.backend.backend() == "jax":
        return _jax_distribution(kind)
    import tensorflow as tf

    if kind == "auto":
        kind = _auto_kind(environ, gpus=len(tf.config.list_logical_devices("GPU")))
    if kind == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu="local")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if kind == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _auto_kind(environ: Mapping[str, str], *, gpus: int) -> str:
    from colabkit.tpu import detect_tpu

    if detect_tpu(environ).present:
        return "tpu"
    if environ.get("TF_CONFIG"):
        return "multiworker"
    return "mirrored" if gpus > 1 else "default"


def _jax_distribution(kind: str) -> Any:
    import jax
    import keras

    if kind in ("multiworker", "tpu", "mirrored") or (kind == "auto" and len(jax.devices()) > 1):
        return keras.distribution.DataParallel()
    return None


def is_chief(strategy: Any, environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process writes checkpoints: the chief, or worker 0 when there is no chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    task_id = getattr(resolver, "task_id", None)
    if task_type is None:
        config = json.loads(
            (environ if environ is not None else os.environ).get("TF_CONFIG") or "{}"
        )
        task = config.get("task", {})
        task_type, task_id = task.get("type"), task.get("index")
        cluster = config.get("cluster", {})
    else:
        cluster = resolver.cluster_spec().as_dict() if hasattr(resolver, "cluster_spec") else {}
    if task_type in (None, "chief"):
        return True
    return task_type == "worker" and int(task_id or 0) == 0 and "chief" not in cluster


def worker_tag(strategy: Any) -> str:
    """A suffix for per-worker local folders ("" for the chief)."""
    if is_chief(strategy):
        return ""
    resolver = getattr(strategy, "cluster_resolver", None)
    return f"-{getattr(resolver, 'task_type', 'worker')}{getattr(resolver, 'task_id', '')}"


def _workers(strategy: Any) -> int:
    """How many processes (chief and workers) the strategy's cluster has."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not hasattr(resolver, "cluster_spec"):
        return 1
    jobs = resolver.cluster_spec().as_dict()
    return max(1, sum(len(jobs.get(job, ())) for job in ("chief", "worker")))


def check_model_strategy(model: Any, strategy: Any) -> None:
    """The model must have been built in ``strategy.scope()``; multi-worker is refused (see top).

    Raises:
        ColabkitError: the model belongs to another strategy, or the strategy is multi-worker.
    """
    if strategy is None:
        return
    import keras

    if keras.backend.backend() == "jax":
        active = keras.distribution.distribution()
        if active is not strategy:
            raise ColabkitError(
                f"strategy={type(strategy).__name__} is not the active Keras distribution. Call "
                "keras.distribution.set_distribution(strategy) before building the model."
            )
        return
    if _workers(strategy) > 1:
        raise ColabkitError(
            "MultiWorkerMirroredStrategy: Keras 3's model.fit fails under it on this stack (its "
            "symbolic build and loss reduction do not handle per-worker values), so colabkit "
            "cannot train multi-worker yet. Use MirroredStrategy on one machine with several "
            "GPUs, or JAX with keras.distribution."
        )
    owner = getattr(model, "_distribute_strategy", None)
    default = type(strategy).__name__ == "_DefaultDistributionStrategy"
    if owner is not strategy and not (default and owner is None):
        raise ColabkitError(
            f"The model was not built in this strategy's scope (strategy="
            f"{type(strategy).__name__}). Build and compile it inside `with strategy.scope():`."
        )
