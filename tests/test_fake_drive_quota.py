"""The fakes hold Drive's space as users have it: a quota shared with Gmail and Photos, a trash that
keeps counting until it is emptied, a daily upload cap, and DriveFS (the mount's client) trashing
what the mount deletes with the bytes Drive last got. Checked through the real client library:
``DriveApiStore`` over the fake, and its googleapiclient service for ``about.get`` and
``files.emptyTrash``.
"""

from __future__ import annotations

import io
import json
import os

import pytest
import responses
from fake_drive import (
    FOLDER,
    QUANTUM,
    QUOTA_MESSAGE,
    RATE_LIMIT_MESSAGE,
    UPLOAD_CAP_MESSAGE,
    FakeDrive,
    Refused,
    open_store,
)
from fake_drivefs import DriveFS
from googleapiclient.errors import HttpError
from googleapiclient.http import MediaIoBaseUpload

from colabkit.errors import StoreError

LAG = 20.0


@pytest.fixture
def mock():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as requests_mock:
        yield requests_mock


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _create(store, name: str, data: bytes, *, parent: str = "root", resumable: bool = False):
    """One files.create with media, straight through googleapiclient."""
    media = MediaIoBaseUpload(
        io.BytesIO(data), "application/octet-stream", chunksize=QUANTUM, resumable=resumable
    )
    body = {"name": name, "parents": [parent]}
    return store._service.files().create(body=body, media_body=media, fields="id,size").execute()


def _quota(store, fields: str = "storageQuota") -> dict:
    return store._service.about().get(fields=fields).execute()


def _errors(exc: HttpError) -> dict:
    return json.loads(exc.content)["error"]


def _http_error(exc: BaseException) -> HttpError:
    while not isinstance(exc, HttpError):
        assert exc.__cause__ is not None, f"no HttpError behind {exc!r}"
        exc = exc.__cause__
    return exc


# -- about.get ------------------------------------------------------------------------------------


def test_about_reports_the_quota_with_gmail_and_the_trash_as_drive_does(mock, tmp_path):
    drive = FakeDrive(mock, quota=15 * 2**30, other_usage=1000)
    store = open_store(drive)
    store.put(_write(tmp_path / "a", b"x" * 300), "a")
    store.put(_write(tmp_path / "b", b"y" * 200), "b")
    drive.seen.clear()
    assert _quota(store) == {
        "storageQuota": {
            "limit": str(15 * 2**30),
            "usage": "1500",
            "usageInDrive": "500",
            "usageInDriveTrash": "0",
        }
    }
    (seen,) = drive.seen
    assert (seen.kind, seen.method, seen.path) == ("about", "GET", "/drive/v3/about")
    assert seen.params == {"fields": "storageQuota", "alt": "json"}  # what googleapiclient sends
    assert _quota(store, "storageQuota(limit,usage),kind") == {
        "storageQuota": {"limit": str(15 * 2**30), "usage": "1500"},
        "kind": "drive#about",
    }
    assert _quota(store, "storageQuota/usageInDriveTrash") == {
        "storageQuota": {"usageInDriveTrash": "0"}
    }


def test_an_unlimited_account_has_no_limit(drive):
    store = open_store(drive)
    assert _quota(store) == {
        "storageQuota": {"usage": "0", "usageInDrive": "0", "usageInDriveTrash": "0"}
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "The 'fields' parameter is required for this operation."),
        ({"fields": "storageQuota(total)"}, "Invalid field selection storageQuota(total)"),
        ({"fields": "user"}, "unknownRequestShape"),  # real, but not modelled: no luck passes
        ({"fields": "storageQuota", "prettyPrint": False}, "unknownRequestShape"),
    ],
)
def test_about_answers_400_to_what_it_does_not_model(drive, kwargs, message):
    store = open_store(drive)
    with pytest.raises(HttpError) as caught:
        store._service.about().get(**kwargs).execute()
    assert (caught.value.status_code, caught.value.reason) == (400, message)


# -- the trash and deletion -----------------------------------------------------------------------


