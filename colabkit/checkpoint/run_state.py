"""The saved run state: what ``state.json`` in every checkpoint says about the run.

One owner of its keys. The training loop keeps a ``RunState`` as it trains and saves it with every
checkpoint, ``colabkit.callbacks.Checkpoint`` writes the smaller one it knows, the checkpoint
manager adds the checkpoint's own facts (``with_checkpoint_facts``), and every reader (resume,
``colabkit status``, ``colabkit ckpt``, the catalogue) reads it back through ``RunState.read``.

``read`` never trusts a value's type: a checkpoint written by an older colabkit (keys missing), by
the callbacks (no ``steps_per_epoch``), or edited by hand reads with each odd value at its default,
so a listing or a status report never fails on one. Keys it does not know (a newer colabkit's)
are kept in ``other`` and written back unchanged; the file's own keys (the frozen-variables
record, the format's versions) are the format's, never carried into the next checkpoint.
Keras-free: ``colabkit status`` and ``ckpt`` read it without importing Keras.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RunState", "with_checkpoint_facts"]

_WRITTEN = (
    "run", "steps_per_epoch", "epoch", "step_in_epoch", "global_step", "history", "resumes",
    "finished", "stop_reason", "train_seconds", "epoch_fingerprint", "total_epochs", "callbacks",
    "versions", "step", "created", "checkpoint_metrics", "session", "lineage",
)  # fmt: skip

#: Keys of the checkpoint's own (``format.py``: the frozen-variables record, the versions of the
#: file), and colabkit 0.1's versions: never carried from one checkpoint into the next, where
#: a stale frozen record would name variables the new checkpoint holds in full.
_NOT_CARRIED = ("frozen", "colabkit_version", "format_version", "keras")


@dataclass
class RunState:
    """Where a run is and what it has produced, as saved with each checkpoint.

    Written by the training side:
        config: The run's identity (batch size, sample counts, seed, model and optimizer
            fingerprints); a resume with other values is refused. Saved as ``run``.
        steps_per_epoch: Steps in one epoch; None where the writer does not know it (the
            ``Checkpoint`` callback).
        epoch, step: The 0-based epoch and the steps of it already trained (``step_in_epoch``).
        counted_steps: Steps trained, as the writer counted them (``global_step``; what
            ``global_step`` says where ``steps_per_epoch`` is unknown).
        history: Keras' per-epoch logs of the whole run.
        resumes: Where each resume started (``epoch``, ``step``, ``global_step``, ``time``).
        finished: The run trained all its epochs, or a callback stopped it (``stop_reason``).
        train_seconds: Wall time trained, all sessions.
        epoch_fingerprint: The epoch's first batch, for ``tf.data`` input.
        total_epochs: The run's ``epochs``.
        callbacks: The user's callbacks' state.
        versions: The library versions that wrote it.

    Added by ``CheckpointManager.save`` (read-only for the training side):
        checkpoint_step, created, checkpoint_metrics, session, lineage.

    Read only:
        other: Keys neither this module nor the file format owns (a newer colabkit's),
            written back as they were.
        has_epoch: The state said its epoch (a checkpoint saved through the bare
            ``CheckpointManager.save`` need not; then ``epoch`` reads 0).
    """

    config: dict[str, Any] = field(default_factory=dict)
    steps_per_epoch: int | None = None
    epoch: int = 0
    step: int = 0
    counted_steps: int | None = None
    history: dict[str, list[float]] = field(default_factory=dict)
    resumes: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False
    stop_reason: str | None = None
    train_seconds: float = 0.0
    epoch_fingerprint: str | None = None
    total_epochs: int | None = None
    callbacks: list[Any] = field(default_factory=list)
    versions: dict[str, Any] = field(default_factory=dict)
    checkpoint_step: int | None = None
    created: float | None = None
    checkpoint_metrics: dict[str, float] = field(default_factory=dict)
    session: str | None = None
    lineage: list[Any] = field(default_factory=list)
    other: dict[str, Any] = field(default_factory=dict)
    has_epoch: bool = True  # read: the state said its epoch (a bare manager.save need not)

    @property
    def global_step(self) -> int:
        """Steps trained in the whole run."""
        if self.steps_per_epoch:
            return self.epoch * self.steps_per_epoch + self.step
        for counted in (self.counted_steps, self.checkpoint_step):
            if counted is not None:
                return counted
        return 0

    @property
    def latest_metrics(self) -> dict[str, float]:
        """The newest epoch's value of each metric in the history."""
        return {k: float(v[-1]) for k, v in self.history.items() if v}

    @classmethod
    def read(cls, state: Mapping[str, Any]) -> RunState:
        """The run state of a decoded ``state.json`` (odd values read as their defaults)."""
        history = state.get("history")
        steps = _natural(state.get("steps_per_epoch"))
        return cls(
            config=dict(_of(state.get("run"), Mapping, {})),
            steps_per_epoch=steps or None,
            epoch=_natural(state.get("epoch")) or 0,
            step=_natural(state.get("step_in_epoch")) or 0,
            counted_steps=_natural(state.get("global_step")),
            history={
                str(k): list(v)
                for k, v in _of(history, Mapping, {}).items()
                if isinstance(v, list) and all(x is None or _is_number(x) for x in v)
            },
            resumes=[
                dict(r) for r in _of(state.get("resumes"), list, []) if isinstance(r, Mapping)
            ],
            finished=state.get("finished") is True,
            stop_reason=_of(state.get("stop_reason"), str, None),
            train_seconds=_seconds(state.get("train_seconds")),
            epoch_fingerprint=_of(state.get("epoch_fingerprint"), str, None),
            total_epochs=_natural(state.get("total_epochs")) or None,
            callbacks=list(_of(state.get("callbacks"), list, [])),
            versions=_versions(state),
            checkpoint_step=_natural(state.get("step")),
            created=_seconds(state.get("created")) if _is_number(state.get("created")) else None,
            checkpoint_metrics={
                str(k): float(v)
                for k, v in _of(state.get("checkpoint_metrics"), Mapping, {}).items()
                if _is_number(v)
            },
            session=_of(state.get("session"), str, None),
            lineage=list(_of(state.get("lineage"), list, [])),
            other={k: v for k, v in state.items() if k not in _WRITTEN + _NOT_CARRIED},
            has_epoch=_natural(state.get("epoch")) is not None,
        )

    def to_json(self) -> dict[str, Any]:
        """The ``state.json`` object (the manager's facts left out until it adds them)."""
        written: dict[str, Any] = {
            **self.other,
            "global_step": self.global_step,
            "epoch": self.epoch,
            "step_in_epoch": self.step,
            "steps_per_epoch": self.steps_per_epoch,
            "run": self.config,
            "history": self.history,
            "resumes": self.resumes,
            "finished": self.finished,
            "stop_reason": self.stop_reason,
            "train_seconds": self.train_seconds,
            "epoch_fingerprint": self.epoch_fingerprint,
            "total_epochs": self.total_epochs,
            "versions": self.versions,
        }
        if self.callbacks:
            written["callbacks"] = self.callbacks
        return written


def with_checkpoint_facts(
    state: Mapping[str, Any],
    *,
    step: int,
    metrics: Mapping[str, float],
    session: str | None,
    lineage: list[Any],
) -> dict[str, Any]:
    """``state`` with what the checkpoint manager knows of the checkpoint it is saving."""
    return {
        **state,
        "step": int(step),
        "checkpoint_metrics": dict(metrics),
        "session": session,
        "lineage": lineage,
    }


def _versions(state: Mapping[str, Any]) -> dict[str, Any]:
    versions = state.get("versions")
    if isinstance(versions, Mapping):
        return dict(versions)
    old = state.get("keras")  # colabkit 0.1 recorded Keras and the backend only
    if isinstance(old, Mapping):
        return {"keras": old.get("version"), "backend": old.get("backend")}
    return {}


def _of(value: Any, kind: type, default: Any) -> Any:
    return value if isinstance(value, kind) else default


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _natural(value: Any) -> int | None:
    """A non-negative integer, or None (a bool, a float, a string or a negative is not one)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _seconds(value: Any) -> float:
    if _is_number(value) and math.isfinite(value) and value >= 0:
        return float(value)
    return 0.0
