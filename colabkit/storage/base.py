"""The Store protocol: the five primitives every checkpoint store implements.

A store holds flat, named objects (checkpoint files). Everything else colabkit does with storage
(choosing the latest checkpoint, pruning, mirroring) is built on these primitives in
``colabkit.checkpoint``; stores stay small and each one says how it commits: ``LocalStore``
renames a fully written, fsynced temporary file; ``DriveApiStore`` uploads under a temporary name,
checks the server's md5, then renames.

Contract (tested for every store by ``tests/store_contract.py``):

- ``put`` is all or nothing: after a failure no object (and no partial object) is visible under
  ``name``, and a previous object under ``name`` is intact.
- A missing name raises ``FileNotFoundError`` from ``get``, ``stat`` and ``delete``.
- A store that could not ask (network, permission, a dropped mount) raises ``OSError`` (often a
  :class:`~colabkit.errors.StoreError`); it never answers "absent" when it means "unknown".
- Names are relative, ``/``-separated, without ``..``, ``.``, empty parts, backslashes or NUL.
- ``list`` is sorted by name and stable.

Beyond the five, a store may tell the room it has: ``space() -> Space`` (see :class:`Space`);
colabkit checks it before the first checkpoint and when checkpoints grow, and treats a store
without it (or one that cannot tell) as "unknown", never as "full".
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from colabkit.errors import invalid_argument

CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class ObjectInfo:
    """What a store knows about one object.

    Attributes:
        name: The object's name inside the store.
        size: Size in bytes.
        md5: Hex md5 of the content, or None where the store cannot know it without reading the
            whole object (e.g. ``LocalStore.list``); ``put`` and ``stat`` always fill it.
        modified: Modification time, seconds since the epoch (informative only: colabkit never
            chooses a checkpoint by time).
    """

    name: str
    size: int
    md5: str | None
    modified: float


@dataclass(frozen=True)
class Space:
    """Room for checkpoints where a store keeps them, as the store can tell it.

    Attributes:
        free: Bytes that can still be written (None: no limit known, e.g. an unlimited Drive).
        total: The limit in bytes (None: none known).
        trash: Bytes in Drive's trash, counted in the quota until emptied (None: unknown;
            the Drive mount's filesystem figures do not tell it).
        source: Where the figures come from, for messages ("Drive (about.get)", ...).
    """

    free: int | None
    total: int | None
    trash: int | None
    source: str


def disk_space(path: str | os.PathLike[str], source: str = "local disk") -> Space:
    """The filesystem's figures for ``path`` (or its nearest existing parent): ``statvfs``."""
    folder = os.path.abspath(os.fspath(path))
    while not os.path.exists(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    st = os.statvfs(folder)
    return Space(st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize, None, source)


@runtime_checkable
class Store(Protocol):
    """Where checkpoints live durably."""

    url: str

    def put(self, local_path: str | os.PathLike[str], name: str) -> ObjectInfo:
        """Copies a local file into the store as ``name``, atomically, and verifies it."""
        ...

    def get(self, name: str, local_path: str | os.PathLike[str]) -> ObjectInfo:
        """Copies ``name`` to ``local_path`` atomically (temporary file, then rename)."""
        ...

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """The committed objects whose names start with ``prefix``, sorted by name."""
        ...

    def stat(self, name: str) -> ObjectInfo:
        """Describes one object; ``FileNotFoundError`` if absent."""
        ...

    def delete(self, name: str) -> None:
        """Removes one object; ``FileNotFoundError`` if absent."""
        ...


def validate_name(name: str) -> str:
    """Returns ``name`` if it is a safe relative object name, else raises ``ValueError``.

    Rejects what could escape a store's root when mapped to a path: absolute paths, ``..``,
    backslashes, NUL, empty or ``.`` parts, and leading/trailing slashes.
    """
    expected = "a relative name of '/'-separated parts without '..', '.', '\\\\' or NUL"
    if not isinstance(name, str) or not name:
        raise invalid_argument("name", name, expected)
    if "\\" in name or "\x00" in name or name.startswith("/") or name.endswith("/"):
        raise invalid_argument("name", name, expected)
    if len(name) > 1 and name[1] == ":":  # C:foo on Windows
        raise invalid_argument("name", name, expected)
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise invalid_argument("name", name, expected)
    return name


def md5_file(path: str | os.PathLike[str]) -> str:
    """Hex md5 of a file, read in chunks (md5 because Google Drive reports ``md5Checksum``)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
