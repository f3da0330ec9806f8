"""DriveApiStore over a fake Drive served by ``responses``: the store contract and wire shapes.

The real googleapiclient and google-auth code runs; only the HTTP answers are fake.
"""

from __future__ import annotations

import hashlib
import os

import pytest
import responses
from fake_drive import FakeDrive, fake_credentials, open_store
from store_contract import StoreContract

from colabkit.errors import ConfigError
from colabkit.storage.base import Store
from colabkit.storage.drive_api import DriveApiStore
from colabkit.storage.drive_folders import FOLDER_MIME, quote

MiB = 1024 * 1024


@pytest.fixture
def drive():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield FakeDrive(mock, page_size=3)


@pytest.fixture
def store(drive):
    return open_store(drive)


class TestDriveApiContractWhileNameSearchesLag(StoreContract):
    """The whole contract on a Drive whose name searches never catch up with the writes:
    colabkit lists parents instead, so nothing is lost and nothing raises."""

    @pytest.fixture
    def drive(self):
        with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
            yield FakeDrive(mock, page_size=3, search_lag=10**9)

    @pytest.fixture
    def break_put(self, drive):
        return lambda: drive.fail("chunk", 403, "storageQuotaExceeded", skip=1)


class TestDriveApiContractOnASharedDrive(StoreContract):
    """The contract with the store's folder in a shared drive (listed with corpora=drive)."""

    @pytest.fixture
    def drive(self):
        with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
            fake = FakeDrive(mock, page_size=3)
            fake.add_shared_drive("sd1")
            yield fake

    @pytest.fixture
    def store(self, drive):
        return open_store(drive, root="sd1")

    @pytest.fixture
    def break_put(self, drive):
        return lambda: drive.fail("chunk", 403, "storageQuotaExceeded", skip=1)


class TestDriveApiContract(StoreContract):
    @pytest.fixture
    def break_put(self, drive):
        # Drive runs out of quota after the first chunk of the next upload arrived.
        return lambda: drive.fail("chunk", 403, "storageQuotaExceeded", skip=1)


def test_is_a_store(store):
    assert isinstance(store, Store)
    assert store.url == "gdrive://colabkit/run"


def test_opening_creates_the_folder_path_with_exact_requests(drive):
    """Folders are found by listing their parent (never by a name search, which lags and
    ignores case); after a creation the parent is listed once more for an older duplicate."""
    open_store(drive)
    kinds = drive.kinds()
    assert kinds == ["list", "create_folder", "list", "list", "create_folder", "list"]
    first = drive.seen[0]
    assert first.params["q"] == (
        f"'root' in parents and trashed = false and mimeType = '{FOLDER_MIME}'"
    )
    assert first.params["fields"] == "nextPageToken, incompleteSearch, files(id,name,createdTime)"
    create = drive.seen[1]
    assert create.json == {"name": "colabkit", "mimeType": FOLDER_MIME, "parents": ["root"]}
    assert create.params["fields"] == "id,name,createdTime"
    colabkit = drive.path("colabkit")
    assert drive.seen[3].params["q"].startswith(f"'{colabkit.id}' in parents")
    assert drive.seen[4].json == {"name": "run", "mimeType": FOLDER_MIME, "parents": [colabkit.id]}
    assert drive.path("colabkit/run").mime == FOLDER_MIME


def test_opening_an_existing_folder_creates_nothing(drive):
    open_store(drive)
    drive.seen.clear()
    open_store(drive)
    assert drive.kinds() == ["list", "list"]


def test_duplicate_folders_resolve_to_the_oldest(drive, tmp_path):
    older = drive.add_folder("colabkit")
    drive.add_folder("colabkit")  # a racing VM made a second one
    store = open_store(drive)
    store.put(_write(tmp_path / "a", b"x"), "a")
    (run,) = drive.named("run")
    assert run.parents == [older.id]


def test_names_that_differ_only_in_case_are_different_objects(drive, store, tmp_path):
    """Drive's `name =` ignores case (the fake does too): putting, getting and deleting one
    name never touches its case variant."""
    store.put(_write(tmp_path / "a", b"lower"), "model.ckpt")
    store.put(_write(tmp_path / "b", b"upper"), "Model.ckpt")
    store.put(_write(tmp_path / "c", b"upper 2"), "Model.ckpt")  # replaces only its own name
    assert [(i.name, i.size) for i in store.list()] == [("Model.ckpt", 7), ("model.ckpt", 5)]
    store.get("model.ckpt", tmp_path / "got")
    assert (tmp_path / "got").read_bytes() == b"lower"
    store.delete("Model.ckpt")
    assert [i.name for i in store.list()] == ["model.ckpt"]
    with pytest.raises(FileNotFoundError):
        store.stat("MODEL.ckpt")


