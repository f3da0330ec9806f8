"""``colabkit status``: where a run is, from its newest durable checkpoint.

Reads the store only (what survives the VM), never the local cache of the machine it runs on,
and never changes anything. The newest checkpoint of the run's own trajectory (not one a
superseded session left, see ``colabkit.checkpoint.sessions``) whose state reads is the run's
position; its state holds the history, the sessions and the time trained.

    colabkit status /content/drive/MyDrive/colabkit/mnist --json
    colabkit.status("/content/drive/MyDrive/colabkit/mnist")   # a table in a notebook
"""

from __future__ import annotations

import dataclasses
import html
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from colabkit.checkpoint import (
    Chain,
    CheckpointRecord,
    Claim,
    RunState,
    Sessions,
    frozen_object_of,
    inventory,
    is_frozen_object,
    read_state,
    record_from_state,
    space,
    step_of,
    store_call,
)
from colabkit.clock import SYSTEM_CLOCK
from colabkit.duration import format_duration, format_size
from colabkit.errors import ColabkitError, CorruptCheckpointError
from colabkit.forecast import Forecast
from colabkit.storage import LocalStore
from colabkit.storage.base import Space, Store

log = logging.getLogger(__name__)

SCHEMA = 1


@dataclass(frozen=True)
class RunStatus:
    """A run as ``colabkit status`` shows it (``to_json()``: the documented JSON).

    Attributes:
        run: The run's checkpoint store (URL).
        state: ``"not started"`` (no checkpoint), ``"in progress"`` or ``"finished"``.
        stop_reason: Why a finished run stopped early (e.g. ``"stopped by a callback"``).
        global_step: Steps trained (all sessions).
        epoch: Complete epochs.
        step_in_epoch: Steps into the epoch in progress.
        steps_per_epoch: Steps in one epoch.
        epochs: The run's total epochs (None: a run from before colabkit recorded it).
        sessions: Sessions that trained the run (the first, then one per resume).
        train_seconds: Wall time trained, all sessions.
        checkpoint: The newest durable checkpoint: ``name``, ``step``, ``created``, ``size``.
        metrics: The last complete epoch's metrics.
        forecast: The pace of the sessions so far and the training time left.
        session_log: Every session that claimed the run, oldest first: when and where it
            started, from which step, and how it ended (``reason`` None: no end recorded).
        space: Room in the store: ``held`` (bytes of this run's checkpoints and frozen
            objects), and as the store tells it ``free``, ``total``, ``trash`` (bytes, None
            where unknown) and their ``source`` (None: the store cannot tell its room).
    """

    run: str
    state: str
    stop_reason: str | None = None
    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    steps_per_epoch: int | None = None
    epochs: int | None = None
    sessions: int = 0
    train_seconds: float = 0.0
    checkpoint: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    forecast: Forecast | None = None
    session_log: list[dict[str, Any]] = field(default_factory=list)
    space: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "run": self.run,
            "state": self.state,
            "stop_reason": self.stop_reason,
            "global_step": self.global_step,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.epochs,
            "sessions": self.sessions,
            "train_seconds": self.train_seconds,
            "checkpoint": self.checkpoint,
            "metrics": self.metrics,
            "forecast": self.forecast.to_json() if self.forecast is not None else None,
            "session_log": self.session_log,
            "space": self.space,
        }

    def rows(self, now: float | None = None) -> list[tuple[str, str]]:
        """(label, text) pairs: the text output and the notebook table."""
        now = time.time() if now is None else now
        rows = [("run", self.run)]
        if self.state == "not started":
            return [*rows, ("state", "not started: no checkpoint yet")]
        plan = self.forecast
        where = plan.where() if plan is not None else f"step {self.global_step}"
        state = f"{self.state}: {where}"
        if self.stop_reason:
            state += f" ({self.stop_reason})"
        rows.append(("state", state))
        trained = format_duration(self.train_seconds)
        rows.append(("sessions", f"{self.sessions}, {trained} of training"))
        if self.checkpoint is not None:
            age = format_duration(max(0.0, now - self.checkpoint["created"]))
            text = f"{self.checkpoint['name']} ({age} ago)"
            if self.checkpoint.get("frozen"):
                size = self.checkpoint.get("frozen_size")
                stored = f"{format_size(size)}, " if size is not None else "MISSING, "
                text += f"; frozen variables in {self.checkpoint['frozen']} ({stored}stored once)"
            rows.append(("checkpoint", text))
        if self.space is not None:
            rows.append(("space", _describe_space(self.space)))
        if self.metrics:
            rows.append(("metrics", ", ".join(f"{k} {v:.4g}" for k, v in self.metrics.items())))
        if self.state == "in progress" and plan is not None:
            outlook = plan.outlook() or ["not known: no time recorded yet"]
            rows.append(("to finish", "; ".join(outlook)))
        for number, entry in enumerate(self.session_log, 1):
            rows.append((f"session {number}", _describe_session(entry)))
        return rows

    def text(self, now: float | None = None) -> str:
        rows = self.rows(now)
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"{label.ljust(width)}  {text}" for label, text in rows)

    def _repr_html_(self) -> str:
        cells = "".join(
            f"<tr><th style='text-align:left'>{html.escape(label)}</th>"
            f"<td style='text-align:left'>{html.escape(text)}</td></tr>"
            for label, text in self.rows()
        )
        return f"<table>{cells}</table>"

    def __str__(self) -> str:
        return self.text()


