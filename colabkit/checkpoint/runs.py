"""From a run directory (or a store URL) to the store of its checkpoints: the one route.

``colabkit.fit(run_dir=...)``, the callbacks, ``colabkit status`` and ``colabkit ckpt`` all
call :func:`run_store`, so one value means one place everywhere. A folder keeps its
checkpoints in ``checkpoints/`` (a folder that already holds checkpoint files itself, the
``checkpoints`` folder given directly, is used as it is); a store URL (``gdrive://...``,
``gs://...``) is the store itself, as ``store=`` takes it; ``file://`` is a folder. A URL is
never turned into a local folder named after its scheme (``./gdrive:/...`` would die with
the VM).

Opening a run for training lives here too: :func:`open_manager` takes the run's lock (one
trainer per run on a machine; ``CheckpointManager.close()`` releases it), sets aside a cache
cache whose run was deleted from the store, and :func:`refuse_if_all_corrupt` stops a run
whose every checkpoint fails to verify rather than start it over.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from colabkit.checkpoint.catalog import store_checkpoints
from colabkit.checkpoint.format import step_of
from colabkit.checkpoint.manager import CheckpointManager
from colabkit.checkpoint.pipeline import IN_STORE_MARKER
from colabkit.errors import CheckpointError, ColabkitError, ConfigError, invalid_argument
from colabkit.storage import LocalStore, open_store
from colabkit.storage.base import Store

log = logging.getLogger(__name__)

CHECKPOINTS_FOLDER = "checkpoints"

EXPECTED = (
    "a folder path, or a store URL such as 'gdrive://colabkit/my-run' (Drive through its API) "
    "or 'gs://bucket/my-run'"
)


def run_store(run_dir: object, *, argname: str = "run_dir", create: bool = True) -> Store:
    """The store of the run in ``run_dir``: ``RUN_DIR/checkpoints``, or the store a URL names.

    Args:
        run_dir: A folder path, or a store URL.
        argname: The argument's name in messages.
        create: False for a run that is only read (``status``, ``ckpt``): a Drive folder
            that does not exist is then an error, never created.

    Raises:
        ConfigError: ``run_dir`` is not a path or URL, is empty, names a file, or is a URL of
            a scheme colabkit has no store for (nothing is created).
        ColabkitError: ``create`` is False and Drive has no such folder.
    """
    if not isinstance(run_dir, (str, os.PathLike)):
        raise invalid_argument(argname, run_dir, EXPECTED)
    text = os.fspath(run_dir)
    if not isinstance(text, str) or not text.strip():
        raise invalid_argument(argname, text, EXPECTED + " (it is empty)")
    parts = urlsplit(text)
    if not create and parts.scheme == "gdrive" and (parts.netloc + parts.path).strip("/"):
        return _existing_drive_folder(text, (parts.netloc + parts.path).strip("/"))
    try:
        store = open_store(text)
    except ConfigError as e:
        raise invalid_argument(argname, text, getattr(e, "expected", None) or EXPECTED) from None
    if not isinstance(store, LocalStore):  # a URL's store: the checkpoints are in it
        return store
    folder = store.root
    if folder.exists() and not folder.is_dir():
        raise invalid_argument(argname, text, "a directory (this path is a file)")
    if holds_checkpoints(folder):
        return store
    return open_store(folder / CHECKPOINTS_FOLDER)  # on the Drive mount: a DriveMountStore


def _existing_drive_folder(url: str, folder: str) -> Store:
    from colabkit.storage.drive_api import DriveApiStore

    try:
        return DriveApiStore(folder, create=False)
    except FileNotFoundError as e:
        raise ColabkitError(f"No run at {url}: {e} Check the folder's name on Drive.") from None


def is_url(value: object) -> bool:
    """Whether ``value`` is a URL of a store other than a local folder (``file://``)."""
    text = os.fspath(value) if isinstance(value, (str, os.PathLike)) else ""
    return isinstance(text, str) and "://" in text and urlsplit(text).scheme != "file"


def holds_checkpoints(folder: Path) -> bool:
    """Whether ``folder`` holds checkpoint files itself (it is a run's ``checkpoints``)."""
    try:
        return any(step_of(p.name) is not None for p in folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return False


# -- opening a run for training: the cache folder, its lock, the manager -------------------


def default_cache(store: Store) -> Path:
    from colabkit import env

    return env.cache_dir_for(store.url, env.detect(session_limit=None))


def set_aside_stale_cache(store: Store, cache: Path) -> None:
    """Keeps checkpoints deleted from the store from coming back out of the checkpoint cache.

    Cache may hold a checkpoint newer than the store (not uploaded yet: the process died
    first), so it is trusted next to the store. But once this cache folder has delivered a
    checkpoint to the store (the marker says so) and the store now holds none, they were
    deleted there: a run folder removed to start over, ``BackupAndRestore`` cleaning up. What
    is staged belongs to a run that is gone; it is moved aside, not deleted.
    """
    if not (cache / IN_STORE_MARKER).exists() or store_checkpoints(store):
        return
    if any(cache.glob("*.ckpt")):
        aside = cache.with_name(f"{cache.name}.stale-{time.strftime('%Y%m%dT%H%M%S')}")
        cache.rename(aside)
        log.warning(
            "No checkpoint in %s any more: not resuming from the copies left in local cache "
            "(moved to %s).",
            store.url,
            aside,
        )
    else:
        (cache / IN_STORE_MARKER).unlink()


def forget_cache(cache: Path) -> None:
    """Drops the local copies of a finished run that is durable in its store."""
    for copy in [*cache.glob("*.ckpt"), cache / IN_STORE_MARKER]:
        copy.unlink(missing_ok=True)


def store_for(run_dir: Any, store: Any) -> Store:
    """Where ``colabkit.fit`` and the callbacks put a run's checkpoints: ``store`` (a Store or
    a URL) if given, else the run directory's (``run_store``).

    Raises:
        ConfigError: neither is given, or ``store`` is neither a Store nor a URL.
    """
    if store is not None:
        if isinstance(store, (str, Path)):
            return open_store(store)
        if not isinstance(store, Store):
            raise invalid_argument("store", type(store).__name__, "a Store or a store URL")
        return store
    if run_dir is None or str(run_dir) == "":
        raise ConfigError(
            "No place for checkpoints. Received: run_dir=None, store=None. Pass "
            "run_dir='runs/my-run' (or a Drive folder), or store='gdrive://colabkit/my-run'."
        )
    return run_store(run_dir)


def open_manager(store: Store, cache: Path, **options: Any) -> CheckpointManager:
    """A CheckpointManager on ``cache``, refusing a cache folder another process uses.

    Raises:
        ColabkitError: the cache folder cannot be created, or another process is training
            this run (two writers would overwrite each other's checkpoints).
    """
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise invalid_argument(
            "cache_dir",
            str(cache),
            f"a writable local folder ({e.strerror}); pass cache_dir= or set XDG_CACHE_HOME",
        ) from None
    lock = _lock(cache)
    previous = _OPEN.pop(str(cache), None)
    if previous is not None:  # left open by a fit that raised (a notebook cell run again)
        previous.wait_staged()  # its last snapshot: restore() must see it, whole
        previous.sessions.wait_claimed()  # and its claim: ours must come after it
    set_aside_stale_cache(store, cache)
    cache.mkdir(parents=True, exist_ok=True)
    manager = CheckpointManager(store, cache_dir=cache, run_lock=lock, **options)
    _OPEN[str(cache)] = manager
    return manager


#: The manager open on each cache folder in this process (until its close()).
_OPEN: dict[str, CheckpointManager] = {}


#: Run locks this process holds, by lock path: a notebook cell re-run after an exception in
#: the same kernel is the same trainer, not a second one.
_HELD: dict[str, RunLock] = {}


class RunLock:
    """An exclusive lock on a run's cache folder, held while a manager trains the run
    (released by the OS if the process dies). ``CheckpointManager.close()`` releases it."""

    def __init__(self, cache: Path, path: str, handle: Any) -> None:
        self.cache, self.path, self._handle = cache, path, handle

    def release(self) -> None:
        _OPEN.pop(str(self.cache), None)
        if _HELD.get(self.path) is self:
            del _HELD[self.path]
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _lock(cache: Path) -> RunLock:
    """The run's lock, taken (or this process's own, already held)."""
    path = str(cache.parent / f".{cache.name}.lock")
    if path in _HELD:
        return _HELD[path]
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return RunLock(cache, path, None)
    handle = open(path, "a+")  # noqa: SIM115 - held open for the whole run
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise ColabkitError(
            f"This run is being trained by {owner} (lock on {cache}). Wait for it to finish "
            "or stop it; two processes training one run would overwrite each other's checkpoints."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    _HELD[path] = lock = RunLock(cache, path, handle)
    return lock


def refuse_if_all_corrupt(
    manager: CheckpointManager, remedy: str = "pass fresh=True to archive them and start over"
) -> None:
    """No checkpoint verified, yet some exist: stop rather than silently start over.

    Starting from scratch here would throw away the run's history without a word (and new,
    lower-numbered checkpoints would sit below the damaged ones). The user decides.
    """
    names = sorted(store_checkpoints(manager.store))
    if not names:
        return
    raise CheckpointError(
        f"None of the {len(names)} checkpoints in {manager.store.url} verifies (newest: "
        f"{names[-1]}); nothing was loaded. Inspect them with `colabkit ckpt verify`, or "
        f"{remedy}."
    )