def test_a_run_folder_differing_only_in_case_is_another_run(drive, tmp_path):
    store = open_store(drive)  # colabkit/run
    store.put(_write(tmp_path / "a", b"x"), "ckpt-1.zip")
    other = DriveApiStore("colabkit/RUN", credentials=fake_credentials(), clock=store._clock)
    assert other.list() == [] and store.list()[0].name == "ckpt-1.zip"
    assert sorted(f.name for f in drive.files.values() if f.mime == FOLDER_MIME) == [
        "RUN", "colabkit", "run",
    ]  # fmt: skip


def test_duplicate_run_folders_are_read_as_one_run(drive, tmp_path):
    """Two VMs created the run's folder at once: what either put there is found; a new copy
    goes into the oldest folder and replaces the copies in both."""
    colabkit = drive.add_folder("colabkit")
    older, younger = drive.add_folder("run", colabkit.id), drive.add_folder("run", colabkit.id)
    drive.add("ckpt-2.zip", older.id, b"two")
    drive.add("ckpt-1.zip", younger.id, b"one")
    younger_sub = drive.add_folder("checkpoints", younger.id)
    drive.add("ckpt-3.zip", younger_sub.id, b"three")
    store = open_store(drive)
    assert [i.name for i in store.list()] == ["checkpoints/ckpt-3.zip", "ckpt-1.zip", "ckpt-2.zip"]
    store.get("checkpoints/ckpt-3.zip", tmp_path / "got")
    assert (tmp_path / "got").read_bytes() == b"three"
    store.put(_write(tmp_path / "a", b"one, again"), "ckpt-1.zip")
    (copy,) = drive.named("ckpt-1.zip")
    assert copy.parents == [older.id] and copy.data == b"one, again"


def test_a_parent_that_does_not_exist_is_refused_by_the_fake_as_by_drive(drive):
    from colabkit.errors import StoreError

    with pytest.raises((FileNotFoundError, StoreError)):
        open_store(drive, root="no-such-folder-id")
    assert not drive.files


def test_a_my_drive_folder_as_root_is_listed_as_my_drive(drive, tmp_path):
    folder = drive.add_folder("projects")
    store = open_store(drive, root=folder.id)
    store.put(_write(tmp_path / "a", b"x"), "a")
    lists = [s.params for s in drive.seen if s.kind == "list"]
    assert lists and all("corpora" not in p and "driveId" not in p for p in lists)
    assert drive.path("projects/colabkit/run").parents


def test_an_incomplete_listing_is_an_error_not_an_empty_store(drive, store, tmp_path):
    from colabkit.errors import StoreError

    store.put(_write(tmp_path / "a", b"x"), "a")
    drive.incomplete_search = True
    with pytest.raises(StoreError, match="incompleteSearch"):
        store.list()


def test_names_with_slashes_map_to_subfolders(drive, store, tmp_path):
    store.put(_write(tmp_path / "a", b"abc"), "checkpoints/ckpt-1.zip")
    stored = drive.path("colabkit/run/checkpoints/ckpt-1.zip")
    assert stored.data == b"abc"
    assert drive.path("colabkit/run/checkpoints").mime == FOLDER_MIME


def test_list_follows_pages_and_asks_for_size_and_md5(drive, store, tmp_path):
    names = [f"ckpt-{i}" for i in range(7)]
    for name in names:
        store.put(_write(tmp_path / name, name.encode()), name)
    drive.seen.clear()
    listed = store.list()
    assert [o.name for o in listed] == names
    assert all(o.md5 == hashlib.md5(o.name.encode()).hexdigest() for o in listed)
    lists = [s for s in drive.seen if s.kind == "list"]
    assert [s.params.get("pageToken") for s in lists] == [None, "3", "6"]
    folder = drive.path("colabkit/run").id
    assert lists[0].params["q"] == f"'{folder}' in parents and trashed = false"
    assert lists[0].params["pageSize"] == "1000"
    assert lists[0].params["fields"] == (
        "nextPageToken, incompleteSearch, files(id,name,mimeType,size,md5Checksum,createdTime,"
        "modifiedTime,"
        "appProperties)"
    )


