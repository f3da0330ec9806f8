"""DriveApiStore under faults: transient ones end in success with intact bytes, permanent ones in
one clear error without a retry storm, and a huge upload holds about one chunk in memory.

Backoff sleeps go to a FakeClock: nothing here sleeps for real.
"""

from __future__ import annotations

import io
import itertools
import os
import random
import tracemalloc

import pytest
import responses
from fake_drive import FakeDrive, open_store

from colabkit.clock import FakeClock
from colabkit.errors import StoreError
from colabkit.storage.drive_transport import RetryPolicy

QUANTUM = 256 * 1024
MiB = 1024 * 1024


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def store(drive, clock):
    return open_store(drive, clock=clock, retry=RetryPolicy(rng=random.Random(0)))


def _roundtrip(store, tmp_path, data: bytes, name: str = "ckpt") -> bytes:
    (tmp_path / "src").write_bytes(data)
    info = store.put(tmp_path / "src", name)
    assert info.size == len(data)
    store.get(name, tmp_path / "back")
    return (tmp_path / "back").read_bytes()


TRANSIENT = [
    pytest.param("multipart", 429, "rateLimitExceeded", False, id="429-multipart"),
    pytest.param("chunk", 500, "backendError", False, id="500-chunk"),
    pytest.param("chunk", 503, "backendError", False, id="503-chunk"),
    pytest.param("download", 503, "backendError", False, id="503-download"),
    pytest.param("list", 403, "rateLimitExceeded", False, id="403-rateLimit-list"),
    pytest.param("chunk", 403, "userRateLimitExceeded", False, id="403-userRateLimit-chunk"),
    pytest.param("resumable_start", 500, "backendError", False, id="500-resumable-start"),
    pytest.param("patch", 0, "", True, id="dropped-rename"),
    pytest.param("download", 0, "", True, id="dropped-download"),
    pytest.param("chunk", 0, "", True, id="dropped-chunk"),
    pytest.param("list", 408, "requestTimeout", False, id="408-list"),
    pytest.param("chunk", 408, "requestTimeout", False, id="408-chunk"),
]


@pytest.mark.parametrize("kind, status, reason, drop", TRANSIENT)
def test_transient_faults_end_in_success_with_intact_bytes(
    drive, store, clock, tmp_path, kind, status, reason, drop
):
    big = kind in ("chunk", "resumable_start", "download")
    data = os.urandom(2 * MiB + 3 if big else 1000)
    drive.fail(kind, status, reason, times=2, drop=drop)
    assert _roundtrip(store, tmp_path, data) == data
    assert all(f.times == 0 for f in drive.faults), "the faults were not all hit"
    assert len(clock.sleeps) == 2
    assert all(0 < s <= 2.0 for s in clock.sleeps)


def test_backoff_grows_exponentially_with_jitter(drive, store, clock, tmp_path):
    drive.fail("multipart", 503, "backendError", times=5)
    assert _roundtrip(store, tmp_path, b"x" * 100) == b"x" * 100
    for attempt, slept in enumerate(clock.sleeps, start=1):
        ceiling = 2 ** (attempt - 1)
        assert ceiling / 2 <= slept <= ceiling
    assert len(clock.sleeps) == 5


def test_retry_after_is_honoured(drive, store, clock, tmp_path):
    drive.fail("multipart", 429, "rateLimitExceeded", retry_after="7")
    _roundtrip(store, tmp_path, b"abc")
    assert clock.sleeps == [7.0]


def test_dropped_chunk_resumes_from_the_servers_offset(drive, store, clock, tmp_path):
    data = os.urandom(3 * MiB)
    drive.fail("chunk", drop=True, keep_bytes=3 * QUANTUM, skip=1)  # 2nd chunk: 768 KiB arrive
    assert _roundtrip(store, tmp_path, data) == data
    sent = [s for s in drive.seen if s.kind in ("chunk", "status_query")]
    assert [(s.kind, s.headers["Content-Range"]) for s in sent] == [
        ("chunk", f"bytes 0-{MiB - 1}/{3 * MiB}"),
        ("chunk", f"bytes {MiB}-{2 * MiB - 1}/{3 * MiB}"),
        ("status_query", f"bytes */{3 * MiB}"),
        ("chunk", f"bytes {MiB + 3 * QUANTUM}-{2 * MiB + 3 * QUANTUM - 1}/{3 * MiB}"),
        ("chunk", f"bytes {2 * MiB + 3 * QUANTUM}-{3 * MiB - 1}/{3 * MiB}"),
    ]
    assert sent[2].headers["Content-Length"] == "0"
    assert len(clock.sleeps) == 1


