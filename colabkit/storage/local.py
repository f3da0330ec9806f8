"""``LocalStore``: checkpoints in a folder (a local disk, or the Google Drive mount).

It commits by rename: ``put`` copies into a hidden temporary sibling, fsyncs it, reads it back to
check size and md5 against the source, and only then ``os.replace``s it onto the final name and
fsyncs the folder. A process killed at any point leaves either the old object or the new one,
plus at worst a hidden temporary file that ``list`` never shows.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from pathlib import Path

from colabkit import env
from colabkit.errors import StoreError
from colabkit.storage import atomic
from colabkit.storage.base import CHUNK, ObjectInfo, Space, disk_space, md5_file, validate_name


class LocalStore:
    """A :class:`~colabkit.storage.base.Store` backed by a folder.

    Args:
        root: The folder. It is created on the first ``put``; a folder that does not exist yet is
            an empty store (a dropped mount raises ``OSError`` instead, never "empty").

    A folder under Colab's Drive mountpoint (``/content/drive``) is refused while nothing is
    mounted there: what is written would land on local disk (lost with the VM, and the next
    ``drive.mount`` refuses a mountpoint holding files), and an empty listing would read as "no
    checkpoint" and restart the run.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().absolute()
        self.url = self.root.as_uri()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def path(self, name: str) -> Path:
        """The file that holds object ``name`` (validated, inside ``root``)."""
        return self.root / validate_name(name)

    def _check_mounted(self) -> None:
        mountpoint = env.unmounted_drive(self.root)
        if mountpoint is not None:
            raise StoreError(
                f"Google Drive is not mounted at {mountpoint}: not using {self.root} (it would "
                "be local disk, lost with the VM). Mount it first: colabkit.setup(), or "
                f"drive.mount({str(mountpoint)!r}) from google.colab."
            )

    def put(self, local_path: str | os.PathLike[str], name: str) -> ObjectInfo:
        self._check_mounted()
        final = self.path(name)
        with open(local_path, "rb") as src:  # FileNotFoundError before anything is created
            final.parent.mkdir(parents=True, exist_ok=True)
            with atomic.atomic_output(final) as out:
                size, md5 = copy_stream(src, out)
                out.flush()
                written = md5_file(out.path)
                if os.path.getsize(out.path) != size or written != md5:
                    raise StoreError(
                        f"Copy of {os.fspath(local_path)!r} to {str(final)!r} came back different "
                        "(size or md5); the previous object is kept. Check the disk or mount."
                    )
        return ObjectInfo(name=name, size=size, md5=md5, modified=final.stat().st_mtime)

    def get(self, name: str, local_path: str | os.PathLike[str]) -> ObjectInfo:
        self._check_mounted()
        source = self.path(name)
        with open(source, "rb") as src:  # FileNotFoundError before the destination is touched
            modified = os.fstat(src.fileno()).st_mtime
            with atomic.atomic_output(local_path) as out:
                size, md5 = copy_stream(src, out)
        return ObjectInfo(name=name, size=size, md5=md5, modified=modified)

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        self._check_mounted()
        try:
            os.stat(self.root)
        except FileNotFoundError:  # not created yet: empty. A dropped mount (ENOTCONN) raises.
            return []
        found = []
        for folder, subfolders, files in os.walk(self.root, onerror=_raise):
            subfolders.sort()
            relative = Path(folder).relative_to(self.root).as_posix()
            for file in files:
                name = file if relative == "." else f"{relative}/{file}"
                if atomic.is_temporary_name(file) or not name.startswith(prefix):
                    continue
                with contextlib.suppress(FileNotFoundError):  # deleted while listing
                    st = os.stat(os.path.join(folder, file))
                    found.append(ObjectInfo(name, st.st_size, None, st.st_mtime))
        return sorted(found, key=lambda info: info.name)

    def stat(self, name: str) -> ObjectInfo:
        self._check_mounted()
        path = self.path(name)
        st = os.stat(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(2, "Not a stored object", str(path))
        return ObjectInfo(name=name, size=st.st_size, md5=md5_file(path), modified=st.st_mtime)

    def space(self) -> Space:
        """The free space of the disk under ``root`` (what ``df`` says)."""
        self._check_mounted()
        return disk_space(self.root)

    def remove_leftovers(self, older_than: float = 3600.0) -> list[str]:
        """Deletes hidden temporary files of puts interrupted by a crash; returns their names.

        Only files untouched for ``older_than`` seconds go, so a put still running elsewhere
        (its file keeps changing) is left alone. Each leftover can be as big as a checkpoint,
        which matters on a Drive with a quota.
        """
        self._check_mounted()
        removed = []
        cutoff = time.time() - older_than
        for folder, _, files in os.walk(self.root):
            for file in files:
                path = os.path.join(folder, file)
                with contextlib.suppress(FileNotFoundError):
                    if atomic.is_temporary_name(file) and os.stat(path).st_mtime < cutoff:
                        os.unlink(path)
                        removed.append(Path(path).relative_to(self.root).as_posix())
        return removed

    def delete(self, name: str) -> None:
        self._check_mounted()
        path = self.path(name)
        os.unlink(path)
        atomic.fsync_dir(path.parent)


def copy_stream(src, dst) -> tuple[int, str]:
    """Copies ``src`` to ``dst`` in chunks; returns (bytes copied, hex md5 of them)."""
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    while chunk := src.read(CHUNK):
        digest.update(chunk)
        dst.write(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def _raise(error: OSError) -> None:
    raise error