def test_a_trashed_file_keeps_counting_until_it_is_deleted(mock, tmp_path):
    drive = FakeDrive(mock, quota=10_000)
    store = open_store(drive)
    store.put(_write(tmp_path / "a", b"x" * 300), "a")
    store.put(_write(tmp_path / "b", b"y" * 200), "b")
    a = drive.path("colabkit/run/a")
    store._service.files().update(fileId=a.id, body={"trashed": True}).execute()
    assert a.trashed and [i.name for i in store.list()] == ["b"]
    assert _quota(store)["storageQuota"] == {
        "limit": "10000",
        "usage": "500",
        "usageInDrive": "500",
        "usageInDriveTrash": "300",
    }
    store._service.files().delete(fileId=a.id).execute()
    assert a.id not in drive.files
    assert (drive.usage, drive.usage_in_drive, drive.usage_in_trash) == (200, 200, 0)
    store.delete("b")  # the store deletes for good: frees at once
    assert drive.usage == 0 and drive.peak_usage == 500


def test_empty_trash_deletes_every_trashed_file_for_good_and_what_is_below_a_trashed_folder(
    drive,
):
    store = open_store(drive)
    kept = drive.add("kept", data=b"k" * 10)
    loose = drive.add("loose", data=b"l" * 100, trashed=True)
    folder = drive.add_folder("old-run")
    inner = drive.add("ckpt", folder.id, b"c" * 1000)
    store._service.files().update(fileId=folder.id, body={"trashed": True}).execute()
    assert drive.in_trash(inner) and not inner.trashed  # in the trash through its folder
    assert (drive.usage, drive.usage_in_trash) == (1110, 1100)
    drive.seen.clear()
    assert store._service.files().emptyTrash().execute() == ""
    (seen,) = drive.seen
    assert (seen.kind, seen.method, seen.path, seen.params) == (
        "empty_trash",
        "DELETE",
        "/drive/v3/files/trash",
        {},  # googleapiclient sends no alt=json: the answer has no body
    )
    assert {loose.id, folder.id, inner.id}.isdisjoint(drive.files)
    assert kept.id in drive.files and drive.usage == 10 and drive.peak_usage == 1110


def test_empty_trash_of_a_shared_drive_needs_an_organizer(drive):
    store = open_store(drive)
    drive.add_shared_drive("team", role="fileOrganizer")
    drive.add("x", "team", b"x", trashed=True)
    with pytest.raises(HttpError) as caught:
        store._service.files().emptyTrash(driveId="team").execute()
    assert caught.value.status_code == 403
    assert _errors(caught.value)["errors"][0]["reason"] == "insufficientFilePermissions"
    drive.drive_roles["team"] = "organizer"
    store._service.files().emptyTrash(driveId="team").execute()
    assert drive.named("x") == []


def test_deleting_a_folder_for_good_deletes_everything_below_it(drive, tmp_path):
    store = open_store(drive)
    store.put(_write(tmp_path / "a", b"x" * 300), "checkpoints/a")
    store.put(_write(tmp_path / "b", b"y" * 200), "checkpoints/deeper/b")
    run = drive.path("colabkit/run")
    store._service.files().delete(fileId=run.id).execute()
    assert sorted(f.name for f in drive.files.values()) == ["colabkit"]  # nothing orphaned
    assert drive.usage == 0


def test_files_in_a_shared_drive_do_not_count_against_the_user(drive):
    drive.add_shared_drive("team")
    drive.add("big", "team", b"x" * 1000)
    drive.add("mine", data=b"y" * 10)
    assert (drive.usage, drive.usage_in_drive) == (10, 10)


# -- refusals for space ---------------------------------------------------------------------------


def test_an_upload_that_fits_exactly_is_taken_and_one_byte_more_is_refused(mock):
    drive = FakeDrive(mock, quota=1000, other_usage=100)  # Gmail uses 100 of 1000
    store = open_store(drive)
    assert _create(store, "a", b"x" * 900)["size"] == "900"
    with pytest.raises(HttpError) as caught:
        _create(store, "b", b"y")
    error = caught.value
    assert (error.status_code, error.reason) == (403, QUOTA_MESSAGE)
    assert _errors(error)["errors"][0] == {
        "domain": "usageLimits",
        "reason": "storageQuotaExceeded",
        "message": "The user's Drive storage quota has been exceeded.",
    }
    assert drive.named("b") == [] and drive.usage == 1000 == drive.peak_usage