def test_expired_upload_session_restarts_the_upload(drive, store, tmp_path):
    data = os.urandom(2 * MiB + 1)
    drive.fail("chunk", 404, "notFound", skip=1)
    assert _roundtrip(store, tmp_path, data) == data
    assert drive.kinds().count("resumable_start") == 2


def test_expired_token_is_refreshed_and_the_chunk_resent_whole(drive, store, clock, tmp_path):
    data = os.urandom(2 * MiB + 9)
    drive.fail("chunk", 401, "authError", skip=1)  # the token expires during the 2nd chunk
    assert _roundtrip(store, tmp_path, data) == data
    assert drive.kinds().count("token") == 1
    chunks = [s for s in drive.seen if s.kind == "chunk"]
    assert chunks[1].headers["Authorization"] == "Bearer token-0"
    assert chunks[2].headers["Authorization"] == "Bearer token-1"
    assert chunks[2].headers["Content-Range"] == chunks[1].headers["Content-Range"]
    assert chunks[2].body_size == MiB
    assert clock.sleeps == []


def test_unreachable_token_endpoint_is_retried(drive, store, clock, tmp_path):
    drive.expire_tokens()
    drive.fail("token", drop=True)
    assert _roundtrip(store, tmp_path, b"abc") == b"abc"
    assert drive.kinds().count("token") == 2
    assert len(clock.sleeps) == 1


def test_revoked_sign_in_is_one_clear_error_without_retries(drive, store, clock, tmp_path):
    (tmp_path / "a").write_bytes(b"abc")
    drive.expire_tokens()
    drive.fail("token", 400, "invalid_grant", times=100)
    with pytest.raises(StoreError, match="Sign in again"):
        store.put(tmp_path / "a", "ckpt")
    assert drive.kinds().count("token") == 1
    assert clock.sleeps == []


def test_storage_quota_is_one_clear_error_without_retries(drive, store, clock, tmp_path):
    (tmp_path / "a").write_bytes(b"abc")
    drive.fail("multipart", 403, "storageQuotaExceeded", times=100)
    drive.seen.clear()
    with pytest.raises(StoreError, match="quota") as caught:
        store.put(tmp_path / "a", "ckpt")
    assert "Service accounts have no Drive storage" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert drive.kinds() == ["multipart"]
    assert clock.sleeps == []


def test_missing_permission_is_one_clear_error_and_the_upload_is_removed(
    drive, store, clock, tmp_path
):
    (tmp_path / "a").write_bytes(b"abc")
    drive.fail("patch", 403, "insufficientFilePermissions", times=100)
    drive.seen.clear()
    with pytest.raises(StoreError, match="insufficientFilePermissions.*Share the folder"):
        store.put(tmp_path / "a", "ckpt")
    assert drive.kinds() == ["multipart", "list", "patch", "delete"]
    assert [f for f in drive.files.values() if f.name != "colabkit" and f.name != "run"] == []
    assert clock.sleeps == []


def test_a_superseded_copy_that_cannot_be_deleted_goes_to_the_trash(drive, store, tmp_path):
    for version in (b"v1", b"v2"):
        (tmp_path / "a").write_bytes(version)
        if version == b"v2":
            drive.fail("delete", 403, "insufficientFilePermissions")
        store.put(tmp_path / "a", "ckpt")
    assert sorted((f.data, f.trashed) for f in drive.named("ckpt")) == [
        (b"v1", True),
        (b"v2", False),
    ]
    assert [(o.name, o.size) for o in store.list()] == [("ckpt", 2)]