def status(run_dir: str | os.PathLike[str]) -> RunStatus:
    """Where the run in ``run_dir`` (a run directory or a store URL) is.

    Raises:
        ColabkitError: there is no such folder (a run directory that does not exist).
        StoreError: the store could not be read.
    """
    store = inventory.run_store(run_dir)
    if isinstance(store, LocalStore) and not store.root.parent.exists():
        raise ColabkitError(
            f"No run at {os.fspath(run_dir)}: the folder does not exist. Pass the run directory "
            "(the folder that holds checkpoints/), or a store URL such as gdrive://colabkit/run."
        )
    return status_of(store)


def status_of(store: Store) -> RunStatus:
    """``status()`` for a store already opened."""
    listed = store_call(store.list)
    room = _space(store, listed)
    infos = [i for i in listed if step_of(i.name) is not None]
    infos.sort(key=lambda info: step_of(info.name), reverse=True)
    sizes = {i.name: i.size for i in listed if is_frozen_object(i.name)}
    with tempfile.TemporaryDirectory(prefix="colabkit-status-") as folder:
        sessions = Sessions(store, Path(folder), SYSTEM_CLOCK)  # read only: never asks the time
        chain = Chain(sessions.read_or_fail())
        log_entries = [_session_entry(claim, end) for claim, end in store_call(sessions.history)]
        readable = _readable(store, infos)
        for info, state, _ in chain.select(readable, record=lambda found: found[2]):
            found = _from_state(store.url, info, state)
            frozen = frozen_object_of(state)
            if frozen is not None and found.checkpoint is not None:
                found.checkpoint.update(frozen=frozen, frozen_size=sizes.get(frozen))
            return replace(found, session_log=log_entries, space=room)
    return RunStatus(run=store.url, state="not started", session_log=log_entries)


def _readable(store: Store, infos: list) -> Iterator[tuple[Any, dict, CheckpointRecord]]:
    """(info, state, record) of each checkpoint whose state reads, in the order given."""
    for info in infos:
        state = _state(store, info.name)
        if state is not None:
            yield info, state, record_from_state(info.name, state, info.size)


def _session_entry(claim: Claim, end: dict | None) -> dict[str, Any]:
    end = end or {}
    return {
        "session": claim.session,
        "started": claim.started,
        "host": claim.host,
        "runtime": claim.runtime,
        "resumed_step": claim.resumed_step,
        "ended": end.get("ended"),
        "reason": end.get("reason"),
        "global_step": end.get("global_step"),
        "epoch": end.get("epoch"),
    }


def _describe_session(entry: dict[str, Any]) -> str:
    started = time.strftime("%b %d %H:%M UTC", time.gmtime(entry["started"]))
    runtime = entry.get("runtime") or {}
    where = ", ".join(
        str(part)
        for part in (
            runtime.get("environment"),
            runtime.get("accelerator"),
            f"keras {runtime['keras']}" if runtime.get("keras") else None,
        )
        if part
    )
    start = entry["resumed_step"]
    text = f"{started} on {entry['host']}{f' ({where})' if where else ''}, from "
    text += "the start" if start is None else f"step {start}"
    if entry["reason"] is None:
        return f"{text}; no end recorded (killed, the VM died, or still training)"
    return f"{text} to step {entry['global_step']}: {entry['reason']}"


def _state(store: Store, name: str) -> dict | None:
    """The checkpoint's state (None where it does not read: an older one then speaks)."""
    try:
        with inventory.local_copy(store, name) as path:
            return read_state(path)
    except FileNotFoundError:
        return None  # pruned while listing
    except CorruptCheckpointError as e:
        log.warning("Skipping %s in %s: %s", name, store.url, e)
        return None


def _space(store: Store, listed: list) -> dict[str, Any]:
    held = sum(i.size for i in listed if step_of(i.name) is not None or is_frozen_object(i.name))
    found = space.read_space(store)
    if found is None:
        return {"held": held, "free": None, "total": None, "trash": None, "source": None}
    return {**dataclasses.asdict(found), "held": held}


def _describe_space(room: dict[str, Any]) -> str:
    text = f"{format_size(room['held'])} of checkpoints"
    if room.get("source") is None:
        return text
    found = Space(room["free"], room["total"], room["trash"], room["source"])
    return f"{text}; {space.describe(found)}"


def _from_state(url: str, info: Any, state: dict) -> RunStatus:
    run = RunState.read(state)
    steps, step = run.steps_per_epoch, run.global_step
    plan = None
    if steps:
        seconds = run.train_seconds
        pace = seconds / step if step > 0 and seconds > 0 else None
        plan = Forecast(
            step, steps, run.total_epochs, seconds_per_step=pace, measured="the sessions so far",
            limits_known=False, ended=run.finished,
        )  # fmt: skip
    return RunStatus(
        run=url,
        state="finished" if run.finished else "in progress",
        stop_reason=run.stop_reason if run.finished else None,
        global_step=step,
        epoch=run.epoch,
        step_in_epoch=run.step,
        steps_per_epoch=steps,
        epochs=run.total_epochs,
        sessions=len(run.resumes) + 1,
        train_seconds=run.train_seconds,
        checkpoint={
            "name": info.name,
            "step": step_of(info.name),
            "created": info.modified if run.created is None else run.created,
            "size": info.size,
        },
        metrics=run.latest_metrics,
        forecast=plan,
    )
