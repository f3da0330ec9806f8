"""``CheckpointManager``: save without stopping training, mirror to a store, resume from the best.

``save()`` only registers a snapshot (arrays the caller already copied) and returns. A writer
thread writes it into the local cache folder (atomic, fsynced); a mirror thread copies it into
the store (the Drive mount, the Drive API, ...), retrying with backoff on the injected clock. When
the store is slower than training, a snapshot or upload that has not started yet is replaced by
the newer one, so memory and disk stay bounded and the newest state is what reaches the store.
A failing store never stops training: it is logged once per change, shown by ``status``, and
raised by ``wait()``/``close()``. Old checkpoints are deleted only after a newer one is committed
in the store, and the newest one never is.

One run, one writer: ``restore()`` follows only the newest session's chain of checkpoints,
``claim()`` (or the first commit) claims the run for this session in the store, and before each
commit the manager looks for a newer claim: once another session has taken the run over, it
commits nothing more (``superseded``).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from colabkit.checkpoint import catalog, space
from colabkit.checkpoint.chain import Chain
from colabkit.checkpoint.format import (
    CheckpointContents,
    check_arrays,
    checkpoint_name,
    frozen_object_of,
    is_frozen_object,
    prepare_state,
    read_checkpoint,
    step_of,
)
from colabkit.checkpoint.pipeline import SavePipeline, Snapshot
from colabkit.checkpoint.policy import CheckpointRecord, parse_keep, parse_save_every
from colabkit.checkpoint.run_state import with_checkpoint_facts
from colabkit.checkpoint.sessions import Sessions
from colabkit.clock import SYSTEM_CLOCK, Clock
from colabkit.errors import (
    CheckpointError,
    CorruptCheckpointError,
    RunSupersededError,
    StoreError,
    invalid_argument,
)
from colabkit.storage import open_store
from colabkit.storage.base import Store
from colabkit.validate import renamed, renamed_attribute

log = logging.getLogger(__name__)


class CheckpointManager:
    """Saves, mirrors, prunes and restores the checkpoints of one run.

    Args:
        store: Where checkpoints live durably: a Store, or a path/URL for ``open_store``.
        cache_dir: A fast local folder for snapshots before they reach the store.
        save_policy: When ``should_save`` says yes (see ``parse_save_every``).
        keep_policy: What survives pruning (see ``parse_keep``).
        clock: Time source for policies and retry backoff.
        retry_delays: Seconds between retries of a failed upload; after the last one the
            failure is "lasting" (``wait()`` raises) and each later save or ``wait()`` tries
            once more.
        run_lock: The run's lock (``runs.open_manager`` takes it), released by ``close()``.
        before_commit: Called in the background before each commit, once the run is known
            to be this process's (``colabkit.fit`` copies the run's logs there).
        runtime: Describes where this process runs, for the run's session log (asked once,
            in the background, when claiming the run).
    """

    def __init__(
        self,
        store: Store | str | os.PathLike[str],
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        save_policy: object = "epoch",
        keep_policy: object = 3,
        clock: Clock | None = None,
        retry_delays: Sequence[float] = (1, 2, 4, 8, 16, 32, 60),
        run_lock: Any = None,
        before_commit: Callable[[], None] | None = None,
        runtime: Callable[[], dict] | None = None,
        staging_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        cache_dir = renamed("staging_dir", "cache_dir", staging_dir, cache_dir)
        if cache_dir is None:
            raise invalid_argument("cache_dir", None, "a local folder for the checkpoint cache")
        self.store = store if isinstance(store, Store) else open_store(store)
        self.cache = Path(cache_dir)
        self._save_policy = parse_save_every(save_policy, "save_policy")
        self._keep_policy = parse_keep(keep_policy, "keep_policy")
        self._clock = clock or SYSTEM_CLOCK
        self._delays = _check_delays(retry_delays)
        self.cache.mkdir(parents=True, exist_ok=True)
        catalog.remove_temporary_files(self.cache)
        catalog.remove_store_leftovers(self.store)
        self.verifier = catalog.Verifier(self.store, self.cache)  # frozen objects read it too
        self._lock = threading.Lock()  # guards the records and the last-save bookkeeping
        self._records: dict[str, CheckpointRecord] = {}
        self._last_save_step: int | None = None
        self._last_save_time = self._clock.monotonic()
        self._closed = False
        self._run_lock = run_lock
        self._space_checked_for = 0  # bytes of the checkpoint the last room check was for
        self.sessions = Sessions(self.store, self.cache / ".sessions", self._clock, runtime)
        self._seen_at_restore: set[str] | None = None  # the store's checkpoints when we took over
        self._orphans: set[str] = set()  # committed by a superseded session after a takeover
        self._commit_hook = before_commit
        self._pipeline = SavePipeline(
            self.store,
            self.cache,
            self._clock,
            self._delays,
            self._written,
            self._prune,
            before_commit=self._before_commit,
        )

    staging = renamed_attribute("staging", "cache")

    def __repr__(self) -> str:
        return f"CheckpointManager({self.store.url!r}, cache={str(self.cache)!r})"

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------- saving

    def should_save(self, *, step: int, epoch_end: bool) -> bool:
        """Whether the save policy wants a checkpoint after ``step`` (never twice per step)."""
        with self._lock:
            last_step, last_time = self._last_save_step, self._last_save_time
        if step == last_step:
            return False
        return self._save_policy.should_save(
            step=step,
            epoch_end=epoch_end,
            now=self._clock.monotonic(),
            last_save_step=last_step,
            last_save_time=last_time,
        )

    def save(
        self,
        step: int,
        arrays: Mapping[str, np.ndarray],
        state: dict,
        metrics: Mapping[str, float] | None = None,
        finish: Callable[[dict, dict], None] | None = None,
    ) -> str:
        """Registers a snapshot and returns its checkpoint name; writing happens in background.

        Takes ownership of ``arrays``: pass fresh copies and do not change them afterwards.
        ``state`` is stored as JSON with ``step`` and ``checkpoint_metrics`` added. ``finish``
        is called in the writer thread with the arrays and the stored state just before they
        are written, to complete them with work taken off the training thread (the check of
        frozen variables; a failure there is a failed write).

        Raises:
            ConfigError: bad step, array name/type, state (naming the key) or metric.
            CheckpointError: the manager is closed.
        """
        name = checkpoint_name(step)
        check_arrays(arrays)
        clean_metrics = _check_metrics(metrics)
        if "step" in state and state["step"] != step:
            raise invalid_argument("state['step']", state["step"], f"{step} (the `step` argument)")
        facts = with_checkpoint_facts(
            state,
            step=step,
            metrics=clean_metrics,
            session=self.sessions.id,
            lineage=self.sessions.lineage(),
        )
        full_state = prepare_state(facts, created=self._clock.time())
        record = catalog.record_from_state(name, full_state, None)
        self._pipeline.submit(Snapshot(record, arrays, full_state, finish))
        with self._lock:
            self._last_save_step, self._last_save_time = int(step), self._clock.monotonic()
        return name

    def wait_staged(self, timeout: float | None = None) -> None:
        """Waits until every registered snapshot is written (or failed) in local cache."""
        self._pipeline.wait_staged(timeout)

    def wait(self, timeout: float | None = None) -> None:
        """Waits until everything saved is durable in the store (and old ones are pruned).

        Raises:
            StoreError: the store keeps failing (the reason says why and how to fix it).
            CheckpointError: the newest snapshot could not be written to cache.
            TimeoutError: ``timeout`` seconds passed first.
        """
        self._pipeline.wait(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Waits for pending work, stops the background threads, then raises any failure.

        Args:
            timeout: Seconds to wait for pending work (None: until done or failed). After it,
                whatever is not in the store stays in cache, a store call in progress is left
                to finish on its own, and ``TimeoutError`` is raised.
        """
        if self._closed:
            return
        self._closed = True
        try:
            self.sessions.wait_claimed(timeout)  # a fit that saved nothing claimed the run too
            error: Exception | None = None
            if self._pipeline.started:
                try:
                    self._pipeline.wait(timeout)
                except (StoreError, CheckpointError, TimeoutError, RunSupersededError) as e:
                    error = e
            self._pipeline.stop(join_timeout=0.0 if isinstance(error, TimeoutError) else 60.0)
        finally:
            if self._run_lock is not None:  # the run is free for the next trainer
                self._run_lock.release()
                self._run_lock = None
        if error is not None:
            raise error

    @property
    def status(self) -> str:
        """``"ok"``, ``"pending"`` (not yet durable), ``"failing: <reason>"``,
        ``"superseded: <which session took the run over>"``, or ``"on the Drive mount, upload
        pending"`` (committed to the mount, unconfirmed on Drive: no Drive API sign-in)."""
        with self._pipeline.cond:
            return self._pipeline.status()

    @property
    def upload_pending(self) -> str | None:
        """Why the checkpoints committed to the Drive mount are not confirmed on Drive (Drive's
        client uploads them in the background), or None where commits are durable."""
        if not getattr(self.store, "upload_pending", False):
            return None
        return str(self.store.unconfirmed_because)

    @property
    def last_committed(self) -> str | None:
        """The newest checkpoint this manager made durable in the store (None: none yet)."""
        with self._pipeline.cond:
            return self._pipeline.last_committed

    def not_durable_because(self) -> str:
        """Why the newest checkpoint is not in the store, and what to do, for the last words
        of a session ("" where there is nothing more to say than the log's)."""
        with self._pipeline.cond:
            return self._pipeline.not_durable_because()

    @property
    def superseded(self) -> RunSupersededError | None:
        """Set once another session has taken the run over (this one commits nothing more)."""
        return self._pipeline.superseded

    def claim(self, *, background: bool = False) -> None:
        """Claims the run for this session: any older session still training it stops at its
        next save and commits nothing more. Trainers call it once the checkpoint ``restore()``
        chose is known to fit (a call with mismatched arguments must not take the run from the
        trainer it was not meant to replace); the first commit claims it otherwise.

        Args:
            background: Claim in a background thread (a trainer: a failing or hung store must
                not hold training). A failure is then retried before the first commit, which
                never happens before the claim, and reported like a failed upload.

        Raises:
            StoreError: the store refused the claim (only without ``background``).
        """
        if background:
            self.sessions.take_over_in_background()
        else:
            self.sessions.take_over()

    def _before_commit(self) -> None:
        self.sessions.take_over()
        self.sessions.check()
        if self._commit_hook is not None:
            self._commit_hook()

    # ----------------------------------------------------------------------------- reading

    def latest(self) -> CheckpointRecord | None:
        """The newest checkpoint that verifies, in cache or in the store (by step, never mtime).

        Raises:
            StoreError: the store could not be asked (that is not "no checkpoint").
        """
        in_store = catalog.store_checkpoints(self.store)
        chain = Chain(self.sessions.read_or_fail())
        return next(chain.select(self._verified(in_store)), None)

    def _verified(
        self, in_store: Mapping[str, object], up_to: int | None = None
    ) -> Iterator[CheckpointRecord]:
        """The checkpoints that verify (up to step ``up_to``), newest first, read one at a time."""
        for name in self._candidates(in_store):
            if up_to is not None and step_of(name) > up_to:
                continue
            record = self.verifier.verified(name, in_store.get(name))
            if record is not None:
                yield record

    def restore(self, record: CheckpointRecord | None = None) -> CheckpointContents | None:
        """Loads ``record`` (default: the latest), falling back to older ones that verify.

        A checkpoint found only in cache (its upload never finished) is queued for upload.
        Only the newest session's chain is followed (see ``colabkit.checkpoint.sessions``);
        ``claim()`` then continues that chain.

        Raises:
            StoreError: the store could not be asked.
        """
        in_store = catalog.store_checkpoints(self.store)
        claims = self.sessions.read_or_fail()
        candidates = self._verified(in_store, up_to=record.step if record is not None else None)
        for found in Chain(claims).select(candidates, outside=self._set_aside):
            try:
                contents = read_checkpoint(self.cache / found.name)
            except CorruptCheckpointError as e:
                self.verifier.warn(found.name, found.size or 0, e, in_store=found.name in in_store)
                continue
            self.sessions.restored(claims, found)
            self._seen_at_restore = set(in_store)
            self._pipeline.require(frozen_object_of(contents.state))
            self._resumed_from(found, found.name in in_store)
            return contents
        self.sessions.restored(claims, None)
        self._seen_at_restore = set(in_store)
        return None

    def _set_aside(self, record: CheckpointRecord) -> None:
        self._orphans.add(record.name)
        log.warning(
            "Not resuming from %s: session %s wrote it on another trajectory than the one the "
            "run's newest session continues (two sessions trained it); following the newest.",
            record.name,
            record.session,
        )

    def list(self) -> list[CheckpointRecord]:
        """Every checkpoint in cache or the store, oldest first (read, not verified)."""
        in_store = catalog.store_checkpoints(self.store)
        names = reversed(self._candidates(in_store))
        return [self._describe(name, in_store.get(name)) for name in names]

    def _candidates(self, in_store: Mapping[str, object]) -> list[str]:
        names = set(in_store) | set(catalog.cache_names(self.cache))
        return sorted(names, key=step_of, reverse=True)

    def _describe(self, name: str, info) -> CheckpointRecord:
        with self._lock:
            known = self._records.get(name)
        if known is None:
            known = self.verifier.describe(name, info)
            with self._lock:
                self._records[name] = known
        return known

    def _prune_record(self, name: str, info) -> CheckpointRecord:
        if self._keep_policy.reads_metadata:
            return self._describe(name, info)
        return CheckpointRecord(name=name, step=step_of(name), created=info.modified)

    def _written(self, record: CheckpointRecord) -> None:
        with self._lock:
            self._records[record.name] = record
            grown = (record.size or 0) > self._space_checked_for * 1.1
        if not grown:  # the usual save: nothing to ask the store
            return
        threading.Thread(  # Drive's answer must not hold this checkpoint's upload
            target=self.check_space,
            args=(record.size or 0,),
            kwargs={"if_grown": True},
            name="colabkit-space-check",
            daemon=True,
        ).start()

    def check_space(
        self, checkpoint_bytes: int, frozen_bytes: int | None = None, *, if_grown: bool = False
    ) -> list[str]:
        """Warns (one line each) where the store or local cache lacks room for this run's
        checkpoints of ``checkpoint_bytes`` each, plus ``frozen_bytes`` stored once (None: the
        frozen objects in cache); returns the lines. See ``colabkit.checkpoint.space``.

        Trainers call it with an estimate before the first save; the manager calls it again
        (``if_grown``) with each checkpoint written that is 10 % bigger than the last check's.
        A store that cannot tell its room is not warned about.
        """
        with self._lock:
            if if_grown and checkpoint_bytes <= self._space_checked_for * 1.1:
                return []
            self._space_checked_for = max(self._space_checked_for, checkpoint_bytes)
        kept = space.kept_at_most(self._keep_policy)
        lines = space.check_run(self.store, self.cache, checkpoint_bytes, frozen_bytes, kept)
        for line in lines:
            log.warning(line)
        return lines

    def _resumed_from(self, record: CheckpointRecord, in_store: bool) -> None:
        with self._lock:
            self._records[record.name] = record
            self._last_save_step, self._last_save_time = record.step, self._clock.monotonic()
        # Trainers say it, with where in the run that is: one line per resume, theirs.
        log.debug("Resuming from checkpoint %s (step %d)", record.name, record.step)
        if not in_store:
            self._pipeline.queue_upload(record.name)

    # ----------------------------------------------------------------------------- archive

    def archive(self) -> str | None:
        """Moves every checkpoint into ``archive/<UTC stamp>/`` in the store; never deletes one.

        Each is copied (and verified by the store) before the original is removed; checkpoints
        only in cache are archived too. Returns the prefix, e.g. ``archive/20260101T120000Z``
        (None: there was no checkpoint to archive).
        """
        self.wait()
        with self._pipeline.prune_lock:
            in_store = catalog.store_checkpoints(self.store)
            names = self._candidates(in_store)
            if not names:
                return None
            prefix = self._free_archive_prefix()
            listed = catalog.store_call(self.store.list)
            frozen = [info.name for info in listed if is_frozen_object(info.name)]
            for name in names + frozen:  # the frozen objects too: the archive must still load
                local = self.cache / name
                if not local.exists():
                    self.verifier.fetch(name)
                catalog.store_call(self.store.put, local, f"{prefix}/{name}")
                if name in in_store or name in frozen:
                    catalog.store_call(self.store.delete, name)
                local.unlink()
            with self._lock:
                self._records.clear()
                self._last_save_step, self._last_save_time = None, self._clock.monotonic()
        log.debug("Archived %d checkpoint(s) to %s/%s", len(names), self.store.url, prefix)
        return prefix

    def _free_archive_prefix(self) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._clock.time()))
        prefix, n = f"archive/{stamp}", 1
        while catalog.store_call(self.store.list, prefix + "/"):
            n += 1
            prefix = f"archive/{stamp}-{n}"
        return prefix

    # ----------------------------------------------------------------------------- pruning

    def _prune(self, committed: str) -> None:
        """Deletes what the keep policy drops, only older than ``committed`` (just committed)."""
        try:
            self.sessions.check()  # a takeover since the commit: the run is not ours to prune
            with self._pipeline.prune_lock:
                in_store = catalog.store_checkpoints(self.store)
                ours = {name: info for name, info in in_store.items() if self._ours(name)}
                records = [self._prune_record(name, info) for name, info in ours.items()]
                kept = [record for record in records if record.name not in self._orphans]
                keep = self._keep_policy.select(kept, self._clock.time()) | {committed}
                for record in records:
                    if record.name not in keep and record.step < step_of(committed):
                        self.store.delete(record.name)
                        with self._lock:
                            self._records.pop(record.name, None)
                        log.debug("Deleted old checkpoint %s from %s", record.name, self.store.url)
        except RunSupersededError:
            return  # said once by the next commit, which does not happen
        except (OSError, CheckpointError) as e:
            log.warning("Could not prune old checkpoints: %s", catalog.describe_failure(e))
        self._pipeline.prune_cache()

    def _ours(self, name: str) -> bool:
        """Whether pruning may delete ``name``: it was in the store when this session took the
        run over, or this session wrote it. One another session wrote since is never ours (it
        may be a newer session's, not yet visible as a claim here)."""
        if self._seen_at_restore is None or name in self._seen_at_restore:
            return True
        with self._lock:
            record = self._records.get(name)
        return record is not None and record.session == self.sessions.id


def _check_delays(delays: Sequence[float]) -> tuple[float, ...]:
    try:
        result = tuple(float(d) for d in delays)
    except (TypeError, ValueError):
        result = ()
    if not result or any(not math.isfinite(d) or d < 0 for d in result):
        raise invalid_argument("retry_delays", delays, "a non-empty sequence of seconds >= 0")
    return result


def _check_metrics(metrics: Mapping[str, float] | None) -> dict[str, float]:
    if metrics is None:
        return {}
    try:
        return {str(k): float(v) for k, v in metrics.items()}
    except (AttributeError, TypeError, ValueError):
        raise invalid_argument("metrics", metrics, "a dict of metric name -> number") from None
