"""Host copies of Keras variables: one copy of what a save writes, and views where possible.

A checkpoint needs the variables' values in host memory while training goes on. Where a variable
lives in host memory (a CPU device) numpy can view its buffer without a copy; from an
accelerator a host array is made. Either way a save keeps exactly one host copy of what it
writes, made one variable at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from colabkit.checkpoint import dtype_name
from colabkit.errors import ConfigError


def host_copies(variables: Sequence[Any]) -> list[np.ndarray]:
    """Host copies (device buffers may be donated or reused by the next step): one of each,
    made one variable at a time, so that a save holds one host copy of what it writes.

    On JAX one ``device_get`` starts every transfer before waiting for any: one round trip to
    the accelerator per checkpoint instead of one per variable. Elsewhere each variable is read
    as a view where it lives in host memory and copied once (``np.array`` of a TensorFlow
    variable goes through ``__array__`` at a quarter of memcpy's speed or less).
    """
    if keras.backend.backend() == "jax":
        import jax

        values = jax.device_get([v.value for v in variables])
        return [
            np.array(value, copy=True) if on_host(variable) else value
            for variable, value in zip(variables, values, strict=True)
        ]
    return [host_copy(v) for v in variables]


def host_copy(variable: Any) -> np.ndarray:
    """A host copy of one variable's value that nothing else shares."""
    view = host_view(variable)
    return np.array(view, copy=True) if on_host(variable) else view


def host_view(variable: Any) -> np.ndarray:
    """The variable's value as numpy: a view of its own buffer where it lives in host memory
    (valid until the next assignment), else a new host array.

    From an accelerator under JAX the value goes through a CPU device first: ``np.asarray`` of
    an accelerator array caches the host copy on that array for as long as it lives, which for
    a frozen kernel is the whole run (Colab's RAM would hold the frozen model twice).
    """
    value = getattr(variable, "value", variable)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return np.asarray(tf.convert_to_tensor(value))
    if backend == "jax":
        import jax

        if not on_host(variable):
            value = jax.device_put(value, jax.devices("cpu")[0])
        return np.asarray(value)
    return np.asarray(keras.ops.convert_to_numpy(value))


def replica_parts(variable: Any) -> tuple[Any, ...] | None:
    """The per-replica parts of a variable that keeps one value per replica, else None.

    Under a tf.distribute strategy with several replicas, a variable made with
    ``synchronization="on_read"`` (every Keras metric accumulator, the loss tracker's included)
    keeps one partial value per replica and adds them up (or averages them) when read. Such a
    variable holds more than a read returns: how its value is split between the replicas decides
    the order of the float additions still to come, hence the last bits of the epoch's metrics.
    Assigning the read value back splits it evenly, whatever the split was.
    """
    if keras.backend.backend() != "tensorflow":
        return None  # JAX's distribution keeps one global value (sharded or replicated)
    import tensorflow as tf

    value = getattr(variable, "value", variable)
    if getattr(value, "synchronization", None) != tf.VariableSynchronization.ON_READ:
        return None
    parts = getattr(value, "values", None)  # only a distributed variable has parts
    return tuple(parts) if parts is not None and len(parts) > 1 else None


def replica_copies(variable: Any) -> np.ndarray | None:
    """Host copies of each replica's value of a variable that keeps one per replica (stacked,
    replicas first), else None (see :func:`replica_parts`)."""
    parts = replica_parts(variable)
    if parts is None:
        return None
    import tensorflow as tf

    return np.stack([np.asarray(tf.convert_to_tensor(part)) for part in parts])


def on_host(variable: Any) -> bool:
    """Whether ``variable`` lives in host memory (a CPU device), where reading it as numpy
    gives a view of its buffer rather than a copy."""
    value = getattr(variable, "value", variable)
    backend = keras.backend.backend()
    if backend == "jax":
        devices = getattr(value, "devices", None)
        return devices is None or all(d.platform == "cpu" for d in devices())
    if backend == "tensorflow":
        return "CPU" in str(getattr(value, "device", "CPU")).upper()
    return True


def check_storable(variables: Sequence[Any], arrays: Sequence[np.ndarray]) -> None:
    """Refuses, at the first save, a variable whose dtype a checkpoint cannot hold.

    Raises:
        ConfigError: naming the variable's path and dtype (never a surprise at resume).
    """
    for variable, array in zip(variables, arrays, strict=True):
        try:
            dtype_name(array.dtype)
        except TypeError:
            raise ConfigError(
                f"Cannot checkpoint variable {getattr(variable, 'path', variable)}: its dtype "
                f"{getattr(variable, 'dtype', array.dtype)} cannot be stored (it arrives as "
                f"{array.dtype}). Give it a numpy or ml_dtypes dtype (float32, bfloat16, int8, "
                "...) and run again; nothing was saved."
            ) from None
