"""Capture and restore everything that shapes the rest of a Keras training run.

``model.save_weights`` leaves out the random seed generator states (Dropout masks would differ
after a resume), the running metric accumulators of the current epoch, and callback state. Here a
snapshot is a flat ``{name: numpy array}`` dict plus a JSON-able dict:

- ``model/NNNN``: every model variable, in ``model.variables`` order (trainable, non-trainable,
  seed generator states). Keyed by position, not by path: auto-generated layer names change from
  process to process, positions do not. Big variables proven unchanged since the run stored them
  once are left to its frozen object (see :mod:`colabkit.training.frozen`).
- ``optimizer/NNNN``: the optimizer variables (iteration count, learning rate, slots).
- ``metrics/NNNN``: the metric accumulators (restored only when resuming inside an epoch).
- ``replicas/<key>``: beside ``<key>``'s total, each replica's own value of a variable that keeps
  one per replica (metric accumulators under tf.distribute; see ``host.replica_parts``).
- ``callbacks/<i>/...``: arrays inside callback states (e.g. EarlyStopping's best weights).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from colabkit.checkpoint import FROZEN_KEY, RunState, dtype_from_name
from colabkit.errors import ResumeMismatchError
from colabkit.training.host import check_storable, host_copies, replica_copies, replica_parts

if TYPE_CHECKING:
    from colabkit.training.frozen import FrozenVariables

log = logging.getLogger(__name__)

#: Prefix of the per-replica values saved beside a variable's total (see the module docstring).
REPLICAS = "replicas"

#: Attributes that hold the state of Keras' own stateful callbacks.
KERAS_CALLBACK_STATE: dict[type, tuple[str, ...]] = {
    keras.callbacks.EarlyStopping: ("wait", "stopped_epoch", "best", "best_weights", "best_epoch"),
    keras.callbacks.ReduceLROnPlateau: ("wait", "cooldown_counter", "best"),
    keras.callbacks.ModelCheckpoint: ("best",),
}


#: The framework module behind each Keras backend, whose version a checkpoint records.
_FRAMEWORK = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def runtime_versions() -> dict[str, str]:
    """What decides a run's numbers besides its own code: recorded in every checkpoint.

    Keras and its backend framework (tensorflow, jax or torch), numpy (the data order's random
    streams are not promised stable across numpy releases) and Python's minor version.
    """
    backend = keras.backend.backend()
    versions = {"keras": keras.version(), "backend": backend}
    framework = sys.modules.get(_FRAMEWORK.get(backend, ""))
    if framework is not None:
        versions[backend] = str(getattr(framework, "__version__", "unknown"))
    versions["numpy"] = np.__version__
    versions["python"] = "{}.{}".format(*sys.version_info[:2])
    return versions


def describe_runtime() -> dict[str, Any]:
    """Where this session trains, for the run's session log: the environment, the GPUs the
    driver reports, and the versions checkpoints record."""
    from colabkit import env, gpu

    names = [g.name for g in gpu.query_gpus().gpus]
    accelerator = ", ".join(f"{names.count(n)}x {n}" for n in sorted(set(names))) or "no GPU"
    return {
        "environment": env.detect(session_limit=None).kind,
        "accelerator": accelerator,
        **runtime_versions(),
    }


def version_drift(saved: RunState) -> list[str]:
    """How the versions a checkpoint was written with differ from this runtime's.

    Returns:
        One ``"keras 3.10.0 -> 3.13.2"`` item per difference; empty when nothing differs or
        the checkpoint recorded nothing comparable.
    """
    versions = saved.versions
    now = runtime_versions()
    return [
        f"{key} {versions[key]} -> {now.get(key, 'absent')}"
        for key in ("keras", "backend", *_FRAMEWORK, "numpy", "python")
        if versions.get(key) is not None and str(versions[key]) != now.get(key)
    ]


def warn_on_version_drift(saved: RunState, name: str) -> list[str]:
    """Says in one warning when a checkpoint comes from other versions; returns the drift.

    A run can cross a runtime upgrade (Colab moved Keras 3.10 -> 3.13.2 in March 2026): it goes
    on, but identical results to an uninterrupted run are no longer promised.
    """
    drift = version_drift(saved)
    if drift:
        log.warning(
            "Resuming from %s, written with other versions (%s): training continues, but the "
            "result is no longer promised to be bitwise equal to an uninterrupted run.",
            name,
            ", ".join(drift),
        )
    return drift


def ensure_built(model: keras.Model, batch: Any = None) -> None:
    """Creates every variable a checkpoint holds before values are assigned to them.

    On TensorFlow, Keras builds the metric accumulators only when it traces the first train
    step, too late for restoring an interrupted epoch's metrics; Keras' own symbolic build (the
    one JAX runs at the start of ``fit``) creates them from a batch's shapes, without computing.
    """
    symbolic_build = getattr(model, "_symbolic_build", None)
    if batch is not None and symbolic_build is not None:
        strategy = getattr(model, "distribute_strategy", None)
        if strategy is not None and hasattr(strategy, "scope"):
            with strategy.scope():
                symbolic_build(data_batch=batch)
        else:
            symbolic_build(data_batch=batch)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)


@dataclass(frozen=True)
class Capture:
    """What a save takes from the model on the training thread.

    Attributes:
        arrays: Host copies of the model, optimizer and metric variables, less what the
            checkpoint leaves to the run's frozen object.
        frozen: The checkpoint's ``frozen`` record (None: it leaves nothing out).
        finish: Completes the checkpoint in the writer thread (checks deferred there; see
            ``FrozenVariables.finisher``), or None.
    """

    arrays: dict[str, np.ndarray]
    frozen: dict | None = None
    finish: Callable[[dict, dict], None] | None = None


def capture_variables(model: keras.Model, frozen: FrozenVariables | None = None) -> Capture:
    """Host copies of the model, optimizer and metric variables, less what ``frozen`` proves
    unchanged since the run stored it once.

    Raises:
        ConfigError: a variable's dtype cannot be stored (naming it), before anything is saved.
    """
    unchanged, deferred = frozen.left_out(model) if frozen is not None else ({}, {})
    groups = [("model", model.variables)]
    if getattr(model, "optimizer", None) is not None:
        groups.append(("optimizer", model.optimizer.variables))
    groups.append(("metrics", model.metrics_variables))
    named = [
        (f"{prefix}/{i:04d}", variable)
        for prefix, variables in groups
        for i, variable in enumerate(variables)
        if f"{prefix}/{i:04d}" not in unchanged
    ]
    variables = [variable for _, variable in named]
    values = host_copies(variables)
    check_storable(variables, values)
    arrays = dict(zip((name for name, _ in named), values, strict=True))
    arrays.update(_replica_arrays(named))
    if frozen is None:
        return Capture(arrays)
    return Capture(arrays, frozen.state(unchanged), frozen.finisher(deferred))


def _replica_arrays(named: Sequence[tuple[str, Any]]) -> dict[str, np.ndarray]:
    """``replicas/<key>``: the total under ``<key>``, assigned back, would be split evenly across
    the replicas, and the epoch's remaining additions would round otherwise than the
    uninterrupted run's (its logged loss off in the last bits)."""
    copies = ((key, replica_copies(variable)) for key, variable in named)
    return {f"{REPLICAS}/{key}": values for key, values in copies if values is not None}


