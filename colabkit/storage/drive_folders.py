"""How ``DriveApiStore`` finds folders and files in Drive: by listing parents, never by name.

Drive's ``name = '...'`` search ignores case (``model.ckpt`` would find ``Model.ckpt``) and lags
behind writes, while listing a folder's children reads back what was just written; so names are
compared exactly here, on listings. A folder the store creates is used by the id Drive returns.
Drive allows duplicate names: folders of one name (two VMs creating a run's folder at once) are
read as one folder, the oldest first (createdTime, then id); among files of one name the newest
wins. Listings of a shared drive are scoped to it (``corpora=drive``, ``driveId``), and an
incomplete one is an error, never an empty folder.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from colabkit.errors import StoreError
from colabkit.storage.base import ObjectInfo, validate_name

logger = logging.getLogger(__name__)

FOLDER_MIME = "application/vnd.google-apps.folder"
TEMP_KEY = "colabkit_temporary"
TEMP_PREFIX = ".colabkit-upload-"
FILE_FIELDS = "id,name,mimeType,size,md5Checksum,createdTime,modifiedTime,appProperties"
FOLDER_FIELDS = "id,name,createdTime"


def quote(value: str) -> str:
    """A string literal for Drive's query language (``\\`` and ``'`` escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def is_safe_part(name: str) -> bool:
    """Whether a Drive file name can be one part of a store name (no ``/``, ``..``, NUL...)."""
    if "/" in name:
        return False
    try:
        validate_name(name)
    except ValueError:
        return False
    return True


