"""Moving bytes to and from Drive: uploads (multipart or resumable) and verified downloads.

Uploads are multipart when small and resumable chunks with our own retries when large.
googleapiclient's ``next_chunk(num_retries>0)`` resends a chunk stream that the failed attempt
already consumed and hangs; so each chunk is sent with ``num_retries=0`` and retried here. After
a failure googleapiclient's next ``next_chunk()`` first asks the server how much it holds
(``Content-Range: bytes */TOTAL``, answered 308 with ``Range``) and continues from the server's
offset, which is how a dropped chunk resumes without resending what already arrived. An expired
session (404/410) starts the upload again from byte 0.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from typing import IO, Any

from colabkit.clock import Clock
from colabkit.errors import StoreError
from colabkit.storage.base import ObjectInfo
from colabkit.storage.drive_transport import RetryPolicy, call_with_retry

logger = logging.getLogger(__name__)

MIME_TYPE = "application/octet-stream"
UPLOAD_FIELDS = "id,size,md5Checksum"


def upload(
    service: Any,
    source: IO[bytes],
    metadata: dict[str, Any],
    *,
    size: int,
    chunk_size: int,
    what: str,
    clock: Clock,
    policy: RetryPolicy,
) -> dict[str, Any]:
    """Creates a file from ``source``; returns Drive's ``id``, ``size`` and ``md5Checksum``.

    Raises:
        StoreError: Drive refused, the folder vanished, or failures outlasted ``policy``.
    """
    try:
        if size <= chunk_size:
            return _multipart(service, source, metadata, what, clock, policy)
        return _ResumableUpload(service, source, metadata, chunk_size, what, policy).run(clock)
    except FileNotFoundError as exc:
        raise StoreError(
            f"Drive answered 404 during {what}: the store's folder was deleted or moved. "
            "Open the store again."
        ) from exc


def _multipart(
    service: Any,
    source: IO[bytes],
    metadata: dict[str, Any],
    what: str,
    clock: Clock,
    policy: RetryPolicy,
) -> dict[str, Any]:
    from googleapiclient.http import MediaIoBaseUpload

    media = MediaIoBaseUpload(source, MIME_TYPE, resumable=False)
    request = service.files().create(
        body=metadata, media_body=media, fields=UPLOAD_FIELDS, supportsAllDrives=True
    )
    return call_with_retry(lambda: request.execute(num_retries=0), what, clock=clock, policy=policy)


class _ResumableUpload:
    """One resumable upload session, restarted from scratch if Drive forgets it."""

    def __init__(
        self,
        service: Any,
        source: IO[bytes],
        metadata: dict[str, Any],
        chunk_size: int,
        what: str,
        policy: RetryPolicy,
    ) -> None:
        self._service = service
        self._source = source
        self._metadata = metadata
        self._chunk_size = chunk_size
        self._what = what
        self._policy = policy
        self._restarts = 0
        self._request = self._new_request()

    def _new_request(self) -> Any:
        from googleapiclient.http import MediaIoBaseUpload

        media = MediaIoBaseUpload(
            self._source, MIME_TYPE, chunksize=self._chunk_size, resumable=True
        )
        return self._service.files().create(
            body=self._metadata, media_body=media, fields=UPLOAD_FIELDS, supportsAllDrives=True
        )

    def run(self, clock: Clock) -> dict[str, Any]:
        """Sends chunks until Drive answers with the file; each chunk has its own retries."""
        response = None
        while response is None:
            response = call_with_retry(self._step, self._what, clock=clock, policy=self._policy)
        return response

    def _step(self) -> dict[str, Any] | None:
        from googleapiclient.errors import HttpError

        try:
            _status, response = self._request.next_chunk(num_retries=0)
        except HttpError as exc:
            if exc.status_code not in (404, 410) or self._request.resumable_uri is None:
                raise
            self._restarts += 1
            if self._restarts >= self._policy.max_attempts:
                raise StoreError(
                    f"Drive kept losing the upload session during {self._what} "
                    f"({self._restarts} restarts). Check the connection, then retry."
                ) from exc
            logger.warning("Drive upload session expired during %s; restarting", self._what)
            self._request = self._new_request()
            return None
        return response


def download(
    service: Any,
    file_id: str,
    local_path: str | os.PathLike[str],
    info: ObjectInfo,
    *,
    chunk_size: int,
    clock: Clock,
    policy: RetryPolicy,
) -> None:
    """Downloads into a temporary file beside ``local_path``, checks Drive's md5, renames.

    The temporary name is made here, never from the Drive file's name, so no name on Drive can
    steer a write elsewhere; on any failure ``local_path`` is left as it was.
    """
    target = os.fspath(local_path)
    fd, partial = tempfile.mkstemp(
        prefix=".colabkit-get-", suffix=".part", dir=os.path.dirname(target) or "."
    )
    try:
        with os.fdopen(fd, "wb") as out:
            received = _fetch(service, file_id, out, info, chunk_size, clock, policy)
            out.flush()
            os.fsync(out.fileno())
        if received != info.md5:
            raise StoreError(
                f"Download of {info.name!r} does not match Drive's md5 (got {received}, "
                f"expected {info.md5}); {target!r} was left untouched. Retry."
            )
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise


def _fetch(
    service: Any,
    file_id: str,
    out: IO[bytes],
    info: ObjectInfo,
    chunk_size: int,
    clock: Clock,
    policy: RetryPolicy,
) -> str:
    """Streams a file into ``out`` in ``chunk_size`` ranges; returns the md5 of what came."""
    from googleapiclient.http import MediaIoBaseDownload

    writer = _HashingWriter(out)
    if info.size == 0:  # Drive answers 416 to a range on an empty file: nothing to ask
        return writer.digest.hexdigest()
    request = service.files().get_media(fileId=file_id, supportsAllDrives=True)
    downloader = MediaIoBaseDownload(writer, request, chunksize=chunk_size)
    done = False
    while not done:
        _progress, done = call_with_retry(
            lambda: downloader.next_chunk(num_retries=0),
            f"download of {info.name!r}",
            clock=clock,
            policy=policy,
        )
    return writer.digest.hexdigest()


class _HashingWriter:
    """A write-only file that hashes what passes through (so a download is read once)."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self.digest = hashlib.md5(usedforsecurity=False)

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self._out.write(data)
