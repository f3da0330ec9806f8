"""A fake Google Drive v3 behind ``responses``: files, folders, paging, uploads, faults, tokens,
and storage space.

It answers the wire shapes listed in /work/shared/research/drive-api.md (queries, ``fields``,
multipart and resumable uploads with the 308/Range protocol, ranged downloads, 401 for stale
tokens, ``about.get`` of ``storageQuota``, ``files.emptyTrash``), records every request as a
:class:`Seen`, and injects faults by request kind. It is strict: a request shape it does not know
answers 400, so a test fails instead of passing by luck. And as Drive does: a query's
``name = '...'`` ignores case, and with ``search_lag=N`` it sees a file created or renamed only N
listings later (listing a folder's children sees it at once); a parent must be an existing folder;
a non-final upload chunk must be a multiple of 256 KiB; the last chunk of a resumable upload
answers 201; Google Docs have no size or md5.

Space, as users have it (/work/shared/research/drive-real-behaviour.md, "Space"):

- ``quota`` is the account's limit (None: unlimited, and ``about`` has no ``limit``), shared with
  Gmail and Photos, whose bytes are ``other_usage``. A file's bytes count while it exists, in the
  trash too: trashing (``files.update`` with ``trashed``) moves them to ``usageInDriveTrash``;
  only ``files.delete``, ``files.emptyTrash`` (or :meth:`FakeDrive.empty_trash`) free them.
  Deleting a folder for good deletes everything below it; a file below a trashed folder is in the
  trash. Folders count 0 bytes; files in shared drives do not count against the user (a shared
  drive has storage of its own, not modelled). Only a file's head revision counts
  (``files.quotaBytesUsed``: "head revision as well as previous revisions with keepForever
  enabled"; the fake has no older revisions).
- An upload that would take ``usage`` over ``quota`` is refused with 403 ``storageQuotaExceeded``:
  a multipart upload, a resumable upload at its start (the declared length) and again at its last
  chunk (space may have gone meanwhile; the session is then gone), a folder while usage is
  already over. ``peak_usage`` is the highest ``usage`` ever reached.
- ``upload_cap`` (None: no cap) plays the 750 GB a day: an upload that would take
  ``uploaded_today`` past it, or any once it is reached, is refused with 403
  ``userRateLimitExceeded`` and the message ``"User rate limit exceeded."`` (the only thing that
  tells it from the per-minute rate limit, whose long message :data:`RATE_LIMIT_MESSAGE` a fault
  of that reason carries). There is no real day: :meth:`FakeDrive.new_day` starts one.
- Stricter than Drive: every refusal is exact (``usage + size > quota``, ``uploaded_today + size
  > upload_cap``), where Drive lets an upload already under way finish and one file cross the
  daily cap ("uploads that are in progress will complete"). The cap is checked when an upload
  starts; a resumable upload's bytes count towards it when it completes.
- Setup helpers (:meth:`FakeDrive.add`) check nothing, so a test may build any state;
  :meth:`FakeDrive.upload` and :meth:`FakeDrive.revise` (the way in of the DriveFS player,
  ``fake_drivefs``) are checked by the same :meth:`FakeDrive.can_upload` as HTTP uploads and
  raise :class:`Refused`.
- Not modelled: files below a trashed folder still list as ``trashed = false`` (only the space
  accounting and ``emptyTrash`` see them in the trash); the 30-day automatic emptying of the
  trash; older revisions (Drive's help says they take space until they expire).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
import responses

BASE = "https://www.googleapis.com"
TOKEN_URI = "https://oauth2.googleapis.com/token"
FOLDER = "application/vnd.google-apps.folder"
QUANTUM = 256 * 1024
DEFAULT_FIELDS = ("kind", "id", "name", "mimeType")

#: Drive's message for a refusal for lack of space (403 ``storageQuotaExceeded``).
QUOTA_MESSAGE = "The user's Drive storage quota has been exceeded."
#: Drive's message for the daily upload cap (403 ``userRateLimitExceeded``); rclone's drive backend
#: tells it from the per-minute rate limit only by this exact text.
UPLOAD_CAP_MESSAGE = "User rate limit exceeded."
#: Drive's message for the per-minute rate limit (403 ``userRateLimitExceeded``).
RATE_LIMIT_MESSAGE = (
    "User Rate Limit Exceeded. Rate of requests for user exceed configured project quota. You may "
    "consider re-evaluating expected per-user traffic to the API and adjust project quota limits "
    "accordingly. You may monitor aggregate quota usage and adjust it if you need increased "
    "limits on: https://console.cloud.google.com/apis/api/drive.googleapis.com/quotas"
    "?project=123456789012"
)
#: The message an error of a reason carries unless told otherwise (else: the reason itself).
MESSAGES = {
    "storageQuotaExceeded": QUOTA_MESSAGE,
    "userRateLimitExceeded": RATE_LIMIT_MESSAGE,
    "rateLimitExceeded": "Rate Limit Exceeded",
}
_USAGE_LIMITS = frozenset({"storageQuotaExceeded", "userRateLimitExceeded", "rateLimitExceeded"})
_QUOTA_FIELDS = ("limit", "usage", "usageInDrive", "usageInDriveTrash")


class Refused(Exception):
    """Drive refused bytes that came through a Python helper (:meth:`FakeDrive.upload`,
    :meth:`FakeDrive.revise`): ``reason`` and ``message`` as the HTTP answer would carry them."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.message = _refusal_message(reason)
        super().__init__(f"{reason}: {self.message}")