class DriveFolders:
    """The folder and name half of ``DriveApiStore`` (a mixin: it uses the store's ``root``,
    ``folder``, ``url``, ``_folder_ids``, ``_scope``, ``_service`` and ``_execute``)."""

    def _open_folder(self, create: bool) -> list[str]:
        """Finds (or creates) the store's folder, part by part, below ``root``."""
        folder_ids = [self.root]
        for part in self.folder.split("/"):
            folder_ids = self._child_folders(folder_ids, part, create=create)
            if not folder_ids:
                raise FileNotFoundError(f"No Drive folder {self.folder!r}: {part!r} was not found.")
        return folder_ids

    def _folders_at(self, path: str, *, create: bool) -> list[str]:
        """The ids of the subfolder(s) at store-relative ``path`` ("" is the store's folder)."""
        if path in self._folder_ids:
            return self._folder_ids[path]
        parent_path, _, part = path.rpartition("/")
        parents = self._folders_at(parent_path, create=create)
        found = self._child_folders(parents, part, create=create) if parents else []
        if found:
            self._folder_ids[path] = found
        return found

    def _child_folders(self, parents: list[str], part: str, *, create: bool) -> list[str]:
        """The folders named exactly ``part`` in ``parents``, oldest first; one is created in
        the oldest parent when there is none (and its id, as Drive answers it, is used)."""
        folders = self._folders_named(parents, part)
        if not folders and create:
            body = {"name": part, "mimeType": FOLDER_MIME, "parents": [parents[0]]}
            created = self._execute(
                self._service.files().create(
                    body=body, fields=FOLDER_FIELDS, supportsAllDrives=True
                ),
                f"creation of folder {part!r}",
            )
            logger.info("Created Drive folder %s", part)
            # Listed once more: a racing VM's folder (or one whose creation answer was lost and
            # retried) is older; files then go there, and this one is read as the same folder.
            again = self._folders_named(parents, part)
            folders = again + [created] * all(f["id"] != created["id"] for f in again)
        return [f["id"] for f in sorted(folders, key=age_key)]

    def _folders_named(self, parents: list[str], part: str) -> list[dict[str, Any]]:
        condition = f" and mimeType = '{FOLDER_MIME}'"
        return [
            child
            for parent in parents
            for child in self._children(parent, condition, FOLDER_FIELDS)
            if child.get("name") == part
        ]

    def _parent_of(self, name: str, *, create: bool) -> tuple[list[str], str]:
        directory, _, base = name.rpartition("/")
        return self._folders_at(directory, create=create), base

    def _files_named(self, parents: list[str], base: str) -> list[dict[str, Any]]:
        """Committed copies of ``base`` in ``parents``, newest first."""
        files = [
            child
            for parent in parents
            for child in self._children(parent, "", FILE_FIELDS)
            if child.get("name") == base and is_committed_file(child)
        ]
        return sorted(files, key=age_key, reverse=True)

    def _children(self, parent: str, condition: str, fields: str) -> list[dict[str, Any]]:
        """A folder's children (listed by parent, which reads back writes; names are not
        searched: such a search lags behind writes and ignores case)."""
        return self._query(f"{quote(parent)} in parents and trashed = false{condition}", fields)

    def _resolve(self, name: str) -> tuple[ObjectInfo, str]:
        parents, base = self._parent_of(name, create=False)
        copies = self._files_named(parents, base)
        if not copies:
            raise FileNotFoundError(f"No object {name!r} in {self.url}.")
        return object_info(name, copies[0]), copies[0]["id"]

    def _walk(
        self,
        folder_ids: list[str],
        path: str,
        prefix: str,
        found: dict[str, tuple[tuple[str, str], ObjectInfo]],
    ) -> None:
        """Collects the committed files under a folder (all its duplicates), descending where
        ``prefix`` can match; of files of one name the newest wins."""
        subfolders: dict[str, list[dict[str, Any]]] = {}
        for folder_id in folder_ids:
            for child in self._children(folder_id, "", FILE_FIELDS):
                if not is_safe_part(child.get("name", "")):
                    logger.warning("Ignoring Drive file with an unsafe name: %r", child.get("name"))
                    continue
                name = path + child["name"]
                if child.get("mimeType") == FOLDER_MIME:
                    subfolders.setdefault(name, []).append(child)
                elif (
                    is_committed_file(child)
                    and name.startswith(prefix)
                    and (name not in found or age_key(child) > found[name][0])
                ):
                    found[name] = (age_key(child), object_info(name, child))
        for name, children in sorted(subfolders.items()):
            ids = [c["id"] for c in sorted(children, key=age_key)]
            self._folder_ids.setdefault(name, ids)
            if prefix.startswith(name + "/") or (name + "/").startswith(prefix):
                self._walk(ids, name + "/", prefix, found)

    def _temporaries(
        self, folder_ids: list[str], path: str
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(store-relative name, file) of every temporary upload under a folder, every copy."""
        subfolders: dict[str, list[str]] = {}
        for folder_id in folder_ids:
            for child in self._children(folder_id, "", FILE_FIELDS):
                name = path + child.get("name", "")
                if child.get("mimeType") == FOLDER_MIME:
                    subfolders.setdefault(name, []).append(child["id"])
                elif is_temporary(child):
                    yield name, child
        for name, ids in sorted(subfolders.items()):
            yield from self._temporaries(ids, name + "/")

    def _trashed(self, folder_ids: list[str], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(store-relative name, file) of every file in Drive's trash whose folder is one of the
        store's (a file deleted on the mount keeps its parent in the trash)."""
        subfolders: dict[str, list[str]] = {}
        for folder_id in folder_ids:
            for child in self._children(folder_id, "", FILE_FIELDS):
                if child.get("mimeType") == FOLDER_MIME:
                    subfolders.setdefault(path + child.get("name", ""), []).append(child["id"])
            trashed = f"{quote(folder_id)} in parents and trashed = true"
            for child in self._query(trashed, FILE_FIELDS):
                if child.get("mimeType") != FOLDER_MIME and is_safe_part(child.get("name", "")):
                    yield path + child["name"], child
        for name, ids in sorted(subfolders.items()):
            yield from self._trashed(ids, name + "/")

    def _scope_of(self, root: str) -> dict[str, str]:
        """``corpora=drive`` and ``driveId`` for a root in a shared drive (a search over all
        drives may come back incomplete); nothing for My Drive."""
        if root == "root":
            return {}
        meta = self._execute(
            self._service.files().get(fileId=root, fields="id,driveId", supportsAllDrives=True),
            f"lookup of the root folder {root!r}",
        )
        drive_id = meta.get("driveId")
        return {"corpora": "drive", "driveId": drive_id} if drive_id else {}

    def _query(self, query: str, fields: str) -> list[dict[str, Any]]:
        """All pages of a ``files.list`` query."""
        files: list[dict[str, Any]] = []
        token = None
        while True:
            request = self._service.files().list(
                q=query,
                fields=f"nextPageToken, incompleteSearch, files({fields})",
                pageSize=1000,
                pageToken=token,
                supportsAllDrives=True,
                includeItemsFromAllDrives=True,
                **self._scope,
            )
            page = self._execute(request, f"listing of {self.url}")
            if page.get("incompleteSearch"):  # never answer "absent" for "not looked at"
                raise StoreError(
                    f"Drive answered only part of the listing of {self.url} (incompleteSearch)."
                    " Retry; if it persists, open the store with root= the shared drive's id."
                )
            files.extend(page.get("files", []))
            token = page.get("nextPageToken")
            if not token:
                return files


def is_temporary(file: dict[str, Any]) -> bool:
    """An upload not yet renamed to its final name (tagged, or still under its temporary name)."""
    tagged = TEMP_KEY in (file.get("appProperties") or {})
    return tagged or str(file.get("name", "")).startswith(TEMP_PREFIX)


def is_committed_file(file: dict[str, Any]) -> bool:
    """Regular content files only: not folders, Google Docs, or temporary uploads."""
    google_doc = str(file.get("mimeType", "")).startswith("application/vnd.google-apps.")
    return not google_doc and not is_temporary(file)


def age_key(file: dict[str, Any]) -> tuple[str, str]:
    return (file.get("createdTime", ""), file.get("id", ""))


def object_info(name: str, file: dict[str, Any]) -> ObjectInfo:
    modified = file.get("modifiedTime")
    when = datetime.fromisoformat(modified.replace("Z", "+00:00")).timestamp() if modified else 0.0
    return ObjectInfo(
        name=name, size=int(file.get("size", 0)), md5=file.get("md5Checksum"), modified=when
    )