def test_a_superseded_copy_that_can_be_neither_deleted_nor_trashed_does_not_fail_the_put(
    drive, store, tmp_path
):
    for version in (b"v1", b"v2"):
        (tmp_path / "a").write_bytes(version)
        if version == b"v2":
            drive.fail("delete", 403, "insufficientFilePermissions")
            drive.fail("patch", 403, "insufficientFilePermissions", skip=1)  # after the rename
        store.put(tmp_path / "a", "ckpt")
    assert sorted(f.data for f in drive.named("ckpt")) == [b"v1", b"v2"]
    assert [(o.name, o.size) for o in store.list()] == [("ckpt", 2)]
    store.get("ckpt", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"v2"
    (tmp_path / "a").write_bytes(b"v3!")
    store.put(tmp_path / "a", "ckpt")  # the next put removes every older copy
    assert [f.data for f in drive.named("ckpt")] == [b"v3!"]


def test_404_on_a_named_object_is_file_not_found_without_retries(drive, store, clock, tmp_path):
    (tmp_path / "a").write_bytes(b"abc")
    store.put(tmp_path / "a", "ckpt")
    drive.fail("download", 404, "notFound", times=100)  # deleted by another VM meanwhile
    drive.seen.clear()
    with pytest.raises(FileNotFoundError):
        store.get("ckpt", tmp_path / "out")
    assert drive.kinds() == ["list", "download"]
    assert not (tmp_path / "out").exists()
    assert clock.sleeps == []


def test_endless_5xx_gives_up_after_the_policy_with_one_error(drive, clock, tmp_path):
    store = open_store(drive, clock=clock, retry=RetryPolicy(max_attempts=3))
    (tmp_path / "a").write_bytes(b"abc")
    drive.fail("multipart", 500, "backendError", times=100)
    drive.seen.clear()
    with pytest.raises(StoreError, match="after 3 attempts"):
        store.put(tmp_path / "a", "ckpt")
    assert drive.kinds() == ["multipart"] * 3
    assert len(clock.sleeps) == 2
    assert store.list() == []


def test_a_failure_while_listing_is_an_error_not_an_empty_store(drive, clock, tmp_path):
    store = open_store(drive, clock=clock, retry=RetryPolicy(max_attempts=2))
    (tmp_path / "a").write_bytes(b"abc")
    store.put(tmp_path / "a", "ckpt")
    drive.fail("list", 503, "backendError", times=100)
    with pytest.raises(OSError):
        store.list()
    with pytest.raises(StoreError):
        store.stat("ckpt")


def test_lost_answer_to_folder_creation_converges_on_one_folder(drive, clock):
    drive.fail("create_folder", drop=True)  # created on Drive, answer lost, created again
    store = open_store(drive, clock=clock)
    colabkit_folders = drive.named("colabkit", "root")
    assert len(colabkit_folders) == 2
    (run,) = drive.named("run")
    assert run.parents == [min(colabkit_folders, key=lambda f: f.created).id]
    assert store.list() == []


class LazySource(io.RawIOBase):
    """Deterministic bytes made on demand: each 256 KiB block is its offset, then zeros."""

    ZEROS = bytes(QUANTUM - 8)

    def __init__(self, size: int) -> None:
        self.size, self.pos = size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.pos = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence] + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        assert self.pos % QUANTUM == 0, "the uploader reads whole blocks"
        end = self.size if n < 0 else min(self.size, self.pos + n)
        blocks = range(self.pos, end, QUANTUM)
        parts = ((b.to_bytes(8, "big"), self.ZEROS) for b in blocks)
        data = b"".join(itertools.chain.from_iterable(parts))[: end - self.pos]
        self.pos = end
        return data


TWO_GIB = 2 * 1024**3
# md5 of LazySource(TWO_GIB), computed once with hashlib over its 8 MiB reads.
TWO_GIB_MD5 = "a75767024155375a65b64374e89ffad1"


def test_two_gib_upload_holds_about_one_chunk_in_memory(clock):
    chunk = 8 * MiB
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        drive = FakeDrive(mock, keep_content=False)
        store = open_store(drive, clock=clock, chunk_size=chunk)
        drive.fail("chunk", 503, "backendError", skip=100)  # one failed chunk mid-way too
        tracemalloc.start()
        try:
            info = store.put_stream(LazySource(TWO_GIB), "huge", size=TWO_GIB, md5=TWO_GIB_MD5)
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert (info.size, info.md5) == (TWO_GIB, TWO_GIB_MD5)
    assert drive.chunks == TWO_GIB // chunk + 1
    assert drive.max_chunk_body == chunk
    assert peak < chunk + MiB, f"peak {peak / MiB:.1f} MiB for {chunk / MiB:.0f} MiB chunks"


def test_a_delete_whose_answer_was_lost_is_done(drive, store, clock, tmp_path):
    """Drive deleted the file, the answer never came; the retry gets 404: that is success."""
    (tmp_path / "a").write_bytes(b"x")
    store.put(tmp_path / "a", "ckpt")
    drive.fail("delete", drop=True)
    store.delete("ckpt")
    assert store.list() == [] and clock.sleeps
    with pytest.raises(FileNotFoundError):  # a first answer of 404 still means "absent"
        store.delete("ckpt")
