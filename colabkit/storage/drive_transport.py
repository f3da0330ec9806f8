"""HTTP for the Drive store: a requests-based transport for googleapiclient, and its retry rules.

googleapiclient speaks httplib2, which the ``responses`` test library cannot see; routing its
``request()`` calls through ``google.auth.transport.requests.AuthorizedSession`` means the tests
exercise the code that ships (token refresh included). googleapiclient's own retries are not used:
on a resumable chunk they resend an already-consumed stream and hang, so every call goes through
:func:`call_with_retry` with ``num_retries=0`` and sleeps through an injected
:class:`~colabkit.clock.Clock`.
"""

from __future__ import annotations

import email.utils
import io
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from colabkit.clock import SYSTEM_CLOCK, Clock
from colabkit.errors import StoreError, StoreFullError, UploadLimitError, invalid_argument
from colabkit.validate import positive_int

logger = logging.getLogger(__name__)

T = TypeVar("T")

RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
#: The message of the 403 ``userRateLimitExceeded`` that means the daily upload limit (750 GB a
#: day), not a per-minute rate: the one difference Drive shows (rclone's drive backend,
#: ``--drive-stop-on-upload-limit``, tells them apart the same way). Retrying it for minutes
#: does not help; it lifts within 24 hours.
UPLOAD_LIMIT_MESSAGE = "User rate limit exceeded."
_HEADERS_TO_DROP = frozenset({"content-encoding", "transfer-encoding", "content-length"})

_QUOTA_ADVICE = (
    "Free space in that Drive (its trash counts too: empty it). Service accounts have no "
    "Drive storage of their own: use user credentials (Colab sign-in or an authorized-user "
    "JSON), or a folder in a shared drive "
    "(pass root=<shared drive or folder id>)"
)
_PERMISSION_ADVICE = (
    "Share the folder with this account as Editor, or use credentials of an account that can "
    "write there"
)


class RequestsHttp:
    """An ``httplib2.Http`` look-alike that sends googleapiclient's requests with ``requests``.

    Each detail below broke something when missing (see docs/drive-api.md): request bodies are
    read into bytes (a 401 -> refresh -> resend must resend the bytes), redirects are followed
    on GET only (Drive answers 308 "resume incomplete" to upload chunks), response headers are
    lower-cased with the length fixed (requests already decompressed the body), and requests'
    exceptions become the built-in ``ConnectionError`` / ``TimeoutError`` that retry loops know.
    """

    def __init__(
        self,
        credentials: Any = None,
        *,
        session: Any = None,
        timeout: tuple[float, float] = (20.0, 120.0),
    ) -> None:
        if session is None:
            import requests

            if credentials is None:
                session = requests.Session()
            else:
                from google.auth.transport.requests import AuthorizedSession

                session = AuthorizedSession(credentials)
        self._session = session
        self.credentials = credentials
        self.timeout = timeout

    def request(
        self,
        uri: str,
        method: str = "GET",
        body: Any = None,
        headers: dict[str, str] | None = None,
        redirections: int = 5,
        connection_type: Any = None,
    ) -> tuple[Any, bytes]:
        """Sends one request; returns ``(httplib2.Response, content)`` like httplib2."""
        import httplib2
        import requests

        try:
            answer = self._session.request(
                method,
                uri,
                data=_body_bytes(body),
                headers=dict(headers or {}),
                allow_redirects=method in ("GET", "HEAD") and redirections > 0,
                timeout=self.timeout,
            )
        except requests.Timeout as exc:
            raise TimeoutError(f"{method} to Drive timed out: {exc}") from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            raise ConnectionError(f"{method} to Drive lost its connection: {exc}") from None
        content = answer.content
        info = {
            k.lower(): v for k, v in answer.headers.items() if k.lower() not in _HEADERS_TO_DROP
        }
        info["content-length"] = str(len(content))
        info["status"] = str(answer.status_code)
        response = httplib2.Response(info)
        response.reason = answer.reason or ""
        return response, content

    def close(self) -> None:
        self._session.close()


def _body_bytes(body: Any) -> bytes | None:
    """Bodies as bytes: a stream read once here can be resent after a token refresh."""
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, io.IOBase) or hasattr(body, "read"):
        return body.read()
    return bytes(body)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter for transient Drive failures.

    Attributes:
        max_attempts: Tries per call, the first included. A background mirror can afford to wait;
            a caller that cannot lowers this.
        base_delay: Seconds before the first retry (before jitter).
        max_delay: Cap on one wait, also on a server's ``Retry-After``.
        rng: Source of jitter; seeded in tests.
    """

    max_attempts: int = 8
    base_delay: float = 1.0
    max_delay: float = 64.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def __post_init__(self) -> None:
        positive_int("max_attempts", self.max_attempts)
        if not self.base_delay > 0 or not self.max_delay >= self.base_delay:
            raise invalid_argument("base_delay", self.base_delay, "a number > 0 and <= max_delay")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed ``attempt`` (1-based): jittered, or the server's word."""
        if retry_after is not None:
            return min(self.max_delay, max(0.0, retry_after))
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)


def error_reason(exc: Any) -> str:
    """The first ``errors[].reason`` of a Drive error answer ("" if none).

    Read from the body, not ``HttpError.error_details``: when an answer carries both the v3
    ``errors`` list and rpc ``details``, googleapiclient keeps ``details``, whose reasons are
    spelled differently (``RATE_LIMIT_EXCEEDED``).
    """
    return _first_error(exc, "reason")