def _assign_group(prefix: str, variables: Sequence[Any], arrays: Mapping[str, np.ndarray]) -> None:
    """Assigns ``arrays`` to ``variables`` by position, once every shape is known to fit."""
    _check_group(prefix, variables, arrays)
    _assign(prefix, variables, arrays)


def _check_group(
    prefix: str,
    variables: Sequence[Any],
    arrays: Mapping[str, np.ndarray],
    left_out: Collection[str] = (),
) -> None:
    """Refuses a checkpoint whose ``prefix`` arrays do not fit ``variables``: their count (with
    the keys it ``left_out`` to the frozen object) and each array's shape."""
    present = {k for k in arrays if k.startswith(prefix + "/")}
    saved = present | {k for k in left_out if k.startswith(prefix + "/")}
    keys = [f"{prefix}/{i:04d}" for i in range(len(variables))]  # by position, not by sorting
    if saved != set(keys):
        raise ResumeMismatchError(
            f"The checkpoint has {len(saved)} {prefix} variables, this model has "
            f"{len(variables)}. Resume with the model that made the checkpoint, or pass "
            "fresh=True to archive the old checkpoints and start over."
        )
    for variable, key in zip(variables, keys, strict=True):
        if key in present:
            check_shape(variable, arrays[key], key)
        replicas = arrays.get(f"{REPLICAS}/{key}")
        if replicas is not None:
            check_shape(variable, replicas[0], f"{REPLICAS}/{key}")


