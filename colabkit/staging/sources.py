"""Where staged data comes from: a local path (the Drive mount included), the Drive API, fsspec.

Each source lists its files as :class:`Entry` values (size, and a version that changes when the
file does) and opens one at a byte offset, or (the Drive API) fetches one whole, md5-checked.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from colabkit.clock import Clock
from colabkit.env import COLAB_DRIVE_MOUNTPOINT
from colabkit.errors import invalid_argument
from colabkit.findings import Finding

#: Folders under which a local source is read through Google Drive's FUSE mount.
MOUNTPOINTS: tuple[Path, ...] = (COLAB_DRIVE_MOUNTPOINT,)


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


class LocalSource:
    """A file or folder on a local path, the Drive mount included (read twice there)."""

    def __init__(self, path: Path) -> None:
        self.path = path = Path(os.path.abspath(path))  # "..", "." get their folder's name
        self.url = str(path)
        self.name = path.name
        self.is_file = path.is_file()
        self.on_mount = any(is_under(path, mount) for mount in MOUNTPOINTS)

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


def is_under(path: Path, folder: Path) -> bool:
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


def open_source(source: Any, credentials: Any, clock: Clock) -> Any:
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
            if on_drive_mount(path) and not any(_listable(m / "MyDrive") for m in MOUNTPOINTS):
                raise invalid_argument(
                    "source", text, "a path on Drive, once it is mounted: Drive is not mounted "
                    "here. Run colabkit.setup() (or drive.mount('/content/drive')) first"
                )  # fmt: skip
            raise invalid_argument("source", text, f"{expected}; nothing is at this path")
        return LocalSource(path)
    if not isinstance(source, str):
        raise invalid_argument("source", source, expected)
    scheme = urlsplit(source).scheme
    if scheme == "file":
        return open_source(unquote(urlsplit(source).path), credentials, clock)
    try:
        if scheme == "gdrive" and urlsplit(source).netloc:
            return DriveApiSource(source, credentials, clock)
        from colabkit.storage import fsspec_store

        if fsspec_store.handles(scheme):
            return FsspecSource(source)
    except FileNotFoundError:
        raise invalid_argument("source", source, f"{expected}; nothing is there") from None
    raise invalid_argument("source", source, expected)


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


def _listable(folder: Path) -> bool:
    try:
        os.listdir(folder)
    except OSError:
        return False
    return True