def test_the_store_is_refused_a_put_that_does_not_fit(mock, tmp_path):
    drive = FakeDrive(mock, quota=1000)
    store = open_store(drive)
    drive.seen.clear()
    with pytest.raises(StoreError) as caught:
        store.put(_write(tmp_path / "a", b"x" * 1001), "a")
    error = _http_error(caught.value)
    assert (error.status_code, error.reason) == (403, QUOTA_MESSAGE)
    assert drive.kinds().count("multipart") == 1 and drive.usage == 0


def test_a_resumable_upload_is_refused_at_its_start_when_its_declared_size_does_not_fit(
    mock, tmp_path
):
    drive = FakeDrive(mock, quota=2 * QUANTUM)
    store = open_store(drive, chunk_size=QUANTUM)
    drive.seen.clear()
    with pytest.raises(StoreError) as caught:
        store.put(_write(tmp_path / "a", os.urandom(2 * QUANTUM + 1)), "a")
    error = _http_error(caught.value)
    assert (error.status_code, _errors(error)["errors"][0]["reason"]) == (
        403,
        "storageQuotaExceeded",
    )
    assert "resumable_start" in drive.kinds() and "chunk" not in drive.kinds()
    store.put(_write(tmp_path / "b", os.urandom(2 * QUANTUM)), "b")  # exactly the quota
    assert drive.usage == 2 * QUANTUM == drive.quota


def test_a_resumable_upload_is_refused_at_its_end_when_the_space_went_meanwhile(mock):
    drive = FakeDrive(mock, quota=10 * QUANTUM)
    store = open_store(drive)
    data = os.urandom(2 * QUANTUM + 100)
    media = MediaIoBaseUpload(
        io.BytesIO(data), "application/octet-stream", chunksize=QUANTUM, resumable=True
    )
    request = store._service.files().create(
        body={"name": "a", "parents": ["root"]}, media_body=media, fields="id"
    )
    assert request.next_chunk(num_retries=0)[1] is None  # the session starts, a chunk is taken
    drive.other_usage = 8 * QUANTUM  # Gmail fills up while the upload runs
    request.next_chunk(num_retries=0)  # the middle chunk is taken: the bytes are not counted yet
    with pytest.raises(HttpError) as caught:
        request.next_chunk(num_retries=0)  # the last one
    assert (caught.value.status_code, caught.value.reason) == (403, QUOTA_MESSAGE)
    assert drive.named("a") == [] and drive.sessions == {}  # the session ended with it


def test_a_replacement_needs_room_for_both_copies_and_peak_usage_shows_it(mock, tmp_path):
    drive = FakeDrive(mock, quota=1500)
    store = open_store(drive)
    store.put(_write(tmp_path / "a", b"1" * 700), "ckpt")
    store.put(_write(tmp_path / "a", b"2" * 700), "ckpt")  # the new copy lands before the old goes
    assert drive.usage == 700 and drive.peak_usage == 1400
    drive.quota = 1300
    with pytest.raises(StoreError):
        store.put(_write(tmp_path / "a", b"3" * 700), "ckpt")
    assert drive.path("colabkit/run/ckpt").data == b"2" * 700 and drive.peak_usage == 1400


def test_nothing_can_be_created_once_usage_is_over_the_limit(mock):
    drive = FakeDrive(mock, quota=1000)
    store = open_store(drive)
    drive.other_usage = 1001  # e.g. the quota shrank when a subscription ended
    with pytest.raises(HttpError) as caught:
        store._service.files().create(
            body={"name": "f", "mimeType": FOLDER, "parents": ["root"]}
        ).execute()
    assert caught.value.status_code == 403 and drive.peak_usage == 1001


# -- the daily upload cap and rate limits ---------------------------------------------------------


def test_the_daily_upload_cap_refuses_with_drives_exact_message_until_a_new_day(mock, tmp_path):
    drive = FakeDrive(mock)
    store = open_store(drive, chunk_size=QUANTUM)
    drive.upload_cap = 1000
    _create(store, "a", b"x" * 600)
    for name, data, resumable in [("b", b"y" * 401, False), ("c", os.urandom(2 * QUANTUM), True)]:
        with pytest.raises(HttpError) as caught:
            _create(store, name, data, resumable=resumable)
        error = caught.value
        assert (error.status_code, error.reason) == (403, "User rate limit exceeded.")
        assert _errors(error)["errors"][0] == {
            "domain": "usageLimits",
            "reason": "userRateLimitExceeded",
            "message": UPLOAD_CAP_MESSAGE,
        }
    _create(store, "d", b"z" * 400)  # up to the cap exactly
    assert drive.uploaded_today == 1000
    with pytest.raises(HttpError):
        _create(store, "e", b"")  # the cap is reached: nothing more today
    drive.new_day()
    _create(store, "e", b"w" * 1000)
    assert drive.uploaded_today == 1000
    drive.add("setup", data=b"s" * 10**6)  # a test's setup is not an upload
    assert drive.uploaded_today == 1000


