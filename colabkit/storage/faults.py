"""``FaultyStore``: wraps a store and makes it fail the way Google Drive fails.

Drive's mount reports a full quota as ENOSPC or EIO and a dropped FUSE connection as ENOTCONN
(errno 107, "Transport endpoint is not connected"). Tests and benchmarks wrap a real store in a
``FaultyStore``, switch such failures on and off, and hold puts back to play a slow store, without
touching the code under test.
"""

from __future__ import annotations

import errno as errno_module
import os
import threading
from collections import Counter

from colabkit.errors import invalid_argument
from colabkit.storage.base import ObjectInfo, Store

OPERATIONS = ("put", "get", "list", "stat", "delete")


class FaultyStore:
    """A :class:`~colabkit.storage.base.Store` wrapper with switchable failures.

    Args:
        inner: The store that does the work when no failure is switched on.

    Attributes:
        calls: How many times each operation was called (failed calls included).
        log: Each call as ``(operation, name or prefix)``, in order (failed calls included).
    """

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.url = inner.url
        self.calls: Counter[str] = Counter()
        self.log: list[tuple[str, str]] = []
        self._errors: dict[str, tuple[int, int | None]] = {}
        self._gate = threading.Event()
        self._gate.set()
        self.put_waiting = threading.Event()
        self._lock = threading.Lock()

    def fail(self, code: int, *, ops: tuple[str, ...] = ("put",), times: int | None = None) -> None:
        """Makes ``ops`` raise ``OSError(code)``: the next ``times`` calls, or until ``heal()``."""
        for op in ops:
            if op not in OPERATIONS:
                raise invalid_argument("ops", ops, f"operations among {OPERATIONS}")
        with self._lock:
            for op in ops:
                self._errors[op] = (code, times)

    def heal(self) -> None:
        """Switches every failure off (the store "recovers")."""
        with self._lock:
            self._errors.clear()

    def hold_puts(self) -> threading.Event:
        """Makes every ``put`` wait until :meth:`release_puts` (a store slower than saving).

        Returns an event that is set once a ``put`` is waiting.
        """
        self.put_waiting.clear()
        self._gate.clear()
        return self.put_waiting

    def release_puts(self) -> None:
        self._gate.set()

    def put(self, local_path: str | os.PathLike[str], name: str) -> ObjectInfo:
        self._enter("put", name)
        if not self._gate.is_set():
            self.put_waiting.set()
            self._gate.wait()
        return self.inner.put(local_path, name)

    def get(self, name: str, local_path: str | os.PathLike[str]) -> ObjectInfo:
        self._enter("get", name)
        return self.inner.get(name, local_path)

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        self._enter("list", prefix)
        return self.inner.list(prefix)

    def stat(self, name: str) -> ObjectInfo:
        self._enter("stat", name)
        return self.inner.stat(name)

    def delete(self, name: str) -> None:
        self._enter("delete", name)
        self.inner.delete(name)

    def _enter(self, op: str, name: str) -> None:
        with self._lock:
            self.calls[op] += 1
            self.log.append((op, name))
            fault = self._errors.get(op)
            if fault is None:
                return
            code, times = fault
            if times is not None:
                if times <= 1:
                    del self._errors[op]
                else:
                    self._errors[op] = (code, times - 1)
        raise OSError(code, os.strerror(code), f"{self.url} ({op})")


ENOSPC = errno_module.ENOSPC
EIO = errno_module.EIO
ENOTCONN = errno_module.ENOTCONN