@dataclass
class Seen:
    """One request as the fake saw it (bodies of upload chunks are not kept, only their size)."""

    kind: str
    method: str
    path: str
    params: dict[str, str]
    headers: Any
    json: Any = None
    body_size: int = 0


@dataclass
class FakeFile:
    id: str
    name: str
    parents: list[str]
    mime: str = "application/octet-stream"
    data: bytes = b""
    size: int = 0
    md5: str = hashlib.md5(b"").hexdigest()
    created: str = ""
    app_properties: dict[str, str] = field(default_factory=dict)
    trashed: bool = False
    searchable_after: int = 0  # name searches see this file only after that many listings
    drive_id: str | None = None  # the shared drive holding it (None: My Drive)

    def resource(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "drive#file",
            "id": self.id,
            "name": self.name,
            "mimeType": self.mime,
            "parents": list(self.parents),
            "createdTime": self.created,
            "modifiedTime": self.created,
            "trashed": self.trashed,
            "quotaBytesUsed": "0" if self.mime == FOLDER else str(self.size),
        }
        if not self.mime.startswith("application/vnd.google-apps."):  # Docs have neither
            out.update(size=str(self.size), md5Checksum=self.md5)
        if self.app_properties:
            out["appProperties"] = dict(self.app_properties)
        if self.drive_id:
            out["driveId"] = self.drive_id
        return out


@dataclass
class Fault:
    """What to do to ``times`` requests of ``kind`` after ``skip``: an HTTP error or a drop."""

    kind: str
    status: int = 0
    reason: str = ""
    times: int = 1
    message: str = ""  # "" : the reason's usual message (see MESSAGES)
    drop: bool = False
    keep_bytes: int = 0
    retry_after: str | None = None
    skip: int = 0


@dataclass
class Session:
    metadata: dict[str, Any]
    total: int
    fields: str
    received: int = 0
    parts: list[bytes] = field(default_factory=list)
    digest: Any = field(default_factory=hashlib.md5)
    result: str | None = None


