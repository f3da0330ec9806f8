"""Durable file primitives: write under a hidden temporary name, fsync, rename, fsync the folder.

A checkpoint must never be visible half-written. On a POSIX file system the only way to get that is
to write the bytes under another name in the same folder, flush and fsync them, ``os.replace`` the
temporary file onto the final name (atomic), and fsync the folder so the rename itself survives a
crash. ``LocalStore.put`` and ``checkpoint.format.write_checkpoint`` both go through these
functions, which also gives tests one seam (:func:`set_io_hook`) to stop a process with SIGKILL at
any chosen write, fsync or rename.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

IoHook = Callable[[str, str], None]

_hook: IoHook | None = None


def set_io_hook(hook: IoHook | None) -> IoHook | None:
    """Installs ``hook(event, path)``, called before every write, fsync and rename done here.

    Events are ``"write"``, ``"fsync"``, ``"replace"`` and ``"fsync_dir"``. Used by the crash
    tests and benchmarks to kill or fail the process at an exact point; returns the previous hook.
    """
    global _hook
    previous, _hook = _hook, hook
    return previous


def _event(kind: str, path: str | os.PathLike[str]) -> None:
    if _hook is not None:
        _hook(kind, os.fspath(path))


def temporary_name(final: str | os.PathLike[str]) -> Path:
    """A hidden, unique sibling of ``final``: readers that skip dot-files never see it."""
    final = Path(final)
    return final.with_name(f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def is_temporary_name(name: str) -> bool:
    """True for names made by :func:`temporary_name` (leftovers of an interrupted write)."""
    return name.startswith(".") and ".tmp-" in name


class HookedWriter:
    """A binary file wrapper that reports each write to the I/O hook (for crash tests)."""

    def __init__(self, raw: BinaryIO, path: str | os.PathLike[str]) -> None:
        self._raw = raw
        self.path = Path(path)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        _event("write", self.path)
        return self._raw.write(data)

    def tell(self) -> int:
        return self._raw.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def flush(self) -> None:
        self._raw.flush()

    def seekable(self) -> bool:
        return True


def fsync_file(f: BinaryIO, path: str | os.PathLike[str]) -> None:
    """Flushes Python's buffer and asks the kernel to put the bytes on disk."""
    f.flush()
    _event("fsync", path)
    os.fsync(f.fileno())


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Makes a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    _event("fsync_dir", folder)
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows; some FUSE mounts
        return
    try:
        with contextlib.suppress(OSError):  # EINVAL on file systems without directory fsync
            os.fsync(fd)
    finally:
        os.close(fd)


def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Atomically renames ``src`` onto ``dst`` and makes the rename durable."""
    _event("replace", dst)
    os.replace(src, dst)
    fsync_dir(Path(dst).parent)


@contextlib.contextmanager
def atomic_output(final: str | os.PathLike[str]) -> Iterator[HookedWriter]:
    """Yields a writer for a temporary sibling of ``final``; commits it only if the block succeeds.

    On success the bytes are fsynced and renamed onto ``final``; on any exception the temporary
    file is removed and ``final`` (if it existed) is untouched.
    """
    final = Path(final)
    tmp = temporary_name(final)
    try:
        with open(tmp, "xb") as raw:
            writer = HookedWriter(raw, tmp)
            yield writer
            fsync_file(raw, tmp)
        replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