def test_injected_rate_limits_carry_drives_per_minute_message_or_the_one_given(drive):
    store = open_store(drive)
    drive.fail("multipart", 403, "userRateLimitExceeded")
    drive.fail("multipart", 403, "userRateLimitExceeded", message=UPLOAD_CAP_MESSAGE)
    messages = []
    for _ in range(2):
        with pytest.raises(HttpError) as caught:
            _create(store, "a", b"x")
        messages.append(_errors(caught.value)["errors"][0]["message"])
        assert caught.value.reason == messages[-1]
    assert messages == [RATE_LIMIT_MESSAGE, "User rate limit exceeded."]
    assert RATE_LIMIT_MESSAGE.startswith("User Rate Limit Exceeded. Rate of requests for user")


def test_python_helpers_check_the_same_way(drive):
    drive.quota, drive.upload_cap = 100, 50
    assert drive.can_upload(51) == "userRateLimitExceeded" and drive.can_upload(50) is None
    file = drive.upload("a", data=b"x" * 50)
    with pytest.raises(Refused) as caught:
        drive.revise(file, b"")
    assert (caught.value.reason, caught.value.message) == (
        "userRateLimitExceeded",
        UPLOAD_CAP_MESSAGE,
    )
    drive.new_day()
    drive.quota = 60
    with pytest.raises(Refused, match="storageQuotaExceeded"):
        drive.revise(file, b"y" * 11)  # strict: the new revision must fit beside the old
    drive.revise(file, b"y" * 10)
    assert drive.usage == 10 and drive.peak_usage == 50


# -- DriveFS, the mount's client ------------------------------------------------------------------


@pytest.fixture
def my_drive(tmp_path):
    folder = tmp_path / "MyDrive"
    folder.mkdir()
    return folder