class FakeDrive:
    """Fake Drive v3 state plus the ``responses`` callbacks that serve it.

    Args:
        mock: An active ``responses.RequestsMock``.
        page_size: Largest page ``files.list`` returns (small values exercise paging).
        keep_content: False makes upload chunks counted and hashed, not kept nor recorded (for
            huge uploads); downloads then answer empty. Space is then counted by recorded size.
        quota: The account's storage limit in bytes (None: unlimited).
        other_usage: Bytes that Gmail and Photos use of ``quota``.

    Attributes to set in a test: ``quota``, ``other_usage``, ``upload_cap`` (bytes a day, None:
    no cap) and ``uploaded_today`` (or :meth:`new_day`).
    """

    def __init__(
        self,
        mock: responses.RequestsMock,
        *,
        page_size: int = 1000,
        keep_content: bool = True,
        search_lag: int = 0,
        quota: int | None = None,
        other_usage: int = 0,
    ) -> None:
        self.files: dict[str, FakeFile] = {}
        self.quota = quota
        self._other_usage = other_usage
        self.peak_usage = other_usage  # the highest ``usage`` ever reached
        self.upload_cap: int | None = None  # bytes a day (Drive: 750 GB); None: no cap
        self.uploaded_today = 0  # bytes of uploads completed this "day"
        self.search_lag = search_lag
        self.listings = 0
        self.drive_roles: dict[str, str] = {}  # shared drive id -> this user's role there
        self.incomplete_search = False  # True: every listing says some results are missing
        self.sessions: dict[str, Session] = {}
        self.seen: list[Seen] = []
        self.faults: list[Fault] = []
        self.page_size = page_size
        self.keep_content = keep_content
        self.tokens = {"token-0"}
        self.issued = 0
        self.max_chunk_body = 0
        self.chunks = 0
        self._mock = mock
        self._ids = itertools.count(1)
        self._clock = itertools.count(1)
        pattern = re.compile(re.escape(BASE) + r"/.*")
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            mock.add_callback(method, pattern, callback=self._serve)
        mock.add_callback("POST", TOKEN_URI, callback=self._token)

    # -- test helpers --------------------------------------------------------------------------

    def add(self, name: str, parent: str = "root", data: bytes = b"", **kw: Any) -> FakeFile:
        """Creates a file as a test's setup: no quota or cap check, not counted as uploaded.
        ``size`` and ``md5`` may be given (a file recorded without its bytes)."""
        holder = self.files.get(parent)
        kw.setdefault("drive_id", holder.drive_id if holder else None)
        kw.setdefault("size", len(data))
        kw.setdefault("md5", hashlib.md5(data).hexdigest())
        file = FakeFile(
            id=f"id{next(self._ids)}",
            name=name,
            parents=[parent],
            data=data,
            created=self._now(),
            searchable_after=self.listings + self.search_lag,
            **kw,
        )
        self.files[file.id] = file
        self._note_usage()
        return file

    def add_folder(self, name: str, parent: str = "root") -> FakeFile:
        return self.add(name, parent, mime=FOLDER)

    def add_shared_drive(self, drive_id: str, role: str = "organizer") -> FakeFile:
        """A shared drive where this user has ``role``: only an ``organizer`` may delete files
        for good; a content manager (``fileOrganizer``) or a writer may only trash them."""
        self.drive_roles[drive_id] = role
        root = FakeFile(id=drive_id, name="Shared", parents=[], mime=FOLDER, drive_id=drive_id)
        self.files[drive_id] = root
        return root

    def fail(self, kind: str, status: int = 0, reason: str = "", **kw: Any) -> None:
        """Injects a fault (see :class:`Fault`; ``message=`` overrides the reason's message)."""
        self.faults.append(Fault(kind, status, reason, **kw))

    def expire_tokens(self) -> None:
        self.tokens.clear()

    def kinds(self) -> list[str]:
        return [s.kind for s in self.seen]

    def named(self, name: str, parent: str | None = None) -> list[FakeFile]:
        return [
            f
            for f in self.files.values()
            if f.name == name and (parent is None or parent in f.parents)
        ]

    # -- space ---------------------------------------------------------------------------------

    @property
    def other_usage(self) -> int:
        """Bytes that Gmail and Photos use of the quota."""
        return self._other_usage

    @other_usage.setter
    def other_usage(self, value: int) -> None:
        self._other_usage = value
        self._note_usage()

    def in_trash(self, file: FakeFile) -> bool:
        """Whether ``file`` is in the trash: trashed itself, or below a trashed folder."""
        seen: set[str] = set()
        while file is not None and file.id not in seen:
            if file.trashed:
                return True
            seen.add(file.id)
            file = self.files.get(file.parents[0]) if file.parents else None
        return False

    @property
    def usage_in_drive(self) -> int:
        """Bytes of the user's Drive files, the trash included (``usageInDrive``)."""
        return sum(f.size for f in self._counted())

    @property
    def usage_in_trash(self) -> int:
        """Bytes of the user's trashed files (``usageInDriveTrash``)."""
        return sum(f.size for f in self._counted() if self.in_trash(f))

    @property
    def usage(self) -> int:
        """Bytes used of the quota by every service, the trash included (``usage``)."""
        return self.other_usage + self.usage_in_drive

    def can_upload(self, size: int) -> str | None:
        """Why Drive would refuse an upload of ``size`` bytes now (the 403's reason), or None."""
        if self._over_quota(size):
            return "storageQuotaExceeded"
        cap = self.upload_cap
        if cap is not None and (self.uploaded_today >= cap or self.uploaded_today + size > cap):
            return "userRateLimitExceeded"
        return None

    def upload(self, name: str, parent: str = "root", data: bytes = b"", **kw: Any) -> FakeFile:
        """Creates a file as an upload does: checked by :meth:`can_upload` (else
        :class:`Refused`) and counted in ``uploaded_today``."""
        reason = self.can_upload(len(data))
        if reason is not None:
            raise Refused(reason)
        self.uploaded_today += len(data)
        return self.add(name, parent, data, **kw)

    def revise(self, file: FakeFile, data: bytes) -> None:
        """Uploads a new head revision of ``file`` (as DriveFS does for a changed file): checked
        and counted like :meth:`upload`; the old revision stops counting."""
        reason = self.can_upload(len(data))
        if reason is not None:
            raise Refused(reason)
        self.uploaded_today += len(data)
        file.data, file.size, file.md5 = data, len(data), hashlib.md5(data).hexdigest()
        self._note_usage()

    def new_day(self) -> None:
        """A new day for the daily upload cap."""
        self.uploaded_today = 0

    def trash(self, file: FakeFile) -> None:
        """Moves ``file`` to the trash (its bytes keep counting)."""
        file.trashed = True

    def delete(self, file: FakeFile) -> list[FakeFile]:
        """Deletes ``file`` for good, with everything below it; returns what went."""
        gone = {file.id: file}
        frontier = [file.id]
        while frontier:
            parent = frontier.pop()
            for child in self.files.values():
                below = child.id not in gone and parent in child.parents
                if below and all(p in gone for p in child.parents):  # else: in its other parent
                    gone[child.id] = child
                    frontier.append(child.id)
        for gone_id in gone:
            del self.files[gone_id]
        return list(gone.values())

    def empty_trash(self, drive_id: str | None = None) -> list[FakeFile]:
        """Deletes for good everything in the trash of My Drive (or of shared drive
        ``drive_id``); returns what went."""
        gone: list[FakeFile] = []
        for file in [f for f in self.files.values() if f.trashed and f.drive_id == drive_id]:
            if file.id in self.files:  # not gone with a trashed folder above it
                gone += self.delete(file)
        return gone

    def _counted(self) -> list[FakeFile]:
        """The files whose bytes count against this user's quota."""
        return [f for f in self.files.values() if f.mime != FOLDER and f.drive_id is None]

    def _over_quota(self, size: int) -> bool:
        return self.quota is not None and self.usage + size > self.quota

    def _note_usage(self) -> None:
        self.peak_usage = max(self.peak_usage, self.usage)

    def path(self, path: str) -> FakeFile:
        """The (single) file or folder at a path below My Drive."""
        parent = "root"
        for part in path.split("/"):
            (found,) = self.named(part, parent)
            parent = found.id
        return self.files[parent]

    # -- serving ---------------------------------------------------------------------------------

    def _now(self) -> str:
        tick = next(self._clock)
        return f"2026-01-01T{tick // 3600:02d}:{tick // 60 % 60:02d}:{tick % 60:02d}.000Z"

    def _token(self, request: Any) -> tuple[int, dict[str, str], str]:
        self.seen.append(Seen("token", "POST", TOKEN_URI, {}, {}))
        fault = self._take_fault("token")
        if fault is not None and fault.drop:
            raise requests.ConnectionError("token endpoint unreachable (injected)")
        if fault is not None:
            return fault.status, {}, json.dumps({"error": fault.reason})
        self.issued += 1
        token = f"token-{self.issued}"
        self.tokens.add(token)
        body = {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}
        return 200, {}, json.dumps(body)

    def _serve(self, request: Any) -> Any:
        url = urlsplit(request.url)
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        kind = _kind(request.method, url.path, params, request.headers)
        body = request.body or b""
        body = body.encode() if isinstance(body, str) else body
        headers = requests.structures.CaseInsensitiveDict(request.headers)
        seen = Seen(kind, request.method, url.path, params, headers, None, len(body))
        if request.headers.get("Content-Type", "").startswith("application/json") and body:
            seen.json = json.loads(body)
        request.body = None  # do not let responses keep chunk bytes alive
        self.chunks += kind == "chunk"
        if kind == "chunk" and not self.keep_content:
            self._forget_calls()  # a huge upload's bookkeeping would swamp what is measured
        else:
            self.seen.append(seen)
        if request.headers.get("Authorization") not in {f"Bearer {t}" for t in self.tokens}:
            return _error(401, "authError")
        fault = self._take_fault(kind)
        if fault is not None and fault.status == 401:
            self.tokens.clear()  # the access token expires now
        if fault is not None and not fault.drop:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return _error(fault.status, fault.reason, headers, fault.message or None)
        answer = self._handle(kind, url.path, params, request.headers, body, fault)
        if fault is not None:
            raise requests.ConnectionError("connection reset by peer (injected)")
        return answer

    def _forget_calls(self) -> None:
        self._mock.calls.reset()
        for registered in self._mock.registered():
            registered.calls.reset()

    def _take_fault(self, kind: str) -> Fault | None:
        for fault in self.faults:
            if fault.kind == kind and fault.times > 0:
                if fault.skip > 0:
                    fault.skip -= 1
                    return None
                fault.times -= 1
                return fault
        return None

    def _handle(self, kind, path, params, headers, body, fault) -> Any:
        handler: Callable[..., Any] = getattr(self, f"_{kind}", None) or _bad_request
        return handler(path=path, params=params, headers=headers, body=body, fault=fault)

    def _list(self, params, **_: Any) -> Any:
        query = params.get("q", "")
        self.listings += 1
        corpora = params.get("corpora", "user")
        every_drive = (
            params.get("includeItemsFromAllDrives") == "true"
            and params.get("supportsAllDrives") == "true"
        )
        if corpora == "drive" and (not params.get("driveId") or not every_drive):
            return _error(400, "invalidParameter")  # as Drive: corpora=drive needs all three
        matches = [f for f in self.files.values() if _matches(query, f)]
        if corpora == "drive":
            matches = [f for f in matches if f.drive_id == params["driveId"]]
        elif corpora == "user":  # My Drive (and what is shared with the user), no shared drives
            matches = [f for f in matches if f.drive_id is None]
        if re.search(r"\bname (=|!=) ", query):  # as Drive: name searches lag behind writes
            matches = [f for f in matches if self.listings > f.searchable_after]
        matches.sort(key=lambda f: f.name)
        start = int(params.get("pageToken", "0"))
        size = min(int(params.get("pageSize", "100")), self.page_size)
        page = matches[start : start + size]
        fields = params.get("fields", "files(kind,id,name,mimeType)")
        inner = re.search(r"files\(([^)]*)\)", fields)
        wanted = inner.group(1).split(",") if inner else list(DEFAULT_FIELDS)
        out: dict[str, Any] = {"files": [_pick(f.resource(), wanted) for f in page]}
        incomplete = self.incomplete_search or (corpora == "allDrives" and self.drive_roles)
        if incomplete and "incompleteSearch" in fields:
            out["incompleteSearch"] = True  # as Drive may: "some search results might be missing"
        if start + size < len(matches) and "nextPageToken" in fields:
            out["nextPageToken"] = str(start + size)
        return 200, {}, json.dumps(out)

    def _get(self, path, params, **_: Any) -> Any:
        file = self._file(path)
        if file is None:
            return _error(404, "notFound")
        return _json(file, params.get("fields"))

    def _create_folder(self, body, params, **_: Any) -> Any:
        meta = json.loads(body)
        if not self._folder_exists(meta["parents"][0]):
            return _error(404, "notFound")
        if self._over_quota(0):  # nothing can be created once usage is over the limit
            return _error(403, "storageQuotaExceeded")
        file = self.add(meta["name"], meta["parents"][0], mime=meta.get("mimeType", FOLDER))
        return _json(file, params.get("fields"))

    def _folder_exists(self, folder_id: str) -> bool:
        """Drive refuses a parent that is not an existing folder (or My Drive)."""
        folder = self.files.get(folder_id)
        return folder_id == "root" or (folder is not None and folder.mime == FOLDER)

    def _patch(self, path, params, body, **_: Any) -> Any:
        file = self._file(path)
        if file is None:
            return _error(404, "notFound")
        meta = json.loads(body)
        file.trashed = bool(meta.get("trashed", file.trashed))
        if meta.get("name", file.name) != file.name:
            file.searchable_after = self.listings + self.search_lag
        file.name = meta.get("name", file.name)
        for key, value in (meta.get("appProperties") or {}).items():
            if value is None:
                file.app_properties.pop(key, None)
            else:
                file.app_properties[key] = value
        return _json(file, params.get("fields"))

    def _delete(self, path, **_: Any) -> Any:
        file = self._file(path)
        if file is None:
            return _error(404, "notFound")
        if file.drive_id and self.drive_roles.get(file.drive_id) != "organizer":
            return _error(403, "insufficientFilePermissions")  # trash it instead
        self.delete(file)  # a folder with everything below it
        return 204, {}, b""

    def _empty_trash(self, params, **_: Any) -> Any:
        if set(params) - {"driveId"}:
            return _bad_request()
        drive_id = params.get("driveId")
        if drive_id is not None and drive_id not in self.drive_roles:
            return _error(404, "notFound")
        if drive_id is not None and self.drive_roles[drive_id] != "organizer":
            return _error(403, "insufficientFilePermissions")
        self.empty_trash(drive_id)
        return 204, {}, b""

    def _about(self, params, **_: Any) -> Any:
        if set(params) - {"fields", "alt"} or params.get("alt", "json") != "json":
            return _bad_request()
        if not params.get("fields"):
            return _error(
                400, "required", None, "The 'fields' parameter is required for this operation."
            )
        quota = {
            "limit": None if self.quota is None else str(self.quota),
            "usage": str(self.usage),
            "usageInDrive": str(self.usage_in_drive),
            "usageInDriveTrash": str(self.usage_in_trash),
        }
        out: dict[str, Any] = {}
        for selection in _split_fields(params["fields"]):
            m = re.fullmatch(r"(\w+)(?:\((.*)\)|/(.*))?", selection)
            top, wanted = (m[1], m[2] if m[2] is not None else m[3]) if m else ("", None)
            if top == "kind" and wanted is None:
                out["kind"] = "drive#about"
                continue
            if top != "storageQuota":
                return _bad_request()  # a field of About this fake does not model
            names = list(_QUOTA_FIELDS) if wanted is None else _split_fields(wanted)
            if set(names) - set(_QUOTA_FIELDS):
                return _error(400, "invalidParameter", None, f"Invalid field selection {selection}")
            picked = {n: quota[n] for n in names if quota[n] is not None}
            out["storageQuota"] = {**out.get("storageQuota", {}), **picked}
        return 200, {"Content-Type": "application/json"}, json.dumps(out)

    def _download(self, path, headers, **_: Any) -> Any:
        file = self._file(path)
        if file is None:
            return _error(404, "notFound")
        wanted = headers.get("range") or headers.get("Range")
        if not wanted:
            return 200, {}, file.data
        first, last = (int(x) for x in wanted.removeprefix("bytes=").split("-"))
        if file.size == 0 or first >= file.size:
            return 416, {"Content-Range": f"bytes */{file.size}"}, b""
        last = min(last, file.size - 1)
        piece = file.data[first : last + 1]
        return 206, {"Content-Range": f"bytes {first}-{last}/{file.size}"}, piece

    def _multipart(self, headers, body, params, **_: Any) -> Any:
        boundary = re.search(r'boundary="?([^";]+)"?', headers["Content-Type"]).group(1)
        parts = body.split(b"--" + boundary.encode())
        meta = json.loads(_payload(parts[1]))
        if not self._folder_exists(meta["parents"][0]):
            return _error(404, "notFound")
        data = _payload(parts[2])
        refused = self.can_upload(len(data))
        if refused is not None:
            return _refusal(refused)
        return self._store(meta, data, params.get("fields"))

    def _resumable_start(self, headers, body, params, **_: Any) -> Any:
        if not self._folder_exists(json.loads(body)["parents"][0]):
            return _error(404, "notFound")
        session_id = f"s{next(self._ids)}"
        total = int(headers["X-Upload-Content-Length"])
        refused = self.can_upload(total)  # the declared length must fit
        if refused is not None:
            return _refusal(refused)
        self.sessions[session_id] = Session(json.loads(body), total, params.get("fields", ""))
        location = f"{BASE}/upload/drive/v3/files?uploadType=resumable&upload_id={session_id}"
        return 200, {"Location": location}, b""

    def _chunk(self, params, headers, body, fault, **_: Any) -> Any:
        session = self.sessions.get(params.get("upload_id", ""))
        if session is None:
            return _error(404, "notFound")
        first, last, total = map(int, re.findall(r"\d+", headers["Content-Range"]))
        if first != session.received or last - first + 1 != len(body) or total != session.total:
            return _error(400, "badContentRange")
        if last + 1 < total and len(body) % QUANTUM:  # only the last chunk may be ragged
            return _error(400, "badContentRange")
        if fault is not None:  # the line drops after the server kept some whole quanta
            body = body[: (fault.keep_bytes // QUANTUM) * QUANTUM]
        self.max_chunk_body = max(self.max_chunk_body, len(body))
        session.received += len(body)
        session.digest.update(body)
        if self.keep_content:
            session.parts.append(body)
        if session.received == session.total:
            return self._finish(params["upload_id"], session)
        return _incomplete(session)

    def _status_query(self, params, **_: Any) -> Any:
        session = self.sessions.get(params.get("upload_id", ""))
        if session is None:
            return _error(404, "notFound")
        if session.result is not None:
            return _json(self.files[session.result], session.fields)
        return _incomplete(session)

    def _finish(self, session_id: str, session: Session) -> Any:
        if self._over_quota(session.received):  # space went while the bytes came
            del self.sessions[session_id]  # the session ends with the refusal
            return _refusal("storageQuotaExceeded")
        status, headers, body = self._store(
            session.metadata, b"".join(session.parts), session.fields, session
        )
        session.result = json.loads(body)["id"]
        return 201, headers, body  # a resumable upload's last chunk: 201 Created

    def _store(self, meta, data: bytes, fields, session: Session | None = None) -> Any:
        recorded: dict[str, Any] = {}
        if session is not None and not self.keep_content:
            recorded = {"size": session.received, "md5": session.digest.hexdigest()}
        file = self.add(
            meta["name"],
            meta["parents"][0],
            data,
            app_properties=meta.get("appProperties", {}),
            **recorded,
        )
        self.uploaded_today += file.size
        return _json(file, fields)

    def _file(self, path: str) -> FakeFile | None:
        return self.files.get(path.rstrip("/").rsplit("/", 1)[-1])


def _kind(method: str, path: str, params: dict[str, str], headers: Any) -> str:
    upload = params.get("uploadType")
    if path == "/upload/drive/v3/files":
        if method == "POST" and upload in ("multipart", "resumable"):
            return "multipart" if upload == "multipart" else "resumable_start"
        if method == "PUT" and upload == "resumable":
            return "status_query" if "*" in headers.get("Content-Range", "*") else "chunk"
    if path == "/drive/v3/files":
        return {"GET": "list", "POST": "create_folder"}.get(method, "unknown")
    if path == "/drive/v3/files/trash" and method == "DELETE":
        return "empty_trash"
    if path == "/drive/v3/about":
        return "about" if method == "GET" else "unknown"
    if path.startswith("/drive/v3/files/"):
        if method == "GET":
            return "download" if params.get("alt") == "media" else "get"
        return {"PATCH": "patch", "DELETE": "delete"}.get(method, "unknown")
    return "unknown"


def _payload(part: bytes) -> bytes:
    """The content of one multipart part: after its headers, before the line break that ends it."""
    _headers, eol, payload = re.split(rb"(\r?\n)\r?\n", part, maxsplit=1)
    # The part ends with the line break the headers use: strip exactly that (content ending
    # in a "\r" before a "\n" break kept its "\r" only by chance before).
    return payload[: -len(eol)] if payload.endswith(eol) else payload


def _bad_request(**_: Any) -> Any:
    return _error(400, "unknownRequestShape")


def _error(
    status: int,
    reason: str,
    headers: dict[str, str] | None = None,
    message: str | None = None,
) -> Any:
    """Drive's error answer; ``message`` defaults to the reason's usual one (:data:`MESSAGES`)."""
    # Like Google's newer answers: the v3 "errors" list and an rpc ErrorInfo in "details".
    message = message or MESSAGES.get(reason, reason)
    domain = "usageLimits" if reason in _USAGE_LIMITS else "global"
    info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason.upper()}
    errors = [{"domain": domain, "reason": reason, "message": message}]
    body = {"error": {"code": status, "message": message, "errors": errors, "details": [info]}}
    return status, dict(headers or {}), json.dumps(body)


def _refusal_message(reason: str) -> str:
    """The message of an upload refused for space or by the daily cap."""
    return UPLOAD_CAP_MESSAGE if reason == "userRateLimitExceeded" else MESSAGES[reason]


def _refusal(reason: str) -> Any:
    return _error(403, reason, None, _refusal_message(reason))


def _split_fields(fields: str) -> list[str]:
    """A ``fields`` selection split at its top-level commas."""
    out, depth, current = [], 0, ""
    for char in fields:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            out.append(current.strip())
            current = ""
        else:
            current += char
    return [*out, current.strip()]


def _incomplete(session: Session) -> Any:
    headers = {"Range": f"bytes=0-{session.received - 1}"} if session.received else {}
    return 308, headers, b""


def _pick(resource: dict[str, Any], wanted: list[str]) -> dict[str, Any]:
    return {k.strip(): resource[k.strip()] for k in wanted if k.strip() in resource}


def _json(file: FakeFile, fields: str | None) -> Any:
    wanted = fields.split(",") if fields else list(DEFAULT_FIELDS)
    return 200, {"Content-Type": "application/json"}, json.dumps(_pick(file.resource(), wanted))


_CLAUSE = re.compile(
    r"""^(?:'(?P<parent>(?:\\.|[^'])*)' in parents"""
    r"""|(?P<field>name|mimeType) (?P<op>=|!=) '(?P<value>(?:\\.|[^'])*)'"""
    r"""|trashed = (?P<trashed>true|false))$"""
)


def _matches(query: str, file: FakeFile) -> bool:
    """Evaluates the subset of Drive's query language that colabkit uses (else: AssertionError)."""
    for clause in re.split(r" and (?=(?:[^']*'[^']*')*[^']*$)", query):
        m = _CLAUSE.match(clause.strip())
        assert m is not None, f"fake Drive does not understand query clause {clause!r}"
        if m["parent"] is not None:
            ok = _unescape(m["parent"]) in file.parents
        elif m["trashed"] is not None:
            ok = file.trashed == (m["trashed"] == "true")
        else:
            if m["field"] == "name":  # as Drive: `name =` ignores case (rclone drive.go)
                equal = file.name.casefold() == _unescape(m["value"]).casefold()
            else:
                equal = file.mime == _unescape(m["value"])
            ok = equal == (m["op"] == "=")
        if not ok:
            return False
    return True


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def fake_credentials() -> Any:
    """User credentials whose refresh goes to the fake token endpoint."""
    from google.oauth2.credentials import Credentials

    return Credentials(
        token="token-0",
        refresh_token="refresh-secret-1234",
        client_id="client-id",
        client_secret="client-secret-5678",
        token_uri=TOKEN_URI,
    )


def open_store(drive: FakeDrive, **kwargs: Any) -> Any:
    """A DriveApiStore on the fake, for folder ``colabkit/run``, with 1 MiB chunks."""
    from colabkit.clock import FakeClock
    from colabkit.storage.drive_api import DriveApiStore

    del drive  # the fake answers through responses; taking it orders the fixtures
    kwargs.setdefault("chunk_size", 1024 * 1024)
    kwargs.setdefault("clock", FakeClock())
    return DriveApiStore("colabkit/run", credentials=fake_credentials(), **kwargs)