def check_shape(variable: Any, value: np.ndarray, key: str) -> None:
    """Refuses ``value`` for ``variable`` when their shapes differ (one line, the fix)."""
    if tuple(value.shape) != tuple(variable.shape):
        raise ResumeMismatchError(
            f"Checkpoint variable {key} has shape {tuple(value.shape)}, the model's "
            f"{variable.path} has shape {tuple(variable.shape)}. Resume with the same model, "
            "or pass fresh=True to archive the old checkpoints and start over."
        )


def _assign(prefix: str, variables: Sequence[Any], arrays: Mapping[str, np.ndarray]) -> None:
    for i, variable in enumerate(variables):
        key = f"{prefix}/{i:04d}"
        if key in arrays and not _assign_replicas(variable, arrays.get(f"{REPLICAS}/{key}")):
            assign(variable, arrays[key])


def _assign_replicas(variable: Any, values: np.ndarray | None) -> bool:
    """Gives each replica of ``variable`` its saved value; False where the checkpoint has none
    (one replica, or saved before colabkit kept them) or the run now has another number of
    replicas (its numbers change anyway): the caller then assigns the total."""
    if values is None:
        return False
    parts = replica_parts(variable)
    if parts is None or len(parts) != len(values):
        return False
    dtype = numpy_dtype(variable.dtype)
    for part, value in zip(parts, values, strict=True):
        part.assign(_as_dtype(value, dtype))
    return True


def assign(variable: Any, value: np.ndarray) -> None:
    """Assigns a checkpoint's array to a variable, in the variable's dtype."""
    variable.assign(_as_dtype(value, numpy_dtype(variable.dtype)))


def numpy_dtype(dtype: Any) -> np.dtype:
    """The numpy dtype of a Keras dtype name (``ml_dtypes`` for bfloat16, float8_*, int4)."""
    try:
        return np.dtype(dtype)
    except TypeError:
        return dtype_from_name(str(dtype))


