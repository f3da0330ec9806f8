"""One staging job: the copy (continued after errors and kills), its verification, archives
extracted, and the result put in place. Its bookkeeping lives in ``<dest>/.colabkit-stage/``."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import shutil
import tarfile
import threading
import zipfile
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from colabkit.clock import Clock
from colabkit.duration import format_size
from colabkit.errors import StageError
from colabkit.staging.progress import Progress
from colabkit.staging.sources import Entry
from colabkit.storage.atomic import atomic_output

log = logging.getLogger("colabkit.staging")

STATE_DIR = ".colabkit-stage"
CHUNK = 8 * 1024 * 1024
#: Seconds between retries of a failed read; after the last one the call fails (resumable).
RETRY_DELAYS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 60)
#: Local disk kept free beyond what the copy needs.
RESERVE = 256 * 1024 * 1024
#: Errors of a mount or network that a retry can outlast (107 is a dropped Drive mount).
TRANSIENT = frozenset(
    {
        errno.ENOTCONN,
        errno.EIO,
        errno.ETIMEDOUT,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EAGAIN,
        errno.ESTALE,
        errno.EINTR,
    }
)
WORKERS = 8  # files copied at once from a folder: mount and network reads wait, not compute


class Job:
    """The files of one staging: ``.colabkit-stage/<name>.json`` (what is being staged, and
    whether it is done), ``<name>.partial`` (the copy), ``<name>.done`` (files copied whole)."""

    def __init__(self, src: Any, root: Path, name: str, clock: Clock, progress: bool) -> None:
        self.src, self.root, self.name, self.clock = src, root, name, clock
        self.state_dir = root / STATE_DIR
        self.record = self.state_dir / f"{name}.json"
        self.partial = self.state_dir / f"{name}.partial"
        self.done_log = self.state_dir / f"{name}.done"
        self.show_progress = progress
        self._lock = threading.Lock()

    def is_cached(self, signature: str, target: Path) -> bool:
        state = self._state()
        return state.get("signature") == signature and state.get("complete") and target.exists()

    def refuse_foreign(self, target: Path) -> None:
        """A ``target`` that an earlier ``stage`` did not put there is never replaced."""
        if (target.exists() or target.is_symlink()) and self._state().get("staged") != str(target):
            raise StageError(
                f"{target} exists and was not staged there by colabkit; it was left as it is. "
                "Pass dest= another folder, or move it away."
            )

    def _state(self) -> dict[str, Any]:
        try:
            return json.loads(self.record.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def start(self, signature: str, entries: Sequence[Entry], *, extracted: bool) -> None:
        """Keeps a copy in progress of the same source; else clears it. Then checks space."""
        state = self._state()
        if state.get("signature") != signature or state.get("complete"):
            if self.partial.exists() or self.done_log.exists():
                log.info("%s changed since its copy began: copying it again.", self.src.url)
            _remove(self.partial)
            _remove(self.done_log)
        total = sum(e.size for e in entries)
        if extracted and self.partial.is_dir():  # extracted whole before a kill: on disk already
            needed = 0
        else:
            needed = total - self._copied_bytes(entries) + (total if extracted else 0)
        free = shutil.disk_usage(_existing_parent(self.root)).free
        if needed and needed + RESERVE > free:  # nothing more to write: no room asked
            raise StageError(
                f"Not enough local disk to stage {self.src.url}: it needs "
                f"{format_size(needed)} more, {format_size(free)} is free on "
                f"{_existing_parent(self.root)}. Free some space, or pass dest= a folder on a "
                "larger disk."
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        record = {"source": self.src.url, "signature": signature, "complete": False}
        _write_json(self.record, {**record, "staged": state.get("staged")})

    def _copied_bytes(self, entries: Sequence[Entry]) -> int:
        if self.src.is_file:
            return min(_size_of(self.partial), entries[0].size) if entries else 0
        return sum(_size_of(self.partial / e.path) for e in entries)

    # -- copying -------------------------------------------------------------------------------

    def copy(self, entries: Sequence[Entry]) -> Path:
        """Copies every entry into ``partial`` (a file source: ``partial`` is that file)."""
        done = self._done()
        todo = [e for e in entries if done.get(e.path) != e.version]
        left = sum(e.size for e in todo) - self._copied_bytes(todo)
        meter = Progress(self.src.url, left, self.clock, enabled=self.show_progress)
        if self.src.is_file:
            for entry in todo:
                self._copy_one(entry, self.partial, meter)
        else:
            self.partial.mkdir(parents=True, exist_ok=True)
            with ThreadPoolExecutor(WORKERS) as pool:
                futures = [
                    pool.submit(self._copy_one, e, self.partial / e.path, meter) for e in todo
                ]
                for future in futures:
                    future.result()
        meter.close()
        return self.partial

    def _done(self) -> dict[str, str]:
        done: dict[str, str] = {}
        with contextlib.suppress(FileNotFoundError):
            for line in self.done_log.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    item = json.loads(line)
                    done[item["path"]] = item["version"]
        return done

    def _copy_one(self, entry: Entry, target: Path, meter: Progress) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        if hasattr(self.src, "fetch"):  # the Drive API: whole files, md5-checked by the store
            self._retrying(entry, lambda: self.src.fetch(entry, target))
            meter.add(entry.size)
        else:
            copy = lambda: self._append(entry, target, meter)  # noqa: E731
            md5 = self._retrying(entry, copy, progress=lambda: _size_of(target))
            self._verify(entry, target, md5)
        with self._lock, open(self.done_log, "a") as log_file:
            log_file.write(json.dumps({"path": entry.path, "version": entry.version}) + "\n")

    def _append(self, entry: Entry, target: Path, meter: Progress) -> str | None:
        """Continues ``target`` from its current size; the md5 of the whole file where it is
        compared with something (the source's md5, or a second read of the mount).

        Not fsynced: a killed process leaves what it wrote in the page cache, and a VM that
        dies takes its local disk along anyway.
        """
        offset = _size_of(target)
        if offset > entry.size:  # not a prefix of this version: start over
            target.unlink()
            offset = 0
        hashed = entry.md5 is not None or self.src.on_mount
        digest = (
            (_md5_of(target) if offset else hashlib.md5(usedforsecurity=False)) if hashed else None
        )
        with (
            self.src.open_at(entry, offset) as source,
            open(target, "r+b" if offset else "wb") as out,
        ):
            out.seek(offset)  # not O_APPEND: copy_file_range refuses that
            if digest is None and _copy_in_kernel(source, out, entry.size - offset, meter):
                return None
            while chunk := source.read(CHUNK):
                if digest is not None:
                    digest.update(chunk)
                out.write(chunk)
                meter.add(len(chunk))
        return digest.hexdigest() if digest is not None else None

    def _verify(self, entry: Entry, target: Path, md5: str | None) -> None:
        problem = None
        size = _size_of(target)
        if size != entry.size:
            problem = f"{size} bytes arrived, the source has {entry.size}"
        elif entry.md5 is not None and md5 != entry.md5:
            problem = f"md5 {md5} differs from the source's {entry.md5}"
        elif self.src.on_mount:  # the mount's reads can fail silently: read it again
            again = self._read_again(entry)
            if again != md5:
                problem = "two reads through the Drive mount gave different bytes"
        else:
            problem = self.src.check_unchanged(entry)
        if problem:
            target.unlink()
            raise StageError(
                f"Copy of {entry.path!r} from {self.src.url} did not verify ({problem}); it was "
                "discarded. Run the same call again (the rest of the copy is kept)."
            )

    def _read_again(self, entry: Entry) -> str:
        """The md5 of a second read of the source (continued, like the copy, after errors)."""
        digest, done = hashlib.md5(usedforsecurity=False), [0]

        def read_rest() -> str:
            with self.src.open_at(entry, done[0]) as source:
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                    done[0] += len(chunk)
            return digest.hexdigest()

        return self._retrying(entry, read_rest, progress=lambda: done[0])

    def _retrying(self, entry: Entry, call: Any, progress: Any = None) -> Any:
        """Runs ``call`` until it succeeds, backing off after transient errors; a failure
        after ``progress()`` moved on (bytes written) starts the backoff over."""
        attempt, mark = 0, progress() if progress else None
        while True:
            try:
                return call()
            except OSError as e:
                if e.errno == errno.ENOSPC:
                    raise StageError(
                        f"The local disk filled up while staging {self.src.url}; what was copied "
                        "is kept. Free some space (or pass dest= a folder on a larger disk) and "
                        "run the same call again."
                    ) from e
                if isinstance(e, StageError) or e.errno not in TRANSIENT:
                    raise
                now = progress() if progress else None
                attempt = 0 if now != mark else attempt
                mark = now
                if attempt == len(RETRY_DELAYS):
                    raise StageError(
                        f"Reading {entry.path!r} from {self.src.url} kept failing ({e}) after "
                        f"{attempt + 1} attempts; what was copied is kept. Reconnect (for the "
                        "Drive mount: drive.mount(..., force_remount=True)) and run the same "
                        "call again to continue."
                    ) from e
                delay = RETRY_DELAYS[attempt]
                attempt += 1
                log.warning("Reading %s failed (%s); retrying in %ss.", entry.path, e, delay)
                self.clock.sleep(delay)

    # -- archives ------------------------------------------------------------------------------

    def extract(self, archive: Path, suffix: str) -> None:
        """Extracts the verified ``archive`` into a temporary folder that becomes ``partial``."""
        unpacked = self.state_dir / f"{self.name}.extracting"
        _remove(unpacked)
        needed = _unpackedsize(archive, suffix)
        free = shutil.disk_usage(self.state_dir).free
        if needed is not None and needed + RESERVE > free:
            raise StageError(
                f"Not enough local disk to extract {self.src.url}: it needs "
                f"{format_size(needed)}, {format_size(free)} is free on {self.root}. Free some "
                "space, or pass dest= a folder on a larger disk (the downloaded archive is kept)."
            )
        unpacked.mkdir()
        try:
            if suffix == ".zip":
                with zipfile.ZipFile(archive) as zf:
                    for member in zf.infolist():
                        _check_member(member.filename, self.src.url)
                    zf.extractall(unpacked)
            else:
                with tarfile.open(archive, "r:*") as tf:
                    if hasattr(tarfile, "data_filter"):
                        tf.extractall(unpacked, filter="data")
                    else:  # pragma: no cover - Python before 3.10.12
                        for member in tf.getmembers():
                            _check_member(member.name, self.src.url)
                            if member.issym() or member.islnk():
                                _check_member(member.linkname, self.src.url)
                        tf.extractall(unpacked)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as e:
            _remove(unpacked)
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                raise StageError(
                    f"The local disk filled up while extracting {self.src.url}; nothing of it "
                    "was kept. Free some space, or pass dest= a folder on a larger disk."
                ) from e
            if isinstance(e, OSError) and e.errno is not None:
                raise
            _remove(archive)
            _remove(self.done_log)
            raise StageError(
                f"{self.src.url} is not a valid {suffix} archive ({type(e).__name__}: {e}); "
                "nothing was extracted. Check the file at its source (re-create or re-upload "
                "it)."
            ) from e
        _remove(archive)
        unpacked.rename(self.partial)

    def commit(self, target: Path) -> None:
        """Puts the copy in place (an older copy is removed only after) and records it."""
        if hasattr(self.src, "fetch") and self.partial.is_dir():  # downloads cut by a kill
            for leftover in self.partial.rglob(".colabkit-get-*.part"):
                leftover.unlink()
        self.root.mkdir(parents=True, exist_ok=True)
        old = None
        if target.exists() or target.is_symlink():
            old = self.state_dir / f"{self.name}.old"
            _remove(old)
            target.rename(old)
        self.partial.rename(target)
        _write_json(self.record, {**self._state(), "complete": True, "staged": str(target)})
        _remove(self.done_log)
        if old is not None:
            _remove(old)
        log.info("Staged %s at %s.", self.src.url, target)


def _copy_in_kernel(source: Any, out: IO[bytes], count: int, meter: Progress) -> bool:
    """Copies ``count`` bytes from a real file's position without passing them through Python
    (``copy_file_range``, as ``cp`` does); False, having copied nothing, where it cannot."""
    try:
        src_fd, out_fd = source.fileno(), out.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return False
    if not hasattr(os, "copy_file_range"):
        return False
    position, copied = source.tell(), 0
    while copied < count:
        try:
            n = os.copy_file_range(src_fd, out_fd, min(CHUNK, count - copied), position + copied)
        except OSError as e:
            if copied == 0 and e.errno in (
                errno.EXDEV,
                errno.ENOSYS,
                errno.EINVAL,
                errno.EOPNOTSUPP,
            ):
                return False
            raise
        if n == 0:  # the source is shorter than it said: _verify will tell
            break
        copied += n
        meter.add(n)
    return True


def _check_member(name: str, url: str) -> None:
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":"):
        raise zipfile.BadZipFile(f"member {name!r} of {url} would land outside its folder")


def _unpackedsize(archive: Path, suffix: str) -> int | None:
    """The archive's content size, where it says (zip; gzip's size modulo 4 GiB, at least)."""
    with contextlib.suppress(zipfile.BadZipFile, OSError, tarfile.TarError):
        if suffix == ".zip":
            with zipfile.ZipFile(archive) as zf:
                return sum(m.file_size for m in zf.infolist())
        if suffix in (".tar.gz", ".tgz"):
            with open(archive, "rb") as f:
                f.seek(-4, os.SEEK_END)
                return max(int.from_bytes(f.read(4), "little"), _size_of(archive))
        return _size_of(archive)
    return None


def _size_of(path: Path) -> int:
    """The bytes of the file ``path``; 0 where there is none yet."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _md5_of(path: Path) -> Any:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_output(path) as out:  # the record is whole or absent, never half-written
        out.write(json.dumps(data).encode())