def test_list_hides_temporary_uploads_trashed_files_and_google_docs(drive, store, tmp_path):
    store.put(_write(tmp_path / "a", b"a"), "kept")
    folder = drive.path("colabkit/run").id
    drive.add(".colabkit-upload-123", folder, b"half", app_properties={"colabkit_temporary": "1"})
    drive.add("trashed", folder, b"t", trashed=True)
    drive.add("notes", folder, mime="application/vnd.google-apps.document")
    assert [o.name for o in store.list()] == ["kept"]


def test_uploads_a_crash_left_behind_are_removed_once_an_hour_old(drive, tmp_path):
    """A kill between an upload and its rename leaves a checkpoint-sized file on the user's
    quota; only old temporaries inside the store's folders go."""
    from datetime import datetime

    from colabkit.clock import FakeClock

    temporary = {"colabkit_temporary": "1"}
    now = datetime.fromisoformat("2026-01-01T12:00:00+00:00").timestamp()
    store = open_store(drive, clock=FakeClock(start=now))
    store.put(_write(tmp_path / "a", b"a"), "checkpoints/ckpt-1.zip")
    checkpoints = drive.path("colabkit/run/checkpoints").id
    old = drive.add(".colabkit-upload-old", checkpoints, b"x" * 10, app_properties=temporary)
    untagged = drive.add(".colabkit-upload-untagged", drive.path("colabkit/run").id, b"y")
    young = drive.add(".colabkit-upload-young", checkpoints, b"z", app_properties=temporary)
    elsewhere = drive.add(".colabkit-upload-other", drive.path("colabkit").id, b"w")
    for file in (old, untagged, elsewhere):
        file.created = "2026-01-01T10:00:00.000Z"  # two hours ago
    young.created = "2026-01-01T11:30:00.000Z"  # half an hour ago: maybe a put in progress

    removed = store.remove_leftovers()

    assert sorted(removed) == [".colabkit-upload-untagged", "checkpoints/.colabkit-upload-old"]
    assert old.id not in drive.files and untagged.id not in drive.files
    assert young.id in drive.files and elsewhere.id in drive.files
    assert [o.name for o in store.list()] == ["checkpoints/ckpt-1.zip"]

    # What a user meets: colabkit.fit's CheckpointManager cleans up when it opens the store.
    from colabkit.checkpoint.manager import CheckpointManager

    again = drive.add(".colabkit-upload-again", checkpoints, b"v", app_properties=temporary)
    again.created = "2026-01-01T09:00:00.000Z"
    CheckpointManager(store, cache_dir=tmp_path / "cache").close()
    assert again.id not in drive.files and young.id in drive.files


def test_small_file_goes_up_in_one_multipart_request(drive, store, tmp_path):
    drive.seen.clear()
    info = store.put(_write(tmp_path / "a", b"small"), "a")
    assert drive.kinds() == ["multipart", "list", "patch"]
    upload = drive.seen[0]
    assert upload.params["uploadType"] == "multipart"
    assert upload.params["fields"] == "id,size,md5Checksum"
    assert upload.headers["Content-Type"].startswith("multipart/related")
    rename = drive.seen[2]
    assert rename.json == {"name": "a", "appProperties": {"colabkit_temporary": None}}
    assert info.md5 == hashlib.md5(b"small").hexdigest()


def test_large_file_goes_up_in_resumable_chunks(drive, store, tmp_path):
    data = os.urandom(2 * MiB + 5)
    drive.seen.clear()
    store.put(_write(tmp_path / "big", data), "big")
    assert drive.kinds() == ["resumable_start", "chunk", "chunk", "chunk", "list", "patch"]
    start = drive.seen[0]
    assert start.params["uploadType"] == "resumable"
    assert start.headers["X-Upload-Content-Length"] == str(len(data))
    assert start.json["appProperties"] == {"colabkit_temporary": "1"}
    assert start.json["name"].startswith(".colabkit-upload-")
    ranges = [s.headers["Content-Range"] for s in drive.seen if s.kind == "chunk"]
    total = len(data)
    assert ranges == [
        f"bytes 0-{MiB - 1}/{total}",
        f"bytes {MiB}-{2 * MiB - 1}/{total}",
        f"bytes {2 * MiB}-{total - 1}/{total}",
    ]
    assert drive.path("colabkit/run/big").data == data


