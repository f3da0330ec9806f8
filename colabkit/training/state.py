"""Capture and restore everything that shapes the rest of a Keras training run.

``model.save_weights`` leaves out the random seed generator states (Dropout masks would differ
after a resume), the running metric accumulators of the current epoch, and callback state. Here a
snapshot is a flat ``{name: numpy array}`` dict plus a JSON-able dict:

- ``model/NNNN``: every model variable, in ``model.variables`` order (trainable, non-trainable,
  seed generator states). Keyed by position, not by path: auto-generated layer names change from
  process to process, positions do not.
- ``optimizer/NNNN``: the optimizer variables (iteration count, learning rate, slots).
- ``metrics/NNNN``: the metric accumulators (restored only when resuming inside an epoch).
- ``callbacks/<i>/...``: arrays inside callback states (e.g. EarlyStopping's best weights).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import keras
import numpy as np

from colabkit.errors import ResumeMismatchError

log = logging.getLogger(__name__)

#: Attributes that hold the state of Keras' own stateful callbacks.
KERAS_CALLBACK_STATE: dict[type, tuple[str, ...]] = {
    keras.callbacks.EarlyStopping: ("wait", "stopped_epoch", "best", "best_weights", "best_epoch"),
    keras.callbacks.ReduceLROnPlateau: ("wait", "cooldown_counter", "best"),
    keras.callbacks.ModelCheckpoint: ("best",),
}


def _host_copies(variables: Sequence[Any]) -> list[np.ndarray]:
    """Fresh host copies (device buffers may be donated or reused by the next step).

    On JAX one ``device_get`` starts every transfer before waiting for any: one round trip to
    the accelerator per checkpoint instead of one per variable.
    """
    if keras.backend.backend() == "jax":
        import jax

        values = jax.device_get([v.value for v in variables])
    else:
        values = [keras.ops.convert_to_numpy(v) for v in variables]
    return [np.array(value, copy=True) for value in values]


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


def version_drift(saved_state: Mapping[str, Any]) -> list[str]:
    """How the versions a checkpoint was written with differ from this runtime's.

    Returns:
        One ``"keras 3.10.0 -> 3.13.2"`` item per difference; empty when nothing differs or
        the checkpoint recorded nothing comparable.
    """
    saved = saved_state.get("versions")
    if not isinstance(saved, Mapping):  # colabkit 0.1 recorded Keras and the backend only
        old = saved_state.get("keras")
        saved = (
            {"keras": old.get("version"), "backend": old.get("backend")}
            if isinstance(old, Mapping)
            else {}
        )
    now = runtime_versions()
    return [
        f"{key} {saved[key]} -> {now.get(key, 'absent')}"
        for key in ("keras", "backend", *_FRAMEWORK, "numpy", "python")
        if saved.get(key) is not None and str(saved[key]) != now.get(key)
    ]


def warn_on_version_drift(saved_state: Mapping[str, Any], name: str) -> list[str]:
    """Says in one warning when a checkpoint comes from other versions; returns the drift.

    A run can cross a runtime upgrade (Colab moved Keras 3.10 -> 3.13.2 in March 2026): it goes
    on, but identical results to an uninterrupted run are no longer promised.
    """
    drift = version_drift(saved_state)
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


def capture_variables(model: keras.Model) -> dict[str, np.ndarray]:
    """Host copies of the model, optimizer and metric variables."""
    groups = [("model", model.variables)]
    if getattr(model, "optimizer", None) is not None:
        groups.append(("optimizer", model.optimizer.variables))
    groups.append(("metrics", model.metrics_variables))
    names = [f"{prefix}/{i:04d}" for prefix, variables in groups for i in range(len(variables))]
    values = _host_copies([v for _, variables in groups for v in variables])
    return dict(zip(names, values, strict=True))


def _assign_group(prefix: str, variables: Sequence[Any], arrays: Mapping[str, np.ndarray]) -> None:
    saved = sorted(k for k in arrays if k.startswith(prefix + "/"))
    if len(saved) != len(variables):
        raise ResumeMismatchError(
            f"The checkpoint has {len(saved)} {prefix} variables, this model has "
            f"{len(variables)}. Resume with the model that made the checkpoint, or pass "
            "fresh=True to archive the old checkpoints and start over."
        )
    pairs = list(zip(variables, (arrays[k] for k in saved), strict=True))
    for (variable, value), key in zip(pairs, saved, strict=True):
        if tuple(value.shape) != tuple(variable.shape):
            raise ResumeMismatchError(
                f"Checkpoint variable {key} has shape {tuple(value.shape)}, the model's "
                f"{variable.path} has shape {tuple(variable.shape)}. Resume with the same model, "
                "or pass fresh=True to archive the old checkpoints and start over."
            )
    for variable, value in pairs:
        variable.assign(value.astype(variable.dtype, copy=False))


def restore_variables(
    model: keras.Model, arrays: Mapping[str, np.ndarray], *, metrics: bool
) -> None:
    """Assigns saved values to the model's variables (all shapes are checked first)."""
    ensure_built(model)
    _assign_group("model", model.variables, arrays)
    if getattr(model, "optimizer", None) is not None:
        _assign_group("optimizer", model.optimizer.variables, arrays)
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
