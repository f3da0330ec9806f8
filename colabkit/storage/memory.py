"""``MemoryStore``: a store held in a dict, the test double every other store is measured against.

``open_store("memory://name")`` returns the same ``MemoryStore`` for the same name within a
process, so a test (or a CLI call made in-process) can reach the store a trainer wrote to.
"""

from __future__ import annotations

import hashlib
import os
import threading

from colabkit.clock import SYSTEM_CLOCK, Clock
from colabkit.storage.atomic import atomic_output
from colabkit.storage.base import CHUNK, ObjectInfo, validate_name

_SHARED: dict[str, MemoryStore] = {}
_SHARED_LOCK = threading.Lock()


class MemoryStore:
    """A thread-safe in-memory :class:`~colabkit.storage.base.Store`.

    Args:
        name: Shown in ``url`` (``memory://<name>``).
        clock: Where ``modified`` times come from.
    """

    def __init__(self, name: str = "default", *, clock: Clock | None = None) -> None:
        self.url = f"memory://{name}"
        self._clock = clock or SYSTEM_CLOCK
        self._objects: dict[str, tuple[bytes, ObjectInfo]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryStore({self.url!r})"

    @classmethod
    def shared(cls, name: str) -> MemoryStore:
        """The process-wide store called ``name`` (created on first use)."""
        with _SHARED_LOCK:
            if name not in _SHARED:
                _SHARED[name] = cls(name)
            return _SHARED[name]

    def put(self, local_path: str | os.PathLike[str], name: str) -> ObjectInfo:
        validate_name(name)
        data = self._read_source(local_path)  # everything read before anything is visible
        info = ObjectInfo(
            name=name,
            size=len(data),
            md5=hashlib.md5(data, usedforsecurity=False).hexdigest(),
            modified=self._clock.time(),
        )
        with self._lock:
            self._objects[name] = (data, info)
        return info

    def get(self, name: str, local_path: str | os.PathLike[str]) -> ObjectInfo:
        data, info = self._lookup(name)
        with atomic_output(local_path) as out:
            out.write(data)
        return info

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        with self._lock:
            infos = [info for name, (_, info) in self._objects.items() if name.startswith(prefix)]
        return sorted(infos, key=lambda info: info.name)

    def stat(self, name: str) -> ObjectInfo:
        return self._lookup(name)[1]

    def delete(self, name: str) -> None:
        validate_name(name)
        with self._lock:
            if self._objects.pop(name, None) is None:
                raise FileNotFoundError(2, "No such object", f"{self.url}/{name}")

    def _lookup(self, name: str) -> tuple[bytes, ObjectInfo]:
        validate_name(name)
        with self._lock:
            found = self._objects.get(name)
        if found is None:
            raise FileNotFoundError(2, "No such object", f"{self.url}/{name}")
        return found

    def _read_source(self, local_path: str | os.PathLike[str]) -> bytes:
        parts = []
        with open(local_path, "rb") as f:
            while chunk := f.read(CHUNK):
                parts.append(chunk)
        return b"".join(parts)
