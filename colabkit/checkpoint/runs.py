"""From a run directory (or a store URL) to the store of its checkpoints: the one route.

``colabkit.fit(run_dir=...)``, the callbacks, ``colabkit status`` and ``colabkit ckpt`` all
call :func:`run_store`, so one value means one place everywhere. A folder keeps its
checkpoints in ``checkpoints/`` (a folder that already holds checkpoint files itself, the
``checkpoints`` folder given directly, is used as it is); a store URL (``gdrive://...``,
``gs://...``) is the store itself, as ``store=`` takes it; ``file://`` is a folder. A URL is
never turned into a local folder named after its scheme (``./gdrive:/...`` would die with
the VM).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from colabkit.checkpoint.format import step_of
from colabkit.errors import ColabkitError, ConfigError, invalid_argument
from colabkit.storage import LocalStore, open_store
from colabkit.storage.base import Store

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