def test_put_replaces_by_rename_then_deletes_the_old_copy(drive, store, tmp_path):
    store.put(_write(tmp_path / "a", b"old"), "x")
    (old,) = drive.named("x")
    drive.seen.clear()
    store.put(_write(tmp_path / "b", b"new"), "x")
    assert drive.kinds() == ["multipart", "list", "patch", "delete"]
    assert drive.seen[3].path == f"/drive/v3/files/{old.id}"
    assert [f.data for f in drive.named("x")] == [b"new"]


def test_download_uses_ranges_of_chunk_size(drive, store, tmp_path):
    data = os.urandom(2 * MiB + 7)
    store.put(_write(tmp_path / "big", data), "big")
    drive.seen.clear()
    store.get("big", tmp_path / "copy")
    downloads = [s for s in drive.seen if s.kind == "download"]
    assert [s.headers["Range"] for s in downloads] == [
        f"bytes=0-{MiB - 1}",
        f"bytes={MiB}-{2 * MiB - 1}",
        f"bytes={2 * MiB}-{3 * MiB - 1}",
    ]
    assert downloads[0].params["alt"] == "media"
    assert (tmp_path / "copy").read_bytes() == data
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".colabkit")] == []


def test_download_with_a_wrong_md5_keeps_the_old_file(drive, store, tmp_path):
    store.put(_write(tmp_path / "a", b"good bytes"), "x")
    (stored,) = drive.named("x")
    stored.data = b"evil bytes"  # Drive's md5 still says "good bytes"
    target = _write(tmp_path / "target", b"precious")
    with pytest.raises(OSError, match="md5"):
        store.get("x", target)
    assert target.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "target"]


def test_upload_with_a_wrong_server_md5_is_discarded(drive, store, tmp_path, monkeypatch):
    store.put(_write(tmp_path / "a", b"old"), "x")
    real_store = drive._store

    def corrupting(meta, data, fields, session=None):
        return real_store(meta, data[:-1] + b"?", fields, session)

    monkeypatch.setattr(drive, "_store", corrupting)
    with pytest.raises(OSError, match="different bytes"):
        store.put(_write(tmp_path / "b", b"new"), "x")
    assert [f.data for f in drive.files.values() if f.mime != FOLDER_MIME] == [b"old"]


def test_delete_is_one_delete_request(drive, store, tmp_path):
    store.put(_write(tmp_path / "a", b"a"), "a")
    (stored,) = drive.named("a")
    drive.seen.clear()
    store.delete("a")
    assert drive.kinds() == ["list", "delete"]
    assert (drive.seen[1].method, drive.seen[1].path) == ("DELETE", f"/drive/v3/files/{stored.id}")
    assert drive.named("a") == []


def test_duplicate_files_read_as_the_newest(drive, store, tmp_path):
    store.put(_write(tmp_path / "a", b"old"), "x")
    drive.add("x", drive.path("colabkit/run").id, b"newer")  # a put whose delete failed
    assert store.stat("x").size == len(b"newer")
    store.get("x", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"newer"
    assert [o.size for o in store.list()] == [len(b"newer")]


def test_names_are_never_searched_and_query_literals_are_escaped(drive, store, tmp_path):
    name = "it's o'clock"
    store.put(_write(tmp_path / "a", b"q"), name)
    assert store.stat(name).size == 1
    queries = [s.params["q"] for s in drive.seen if s.kind == "list"]
    assert queries and not any("clock" in q or "name =" in q for q in queries)
    assert quote("a\\b'c") == "'a\\\\b\\'c'"


@pytest.mark.parametrize("bad", [0, 1000, 256 * 1024 + 1, "8MiB"])
def test_bad_chunk_size_is_rejected_before_any_request(drive, bad):
    with pytest.raises(ConfigError, match="chunk_size"):
        open_store(drive, chunk_size=bad)
    assert drive.seen == []


@pytest.mark.parametrize("bad", ["", "/abs", "a/../b", "a\\b"])
def test_bad_folder_is_rejected_before_any_request(drive, bad):
    with pytest.raises(ConfigError, match="folder"):
        DriveApiStore(bad, credentials=fake_credentials())
    assert drive.seen == []


def _write(path, data: bytes):
    path.write_bytes(data)
    return path
