"""A player of Drive for desktop (DriveFS), the client behind Colab's ``/content/drive`` mount.

On Colab a write to the mount lands in a VM-local cache; DriveFS uploads it some time later. Here
the mount is a plain folder (``my_drive``, the mount's ``MyDrive``) and :class:`DriveFS` is a
:class:`~colabkit.clock.FakeClock` whose passing time (each ``sleep``, or an explicit
:meth:`DriveFS.sync`) mirrors that folder into a :class:`~fake_drive.FakeDrive`, each change
``lag`` seconds after a sync first saw it:

- a new file is uploaded; a changed one gets a new head revision (same Drive file; only the head
  counts against the quota);
- a file that was uploaded and is gone from the mount is moved to Drive's trash, with the bytes
  Drive holds for it then: the last content uploaded. Truncating a file before deleting it frees
  nothing unless the 0-byte content was uploaded (synced) before the delete;
- a rename (the same inode and content, under a new path) is a rename on Drive: same file id,
  moved to the new folder, no upload;
- a mirrored folder gone from the mount is trashed on Drive;
- files whose name starts with "." (colabkit's atomic-write temporaries) are never uploaded,
  though they do take room on the VM's disk.

Uploads go through :meth:`FakeDrive.upload` / :meth:`FakeDrive.revise`, so the quota and the
daily cap apply as on the HTTP path: a refused upload stays pending (DriveFS retries at each later
sync) and is recorded in :attr:`DriveFS.failed_uploads`.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fake_drive import FOLDER, FakeDrive, FakeFile, Refused

from colabkit.clock import FakeClock

DEFAULT_LAG = 20.0  # seconds between DriveFS seeing a change and Drive holding it


@dataclass
class Synced:
    """A mount file whose content Drive holds: its Drive file, that content, its inode."""

    file_id: str
    data: bytes
    inode: tuple[int, int]


class DriveFS(FakeClock):
    """A clock whose passing time lets DriveFS mirror the mount folder ``my_drive`` into ``drive``.

    Args:
        my_drive: The folder that plays the mount's ``MyDrive``.
        drive: The fake Drive that DriveFS uploads to.
        lag: Seconds from a sync first seeing a change (a new or changed file, a deletion, a
            rename) to Drive holding it; None: nothing is ever mirrored on its own (only
            :meth:`flush` does).
        start: The fake clock's start (``time()``).

    Attributes a test reads or sets:
        holds: ``holds(path)`` True keeps that path's upload back for now (a stuck upload).
        uploaded: Mount paths (relative to ``my_drive``, "/"-separated) in the order their
            content went up (new files and new revisions).
        failed_uploads: ``(path, reason)`` for each upload Drive refused (reason
            "storageQuotaExceeded" or "userRateLimitExceeded"); the path is retried later.
        trashed: Mount paths whose Drive file (or folder, ending in "/") went to the trash.
        renamed: ``(old path, new path)`` of each rename mirrored.
        synced: Mount path -> :class:`Synced`, for what Drive holds.
    """

    def __init__(
        self,
        my_drive: str | os.PathLike[str],
        drive: FakeDrive,
        lag: float | None = DEFAULT_LAG,
        *,
        start: float = 1_700_000_000.0,
    ) -> None:
        super().__init__(start)
        self.my_drive, self.drive, self.lag = Path(my_drive), drive, lag
        self.holds: Callable[[str], bool] = lambda relative: False
        self.uploaded: list[str] = []
        self.failed_uploads: list[tuple[str, str]] = []
        self.trashed: list[str] = []
        self.renamed: list[tuple[str, str]] = []
        self.synced: dict[str, Synced] = {}
        self.first_seen: dict[str, tuple[bytes, float]] = {}  # content as seen, since when
        self.gone_since: dict[str, float] = {}  # synced paths missing from the mount
        self.folders: dict[str, str] = {}  # mirrored mount folder -> Drive folder id
        self.folders_gone_since: dict[str, float] = {}
        self._sync_lock = threading.RLock()

    # -- time --------------------------------------------------------------------------------------

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        self.sync()

    def sync(self) -> None:
        """One DriveFS pass now: notes what changed, mirrors what is ``lag`` seconds old."""
        self._sync(flush=False)

    upload_due = sync  # the name tests of the mount used first

    def flush(self) -> None:
        """Mirrors every change now, whatever its age (``drive.flush_and_unmount()``); held
        paths stay held."""
        self._sync(flush=True)

    def pending(self) -> list[str]:
        """Mount paths whose current state Drive does not hold yet (as of the last sync)."""
        waiting = {p for p, (data, _) in self.first_seen.items() if self._differs(p, data)}
        return sorted(waiting | set(self.gone_since))

    # -- one pass ----------------------------------------------------------------------------------

    def _sync(self, flush: bool) -> None:
        with self._sync_lock:
            now = self.time()
            present, folders = self._scan()
            self._note(present, folders, now)

            def due(since: float) -> bool:
                return flush or (self.lag is not None and now - since >= self.lag)

            for relative in sorted(self.gone_since):
                if due(self.gone_since[relative]):
                    self._mirror_gone(relative, present)
            for relative in sorted(present):
                data, inode = present[relative]
                if not self._differs(relative, data):
                    self.synced[relative].inode = inode
                elif not self.holds(relative) and due(self.first_seen[relative][1]):
                    self._upload(relative, data, inode)
            for folder in sorted(self.folders_gone_since, reverse=True):  # inner ones first
                if due(self.folders_gone_since[folder]):
                    del self.folders_gone_since[folder]
                    self._trash_folder(folder)

    def _scan(self) -> tuple[dict[str, tuple[bytes, tuple[int, int]]], set[str]]:
        """The mount's visible files (path -> content, inode) and its folders."""
        files: dict[str, tuple[bytes, tuple[int, int]]] = {}
        folders: set[str] = set()
        for path in self.my_drive.rglob("*"):
            relative = path.relative_to(self.my_drive).as_posix()
            try:
                info = path.lstat()
                if stat.S_ISDIR(info.st_mode):
                    folders.add(relative)
                elif stat.S_ISREG(info.st_mode) and not path.name.startswith("."):
                    files[relative] = (path.read_bytes(), (info.st_dev, info.st_ino))
            except FileNotFoundError:  # removed while DriveFS looked
                continue
        return files, folders

    def _note(self, present, folders: set[str], now: float) -> None:
        """Records when each change was first seen."""
        for relative, (data, _) in present.items():
            seen = self.first_seen.get(relative)
            if seen is None or seen[0] != data:
                self.first_seen[relative] = (data, now)
        for relative in set(self.first_seen) - set(present):
            del self.first_seen[relative]
        for relative in self.synced:
            if relative not in present:
                self.gone_since.setdefault(relative, now)
        for relative in set(self.gone_since) & set(present):
            del self.gone_since[relative]  # back before DriveFS mirrored its going
        for folder in self.folders:
            if folder not in folders:
                self.folders_gone_since.setdefault(folder, now)
        for folder in set(self.folders_gone_since) & folders:
            del self.folders_gone_since[folder]

    def _differs(self, relative: str, data: bytes) -> bool:
        synced = self.synced.get(relative)
        return synced is None or synced.data != data

    # -- mirroring ---------------------------------------------------------------------------------

    def _mirror_gone(self, relative: str, present) -> None:
        """A synced file left the mount: renamed (same inode and content elsewhere) or deleted."""
        del self.gone_since[relative]
        old = self.synced.pop(relative)
        file = self.drive.files.get(old.file_id)
        if file is None or file.trashed:  # already gone from Drive (through the API)
            return
        moved_to = [
            path
            for path, (data, inode) in present.items()
            if path not in self.synced and inode == old.inode and data == old.data
        ]
        if moved_to:
            new = moved_to[0]
            *_, name = new.split("/")
            file.name, file.parents = name, [self._folder_for(new)]
            file.searchable_after = self.drive.listings + self.drive.search_lag
            self.synced[new] = Synced(file.id, old.data, old.inode)
            self.renamed.append((relative, new))
        else:
            self.drive.trash(file)  # with what Drive holds: the last content uploaded
            self.trashed.append(relative)

    def _upload(self, relative: str, data: bytes, inode: tuple[int, int]) -> None:
        """Makes Drive hold ``data`` for ``relative``: a new file, or a new head revision."""
        synced = self.synced.get(relative)
        file = self.drive.files.get(synced.file_id) if synced else None
        if file is None or file.trashed:
            file = self._file_at(relative)
        try:
            if file is None:
                parent = self._folder_for(relative)
                file = self.drive.upload(relative.rsplit("/", 1)[-1], parent, data)
            elif file.data != data:
                self.drive.revise(file, data)
            else:  # Drive holds it already
                self.synced[relative] = Synced(file.id, data, inode)
                return
        except Refused as refused:
            self.failed_uploads.append((relative, refused.reason))
            return
        self.synced[relative] = Synced(file.id, data, inode)
        self.uploaded.append(relative)

    def _file_at(self, relative: str) -> FakeFile | None:
        """The Drive file already at that path (not trashed), if any."""
        parent = self._folder_for(relative)
        name = relative.rsplit("/", 1)[-1]
        found = [f for f in self.drive.named(name, parent) if not f.trashed and f.mime != FOLDER]
        return found[0] if found else None

    def _folder_for(self, relative: str) -> str:
        """The Drive id of the folder holding ``relative``, mirrored folder by folder."""
        parent, path = "root", ""
        for folder in relative.split("/")[:-1]:
            path = f"{path}/{folder}" if path else folder
            known = self.folders.get(path)
            drive_folder = self.drive.files.get(known) if known else None
            if drive_folder is None or drive_folder.trashed:
                found = [
                    f
                    for f in self.drive.named(folder, parent)
                    if f.mime == FOLDER and not f.trashed
                ]
                drive_folder = found[0] if found else self.drive.add_folder(folder, parent)
                self.folders[path] = drive_folder.id
            parent = drive_folder.id
        return parent

    def _trash_folder(self, folder: str) -> None:
        folder_id = self.folders.pop(folder)
        drive_folder = self.drive.files.get(folder_id)
        if drive_folder is not None and not drive_folder.trashed:
            self.drive.trash(drive_folder)
            self.trashed.append(f"{folder}/")
