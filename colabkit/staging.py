"""Training data copied to fast local disk before training: verified, resumable, cached.

Reading a dataset file by file through the Drive mount is the most common cause of slow Colab
training, and large copies off the mount fail midway (errno 107) or are throttled. ``stage``
copies a file, a folder or an archive once per VM to local disk and returns the local path:

    folder = colabkit.stage("/content/drive/MyDrive/data/flowers.zip")  # extracted
    train = keras.utils.image_dataset_from_directory(folder, ...)

Sources: a local path (the Drive mount included), ``gdrive://folder/path`` (the Drive API, no
mount needed), and bucket URLs through fsspec (``gs://``, ``s3://``, ``fsspec+memory://``...).
Where it goes: ``dest`` if given, else ``/content/colabkit-data`` in Colab and
``$XDG_CACHE_HOME/colabkit/data`` (``~/.cache/colabkit/data``) elsewhere; the result is
``<dest>/<name>`` (an archive's name without ``.zip``, ``.tar``, ``.tar.gz`` or ``.tgz``).

- **Verified.** Sizes always; the md5 where the source reports one (the Drive API, GCS, Azure);
  from the mount, whose reads can fail or come short, the md5 computed while copying is compared
  with a second read of the source; a local source must not change while it is copied. An
  archive is extracted only after it verified, into a temporary folder renamed into place; a
  corrupt one is refused and nothing of it is left.
- **Resumable.** A copy interrupted by an error (errno 107 and other transient ones are retried
  with backoff on the injected clock first) or a kill continues on the next call: from the
  byte where it stopped (the mount, local paths, buckets), or from the file where it stopped
  (the Drive API, whose downloads are verified whole).
- **Cached.** A call whose source did not change (sizes and mtimes, or md5s) returns at once;
  a changed source is copied again, and the old copy is replaced only once the new one is whole.
- **Honest about space.** Local free space is checked first: too little is refused in one line
  (needed, free) before anything is written.

The bookkeeping lives in ``<dest>/.colabkit-stage/``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import shutil
import sys
import tarfile
import threading
import zipfile
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from colabkit.clock import SYSTEM_CLOCK, Clock
from colabkit.env import COLAB_DRIVE_MOUNTPOINT, detect
from colabkit.errors import ColabkitError, invalid_argument
from colabkit.findings import Finding

log = logging.getLogger(__name__)

COLAB_DATA_ROOT = Path("/content/colabkit-data")
#: Folders under which a local source is read through Google Drive's FUSE mount.
MOUNTPOINTS: tuple[Path, ...] = (COLAB_DRIVE_MOUNTPOINT,)
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
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


class StageError(ColabkitError, OSError):
    """Staging failed; what was copied is kept, and the same call continues it."""


@dataclass(frozen=True)
class Entry:
    """One file of a source.

    Attributes:
        path: Its ``/``-separated path inside the source (the file's name for a file source).
        size: Bytes.
        version: What changes when the file does (md5, or size and modification time).
        md5: The md5 the source itself reports, when it does.
    """

    path: str
    size: int
    version: str
    md5: str | None = None


# ------------------------------------------------------------------------------ sources


class LocalSource:
    """A file or folder on a local path, the Drive mount included (read twice there)."""

    def __init__(self, path: Path) -> None:
        self.path = path = Path(os.path.abspath(path))  # "..", "." get their folder's name
        self.url = str(path)
        self.name = path.name
        self.is_file = path.is_file()
        self.on_mount = any(_is_under(path, mount) for mount in MOUNTPOINTS)

    def entries(self) -> list[Entry]:
        if self.is_file:
            return [_local_entry(self.path, self.path.name)]
        found = []
        for folder, dirs, files in os.walk(self.path):
            dirs.sort()
            for name in sorted(files):
                full = Path(folder, name)
                found.append(_local_entry(full, full.relative_to(self.path).as_posix()))
        return found

    def open_at(self, entry: Entry, offset: int) -> IO[bytes]:
        file = _open_file(self._file(entry))
        file.seek(offset)
        return file

    def check_unchanged(self, entry: Entry) -> str | None:
        """Why the copy of ``entry`` cannot be trusted, or None."""
        now = _local_entry(self._file(entry), entry.path)
        if now.version != entry.version:
            return "it changed while it was copied"
        return None

    def _file(self, entry: Entry) -> Path:
        return self.path if self.is_file else self.path / entry.path


def _open_file(path: Path) -> IO[bytes]:
    """Opens a source file for reading (tests put a failing one here)."""
    return open(path, "rb")  # noqa: SIM115 - the caller closes it


def _local_entry(path: Path, name: str) -> Entry:
    st = path.stat()
    return Entry(name, st.st_size, f"{st.st_size}:{st.st_mtime_ns}")


def _is_under(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


class FsspecSource:
    """A file or folder in a bucket (or any fsspec file system)."""

    on_mount = False

    def __init__(self, url: str) -> None:
        from colabkit.storage import fsspec_store

        self.url = fsspec_store._without_password(url)
        self.fs, self.root = fsspec_store._open_url(url, {})
        self.root = self.root.rstrip("/")
        info = self.fs.info(self.root)  # FileNotFoundError: reported by stage
        self.is_file = info.get("type") != "directory"
        self.name = self.root.rsplit("/", 1)[-1]
        self._info = info

    def entries(self) -> list[Entry]:
        if self.is_file:
            return [self._entry(self.name, self._info)]
        found = self.fs.find(self.root, detail=True)
        return sorted(
            (
                self._entry(path[len(self.root) + 1 :], info)
                for path, info in found.items()
                if info.get("type") != "directory"
            ),
            key=lambda e: e.path,
        )

    @staticmethod
    def _entry(name: str, info: dict[str, Any]) -> Entry:
        from colabkit.storage import fsspec_store

        md5 = fsspec_store.server_md5(info)
        size = int(info.get("size") or 0)
        changes = md5 or fsspec_store._etag(info) or fsspec_store._modified(info)
        return Entry(name, size, f"{size}:{changes}", md5)

    def open_at(self, entry: Entry, offset: int) -> IO[bytes]:
        path = self.root if self.is_file else f"{self.root}/{entry.path}"
        file = self.fs.open(path, "rb")
        file.seek(offset)
        return file

    def check_unchanged(self, entry: Entry) -> str | None:
        path = self.root if self.is_file else f"{self.root}/{entry.path}"
        if self._entry(entry.path, self.fs.info(path)).version != entry.version:
            return "it changed while it was copied"
        return None


class DriveApiSource:
    """A file or folder of My Drive through the Drive API (``gdrive://folder/path``)."""

    on_mount = False

    def __init__(self, url: str, credentials: Any, clock: Clock) -> None:
        from colabkit.storage.drive_api import DriveApiStore

        parts = urlsplit(url)
        path = unquote(parts.netloc + parts.path).strip("/")
        self.url = f"gdrive://{path}"
        parent, _, self.name = path.rpartition("/")
        options = {"credentials": credentials, "clock": clock, "create": False}
        self.store, self.is_file = None, False
        if parent:  # a file in a folder: its folder's store
            with contextlib.suppress(FileNotFoundError):
                store = DriveApiStore(parent, **options)
                self._file = store.stat(self.name)
                self.store, self.is_file = store, True
        if self.store is None:
            self.store = DriveApiStore(path, **options)  # FileNotFoundError: reported by stage

    def entries(self) -> list[Entry]:
        infos = [self._file] if self.is_file else self.store.list()
        return [Entry(i.name, i.size, f"{i.size}:{i.md5}", i.md5) for i in infos]

    def fetch(self, entry: Entry, target: Path) -> str:
        """Downloads ``entry`` whole to ``target`` (checked against Drive's md5); its md5."""
        info = self.store.get(entry.path, target)
        return info.md5 or ""


# ------------------------------------------------------------------------------ the finding


def on_drive_mount(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is read through the Drive mount (by its name: nothing is touched)."""
    text = os.path.abspath(os.path.expanduser(os.fspath(path)))
    return any(text == str(m) or text.startswith(str(m) + os.sep) for m in MOUNTPOINTS)


def data_finding(paths: Any) -> Finding | None:
    """A warning when training data is read file by file from the Drive mount, with the fix."""
    for path in list(paths or ())[:100]:
        if isinstance(path, (str, os.PathLike)) and on_drive_mount(path):
            return Finding(
                "warning",
                "data-on-drive-mount",
                f"Training data is read from the Drive mount ({path}): each file is a trip to "
                "Drive, often most of an epoch's time, and long reads fail with errno 107.",
                "Copy it to local disk once per VM and train on the copy: "
                f"path = colabkit.stage({os.fspath(path)!r}) (a folder, a file or a zip).",
            )
    return None


# ------------------------------------------------------------------------------ the copy


def stage(
    source: str | os.PathLike[str],
    dest: str | os.PathLike[str] | None = None,
    *,
    credentials: Any = None,
    clock: Clock | None = None,
    progress: bool = True,
) -> Path:
    """Copies ``source`` to fast local disk, once per VM, and returns the local path.

    Args:
        source: A local file, folder or archive (the Drive mount included, e.g.
            ``/content/drive/MyDrive/data.zip``), ``gdrive://folder/path`` (the Drive API) or a
            bucket URL (``gs://bucket/data``, anything fsspec opens).
        dest: The local folder to stage into (default: ``/content/colabkit-data`` in Colab, a
            cache folder elsewhere). The result is ``dest/<name>``.
        credentials: google-auth credentials for ``gdrive://`` (default: found as for
            ``DriveApiStore``).
        clock: Where retry backoff sleeps and progress reads time (tests inject one).
        progress: Show progress for copies that take more than a few seconds.

    Returns:
        The staged file or folder (an archive: the folder it was extracted to).

    Raises:
        ConfigError: ``source`` is not a path or URL of something that exists.
        StageError: Too little local disk, a corrupt archive, or reads that kept failing (what
            was copied is kept; the same call continues it).
    """
    clock = clock or SYSTEM_CLOCK
    src = _open_source(source, credentials, clock)
    archive = src.is_file and _archive_suffix(src.name)
    name = src.name[: -len(archive)] if archive else src.name
    if not name:
        raise invalid_argument("source", str(source), "a file or a folder below the root")
    root = Path(dest).expanduser() if dest is not None else _default_root()
    if root.exists() and not root.is_dir():
        raise invalid_argument("dest", str(dest), "a folder to stage into (this is a file)")
    if isinstance(src, LocalSource) and not src.is_file and _is_under(root, src.path):
        raise invalid_argument("dest", str(root), f"a folder outside the source {src.path}")
    target = root / name
    job = _Job(src, root, name, clock, progress)
    entries = src.entries()
    signature = _signature(src.url, entries)
    if job.is_cached(signature, target):
        log.info("%s is staged at %s already (unchanged).", src.url, target)
        return target
    job.refuse_foreign(target)
    job.start(signature, entries, extracted=bool(archive))
    if not (archive and job.partial.is_dir()):  # else: extracted whole before a kill
        copied = job.copy(entries)
        if archive:
            job.extract(copied, archive)
    job.commit(target)
    return target


def _open_source(source: Any, credentials: Any, clock: Clock) -> Any:
    expected = (
        "a local file, folder or archive (e.g. /content/drive/MyDrive/data.zip), "
        "gdrive://folder/path or a bucket URL such as gs://bucket/data"
    )
    if isinstance(source, os.PathLike) or (isinstance(source, str) and "://" not in source):
        text = os.fspath(source)
        if not text.strip():
            raise invalid_argument("source", source, expected)
        path = Path(text).expanduser()
        if not path.exists():
            raise invalid_argument("source", text, f"{expected}; nothing is at this path")
        return LocalSource(path)
    if not isinstance(source, str):
        raise invalid_argument("source", source, expected)
    scheme = urlsplit(source).scheme
    if scheme == "file":
        return _open_source(unquote(urlsplit(source).path), credentials, clock)
    try:
        if scheme == "gdrive" and urlsplit(source).netloc:
            return DriveApiSource(source, credentials, clock)
        from colabkit.storage import fsspec_store

        if fsspec_store.handles(scheme):
            return FsspecSource(source)
    except FileNotFoundError:
        raise invalid_argument("source", source, f"{expected}; nothing is there") from None
    raise invalid_argument("source", source, expected)


def _default_root() -> Path:
    env = detect(session_limit=None)
    if env.kind == "colab":
        return COLAB_DATA_ROOT
    return env.staging_root / "data"


def _archive_suffix(name: str) -> str:
    lowered = name.lower()
    return next((s for s in ARCHIVE_SUFFIXES if lowered.endswith(s) and len(s) < len(name)), "")


def _signature(url: str, entries: Sequence[Entry]) -> str:
    digest = hashlib.sha256(url.encode())
    for e in entries:
        digest.update(f"\0{e.path}\0{e.size}\0{e.version}".encode())
    return digest.hexdigest()


class _Job:
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
        copied = self._copied_bytes(entries)
        total = sum(e.size for e in entries)
        needed = total - copied + (total if extracted else 0)
        free = shutil.disk_usage(_existing_parent(self.root)).free
        if needed + RESERVE > free:
            raise StageError(
                f"Not enough local disk to stage {self.src.url}: it needs {_size(needed)} more, "
                f"{_size(free)} is free on {_existing_parent(self.root)}. Free some space, or "
                "pass dest= a folder on a larger disk."
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
        meter = _Progress(self.src.url, left, self.clock, enabled=self.show_progress)
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

    def _copy_one(self, entry: Entry, target: Path, meter: _Progress) -> None:
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

    def _append(self, entry: Entry, target: Path, meter: _Progress) -> str | None:
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
        needed = _unpacked_size(archive, suffix)
        free = shutil.disk_usage(self.state_dir).free
        if needed is not None and needed + RESERVE > free:
            raise StageError(
                f"Not enough local disk to extract {self.src.url}: it needs {_size(needed)}, "
                f"{_size(free)} is free on {self.root}. Free some space, or pass dest= a folder "
                "on a larger disk (the downloaded archive is kept)."
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


def _copy_in_kernel(source: Any, out: IO[bytes], count: int, meter: _Progress) -> bool:
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


def _unpacked_size(archive: Path, suffix: str) -> int | None:
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


# ------------------------------------------------------------------------------ progress


class _Progress:
    """Progress of a copy: tqdm in a notebook where it is installed, else a line every 10 s;
    nothing for copies done within a few seconds."""

    QUIET_S, EVERY_S = 3.0, 10.0

    def __init__(self, what: str, total: int, clock: Clock, *, enabled: bool) -> None:
        self.what, self.total, self.clock, self.enabled = what, total, clock, enabled
        self.done = 0
        self.started = self._last = clock.monotonic()
        self._bar: Any = None
        self._printed = False
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        if not self.enabled or not n:
            return
        with self._lock:
            self.done += n
            now = self.clock.monotonic()
            if now - self.started < self.QUIET_S:
                return
            if self._bar is None and "ipykernel" in sys.modules:
                self._bar = _tqdm(self.total, self.what)
                if self._bar is not None:
                    self._bar.update(self.done)
                    return
            if self._bar:
                self._bar.update(n)
            elif now - self._last >= self.EVERY_S or not self._printed:
                self._last, self._printed = now, True
                print(f"colabkit: staging {self.what}: {self._line(now)}", file=sys.stderr)

    def _line(self, now: float) -> str:
        seconds = max(now - self.started, 1e-9)
        rate = self.done / seconds
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta = f"about {_duration(left)} left" if left != float("inf") else "waiting"
        share = f"{100 * self.done / self.total:.0f}%" if self.total else "100%"
        return f"{_size(self.done)} of {_size(self.total)} ({share}), {_size(rate)}/s, {eta}"

    def close(self) -> None:
        if self._bar:
            self._bar.close()
        elif self._printed:
            print(
                f"colabkit: staged {self.what}: {self._line(self.clock.monotonic())}",
                file=sys.stderr,
            )


def _tqdm(total: int, what: str) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=f"staging {what}", unit="B", unit_scale=True)


# ------------------------------------------------------------------------------ small helpers


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size if path.is_file() else 0
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
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data))
    os.replace(temporary, path)
