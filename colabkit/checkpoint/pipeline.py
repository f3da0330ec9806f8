"""The background half of checkpointing: snapshot -> local cache -> store, off the training path.

One writer thread writes registered snapshots into the cache folder; one mirror thread copies
written checkpoints into the store, retrying failures with backoff on the injected clock. Each
stage holds at most one waiting item: a newer snapshot or upload replaces one that has not
started, so a store slower than training bounds memory and disk instead of queueing. A failure
is logged once per change of reason, shown by ``status`` and raised by ``wait()``; it never
reaches the training thread on its own.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from colabkit.checkpoint import catalog
from colabkit.checkpoint.format import frozen_object_of, step_of, write_checkpoint
from colabkit.checkpoint.policy import CheckpointRecord
from colabkit.checkpoint.space import on_drive
from colabkit.clock import Clock
from colabkit.errors import (
    CheckpointError,
    RunSupersededError,
    StoreError,
    StoreFullError,
    UploadLimitError,
)
from colabkit.storage.base import Store

log = logging.getLogger(__name__)

#: A file in cache naming the last checkpoint this cache folder delivered to the store. A
#: store with no checkpoint next to it means they were deleted there (not "not uploaded yet").
IN_STORE_MARKER = ".in-store"

#: Seconds before a lasting full store (or upload limit) is said again, while it lasts.
REPEAT_WARNING_S = 30 * 60

#: What a failure means, for the failures a user must act on (or wait out) to get uploads back.
CAUSES = {
    "full": (
        "Drive is full (its storage quota is used up; the trash counts too)",
        "free space on Drive (empty its trash at https://drive.google.com/drive/trash, delete "
        "other files) or lower keep",
    ),
    "upload limit": (
        "Drive's daily upload limit is reached (750 GB a day per account)",
        "it lifts by itself within 24 hours",
    ),
}


def cause_words(cause: str, store: Store) -> tuple[str, str]:
    """What a cause is and what to do, for this store (a full disk is not a full Drive)."""
    if cause == "full" and not on_drive(store):
        return f"The disk under {store.url} is full", "free space there or lower keep"
    return CAUSES[cause]


def failure_cause(error: BaseException) -> str | None:
    """``"full"``, ``"upload limit"`` or None, from a store's error (see ``CAUSES``)."""
    if isinstance(error, UploadLimitError):
        return "upload limit"
    if isinstance(error, StoreFullError) or getattr(error, "errno", None) in (
        errno.ENOSPC,
        errno.EDQUOT,
    ):
        return "full"
    return None


@dataclass(frozen=True)
class Snapshot:
    """A checkpoint registered by ``save()`` and not yet on disk (it owns ``arrays``).

    ``finish``, if given, is called in the writer thread with the arrays and the state just
    before they are written, and may complete them (see ``CheckpointManager.save``).
    """

    record: CheckpointRecord
    arrays: Mapping[str, np.ndarray]
    state: dict
    finish: Callable[[dict, dict], None] | None = None