def _as_dtype(value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``value`` as ``dtype``. Raw bytes of the same width (``<V2``: how colabkit before format 2
    stored bfloat16 and float8) are the variable's own values: viewed, not converted."""
    if value.dtype == dtype:
        return value
    if value.dtype.kind == "V" and value.dtype.itemsize == dtype.itemsize:
        return value.view(dtype)
    return value.astype(dtype, copy=False)


def restore_variables(
    model: keras.Model,
    arrays: Mapping[str, np.ndarray],
    *,
    metrics: bool,
    state: Mapping[str, Any] | None = None,
    frozen: FrozenVariables | None = None,
) -> None:
    """Assigns saved values to the model's variables (all shapes are checked first).

    Args:
        state: The checkpoint's state: its ``frozen`` record names the variables it left out.
        frozen: Brings those back (compared with the model, read from the frozen object where
            they differ) and keeps checking them at later saves.
    """
    ensure_built(model)
    record = (state or {}).get(FROZEN_KEY)
    if record and frozen is None:
        raise ResumeMismatchError(
            "This checkpoint leaves frozen variables to the run's frozen object, and this "
            "caller cannot read it: resume with colabkit.fit or colabkit.callbacks."
        )
    _check_group("model", model.variables, arrays, set(record["arrays"]) if record else ())
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        _check_group("optimizer", optimizer.variables, arrays)
    if frozen is not None:  # everything fits: the frozen variables that differ come in first
        frozen.restore(model, state or {})
    _assign("model", model.variables, arrays)
    if optimizer is not None:
        _assign("optimizer", optimizer.variables, arrays)
    if frozen is not None:
        frozen.settle(model)
    if metrics:
        restore_metrics(model, arrays)


def restore_metrics(model: keras.Model, arrays: Mapping[str, np.ndarray]) -> None:
    """Restores the running metric accumulators of an interrupted epoch."""
    _assign_group("metrics", model.metrics_variables, arrays)


def _digest(parts: Iterable[Any]) -> str:
    text = json.dumps(list(parts), separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_fingerprint(model: keras.Model) -> str:
    """A digest of the architecture: model class, variable shapes and trainability, in order."""
    return _digest(
        [type(model).__name__] + [[list(v.shape), bool(v.trainable)] for v in model.variables]
    )


def optimizer_fingerprint(model: keras.Model) -> str:
    """A digest of the optimizer's class and variable shapes."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return "none"
    return _digest([type(optimizer).__name__] + [list(v.shape) for v in optimizer.variables])


# ---------------------------------------------------------------------------- callback state


def _state_attributes(callback: Any) -> tuple[str, ...] | None:
    for cls, names in KERAS_CALLBACK_STATE.items():
        if isinstance(callback, cls):
            return names
    return None


def get_callback_state(callback: Any) -> dict[str, Any] | None:
    """The state of a callback: its ``get_state()`` or, for Keras' own, known attributes."""
    if hasattr(callback, "get_state") and hasattr(callback, "set_state"):
        return dict(callback.get_state())
    names = _state_attributes(callback)
    if names is None:
        return None
    return {name: getattr(callback, name, None) for name in names}


def set_callback_state(callback: Any, state: Mapping[str, Any]) -> None:
    if hasattr(callback, "get_state") and hasattr(callback, "set_state"):
        callback.set_state(dict(state))
        return
    for name, value in state.items():
        setattr(callback, name, value)


def _pack(value: Any, prefix: str, arrays: dict[str, np.ndarray]) -> Any:
    """JSON-able form of ``value``; arrays move into ``arrays`` and leave a reference."""
    if isinstance(value, np.ndarray):
        key = f"{prefix}/{len(arrays):04d}"
        arrays[key] = np.array(value, copy=True)
        return {"__array__": key}
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}
    if isinstance(value, dict):
        return {str(k): _pack(v, prefix, arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_pack(v, prefix, arrays) for v in value]
    return value


def _unpack(value: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            return np.array(arrays[value["__array__"]])
        if set(value) == {"__float__"}:
            return float(value["__float__"])
        return {k: _unpack(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_unpack(v, arrays) for v in value]
    return value


def capture_callbacks(callbacks: Sequence[Any]) -> tuple[list[Any], dict[str, np.ndarray]]:
    """States of the stateful callbacks, in order, split into JSON and arrays.

    Stateless callbacks (CSVLogger, TensorBoard, ...) are skipped, so adding or removing one
    between sessions does not disturb the matching on resume.
    """
    states: list[Any] = []
    arrays: dict[str, np.ndarray] = {}
    for i, callback in enumerate(callbacks):
        state = get_callback_state(callback)
        if state is not None:
            packed = _pack(state, f"callbacks/{i}", arrays)
            states.append({"class": type(callback).__name__, "state": packed})
    return states, arrays


def restore_callbacks(
    callbacks: Sequence[Any], states: Sequence[Any], arrays: Mapping[str, np.ndarray]
) -> None:
    """Puts saved states back into the stateful callbacks, matched by class, in order.

    A stateful callback with no saved state (added since) starts fresh, and a saved state with
    no callback (removed since) is dropped; both are logged, since the run then differs from
    an uninterrupted one.
    """
    unused = [s for s in states if s is not None]
    for callback in callbacks:
        if get_callback_state(callback) is None:
            continue
        name = type(callback).__name__
        entry = next((s for s in unused if s["class"] == name), None)
        if entry is None:
            log.warning(
                "No saved state for callback %s (new since the checkpoint): it starts fresh.", name
            )
            continue
        unused.remove(entry)
        set_callback_state(callback, _unpack(entry["state"], arrays))
    for entry in unused:
        log.warning(
            "The checkpoint holds state for a %s callback that this call does not pass.",
            entry["class"],
        )
