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

Names are found by listing parent folders and compared exactly, never searched for (Drive's
name search ignores case and lags behind writes); duplicate folders of one name are read as one.
See ``colabkit.storage.drive_folders``.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable
from typing import IO, Any

from colabkit.clock import SYSTEM_CLOCK, Clock
from colabkit.errors import StoreError, invalid_argument
from colabkit.storage.base import ObjectInfo, Space, md5_file, validate_name
from colabkit.storage.drive_auth import find_credentials, from_pydrive2
from colabkit.storage.drive_folders import (
    FILE_FIELDS,
    TEMP_KEY,
    TEMP_PREFIX,
    DriveFolders,
    object_info,
)
from colabkit.storage.drive_transfer import download, upload
from colabkit.storage.drive_transport import (
    RequestsHttp,
    RetryPolicy,
    call_with_retry,
    error_reason,
)

logger = logging.getLogger(__name__)

UPLOAD_QUANTUM = 256 * 1024
DEFAULT_CHUNK = 8 * 1024 * 1024


class DriveApiStore(DriveFolders):
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
            info = object_info(name, renamed)
            logger.debug("Uploaded %s to %s (%d bytes, md5 verified)", name, self.url, info.size)
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
            logger.debug("Deleted %s from %s", name, self.url)

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
                if 0 < object_info(path, file).modified < cutoff:
                    self._delete_file(file["id"], f"removal of the unfinished upload {path!r}")
                    removed.append(path)
        return removed

    # -- space -----------------------------------------------------------------------------------

    def space(self) -> Space:
        """The account's storage quota (``about.get``): what is free, the limit, the trash.

        Drive counts every file of the account against one limit shared with Gmail and Photos,
        trashed files included until the trash is emptied (or 30 days pass). A store in a
        shared drive is not counted there: its room is unknown (None).
        """
        if self._scope:
            return Space(None, None, None, "a shared drive (its room is not reported)")
        with self._lock:  # one request at a time on the client (an upload may be running)
            answer = self._execute(
                self._service.about().get(fields="storageQuota"), "reading of the storage quota"
            )
        return _quota_space(answer)

    def purge_trashed(self, wanted: Callable[[str], bool]) -> list[ObjectInfo]:
        """Deletes for good the files in Drive's trash, in the store's folders, whose
        store-relative name ``wanted`` accepts (matched exactly, by name); returns them.

        Only the trash of the store's own folders is looked at, never the rest of the
        account's trash (``files.emptyTrash`` would empty all of it).
        """
        purged = []
        with self._lock:
            for name, file in list(self._trashed(self._folder_ids[""], "")):
                if not wanted(name):
                    continue
                self._delete_file(file["id"], f"permanent delete of the trashed {name!r}")
                purged.append(object_info(name, file))
        return purged

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


def account_space(credentials: Any, *, clock: Clock = SYSTEM_CLOCK) -> Space:
    """The signed-in account's storage quota (``about.get``) with no folder to open: the quota
    is the account's, whichever folder asks (a new run's folder may not be on Drive yet)."""
    service = _build_service(RequestsHttp(find_credentials(credentials)))
    answer = call_with_retry(
        lambda: service.about().get(fields="storageQuota").execute(num_retries=0),
        "reading of the storage quota",
        clock=clock,
    )
    return _quota_space(answer)


def _quota_space(answer: dict[str, Any]) -> Space:
    quota = answer.get("storageQuota") or {}
    limit, usage = _int_or_none(quota.get("limit")), _int_or_none(quota.get("usage"))
    free = None if limit is None else max(0, limit - (usage or 0))
    trash = _int_or_none(quota.get("usageInDriveTrash"))
    return Space(free, limit, trash, "Drive's storage quota")


def _int_or_none(value: Any) -> int | None:
    """Drive's int64 fields come as strings; absent means "none" (an unlimited account)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
