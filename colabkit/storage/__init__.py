"""Checkpoint stores: where checkpoint files live durably.

``LocalStore`` (a folder, also the Drive mount), ``DriveApiStore`` (Drive v3 API),
``FsspecStore`` (buckets: gs://, s3://... via fsspec), ``MemoryStore`` (tests), and
``open_store(url_or_path)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from colabkit import env
from colabkit.errors import invalid_argument
from colabkit.storage.base import ObjectInfo, Store, validate_name
from colabkit.storage.local import LocalStore
from colabkit.storage.memory import MemoryStore

if TYPE_CHECKING:  # pragma: no cover
    from colabkit.storage.drive_api import DriveApiStore
    from colabkit.storage.fsspec_store import FsspecStore

__all__ = [
    "DriveApiStore",
    "FsspecStore",
    "LocalStore",
    "MemoryStore",
    "ObjectInfo",
    "Store",
    "open_store",
    "validate_name",
]

_EXPECTED_URL = (
    "a folder path, 'file:///abs/path', 'memory://name', 'gdrive://folder/path' "
    "(a folder under My Drive) or a bucket URL such as 'gs://bucket/path' or 's3://bucket/path'"
)


def open_store(url_or_path: str | os.PathLike[str]) -> Store:
    """The store a URL or path names.

    A plain path or ``file://`` URL is a :class:`LocalStore` (one under Colab's My Drive mount a
    ``DriveMountStore``, which confirms each upload on Drive where the user signed in for the
    API); ``memory://name`` is the process-wide :class:`MemoryStore` of that name;
    ``gdrive://folder/path`` is a ``DriveApiStore`` on that folder of My Drive (its client
    libraries are imported only then); ``gs://``, ``s3://``, ``az://`` and the other schemes in
    ``fsspec_store.DRIVERS``, or ``fsspec+<protocol>://`` for any fsspec protocol, are an
    ``FsspecStore``.

    Raises:
        ConfigError: the URL has another scheme or no folder, or fsspec or its driver for the
            scheme is not installed (the message names the pip package).
    """
    if isinstance(url_or_path, os.PathLike):
        return _local(url_or_path, url_or_path)
    if not isinstance(url_or_path, str) or not url_or_path.strip():
        raise invalid_argument("url", url_or_path, _EXPECTED_URL)
    if "://" not in url_or_path:
        return _local(url_or_path, url_or_path)
    parts = urlsplit(url_or_path)
    location = unquote(parts.netloc + parts.path)
    if parts.scheme == "file" and parts.path and parts.netloc in ("", "localhost"):
        return _local(unquote(parts.path), url_or_path)
    if parts.scheme == "memory" and location.strip("/"):
        return MemoryStore.shared(location.strip("/"))
    if parts.scheme == "gdrive" and location.strip("/"):
        from colabkit.storage.drive_api import DriveApiStore

        return DriveApiStore(folder=location.strip("/"))
    from colabkit.storage import fsspec_store  # lazily: fsspec itself only once a store opens

    if fsspec_store.handles(parts.scheme) and location.strip("/"):
        return fsspec_store.FsspecStore(url_or_path)
    raise invalid_argument("url", url_or_path, _EXPECTED_URL)


def _local(path: str | os.PathLike[str], given: object) -> LocalStore:
    if os.path.isfile(os.path.expanduser(path)):
        raise invalid_argument("url", str(given), "a folder for checkpoints, but this is a file")
    my_drive = env.COLAB_DRIVE_MOUNTPOINT / "MyDrive"
    if Path(os.path.abspath(os.path.expanduser(path))).is_relative_to(my_drive):
        from colabkit.storage.drive_mount import DriveMountStore

        return DriveMountStore(path, my_drive=my_drive)  # "durable" means on Drive there
    return LocalStore(path)


def __getattr__(name: str) -> Any:
    if name == "DriveApiStore":  # lazily: it imports the Google client libraries
        from colabkit.storage.drive_api import DriveApiStore

        return DriveApiStore
    if name == "FsspecStore":
        from colabkit.storage.fsspec_store import FsspecStore

        return FsspecStore
    raise AttributeError(f"module 'colabkit.storage' has no attribute {name!r}")