class SavePipeline:
    """Writer and mirror threads with their shared state, guarded by one condition variable.

    Args:
        store: Destination of committed checkpoints.
        cache: Local folder for written snapshots.
        clock: Sleeps between retries.
        delays: Seconds between retries of one upload; after the last, the failure is lasting.
        on_written: Called (in the writer thread) with each checkpoint's record once on disk.
        on_committed: Called (in the mirror thread) with each name once durable in the store;
            ``wait()`` also waits for it (it prunes).
        before_commit: Called (in the mirror thread) before each upload; a
            ``RunSupersededError`` from it stops all uploads for good (another session owns the
            run), an ``OSError`` counts as a failed upload.
    """

    def __init__(
        self,
        store: Store,
        cache: Path,
        clock: Clock,
        delays: tuple[float, ...],
        on_written: Callable[[CheckpointRecord], None],
        on_committed: Callable[[str], None],
        before_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self.store, self.cache, self._clock, self._delays = store, cache, clock, delays
        self._on_written, self._on_committed = on_written, on_committed
        self._before_commit = before_commit
        self.superseded: RunSupersededError | None = None
        self.cond = threading.Condition()
        self.prune_lock = threading.Lock()
        self._pending: Snapshot | None = None
        self._writing: str | None = None
        self._to_upload: str | None = None
        self._uploading: str | None = None
        self._write_failure: str | None = None
        self._store_failure: str | None = None
        self._logged_failure: str | None = None
        self._logged_at = 0.0
        self.cause: str | None = None  # of the failure going on: a key of CAUSES, or None
        self.last_committed: str | None = None  # the newest checkpoint this run made durable
        self._exhausted = False
        self._poked = False
        self._attempts = 0
        self._threads: list[threading.Thread] = []
        self._stop = False
        self._required: set[str] = set()  # frozen objects checkpoints name: in the store first
        self._delivered: set[str] = set()

    def submit(self, snapshot: Snapshot) -> None:
        """Queues a snapshot for writing, replacing one that is waiting (not being written)."""
        with self.cond:
            if self._stop:
                raise CheckpointError(
                    f"save({snapshot.record.step}) after close(): create a new CheckpointManager"
                )
            if self._pending is not None:
                log.debug(
                    "Snapshot %s superseded by %s", self._pending.record.name, snapshot.record.name
                )
            self._pending = snapshot
            self.require(frozen_object_of(snapshot.state))
            self.cond.notify_all()
        self._start_threads()

    def require(self, name: str | None) -> None:
        """``name`` (a frozen object in cache or the store) reaches the store before the next
        commit: a checkpoint that leaves variables to it is never durable without it."""
        if name is not None:
            with self.cond:
                self._required.add(name)

    def queue_upload(self, name: str) -> None:
        """Queues a checkpoint already in cache for the store, unless a newer one is queued."""
        with self.cond:
            if self._to_upload is None or step_of(self._to_upload) < step_of(name):
                self._to_upload, self._poked = name, True
                self.cond.notify_all()
        self._start_threads()

    def wait_staged(self, timeout: float | None = None) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: not (self._pending or self._writing), timeout):
                raise TimeoutError(f"Snapshots not yet written to {self.cache} after {timeout} s")

    def wait(self, timeout: float | None = None) -> None:
        with self.cond:
            if self._exhausted and not (self._pending or self._writing):
                self._poked = True  # a lasting failure: try once more (else the writer pokes)
                self.cond.notify_all()
            start = self._attempts
            done = self.cond.wait_for(
                lambda: self._idle() or (self._exhausted and self._attempts > start), timeout
            )
            if not done:
                raise TimeoutError(
                    f"Checkpoints not yet durable in {self.store.url} after {timeout} s "
                    f"(status: {self.status()})"
                )
            if self.superseded is not None:
                raise self.superseded
            if self._exhausted and self._store_failure:
                raise StoreError(
                    f"{self._store_failure}. Training goes on; the newest checkpoint waits in "
                    f"{self.cache} and is retried at the next save or wait()."
                )
            if self._write_failure:
                raise CheckpointError(self._write_failure)

    def stop(self, join_timeout: float = 60.0) -> None:
        """Stops both threads (after ``wait()``: whatever is still queued stays in cache).

        A thread stuck in the store (a hung mount) cannot be interrupted: it is waited for at
        most ``join_timeout`` seconds, then left to finish or die with the process (daemon).
        """
        with self.cond:
            self._stop = True
            self.cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=join_timeout)

    def not_durable_because(self) -> str:
        """Call with ``cond`` held; see ``CheckpointManager.not_durable_because``."""
        if self.cause is None:
            return ""
        what, fix = cause_words(self.cause, self.store)
        fallback = (
            f"otherwise the next session resumes from {self.last_committed}, the newest durable one"
            if self.last_committed
            else "otherwise the next session starts from the newest checkpoint already there"
        )
        return f"{what}: {fix}, while this session lasts, for it to go up; {fallback}"

    @property
    def started(self) -> bool:
        return bool(self._threads)

    def status(self) -> str:
        """Call with ``cond`` held."""
        if self.superseded is not None:
            return f"superseded: {self.superseded}"
        failure = self._store_failure or self._write_failure
        if failure:
            return f"failing: {failure}"
        if not self._idle():
            return "pending"
        return (
            "on the Drive mount, upload pending"
            if getattr(self.store, "upload_pending", False)
            else "ok"
        )

    def busy(self) -> set[str]:
        """Names that cache must keep: being written, waiting for the store, being copied."""
        with self.cond:
            return {n for n in (self._writing, self._to_upload, self._uploading) if n}

    def _idle(self) -> bool:
        if self.superseded is not None:  # nothing more goes to the store
            return not (self._pending or self._writing or self._uploading)
        return not (self._pending or self._writing or self._to_upload or self._uploading)

    def _start_threads(self) -> None:
        with self.cond:
            if self._threads:
                return
            for target, label in ((self._write_loop, "writer"), (self._mirror_loop, "mirror")):
                thread = threading.Thread(
                    target=target, name=f"colabkit-checkpoint-{label}", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def _write_loop(self) -> None:
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self._pending is not None or self._stop)
                if self._pending is None:
                    return
                snapshot, self._pending = self._pending, None
                name = self._writing = snapshot.record.name
            written, failure = self._write(snapshot)
            del snapshot  # the arrays can go as soon as they are on disk (or failed to get there)
            try:
                if written is not None:
                    self._on_written(written)
            except Exception:  # a bug here must not leave wait() waiting forever
                log.exception("Unexpected error after writing %s", name)
            self._written(name, written, failure)
            if written is not None:
                try:
                    self.prune_cache()
                except Exception:
                    log.exception("Unexpected error pruning %s", self.cache)

    def _write(self, snapshot: Snapshot) -> tuple[CheckpointRecord | None, str | None]:
        path = self.cache / snapshot.record.name
        try:
            created = snapshot.record.created
            arrays, state = dict(snapshot.arrays), snapshot.state
            if snapshot.finish is not None:
                snapshot.finish(arrays, state)
            write_checkpoint(path, arrays, state, created=created)
            return replace(snapshot.record, size=path.stat().st_size), None
        except Exception as e:  # noqa: BLE001 -- reported by status/wait, never kills training
            reason = catalog.describe_failure(e)
            return None, f"Could not write {snapshot.record.name} to {self.cache}: {reason}"

    def _written(self, name: str, record: CheckpointRecord | None, failure: str | None) -> None:
        with self.cond:
            self._writing = None
            self._write_failure = failure
            if record is not None:
                self._to_upload = name
            self._poked = True
            self.cond.notify_all()
        if failure is not None:
            log.warning("%s; training continues", failure)
        else:
            log.debug("Checkpoint %s written to cache (%s bytes)", name, record.size)

    def _mirror_loop(self) -> None:
        failures = 0
        while True:
            with self.cond:
                self.cond.wait_for(self._upload_due)
                if self._stop:
                    return
                name, self._to_upload, self._poked = self._to_upload, None, False
                self._uploading = name
            try:
                self._before_commit()
                self._deliver_required()
                self.store.put(self.cache / name, name)
            except RunSupersededError as e:
                self._stop_uploads(name, e)
                continue
            except Exception as e:  # noqa: BLE001 -- reported by status/wait, retried
                failures += 1
                # The daily upload limit lasts hours: tried again at the next save (or wait()),
                # not every few seconds for minutes.
                lasting = failures > len(self._delays) or failure_cause(e) == "upload limit"
                if not self._upload_failed(name, e, lasting=lasting):
                    self._clock.sleep(self._delays[failures - 1])
                continue
            failures = 0
            try:
                self._uploaded(name)
                self._on_committed(name)
            except Exception:  # a bug here must not leave wait() waiting forever
                log.exception("Unexpected error after committing %s", name)
            finally:
                with self.cond:  # only now, so that wait() also waits for the pruning
                    self._uploading = None
                    self.cond.notify_all()

    def _deliver_required(self) -> None:
        """Uploads the frozen objects not yet in the store (once each; mirror thread only)."""
        with self.cond:
            missing = sorted(self._required - self._delivered)
        for name in missing:
            local = self.cache / name
            try:
                in_store = self.store.stat(name).size
            except FileNotFoundError:
                in_store = None
            if in_store is None or (local.exists() and in_store != local.stat().st_size):
                self.store.put(local, name)
                log.info("Frozen variables %s are durable in %s", name, self.store.url)
            with self.cond:
                self._delivered.add(name)

    def _upload_due(self) -> bool:
        ready = self._to_upload is not None and (self._poked or not self._exhausted)
        return self._stop or (ready and self.superseded is None)

    def _stop_uploads(self, name: str, error: RunSupersededError) -> None:
        with self.cond:
            first = self.superseded is None
            self.superseded = error
            self._uploading = self._to_upload = None
            self.cond.notify_all()
        if first:
            log.warning("Not committing %s: %s", name, error)

    def _upload_failed(self, name: str, error: Exception, *, lasting: bool) -> bool:
        reason = catalog.describe_failure(error)
        cause = failure_cause(error)
        now = self._clock.monotonic()
        with self.cond:
            self._uploading = None
            if self._to_upload is None:  # else a newer checkpoint replaces this one
                self._to_upload = name
            self._store_failure = f"Could not copy {name} to {self.store.url}: {reason}"
            self._exhausted = lasting
            self._attempts += 1
            self.cause = cause
            self.cond.notify_all()
            key = cause or reason  # a cause is said once, whichever checkpoint meets it
            changed, self._logged_failure = key != self._logged_failure, key
            due = changed or (cause is not None and now - self._logged_at >= REPEAT_WARNING_S)
            if due:
                self._logged_at = now
        if not due:
            return lasting
        if cause is None:
            log.warning(
                "Checkpoints are not reaching %s: %s; training continues, retrying in background",
                self.store.url,
                reason,
            )
            return lasting
        what, fix = cause_words(cause, self.store)
        newest = f"; the newest durable one is {self.last_committed}" if self.last_committed else ""
        log.warning(
            "%s: checkpoints are not reaching %s%s. Training goes on; new checkpoints stay on "
            "this VM's disk (%s) and go up once the store takes them again: %s. Nothing in the "
            "store is deleted to make room. (%s)",
            what,
            self.store.url,
            newest,
            self.cache,
            fix,
            reason,
        )
        return lasting

    def _uploaded(self, name: str) -> None:
        with self.cond:
            recovered = self._logged_failure is not None
            self._store_failure = self._logged_failure = self.cause = None
            self.last_committed = name
            self._exhausted = False
            self._attempts += 1
            self.cond.notify_all()
        if recovered:
            log.warning("Checkpoints reach %s again", self.store.url)
        # Each save's line is for the log file (debug): the console has Keras' bar, the plan
        # after each epoch, the warnings, and one line at the end saying what is durable.
        if getattr(self.store, "upload_pending", False):
            log.debug(
                "Checkpoint %s is on the Drive mount (%s); Drive uploads it in the background "
                "(not confirmed: %s)",
                name,
                self.store.url,
                self.store.unconfirmed_because,
            )
        else:
            log.debug("Checkpoint %s is durable in %s", name, self.store.url)
        with contextlib.suppress(OSError):  # tells a later run that the store had checkpoints
            (self.cache / IN_STORE_MARKER).write_text(name)

    def prune_cache(self) -> None:
        """Keeps in cache what is not yet in the store, plus the newest (for a quick resume)."""
        with self.prune_lock:
            names = catalog.cache_names(self.cache)
            busy = self.busy()
            newest = max(names, key=step_of, default=None)
            for name in names:
                if name != newest and name not in busy:
                    with contextlib.suppress(FileNotFoundError):
                        (self.cache / name).unlink()