def _uploaded(fs: DriveFS, path, data: bytes):
    """Writes ``path`` on the mount and lets DriveFS upload it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    fs.sync()  # DriveFS sees it
    fs.sleep(LAG)  # and uploads it a lag later


def test_drivefs_trashes_a_truncated_then_deleted_file_with_its_full_size(my_drive, drive):
    fs = DriveFS(my_drive, drive, lag=LAG)
    ckpt = my_drive / "run" / "ckpt-1"
    _uploaded(fs, ckpt, b"x" * 1000)
    on_drive = drive.path("run/ckpt-1")
    ckpt.write_bytes(b"")  # truncated ...
    ckpt.unlink()  # ... and deleted before DriveFS uploaded the 0 bytes
    fs.sync()
    assert not on_drive.trashed and fs.pending() == ["run/ckpt-1"]
    fs.sleep(LAG)
    assert on_drive.trashed and on_drive.size == 1000 and fs.trashed == ["run/ckpt-1"]
    assert (drive.usage, drive.usage_in_trash) == (1000, 1000)
    assert fs.uploaded == ["run/ckpt-1"]


def test_drivefs_trashes_a_file_truncated_and_synced_before_its_delete_with_0_bytes(
    my_drive, drive
):
    fs = DriveFS(my_drive, drive, lag=LAG)
    ckpt = my_drive / "run" / "ckpt-1"
    _uploaded(fs, ckpt, b"x" * 1000)
    on_drive = drive.path("run/ckpt-1")
    _uploaded(fs, ckpt, b"")  # the truncation reaches Drive: a new, empty head revision
    assert drive.path("run/ckpt-1") is on_drive and on_drive.size == 0 and drive.usage == 0
    ckpt.unlink()
    fs.sync()
    fs.sleep(LAG)
    assert on_drive.trashed and on_drive.size == 0 and drive.usage_in_trash == 0
    assert fs.uploaded == ["run/ckpt-1", "run/ckpt-1"] and drive.peak_usage == 1000


def test_drivefs_mirrors_a_rename_as_a_rename_without_uploading_again(my_drive, drive):
    fs = DriveFS(my_drive, drive, lag=LAG)
    _uploaded(fs, my_drive / "run" / "ckpt-1", b"x" * 1000)
    file = drive.path("run/ckpt-1")
    (my_drive / "kept").mkdir()
    os.rename(my_drive / "run" / "ckpt-1", my_drive / "kept" / "best")
    fs.sync()
    fs.sleep(LAG)
    assert drive.path("kept/best") is file and not file.trashed
    assert fs.renamed == [("run/ckpt-1", "kept/best")] and fs.uploaded == ["run/ckpt-1"]
    assert drive.usage == 1000 and fs.pending() == []


def test_drivefs_skips_hidden_temporaries_and_mirrors_an_atomic_replace(my_drive, drive):
    fs = DriveFS(my_drive, drive, lag=LAG)
    _uploaded(fs, my_drive / "latest", b"1")
    first = drive.path("latest")
    temporary = my_drive / ".latest.tmp"
    _uploaded(fs, temporary, b"22")
    assert drive.named(".latest.tmp") == [] and fs.pending() == []
    os.replace(temporary, my_drive / "latest")
    fs.sync()
    fs.sleep(LAG)
    assert drive.path("latest") is first and first.data == b"22"  # a new head revision
    assert fs.uploaded == ["latest", "latest"] and drive.usage == 2


def test_drivefs_trashes_a_deleted_folder_and_empty_trash_frees_it(my_drive, drive):
    fs = DriveFS(my_drive, drive, lag=LAG)
    _uploaded(fs, my_drive / "old" / "a", b"a" * 10)
    _uploaded(fs, my_drive / "old" / "sub" / "b", b"b" * 20)
    for path in (my_drive / "old" / "sub" / "b", my_drive / "old" / "a"):
        path.unlink()
    (my_drive / "old" / "sub").rmdir()
    (my_drive / "old").rmdir()
    fs.sync()
    fs.sleep(LAG)
    assert fs.trashed == ["old/a", "old/sub/b", "old/sub/", "old/"]
    assert drive.path("old").trashed and drive.usage_in_trash == 30 == drive.usage
    drive.empty_trash()
    assert drive.files == {} and drive.usage == 0


def test_drivefs_retries_an_upload_refused_for_space_until_the_trash_is_emptied(my_drive, drive):
    drive.quota = 1500
    fs = DriveFS(my_drive, drive, lag=LAG)
    _uploaded(fs, my_drive / "ckpt-1", b"1" * 1000)
    _uploaded(fs, my_drive / "ckpt-2", b"2" * 1000)
    assert fs.failed_uploads == [("ckpt-2", "storageQuotaExceeded")]
    assert drive.named("ckpt-2") == [] and fs.pending() == ["ckpt-2"]
    (my_drive / "ckpt-1").unlink()  # the mount deletes the old one: it goes to the trash
    fs.sync()
    fs.sleep(LAG)
    assert drive.path("ckpt-1").trashed and drive.named("ckpt-2") == []  # the trash still counts
    assert len(fs.failed_uploads) == 3
    drive.empty_trash()
    fs.sleep(1)
    assert drive.path("ckpt-2").size == 1000 and fs.pending() == []
    assert drive.peak_usage == 1000 <= drive.quota


def test_drivefs_respects_the_daily_cap_until_a_new_day(my_drive, drive):
    drive.upload_cap = 1500
    fs = DriveFS(my_drive, drive, lag=LAG)
    _uploaded(fs, my_drive / "a", b"a" * 1000)
    _uploaded(fs, my_drive / "b", b"b" * 1000)
    assert fs.failed_uploads == [("b", "userRateLimitExceeded")]
    drive.new_day()
    fs.sleep(1)
    assert fs.uploaded == ["a", "b"] and drive.uploaded_today == 1000


def test_drivefs_with_no_lag_mirrors_nothing_until_flushed(my_drive, drive):
    fs = DriveFS(my_drive, drive, lag=None)
    _uploaded(fs, my_drive / "a", b"a")
    fs.sleep(10**6)
    assert drive.files == {} and fs.pending() == ["a"]
    fs.flush()
    assert drive.path("a").data == b"a" and fs.pending() == []
