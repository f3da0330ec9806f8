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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from colabkit.checkpoint import runs
from colabkit.checkpoint.catalog import record_from_state, store_call
from colabkit.checkpoint.chain import Chain
from colabkit.checkpoint.format import frozen_object_of, is_frozen_object, step_of, verify
from colabkit.checkpoint.policy import CheckpointRecord
from colabkit.checkpoint.run_state import RunState
from colabkit.checkpoint.sessions import Sessions
from colabkit.clock import SYSTEM_CLOCK
from colabkit.duration import format_duration, format_size
from colabkit.errors import (
    ColabkitError,
    CorruptCheckpointError,
    UnsupportedCheckpointError,
)
from colabkit.storage import LocalStore
from colabkit.storage.base import ObjectInfo, Store
from colabkit.storage.drive_folders import TEMP_PREFIX
from colabkit.storage.drive_mount import SIGN_IN
from colabkit.validate import positive_int


def run_store(run_dir: str | os.PathLike[str]) -> Store:
    """Where ``colabkit ckpt`` and ``status`` find a run's checkpoints (``runs.run_store``),
    creating nothing: a mistyped ``gdrive://`` folder is an error, not a new folder on Drive."""
    return runs.run_store(run_dir, create=False)


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
        frozen: The frozen object it leaves unchanged variables to (None: it holds all); it
            verifies only if that object is in the store and verifies too.
        frozen_size: That object's bytes (stored once for all the checkpoints naming it).
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
    frozen: str | None = None
    frozen_size: int | None = None

    def to_json(self) -> dict:
        return asdict(self)


def is_colabkit_file(name: str) -> bool:
    """Whether a store-relative ``name`` is a file colabkit writes in a run's store (a
    checkpoint, a frozen object, or the temporary file of one), matched exactly."""
    base = name.rpartition("/")[2]
    if base.startswith(".") and ".tmp-" in base:  # atomic.temporary_name, or a pruned one
        base = base[1:].rpartition(".tmp-")[0]
    elif base.startswith(TEMP_PREFIX):  # an upload through the API, never renamed
        return True
    return step_of(base) is not None or is_frozen_object(base)


def purge_trash(store: Store) -> list[ObjectInfo]:
    """Deletes for good colabkit's files of this run that are in Drive's trash (nothing else);
    returns them.

    Raises:
        ColabkitError: the store is on the Drive mount but not signed in for the API (the
            trash is not reachable from the mount); nothing was deleted.
    """
    drive = store
    if hasattr(store, "signed_in"):  # the Drive mount: its trash only through the API
        if not store.signed_in:
            raise ColabkitError(
                f"Drive's trash is reached through the Drive API only, and there is no sign-in "
                f"here: nothing was deleted from the trash of {store.url}. Sign in first (in "
                f"Colab: {SIGN_IN}), then run it again."
            )
        try:
            drive = store.drive_api()
        except FileNotFoundError as e:
            raise ColabkitError(
                f"{e} Nothing was deleted: only the trash of the run's own folder is purged, and "
                "Drive holds no such folder outside its trash (a folder deleted whole is in the "
                "trash with everything in it: empty the trash at "
                "https://drive.google.com/drive/trash to free its space)."
            ) from None
    purge = getattr(drive, "purge_trashed", None)
    if purge is None:
        return []
    return store_call(purge, is_colabkit_file)


def inspect_store(store: Store) -> list[CheckpointStatus]:
    """Every checkpoint of ``store``, newest first, each fully verified."""
    listed = store_call(store.list)
    infos = [i for i in listed if step_of(i.name) is not None]
    infos.sort(key=lambda info: step_of(info.name), reverse=True)
    with tempfile.TemporaryDirectory() as cache:
        chain = Chain(Sessions(store, Path(cache), SYSTEM_CLOCK).read_or_fail())
    objects = _FrozenObjects(store, {i.name: i for i in listed if is_frozen_object(i.name)})
    found = [_status(store, info, objects) for info in infos]
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
    keep = positive_int("keep", keep)
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


@dataclass
class _FrozenObjects:
    """The store's frozen objects, each verified once however many checkpoints name it."""

    store: Store
    infos: dict
    problems: dict[str, str | None] = field(default_factory=dict)

    def problem(self, name: str) -> str | None:
        """Why ``name`` cannot serve a resume (None: it is there and verifies)."""
        if name not in self.problems:
            if name not in self.infos:
                self.problems[name] = f"its frozen variables {name} are not in {self.store.url}"
            else:
                with local_copy(self.store, name) as path:
                    try:
                        verify(path)
                        self.problems[name] = None
                    except (CorruptCheckpointError, UnsupportedCheckpointError) as e:
                        self.problems[name] = f"its frozen variables: {e}"
        return self.problems[name]


def _status(
    store: Store, info, objects: _FrozenObjects
) -> tuple[CheckpointStatus, CheckpointRecord | None]:
    """One checkpoint verified, with the frozen object it names, and its record (None: its
    state did not read)."""
    with local_copy(store, info.name) as path:
        newer = False
        try:
            state, problem = verify(path), None
        except CorruptCheckpointError as e:
            state, problem = {}, str(e)
        except UnsupportedCheckpointError as e:
            state, problem, newer = {}, str(e), True
    frozen = frozen_object_of(state)
    if frozen is not None and problem is None:
        problem = objects.problem(frozen)
    frozen_info = objects.infos.get(frozen)
    record = record_from_state(info.name, state, info.size)
    run = RunState.read(state)
    status = CheckpointStatus(
        name=info.name,
        step=step_of(info.name),
        epoch=record.epoch,
        size=info.size,
        created=info.modified if run.created is None else run.created,
        verified=problem is None,
        problem=problem,
        newer_format=newer,
        frozen=frozen,
        frozen_size=frozen_info.size if frozen_info is not None else None,
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
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    objects = {s.frozen: s.frozen_size for s in statuses if s.frozen is not None}
    for name, size in sorted(objects.items()):
        count = sum(s.frozen == name for s in statuses)
        stored = format_size(size) if size is not None else "MISSING"
        lines.append(
            f"frozen variables: {name} ({stored}), stored once, left out of {count} checkpoint(s)"
        )
    return "\n".join(line.rstrip() for line in lines)


def nothing_found(store: Store) -> str:
    """The message for a run without checkpoints, saying when its folder does not even exist."""
    message = f"no checkpoints in {store.url}"
    if isinstance(store, LocalStore) and not store.root.exists():
        message += " (the folder does not exist)"
    return message