def _first_error(exc: Any, key: str) -> str:
    try:
        errors = json.loads(exc.content.decode("utf-8"))["error"]["errors"]
        return str(errors[0][key])
    except (AttributeError, ValueError, KeyError, IndexError, TypeError):
        return ""


def is_upload_limit(exc: Any) -> bool:
    """Whether a Drive answer means the daily upload limit (see ``UPLOAD_LIMIT_MESSAGE``)."""
    return (
        getattr(exc, "status_code", None) == 403
        and error_reason(exc) == "userRateLimitExceeded"
        and _first_error(exc, "message") == UPLOAD_LIMIT_MESSAGE
    )


def is_transient(exc: BaseException) -> bool:
    """True for failures worth retrying: 408, 429, 5xx, rate-limit 403, timeouts, dropped
    lines (googleapiclient does not retry 408; Drive answers it to a slow request)."""
    from google.auth.exceptions import RefreshError, TransportError
    from googleapiclient.errors import HttpError

    if isinstance(exc, TransportError):  # the token endpoint could not be reached
        return True
    if isinstance(exc, RefreshError):  # e.g. a 5xx after google-auth's own retries
        return bool(getattr(exc, "retryable", False))
    if isinstance(exc, HttpError):
        status = exc.status_code
        return (
            status in (408, 429)
            or status >= 500
            or (status == 403 and error_reason(exc) in RATE_LIMIT_REASONS)
        ) and not is_upload_limit(exc)
    return isinstance(exc, (ConnectionError, TimeoutError))


def retry_after_seconds(exc: BaseException, now: float) -> float | None:
    """The ``Retry-After`` of an HTTP error in seconds (delta or HTTP date), if it has one."""
    value = getattr(getattr(exc, "resp", None), "get", lambda _key: None)("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return email.utils.parsedate_to_datetime(value).timestamp() - now
    except (TypeError, ValueError):
        return None


def call_with_retry(
    call: Callable[[], T],
    what: str,
    *,
    clock: Clock = SYSTEM_CLOCK,
    policy: RetryPolicy | None = None,
    on_retry: Callable[[], None] | None = None,
) -> T:
    """Runs ``call`` (one HTTP exchange or upload step) until it succeeds, retrying transient
    failures and translating the others; ``what`` names the operation in messages, ``on_retry``
    runs before each retry.

    Raises:
        FileNotFoundError: Drive answered 404.
        StoreError: A permanent refusal, or transient failures outlasted ``policy``.
    """
    policy = policy or RetryPolicy()
    for attempt in range(1, policy.max_attempts + 1):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - classified just below
            if not is_transient(exc):
                translated = drive_error(exc, what)
                if translated is exc:
                    raise
                raise translated from exc
            if attempt == policy.max_attempts:
                raise StoreError(
                    f"Drive kept failing during {what}: {describe(exc)} after {attempt} "
                    "attempts. Check the connection and https://www.google.com/appsstatus, "
                    "then retry."
                ) from exc
            wait = policy.delay(attempt, retry_after_seconds(exc, clock.time()))
            logger.warning("Drive %s: %s; retry %d in %.1fs", what, describe(exc), attempt, wait)
            clock.sleep(wait)
            if on_retry is not None:
                on_retry()
    raise AssertionError("unreachable")  # pragma: no cover


def describe(exc: BaseException) -> str:
    """A short, token-free description of a failure: ``HTTP 403 storageQuotaExceeded``."""
    from googleapiclient.errors import HttpError

    if isinstance(exc, HttpError):
        reason = error_reason(exc)
        return f"HTTP {exc.status_code}" + (f" {reason}" if reason else "")
    return f"{type(exc).__name__}: {exc}"


def drive_error(exc: BaseException, what: str) -> BaseException:
    """The one clear error a permanent failure becomes (``FileNotFoundError`` for a 404).

    Exceptions that are not Drive's answers (a local ``OSError``, a bug) come back unchanged.
    """
    from google.auth.exceptions import RefreshError
    from googleapiclient.errors import HttpError

    if isinstance(exc, RefreshError):
        return StoreError(
            f"Drive credentials could not be refreshed during {what} ({type(exc).__name__}). "
            "Sign in again (Colab: re-run the cell that opens the store) or renew the JSON key."
        )
    if not isinstance(exc, HttpError):
        return exc
    status, reason = exc.status_code, error_reason(exc)
    if status == 404:
        return FileNotFoundError(f"Drive has no such object for {what} (HTTP 404).")
    if reason in ("storageQuotaExceeded", "quotaExceeded"):
        return StoreFullError(f"Drive storage quota exceeded during {what}. {_QUOTA_ADVICE}.")
    if is_upload_limit(exc):
        return UploadLimitError(
            f"Drive's daily upload limit (750 GB a day per account) is reached: refused {what}. "
            "It lifts within 24 hours; nothing needs deleting"
        )
    if status == 403 and reason in (
        "insufficientFilePermissions",
        "forbidden",
        "appNotAuthorizedToFile",
    ):
        return StoreError(f"Drive denied {what}: {describe(exc)}. {_PERMISSION_ADVICE}.")
    if status == 401:
        return StoreError(
            f"Drive rejected the credentials during {what} (HTTP 401). Sign in again or renew "
            "the JSON key."
        )
    return StoreError(f"Drive refused {what}: {describe(exc)} ({exc.reason}).")
