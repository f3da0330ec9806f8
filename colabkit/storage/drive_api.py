"""``DriveApiStore``: checkpoints in a Google Drive folder through the Drive v3 API.

Unlike the Drive mount, whose writes sit in a VM-local cache until some later upload, the API
answers with the server's md5 of what it holds, so a ``put`` that returns has been verified on
Drive. How it commits: the bytes go up under a temporary name tagged in ``appProperties`` (small
files in one multipart request, large ones in resumable chunks), the server's md5 and size are
checked against the local file, the file is renamed to its final name, and the superseded copy is
deleted. Readers never see the temporary files.

Names map to Drive like paths on the mount: ``checkpoints/ckpt-1.zip`` is the file
``ckpt-1.zip`` in the subfolder ``checkpoints`` of the store's folder, so the same run looks the
same through the mount and through the API.

Names are found by listing the parent folder and comparing names exactly here: Drive's
``name = '...'`` search ignores case (``model.ckpt`` would find ``Model.ckpt``) and lags behind
writes, while listing a folder's children reads back what was just written. A folder this store
creates is used by the id Drive returns, never searched for. Drive allows duplicate names:
folders of one name (two VMs creating a run's folder at once) are read as one folder, and new
files go into the oldest (createdTime, then id); among files of one name the newest wins (a put
renames its upload, then deletes the copies it replaces, in every duplicate folder).
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import IO, Any

from colabkit.clock import SYSTEM_CLOCK, Clock
from colabkit.errors import StoreError, invalid_argument
from colabkit.storage.base import ObjectInfo, md5_file, validate_name
from colabkit.storage.drive_auth import find_credentials, from_pydrive2
from colabkit.storage.drive_transfer import download, upload
from colabkit.storage.drive_transport import (
    RequestsHttp,
    RetryPolicy,
    call_with_retry,
    error_reason,
)

logger = logging.getLogger(__name__)

FOLDER_MIME = "application/vnd.google-apps.folder"
TEMP_KEY = "colabkit_temporary"
TEMP_PREFIX = ".colabkit-upload-"
UPLOAD_QUANTUM = 256 * 1024
DEFAULT_CHUNK = 8 * 1024 * 1024
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


class DriveApiStore:
    """A :class:`~colabkit.storage.base.Store` in a Drive folder, via Drive v3.

    Args:
        folder: Path of the store's folder below ``root``, e.g. ``"colabkit/mnist"``; found, or
            created folder by folder, when the store opens.
        credentials: google-auth credentials; None finds them (see ``find_credentials``), which
            in Colab asks the user to sign in, here and not later.
        service: A ready googleapiclient Drive v3 resource (then nothing else is built).
        http: An ``httplib2.Http``-like transport to build the client on.
        chunk_size: Bytes per resumable-upload chunk and per download request, a multiple of
            256 KiB; files up to this size go up in one multipart request. At most about one
            chunk is held in memory.
        root: ID of the folder or shared drive that ``folder`` starts from (``"root"`` is My
            Drive; use a shared drive with service accounts, which have no storage of their own).
        clock: Where retry backoff sleeps.
        retry: Backoff settings for transient failures.
        create: Create ``folder`` where it is missing (the default); False raises
            ``FileNotFoundError`` instead (a store that is only read, e.g. by ``stage``).
    """

    def __init__(
        self,
        folder: str,
        *,
        credentials: Any = None,
        service: Any = None,
        http: Any = None,
        chunk_size: int = DEFAULT_CHUNK,
        root: str = "root",
        clock: Clock = SYSTEM_CLOCK,
        retry: RetryPolicy | None = None,
        create: bool = True,
    ) -> None:
        try:
            self.folder = validate_name(folder)
        except ValueError:
            raise invalid_argument(
                "folder", folder, "a Drive folder path like 'colabkit/run'"
            ) from None
        if (
            not isinstance(chunk_size, int)
            or chunk_size < UPLOAD_QUANTUM
            or chunk_size % UPLOAD_QUANTUM
        ):
            raise invalid_argument(
                "chunk_size", chunk_size, "a positive multiple of 262144 (256 KiB)"
            )
        self.url = f"gdrive://{self.folder}"
        self.chunk_size = chunk_size
        self.root = root
        self._clock = clock
        self._retry = retry or RetryPolicy()
        self._lock = threading.RLock()
        self._service = service or _build_service(
            http or RequestsHttp(find_credentials(credentials))
        )
        #: files.list's scope: My Drive, or the shared drive that holds ``root``.
        self._scope = self._scope_of(root)
        #: Store-relative folder path -> the ids of the Drive folders of that name, oldest first.
        self._folder_ids: dict[str, list[str]] = {"": self._open_folder(create)}
        logger.info("Drive store %s opened (folder id %s)", self.url, self._folder_ids[""][0])

    @classmethod
    def from_pydrive2(cls, gauth: Any, folder: str, **kwargs: Any) -> DriveApiStore:
        """Opens a store with the credentials of a signed-in PyDrive2 ``GoogleAuth``."""
        return cls(folder, credentials=from_pydrive2(gauth), **kwargs)

    def __repr__(self) -> str:
        return f"DriveApiStore({self.folder!r}, root={self.root!r})"

    # -- the Store protocol ------------------------------------------------------------------

    def put(self, local_path: str | os.PathLike[str], name: str) -> ObjectInfo:
        """Uploads ``local_path`` as ``name``; returns once Drive's md5 matches the local file."""
        validate_name(name)
        with open(local_path, "rb") as source:
            size = os.fstat(source.fileno()).st_size
            return self.put_stream(source, name, size=size, md5=md5_file(local_path))

    def put_stream(self, source: IO[bytes], name: str, *, size: int, md5: str) -> ObjectInfo:
        """Uploads a seekable binary stream whose size and md5 the caller knows.

        For callers that already hashed the bytes (and for huge sources that never touch disk);
        the stream is read one chunk at a time.
        """
        validate_name(name)
        with self._lock:
            parents, base = self._parent_of(name, create=True)
            upload = self._upload(source, parents[0], name, size)
            try:  # until the rename lands, the upload is ours to remove
                self._check_upload(upload, name, size, md5)
                superseded = self._files_named(parents, base)
                renamed = self._rename(upload["id"], base, name)
            except BaseException:
                self._discard(upload["id"], name)
                raise
            self._remove_superseded(superseded, name)
            info = _info(name, renamed)
            logger.info("Uploaded %s to %s (%d bytes, md5 verified)", name, self.url, info.size)
            return info

    def get(self, name: str, local_path: str | os.PathLike[str]) -> ObjectInfo:
        """Downloads ``name`` to a temporary file beside ``local_path``, checks md5, renames."""
        validate_name(name)
        with self._lock:
            info, file_id = self._resolve(name)
            download(
                self._service,
                file_id,
                local_path,
                info,
                chunk_size=self.chunk_size,
                clock=self._clock,
                policy=self._retry,
            )
            return info

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Committed objects whose names start with ``prefix``, sorted by name."""
        with self._lock:
            found: dict[str, tuple[tuple[str, str], ObjectInfo]] = {}
            self._walk(self._folder_ids[""], "", prefix, found)
            return [found[key][1] for key in sorted(found)]

    def stat(self, name: str) -> ObjectInfo:
        validate_name(name)
        with self._lock:
            return self._resolve(name)[0]

    def delete(self, name: str) -> None:
        """Deletes ``name`` (every copy, should Drive hold duplicates); permanent, not to trash."""
        validate_name(name)
        with self._lock:
            parents, base = self._parent_of(name, create=False)
            copies = self._files_named(parents, base)
            if not copies:
                raise FileNotFoundError(f"No object {name!r} in {self.url}.")
            for copy in copies:
                self._delete_file(copy["id"], f"delete of {name!r}")
            logger.info("Deleted %s from %s", name, self.url)

    def remove_leftovers(self, older_than: float = 3600.0) -> list[str]:
        """Deletes uploads that a crash left under temporary names; returns their names.

        A process killed between an upload and its rename leaves a whole checkpoint's bytes on
        Drive, counted against the user's quota. Only temporaries in the store's folders whose
        last change is ``older_than`` seconds old go: a put still running on another machine
        renames its upload within seconds.
        """
        cutoff = self._clock.time() - older_than
        removed = []
        with self._lock:
            for path, file in self._temporaries(self._folder_ids[""], ""):
                if 0 < _info(path, file).modified < cutoff:
                    self._delete_file(file["id"], f"removal of the unfinished upload {path!r}")
                    removed.append(path)
        return removed

    # -- folders and names ---------------------------------------------------------------------

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
        return [f["id"] for f in sorted(folders, key=_age_key)]

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
            if child.get("name") == base and _is_committed_file(child)
        ]
        return sorted(files, key=_age_key, reverse=True)

    def _children(self, parent: str, condition: str, fields: str) -> list[dict[str, Any]]:
        """A folder's children (listed by parent, which reads back writes; names are not
        searched: such a search lags behind writes and ignores case)."""
        return self._query(f"{quote(parent)} in parents and trashed = false{condition}", fields)

    def _resolve(self, name: str) -> tuple[ObjectInfo, str]:
        parents, base = self._parent_of(name, create=False)
        copies = self._files_named(parents, base)
        if not copies:
            raise FileNotFoundError(f"No object {name!r} in {self.url}.")
        return _info(name, copies[0]), copies[0]["id"]

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
                    _is_committed_file(child)
                    and name.startswith(prefix)
                    and (name not in found or _age_key(child) > found[name][0])
                ):
                    found[name] = (_age_key(child), _info(name, child))
        for name, children in sorted(subfolders.items()):
            ids = [c["id"] for c in sorted(children, key=_age_key)]
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
                elif _is_temporary(child):
                    yield name, child
        for name, ids in sorted(subfolders.items()):
            yield from self._temporaries(ids, name + "/")

    # -- HTTP ------------------------------------------------------------------------------------

    def _execute(self, request: Any, what: str, on_retry: Any = None) -> Any:
        return call_with_retry(
            lambda: request.execute(num_retries=0),
            what,
            clock=self._clock,
            policy=self._retry,
            on_retry=on_retry,
        )

    def _delete_file(self, file_id: str, what: str) -> None:
        """Deletes one file; gone on a retry means the first answer was lost: done. Where only
        trashing is allowed (a shared drive's content manager), it goes to the trash."""
        retried: list[bool] = []
        request = self._service.files().delete(fileId=file_id, supportsAllDrives=True)
        try:
            self._execute(request, what, on_retry=lambda: retried.append(True))
        except FileNotFoundError:
            if not retried:
                raise
        except StoreError as e:
            if error_reason(e.__cause__) not in ("insufficientFilePermissions", "cannotDeleteFile"):
                raise
            self._execute(
                self._service.files().update(
                    fileId=file_id, body={"trashed": True}, fields="id", supportsAllDrives=True
                ),
                f"{what} (to the trash: deleting is not permitted here)",
            )
            logger.info("Moved to the trash instead of deleting (%s).", what)

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

    def _upload(self, source: IO[bytes], parent: str, name: str, size: int) -> dict[str, Any]:
        """Uploads under a temporary tagged name; returns Drive's id, size and md5Checksum."""
        metadata = {
            "name": f"{TEMP_PREFIX}{uuid.uuid4().hex}",
            "parents": [parent],
            "appProperties": {TEMP_KEY: "1"},
        }
        return upload(
            self._service,
            source,
            metadata,
            size=size,
            chunk_size=self.chunk_size,
            what=f"upload of {name!r}",
            clock=self._clock,
            policy=self._retry,
        )

    def _check_upload(self, upload: dict[str, Any], name: str, size: int, md5: str) -> None:
        got_size, got_md5 = int(upload.get("size", -1)), upload.get("md5Checksum")
        if (got_size, got_md5) != (size, md5):
            raise StoreError(
                f"Drive holds different bytes than were sent for {name!r} (size {got_size}, md5 "
                f"{got_md5}; expected {size}, {md5}); the upload was discarded. Retry the save."
            )

    def _rename(self, upload_id: str, base: str, name: str) -> dict[str, Any]:
        """Commits a verified upload: its final name, and no temporary tag (one PATCH)."""
        body = {"name": base, "appProperties": {TEMP_KEY: None}}
        return self._execute(
            self._service.files().update(
                fileId=upload_id, body=body, fields=FILE_FIELDS, supportsAllDrives=True
            ),
            f"rename of the upload of {name!r}",
        )

    def _remove_superseded(self, superseded: list[dict[str, Any]], name: str) -> None:
        """Deletes the copies a put replaced; a leftover is harmless (the newest copy wins)."""
        for old in superseded:
            try:
                self._delete_file(old["id"], f"delete of the superseded {name!r}")
            except OSError as exc:
                logger.warning("Could not delete a superseded %s on Drive: %s", name, exc)

    def _discard(self, upload_id: str, name: str) -> None:
        try:
            self._delete_file(upload_id, f"removal of the failed upload of {name!r}")
        except Exception as exc:  # noqa: BLE001 - the original error matters more
            logger.warning("Could not remove the failed upload of %s: %s", name, exc)


def _build_service(http: Any) -> Any:
    """The Drive v3 client from the discovery document shipped in the wheel (no network)."""
    from googleapiclient.discovery import build

    return build("drive", "v3", http=http, static_discovery=True, cache_discovery=False)


def _is_temporary(file: dict[str, Any]) -> bool:
    """An upload not yet renamed to its final name (tagged, or still under its temporary name)."""
    tagged = TEMP_KEY in (file.get("appProperties") or {})
    return tagged or str(file.get("name", "")).startswith(TEMP_PREFIX)


def _is_committed_file(file: dict[str, Any]) -> bool:
    """Regular content files only: not folders, Google Docs, or temporary uploads."""
    google_doc = str(file.get("mimeType", "")).startswith("application/vnd.google-apps.")
    return not google_doc and not _is_temporary(file)


def _age_key(file: dict[str, Any]) -> tuple[str, str]:
    return (file.get("createdTime", ""), file.get("id", ""))


def _info(name: str, file: dict[str, Any]) -> ObjectInfo:
    modified = file.get("modifiedTime")
    when = datetime.fromisoformat(modified.replace("Z", "+00:00")).timestamp() if modified else 0.0
    return ObjectInfo(
        name=name, size=int(file.get("size", 0)), md5=file.get("md5Checksum"), modified=when
    )
