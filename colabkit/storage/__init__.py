"""Checkpoint stores: where checkpoint files live durably.

``LocalStore`` (a folder, also the Drive mount), ``DriveApiStore`` (Drive v3 API),
``MemoryStore`` (tests), and ``open_store(url_or_path)``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from colabkit.errors import invalid_argument
from colabkit.storage.base import ObjectInfo, Store, validate_name
from colabkit.storage.local import LocalStore
from colabkit.storage.memory import MemoryStore

if TYPE_CHECKING:  # pragma: no cover
    from colabkit.storage.drive_api import DriveApiStore

__all__ = [
    "DriveApiStore",
    "LocalStore",
    "MemoryStore",
    "ObjectInfo",
    "Store",
    "open_store",
    "validate_name",
]

_EXPECTED_URL = (
    "a folder path, 'file:///abs/path', 'memory://name' or 'gdrive://folder/path' "
    "(a folder under My Drive)"
)


def open_store(url_or_path: str | os.PathLike[str]) -> Store:
    """The store a URL or path names.

    A plain path or ``file://`` URL is a :class:`LocalStore` (this is also how the Drive mount is
    used); ``memory://name`` is the process-wide :class:`MemoryStore` of that name;
    ``gdrive://folder/path`` is a ``DriveApiStore`` on that folder of My Drive (its client
    libraries are imported only then).

    Raises:
        ConfigError: the URL has another scheme or no folder.
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
    raise invalid_argument("url", url_or_path, _EXPECTED_URL)


def _local(path: str | os.PathLike[str], given: object) -> LocalStore:
    if os.path.isfile(os.path.expanduser(path)):
        raise invalid_argument("url", str(given), "a folder for checkpoints, but this is a file")
    return LocalStore(path)


def __getattr__(name: str) -> Any:
    if name == "DriveApiStore":  # lazily: it imports the Google client libraries
        from colabkit.storage.drive_api import DriveApiStore

        return DriveApiStore
    raise AttributeError(f"module 'colabkit.storage' has no attribute {name!r}")
