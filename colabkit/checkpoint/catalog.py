"""Finding checkpoints in local cache and in a store, and saying why a store failed.

The manager's read side: which checkpoint names exist where, which one is the newest that
verifies, and what is known about each (step, epoch, creation time, metrics). "Could not ask the
store" is always an error here, never "no checkpoint": reading it as absent would silently
restart a 10-hour run from scratch.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from colabkit.checkpoint.format import read_state, step_of, verify
from colabkit.checkpoint.policy import CheckpointRecord, as_lineage
from colabkit.checkpoint.run_state import RunState
from colabkit.errors import CorruptCheckpointError, StoreError
from colabkit.storage.atomic import is_temporary_name
from colabkit.storage.base import ObjectInfo, Store

log = logging.getLogger(__name__)

DRIVE_DROPPED = (
    "the Drive mount dropped: remount with colabkit.setup() or drive.mount(..., force_remount=True)"
)


def describe_failure(error: BaseException) -> str:
    """One line saying why a store or disk operation failed, with the fix where there is one."""
    code = getattr(error, "errno", None)
    if code == errno.ENOTCONN:
        return f"[Errno {code}] {DRIVE_DROPPED}"
    if code == errno.ENOSPC:
        return f"[Errno {code}] no space left (Drive quota or local disk full): free some space"
    if code == errno.EIO:
        return f"[Errno {code}] I/O error (on the Drive mount usually the quota or a rate limit)"
    return f"{type(error).__name__}: {error}"


def store_call(method, *args):
    """Calls a store method; any OSError other than FileNotFoundError becomes a StoreError."""
    try:
        return method(*args)
    except FileNotFoundError:
        raise
    except OSError as e:
        url = getattr(getattr(method, "__self__", None), "url", "the store")
        raise StoreError(f"{url}: {describe_failure(e)}") from e


def record_from_state(name: str, state: dict, size: int | None) -> CheckpointRecord:
    """The catalogue entry for a checkpoint whose ``state.json`` has been read."""
    run = RunState.read(state)
    step = step_of(name)
    return CheckpointRecord(
        name=name,
        step=step if step is not None else _or(run.checkpoint_step, -1),
        created=run.created or 0.0,
        metrics=run.checkpoint_metrics,
        epoch=run.epoch if run.has_epoch else None,
        size=size,
        session=run.session,
        lineage=as_lineage(run.lineage),
    )


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def cache_names(cache: Path) -> list[str]:
    """Checkpoint files in the cache folder (temporary leftovers excluded)."""
    try:
        return [n for n in os.listdir(cache) if step_of(n) is not None]
    except FileNotFoundError:
        return []


def remove_temporary_files(folder: Path) -> None:
    """Deletes leftovers of writes that a crash interrupted (only called before any write)."""
    for name in os.listdir(folder):
        if is_temporary_name(name):
            with contextlib.suppress(OSError):
                os.unlink(folder / name)


def remove_store_leftovers(store: Store) -> None:
    """Frees the space of uploads a crash interrupted, where the store can tell.

    LocalStore (the Drive mount), DriveApiStore and FsspecStore remove their temporaries once an
    hour old; each can be as big as a checkpoint.
    """
    remove = getattr(store, "remove_leftovers", None)
    if remove is None:
        return
    try:
        removed = remove()
    except OSError as e:  # housekeeping only: the next run tries again
        log.debug("Could not remove leftovers in %s: %s", store.url, e)
        return
    if removed:
        log.info("Removed %d unfinished upload(s) from %s", len(removed), store.url)


def store_checkpoints(store: Store) -> dict[str, ObjectInfo]:
    """The store's checkpoint objects by name.

    Raises:
        StoreError: the store could not be listed (never read as "no checkpoint").
    """
    try:
        infos = store.list()
    except OSError as e:
        raise StoreError(
            f"Could not list the checkpoints in {store.url}: {describe_failure(e)}. Not treating "
            "this as 'no checkpoint' (that would restart from scratch); fix it and run again."
        ) from e
    return {info.name: info for info in infos if step_of(info.name) is not None}


@dataclass
class Verifier:
    """Verifies checkpoints by name, downloading from the store into cache when needed.

    Each corrupt checkpoint is reported with one warning, however often it is looked at.
    """

    store: Store
    cache: Path

    def __post_init__(self) -> None:
        self._warned: set[tuple[str, int]] = set()

    def verified(self, name: str, in_store: ObjectInfo | None) -> CheckpointRecord | None:
        """The record of ``name`` if a copy of it verifies (cache first), else None.

        Raises:
            StoreError: the store holds ``name`` but could not hand it over.
        """
        local = self.cache / name
        if local.exists():
            try:
                return record_from_state(name, verify(local), local.stat().st_size)
            except CorruptCheckpointError as e:
                if in_store is None:
                    self.warn(name, local.stat().st_size, e, in_store=False)
                    return None
                log.debug("Cache copy of %s is bad (%s); fetching it again", name, e)
        if in_store is None:
            return None
        if not self.fetch(name):
            return None
        try:
            return record_from_state(name, verify(local), local.stat().st_size)
        except CorruptCheckpointError as e:
            self.warn(name, in_store.size, e, in_store=True)
            with contextlib.suppress(OSError):
                local.unlink()
            return None

    def describe(self, name: str, in_store: ObjectInfo | None) -> CheckpointRecord:
        """A record from the checkpoint's state alone (no full verification; for listings)."""
        local = self.cache / name
        if not local.exists() and in_store is not None:
            self.fetch(name)
        try:
            return record_from_state(name, read_state(local), local.stat().st_size)
        except (CorruptCheckpointError, FileNotFoundError):
            size = in_store.size if in_store else None
            created = in_store.modified if in_store else 0.0
            return CheckpointRecord(name=name, step=step_of(name) or 0, created=created, size=size)

    def frozen_object(self, name: str) -> Path:
        """A verified local copy of the run's frozen object ``name`` (fetched if need be).

        Raises:
            FileNotFoundError: it is neither in cache nor in the store.
            CorruptCheckpointError: no copy of it verifies.
            StoreError: the store could not hand it over.
        """
        local = self.cache / name
        if local.exists():
            try:
                verify(local)
                return local
            except CorruptCheckpointError as e:
                log.debug("Cache copy of %s is bad (%s); fetching it again", name, e)
        if not self.fetch(name):
            raise FileNotFoundError(f"{name} is not in {self.store.url}")
        verify(local)
        return local

    def has(self, name: str) -> bool:
        """Whether ``name`` is in cache or in the store (not verified).

        Raises:
            StoreError: the store could not be asked.
        """
        if (self.cache / name).exists():
            return True
        try:
            store_call(self.store.stat, name)
        except FileNotFoundError:
            return False
        return True

    def fetch(self, name: str) -> bool:
        """Copies ``name`` from the store into cache; False if it vanished meanwhile."""
        try:
            self.store.get(name, self.cache / name)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise StoreError(
                f"Could not read checkpoint {name} from {self.store.url}: {describe_failure(e)}. "
                "Not skipping it (an older checkpoint would lose work); fix it and run again."
            ) from e
        return True

    def warn(self, name: str, size: int, error: Exception, *, in_store: bool) -> None:
        """One warning per damaged checkpoint, naming it where the user keeps it (the store),
        not the local copy it was read from; one only in cache is named there."""
        if (name, size) in self._warned:
            return
        self._warned.add((name, size))
        where = f"{self.store.url.rstrip('/')}/{name}" if in_store else str(self.cache / name)
        reason = getattr(error, "reason", str(error))
        log.warning(
            "Skipping checkpoint %s%s: %s. It will not be loaded; resume uses the newest "
            "checkpoint that verifies.",
            where,
            "" if in_store else " (only in local cache, never uploaded)",
            reason,
        )
