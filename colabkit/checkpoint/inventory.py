"""What ``colabkit ckpt ls|verify|prune`` report about a run's checkpoints.

The CLI stays a thin layer: it parses, calls these functions and prints. A run directory keeps
its checkpoints in ``RUN_DIR/checkpoints``; a store URL (``gdrive://...``, ``memory://...``)
names the store directly.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from colabkit.checkpoint.catalog import record_from_state, store_call
from colabkit.checkpoint.chain import Chain
from colabkit.checkpoint.format import step_of, verify
from colabkit.checkpoint.policy import CheckpointRecord
from colabkit.checkpoint.sessions import Sessions
from colabkit.clock import SYSTEM_CLOCK
from colabkit.duration import format_duration, format_size
from colabkit.errors import (
    ConfigError,
    CorruptCheckpointError,
    UnsupportedCheckpointError,
    invalid_argument,
)
from colabkit.storage import LocalStore, open_store
from colabkit.storage.base import Store

CHECKPOINTS_FOLDER = "checkpoints"


@dataclass(frozen=True)
class CheckpointStatus:
    """One checkpoint as ``colabkit ckpt`` shows it.

    Attributes:
        name: File name in the store.
        step: Global step.
        epoch: Epoch from its state (None if unreadable or absent).
        size: Bytes.
        created: Creation time from its state, else the store's modification time.
        verified: Whether every member matched its checksum.
        problem: Why it did not verify (None if it did).
        newer_format: Written in a checkpoint format newer than this colabkit reads (a newer
            colabkit wrote it): not damaged, never pruned here.
        superseded: Written by a session after another one had taken the run over (see
            ``colabkit.checkpoint.sessions``): never resumed from, never counted or pruned here.
    """

    name: str
    step: int
    epoch: int | None
    size: int
    created: float
    verified: bool
    problem: str | None = None
    newer_format: bool = False
    superseded: bool = False

    def to_json(self) -> dict:
        return asdict(self)


def run_store(run_dir: str | os.PathLike[str]) -> Store:
    """The store holding a run's checkpoints: ``RUN_DIR/checkpoints``, or a store URL.

    A folder that holds checkpoint files itself (the ``checkpoints`` folder given directly) is
    used as it is.
    """
    text = os.fspath(run_dir)
    try:
        store = open_store(text)
    except ConfigError as e:
        raise invalid_argument("run_dir", text, getattr(e, "expected", str(e))) from None
    if "://" in text and not text.startswith("file://"):
        return store
    folder = Path(store.root) if isinstance(store, LocalStore) else Path(text)
    if any(step_of(p.name) is not None for p in _entries(folder)):
        return LocalStore(folder)
    return LocalStore(folder / CHECKPOINTS_FOLDER)


def inspect_store(store: Store) -> list[CheckpointStatus]:
    """Every checkpoint of ``store``, newest first, each fully verified."""
    infos = [i for i in store_call(store.list) if step_of(i.name) is not None]
    infos.sort(key=lambda info: step_of(info.name), reverse=True)
    with tempfile.TemporaryDirectory() as cache:
        chain = Chain(Sessions(store, Path(cache), SYSTEM_CLOCK).read_or_fail())
    found = [_status(store, info) for info in infos]
    judged = [(status, record) for status, record in found if record is not None]
    own = {id(status) for status, _ in chain.select(judged, record=lambda pair: pair[1])}
    return [
        replace(status, superseded=record is not None and id(status) not in own)
        for status, record in found
    ]


def in_use(statuses: list[CheckpointStatus]) -> list[CheckpointStatus]:
    """The run's own checkpoints (newest first): superseded ones left out."""
    return [s for s in statuses if not s.superseded]


def prune(store: Store, keep: int, statuses: list[CheckpointStatus]) -> list[str]:
    """Deletes all but the newest ``keep`` checkpoints; never the newest one that verifies.

    Checkpoints in a newer format than this colabkit reads are never deleted: it cannot tell
    what they hold. Superseded ones (another session's trajectory) neither count nor go.

    Args:
        store: Where they live.
        keep: How many of the newest to keep (>= 1).
        statuses: ``inspect_store(store)`` (newest first).

    Returns:
        The names deleted.
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise invalid_argument("keep", keep, "an integer >= 1")
    own = in_use(statuses)
    kept = {s.name for s in own[:keep]}
    newest_good = next((s.name for s in own if s.verified), None)
    if newest_good is not None:
        kept.add(newest_good)
    deleted = []
    for status in own:
        if status.name not in kept and not status.newer_format:
            store_call(store.delete, status.name)
            deleted.append(status.name)
    return deleted


def _status(store: Store, info) -> tuple[CheckpointStatus, CheckpointRecord | None]:
    """One checkpoint verified, and its record (None: its state did not read)."""
    with local_copy(store, info.name) as path:
        newer = False
        try:
            state, problem = verify(path), None
        except CorruptCheckpointError as e:
            state, problem = {}, str(e)
        except UnsupportedCheckpointError as e:
            state, problem, newer = {}, str(e), True
    epoch = state.get("epoch")
    record = record_from_state(info.name, state, info.size)
    status = CheckpointStatus(
        name=info.name,
        step=step_of(info.name),
        epoch=epoch if isinstance(epoch, int) else None,
        size=info.size,
        created=float(state.get("created", info.modified)),
        verified=problem is None,
        problem=problem,
        newer_format=newer,
    )
    return status, record if state else None


@contextlib.contextmanager
def local_copy(store: Store, name: str) -> Iterator[Path]:
    """The checkpoint as a local file: in place for a folder, else a temporary download."""
    if isinstance(store, LocalStore):
        yield store.path(name)
        return
    with tempfile.TemporaryDirectory(prefix="colabkit-ckpt-") as folder:
        path = Path(folder) / name
        store_call(store.get, name, path)
        yield path


def _entries(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def format_table(statuses: list[CheckpointStatus], now: float | None = None) -> str:
    """``ckpt ls`` as aligned text: step, epoch, size, age, verified, name."""
    now = time.time() if now is None else now
    rows = [("STEP", "EPOCH", "SIZE", "AGE", "VERIFIED", "NAME")]
    for s in statuses:
        epoch = "-" if s.epoch is None else str(s.epoch)
        verified = "yes" if s.verified else "NO"
        verified += ", superseded" if s.superseded else ""
        age = format_duration(max(0.0, now - s.created))
        rows.append((str(s.step), epoch, format_size(s.size), age, verified, s.name))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)


def nothing_found(store: Store) -> str:
    """The message for a run without checkpoints, saying when its folder does not even exist."""
    message = f"no checkpoints in {store.url}"
    if isinstance(store, LocalStore) and not store.root.exists():
        message += " (the folder does not exist)"
    return message
