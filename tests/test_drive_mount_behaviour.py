"""The Drive mount's store as the checkpoint manager uses it, one behaviour at a time: what each
``put`` counts as (confirmed on Drive, or on the mount with its upload pending), the exact lines a
user reads, what a prune deletes and when, and the room Drive has.

The mount is a folder in a fake mount table; Drive's client is ``fake_drivefs.DriveFS`` (also the
clock), which uploads what the mount holds after a lag; the Drive API is the real client over
``responses`` (``fake_drive``). No training: each runs in a fraction of a second.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
import types
from pathlib import Path

import google.auth
import pytest
from fake_drive import fake_credentials
from fake_drivefs import DriveFS
from test_drive_space import Disks
from test_mount_confirm import ApiFailsMidConfirm, holding_checkpoints

from colabkit.checkpoint.format import checkpoint_name
from colabkit.clock import FakeClock
from colabkit.duration import format_size
from colabkit.errors import StoreError, StoreFullError
from colabkit.storage import drive_auth
from colabkit.storage.base import Space
from colabkit.storage.drive_mount import EMPTIED_GRACE, SIGN_IN, DriveMountStore

RUN = "colabkit/run/checkpoints"
FIRST, SECOND = checkpoint_name(10), checkpoint_name(20)
LOGGER = "colabkit"
QUOTA_SOURCE = "Drive's storage quota"
MOUNT_SOURCE = "the Drive mount's figures"


def store_on(mount, clock, *, signed_in: bool = True, root: str = RUN, **kwargs):
    credentials = fake_credentials() if signed_in else None
    return DriveMountStore(
        mount / root, my_drive=mount, credentials=credentials, clock=clock, **kwargs
    )


def checkpoint(tmp_path, name: str, size: int = 4096) -> Path:
    """A local checkpoint file of ``size`` random bytes, as staging writes it."""
    path = tmp_path / f"staged-{name}"
    path.write_bytes(os.urandom(size))
    return path


def said(caplog, level: int = logging.WARNING) -> list[str]:
    """The lines the store itself logged at ``level`` (not the transport's retries)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "colabkit.storage.drive_mount" and r.levelno == level
    ]


# -- signed in: confirmed on Drive, or said why not -----------------------------------------------

API_FAILED = (
    "Drive kept failing during listing of gdrive://colabkit/run/checkpoints: HTTP 503 "
    "backendError after 8 attempts. Check the connection and https://www.google.com/appsstatus, "
    "then retry."
)


def test_a_put_confirmed_on_drive_says_how_long_it_waited(mount, drive, tmp_path, caplog):
    clock = DriveFS(mount, drive)  # Drive holds what the mount holds 20 s after DriveFS sees it
    store = store_on(mount, clock)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        info = store.put(checkpoint(tmp_path, FIRST), FIRST)
    assert drive.path(f"{RUN}/{FIRST}").md5 == info.md5
    assert said(caplog, logging.DEBUG) == [f"{FIRST} confirmed on Drive after 29 s"]  # 2+4+8+15
    assert said(caplog) == [] and store.confirms is True and not store.upload_pending


def test_an_upload_that_never_lands_says_how_long_it_was_awaited(mount, drive, tmp_path):
    clock = DriveFS(mount, drive)
    clock.holds = holding_checkpoints
    store = store_on(mount, clock, confirm_delays=(5, 10))
    with pytest.raises(StoreError) as caught:
        store.put(checkpoint(tmp_path, FIRST), FIRST)
    assert type(caught.value) is StoreError  # not "Drive is full": it has no quota here
    assert str(caught.value) == (
        f"{FIRST} is on the Drive mount, but Drive does not hold it yet after 15 s (its upload "
        "is pending; a VM that dies now loses it). Retried at the next save."
    )
    assert clock.sleeps == [5, 10]


def test_a_passing_api_failure_while_confirming_is_retried_on_the_stores_clock(
    mount, drive, tmp_path, caplog
):
    clock = DriveFS(mount, drive)
    store = store_on(mount, clock, confirm_delays=(25,))
    drive.fail("list", 503, "backendError", times=1)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        store.put(checkpoint(tmp_path, FIRST), FIRST)
    assert len(clock.sleeps) == 2 and clock.sleeps[1] == 25  # the retry's wait, then Drive's
    assert said(caplog, logging.DEBUG) == [f"{FIRST} confirmed on Drive after 25 s"]
    assert store.confirms is True


def test_an_api_failing_while_confirming_is_one_line_with_its_reason_and_nothing_more(
    mount, drive, tmp_path, caplog
):
    """The line says why, once; the next saves count on the mount without another line (in
    particular not the advice to sign in: the user did)."""
    clock = ApiFailsMidConfirm(mount, drive)
    clock.holds = holding_checkpoints
    store = store_on(mount, clock)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        store.put(checkpoint(tmp_path, FIRST), FIRST)
        store.put(checkpoint(tmp_path, SECOND), SECOND)
    assert said(caplog) == [
        f"Cannot confirm uploads through the Drive API ({API_FAILED}): checkpoints in "
        f"{mount / RUN} now count once they are on the Drive mount (upload pending)."
    ]
    assert store.upload_pending and not store.signed_in
    assert store.unconfirmed_because == f"the Drive API failed while confirming ({API_FAILED})"


# -- Drive full, signed in: said with Drive's own figures -----------------------------------------

GB = 10**9


def full_drive(drive, free: int, *, trash: int = 0) -> None:
    """A 15 GB account with ``free`` bytes left, ``trash`` of its use in Drive's trash."""
    drive.quota = 15 * GB
    if trash:
        drive.add("old-model.h5", size=trash, trashed=True)
    drive.other_usage = drive.quota - free - drive.usage


@pytest.mark.parametrize("trash", [0, 3_000_000], ids=["trash-empty", "trash-3MB"])
def test_an_upload_drive_refuses_for_lack_of_room_says_drive_is_full_with_its_figures(
    mount, drive, tmp_path, trash
):
    clock = DriveFS(mount, drive)
    store = store_on(mount, clock, confirm_delays=(30, 30))  # DriveFS tries it at 50 s
    full_drive(drive, 1000, trash=trash)
    with pytest.raises(StoreFullError) as caught:
        store.put(checkpoint(tmp_path, FIRST, size=4096), FIRST)
    in_trash = f", {format_size(trash)} of it in the trash" if trash else ""
    assert str(caught.value) == (
        f"Drive is full (1.0 KB free of 15.0 GB{in_trash}): {FIRST} is in this VM's Drive "
        "cache and cannot be uploaded (a VM that dies now loses it). Free space on Drive (its "
        "trash counts too: empty it); it is retried at the next save"
    )
    assert clock.failed_uploads == [(f"{RUN}/{FIRST}", "storageQuotaExceeded")]


@pytest.mark.parametrize("free", [4096, 1_000_000], ids=["exactly-its-size", "room"])
def test_an_upload_still_pending_on_a_drive_with_room_is_not_said_full(
    mount, drive, tmp_path, free
):
    clock = DriveFS(mount, drive, lag=0)
    store = store_on(mount, clock, confirm_delays=(30,))
    store.put(checkpoint(tmp_path, SECOND), SECOND)  # the run's folder is on Drive
    clock.holds = holding_checkpoints  # the next is held back for another reason (a slow line)
    full_drive(drive, free)
    with pytest.raises(StoreError, match="Drive does not hold it yet after 30 s") as caught:
        store.put(checkpoint(tmp_path, FIRST, size=4096), FIRST)
    assert not isinstance(caught.value, StoreFullError)


# -- not signed in: on the mount, upload pending --------------------------------------------------


def test_not_signed_in_the_first_put_says_once_what_on_the_mount_means(mount, tmp_path, caplog):
    clock = FakeClock()
    store = store_on(mount, clock, signed_in=False)
    assert store.upload_pending and not store.signed_in  # known before any put
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        store.put(checkpoint(tmp_path, FIRST), FIRST)
        store.put(checkpoint(tmp_path, SECOND), SECOND)
    assert said(caplog) == [
        f"Checkpoints in {mount / RUN} count once they are on the Drive mount: Drive uploads "
        "them in the background, and a VM that dies first (an idle disconnect) loses what is "
        "still waiting. To have each one confirmed on Drive, sign in for the Drive API first: "
        "from google.colab import auth; auth.authenticate_user()."
    ]
    assert store.unconfirmed_because == "no Drive API sign-in"
    assert clock.sleeps == []


def test_not_signed_in_a_mount_that_shows_drive_full_refuses_the_put(mount, tmp_path, monkeypatch):
    disks = Disks(monkeypatch)
    figures = {"free": 0, "total": 15 * GB}
    disks.add(mount.parent, lambda: (figures["free"], figures["total"]))
    store = store_on(mount, FakeClock(), signed_in=False)
    with pytest.raises(StoreFullError) as caught:
        store.put(checkpoint(tmp_path, FIRST), FIRST)
    assert str(caught.value) == (
        f"Drive is full (the mount shows 0 bytes free of 15.0 GB): {FIRST} is in this VM's "
        "Drive cache and cannot be uploaded. Free space on Drive (its trash counts too: empty it)"
    )
    assert (mount / RUN / FIRST).stat().st_size == 4096  # on the mount all the same

    figures["free"] = 1  # a byte free: not full, as far as the mount can tell
    store.put(checkpoint(tmp_path, SECOND), SECOND)
    figures.update(free=0, total=0)  # no figures at all: nothing to go by
    store.put(checkpoint(tmp_path, SECOND), SECOND)


def test_not_signed_in_a_mount_whose_figures_cannot_be_read_takes_the_put(
    mount, tmp_path, monkeypatch
):
    def unreadable():
        raise OSError(107, "Transport endpoint is not connected")

    Disks(monkeypatch).add(mount / RUN, unreadable)
    store = store_on(mount, FakeClock(), signed_in=False)
    (mount / RUN).mkdir(parents=True)
    info = store.put(checkpoint(tmp_path, FIRST), FIRST)
    assert info.size == 4096 and (mount / RUN / FIRST).read_bytes()


def test_a_retried_put_of_the_same_bytes_is_not_written_again(mount, tmp_path):
    """A write would restart Drive's upload of the file; the answer is the same as the first."""
    store = store_on(mount, FakeClock(), signed_in=False)
    local = checkpoint(tmp_path, FIRST)
    first = store.put(local, FIRST)
    written = (mount / RUN / FIRST).stat().st_mtime_ns
    again = store.put(local, FIRST)
    assert (mount / RUN / FIRST).stat().st_mtime_ns == written
    assert again == first  # name, size, md5 and the file's time
    assert (again.name, again.size, again.md5) == (
        FIRST,
        4096,
        hashlib.md5(local.read_bytes()).hexdigest(),
    )

    longer = tmp_path / "longer"
    longer.write_bytes(local.read_bytes() + b"more")
    assert store.put(longer, FIRST).size == 4100
    assert (mount / RUN / FIRST).read_bytes() == longer.read_bytes()


# -- pruning, signed in: deleted for good through the API -----------------------------------------


def test_signed_in_a_pruned_checkpoint_is_deleted_for_good_on_drive_and_on_the_mount(
    mount, drive, tmp_path, caplog
):
    clock = DriveFS(mount, drive)
    store = store_on(mount, clock)
    store.put(checkpoint(tmp_path, FIRST), FIRST)
    store.put(checkpoint(tmp_path, SECOND), SECOND)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        store.delete(FIRST)
    assert not (mount / RUN / FIRST).exists() and not drive.named(FIRST)
    clock.sleep(60)  # DriveFS sees the mount's delete: nothing left to trash
    assert drive.usage_in_trash == 0 and clock.trashed == []
    assert [info.name for info in store.list()] == [SECOND]
    assert said(caplog) == [] and store.confirms is True


def test_signed_in_a_checkpoint_that_never_reached_drive_is_deleted_on_the_mount(
    mount, drive, tmp_path
):
    clock = DriveFS(mount, drive)
    clock.holds = holding_checkpoints
    store = store_on(mount, clock, confirm_delays=(5,))
    with pytest.raises(StoreError, match="Drive does not hold it yet"):
        store.put(checkpoint(tmp_path, FIRST), FIRST)
    store.delete(FIRST)
    assert not (mount / RUN / FIRST).exists() and store.list() == []
    clock.holds = lambda relative: False
    clock.sleep(60)
    assert not drive.named(FIRST) and store.confirms is True


@pytest.mark.parametrize("signed_in", [True, False], ids=["signed-in", "not-signed-in"])
def test_deleting_a_checkpoint_that_is_not_there_is_file_not_found(
    mount, drive, tmp_path, signed_in
):
    store = store_on(mount, DriveFS(mount, drive), signed_in=signed_in)
    store.put(checkpoint(tmp_path, SECOND), SECOND)
    with pytest.raises(FileNotFoundError):
        store.delete(FIRST)
    assert [info.name for info in store.list()] == [SECOND]


def test_signed_in_an_api_failing_at_a_prune_empties_the_checkpoint_instead(
    mount, drive, tmp_path, caplog
):
    """The API stops answering between a save and the prune: the checkpoint cannot be deleted
    for good, so it is emptied like one pruned without a sign-in (the trash then gets 0 bytes)."""
    clock = DriveFS(mount, drive)
    store = store_on(mount, clock)
    store.put(checkpoint(tmp_path, FIRST), FIRST)
    store.put(checkpoint(tmp_path, SECOND), SECOND)
    drive.fail("list", 503, "backendError", times=1000)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        store.delete(FIRST)
    assert (mount / RUN / FIRST).stat().st_size == 0
    assert [info.name for info in store.list()] == [SECOND]
    lines = said(caplog)
    assert len(lines) == 2 and lines[0].startswith(
        f"Cannot confirm uploads through the Drive API ({API_FAILED}): "
    )
    assert lines[1].startswith("Old checkpoints deleted on the Drive mount go to Drive's trash")
    assert store.upload_pending
    assert store.unconfirmed_because == f"the Drive API failed while confirming ({API_FAILED})"


def test_signed_in_a_prune_that_drivefs_mirrors_first_still_deletes_it(mount, drive, tmp_path):
    """Drive's client mirrors the API's delete onto the mount as soon as it hears of it: the
    file can be gone from the mount before colabkit's own delete there."""
    clock = DriveFS(mount, drive)
    store = store_on(mount, clock)
    store.put(checkpoint(tmp_path, FIRST), FIRST)
    api = store.drive_api()
    deleted_on_drive = api.delete

    def delete_mirrored(name):
        deleted_on_drive(name)
        (mount / RUN / name).unlink()  # DriveFS, meanwhile

    api.delete = delete_mirrored
    store.delete(FIRST)
    assert not (mount / RUN / FIRST).exists() and not drive.named(FIRST)
    assert store.confirms is True


# -- pruning, not signed in: emptied, then deleted after the grace --------------------------------


def trash_line(size: int, purge) -> str:
    return (
        "Old checkpoints deleted on the Drive mount go to Drive's trash, which counts against "
        f"the quota for 30 days ({format_size(size)} each here): not signed in for the Drive API, "
        "colabkit empties each one and deletes it 5 minutes later, so that the trash gets an "
        "empty file, but cannot confirm what Drive keeps. To delete them for good, sign in "
        f"before training ({SIGN_IN}), or run `colabkit ckpt purge {purge}` later."
    )


@pytest.mark.parametrize(
    "root, purge",
    [(RUN, "colabkit/run"), ("colabkit/mine", "colabkit/mine")],
    ids=["a-runs-checkpoints-folder", "a-folder-of-its-own"],
)
def test_not_signed_in_the_first_prune_says_once_what_the_trash_gets_and_how_to_purge(
    mount, tmp_path, caplog, root, purge
):
    """``colabkit ckpt purge`` takes the run's folder (the one that holds ``checkpoints``)."""
    store = store_on(mount, FakeClock(), signed_in=False, root=root)
    for name in (FIRST, SECOND, checkpoint_name(30)):
        store.put(checkpoint(tmp_path, name, size=5000), name)
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        store.delete(FIRST)
        store.delete(SECOND)
    assert said(caplog) == [trash_line(5000, mount / purge)]


def test_not_signed_in_a_pruned_checkpoint_is_emptied_at_once_and_deleted_after_the_grace(
    mount, tmp_path
):
    clock = FakeClock()
    store = store_on(mount, clock, signed_in=False)
    for name in (FIRST, SECOND, checkpoint_name(30)):
        store.put(checkpoint(tmp_path, name), name)
    store.delete(FIRST)
    assert (mount / RUN / FIRST).stat().st_size == 0  # emptied in place, under its own name
    clock.sleep(EMPTIED_GRACE - 1)
    store.delete(SECOND)  # a later prune, within the grace of the first
    assert (mount / RUN / FIRST).stat().st_size == 0
    assert [info.name for info in store.list()] == [checkpoint_name(30)]
    clock.sleep(1)  # the first's grace is over, not the second's
    store.delete_emptied()
    assert not (mount / RUN / FIRST).exists()
    assert (mount / RUN / SECOND).stat().st_size == 0
    clock.sleep(EMPTIED_GRACE)
    store.delete_emptied()
    assert sorted(p.name for p in (mount / RUN).iterdir()) == [checkpoint_name(30)]


def test_not_signed_in_a_pruned_checkpoint_saved_again_within_the_grace_is_kept(mount, tmp_path):
    """A session that resumed from an older checkpoint saves the same step again."""
    clock = FakeClock()
    store = store_on(mount, clock, signed_in=False)
    store.put(checkpoint(tmp_path, FIRST), FIRST)
    store.put(checkpoint(tmp_path, SECOND), SECOND)
    store.delete(FIRST)
    store.delete(SECOND)
    again = checkpoint(tmp_path, "again")
    store.put(again, FIRST)
    (mount / RUN / SECOND).unlink()  # and the user deleted the other emptied one by hand
    clock.sleep(EMPTIED_GRACE)
    store.delete_emptied()
    assert (mount / RUN / FIRST).read_bytes() == again.read_bytes()


def test_listing_hides_only_emptied_checkpoints(mount, tmp_path):
    """An emptied checkpoint waiting for its delete is never shown (a checkpoint is never
    empty); a user's empty file is, and so is every checkpoint with bytes."""
    store = store_on(mount, FakeClock(), signed_in=False)
    store.put(checkpoint(tmp_path, SECOND), SECOND)
    (mount / RUN / FIRST).write_bytes(b"")  # emptied by a process that died before deleting it
    (mount / RUN / "notes.txt").write_bytes(b"")
    assert [(i.name, i.size) for i in store.list()] == [(SECOND, 4096), ("notes.txt", 0)]
    assert [i.name for i in store.list("ckpt-")] == [SECOND]


def test_leftovers_are_the_emptied_checkpoints_of_a_process_that_died(mount, tmp_path):
    store = store_on(mount, FakeClock(), signed_in=False)
    store.put(checkpoint(tmp_path, SECOND), SECOND)
    old = (mount / RUN / FIRST, mount / RUN / "notes.txt", mount / RUN / SECOND)
    old[0].write_bytes(b"")
    old[1].write_bytes(b"")
    recent = mount / RUN / checkpoint_name(30)
    recent.write_bytes(b"")  # emptied a minute ago: its process may still delete it
    hours_ago = os.stat(recent).st_mtime - 2 * 3600
    for path in old:
        os.utime(path, (hours_ago, hours_ago))
    assert store.remove_leftovers() == [FIRST]
    assert sorted(p.name for p in (mount / RUN).iterdir()) == sorted(
        ["notes.txt", SECOND, checkpoint_name(30)]
    )
    os.utime(recent, (hours_ago + 3000, hours_ago + 3000))  # two minutes old
    assert store.remove_leftovers(older_than=60) == [checkpoint_name(30)]


def test_a_leftover_is_one_untouched_for_longer_than_an_hour_or_older_than(
    mount, tmp_path, monkeypatch
):
    now = 1_800_000_000.0
    monkeypatch.setattr(time, "time", lambda: now)
    store = store_on(mount, FakeClock(), signed_in=False)
    (mount / RUN).mkdir(parents=True)

    def emptied(name: str, age: float) -> None:
        (mount / RUN / name).write_bytes(b"")
        os.utime(mount / RUN / name, (now - age, now - age))

    emptied(FIRST, 3600.0)
    emptied(SECOND, 3600.5)
    assert store.remove_leftovers() == [SECOND]  # exactly an hour old: not yet
    emptied(SECOND, 600.0)
    assert store.remove_leftovers(older_than=600) == [FIRST]
    assert (mount / RUN / SECOND).exists()


def test_a_leftover_another_process_deletes_meanwhile_is_not_reported(mount, tmp_path, monkeypatch):
    """The process that emptied it deletes it at the same moment (its grace is over)."""
    store = store_on(mount, FakeClock(), signed_in=False)
    (mount / RUN).mkdir(parents=True)
    (mount / RUN / FIRST).write_bytes(b"")
    hours_ago = time.time() - 2 * 3600
    os.utime(mount / RUN / FIRST, (hours_ago, hours_ago))
    unlink = os.unlink

    def the_other_process_first(path, *args, **kwargs):
        unlink(path, *args, **kwargs)
        raise FileNotFoundError(2, "No such file or directory", str(path))

    monkeypatch.setattr(os, "unlink", the_other_process_first)
    assert store.remove_leftovers() == []
    assert not (mount / RUN / FIRST).exists()


# -- room: Drive's own figures when signed in, else the mount's -----------------------------------


def drive_room(drive) -> Space:
    """What Drive says of the account: free, its limit, its trash (``about.get``)."""
    return Space(drive.quota - drive.usage, drive.quota, drive.usage_in_trash, QUOTA_SOURCE)


def test_signed_in_the_room_is_drives_quota_with_its_trash(mount, drive, tmp_path):
    clock = DriveFS(mount, drive)
    store = store_on(mount, clock)
    store.put(checkpoint(tmp_path, FIRST), FIRST)  # the run's folder is on Drive now
    full_drive(drive, 5 * GB, trash=3_000_000)
    assert store.space() == drive_room(drive)


def test_signed_in_a_new_runs_room_is_the_accounts_and_nothing_is_made_on_drive(mount, drive):
    """The run's folder is not on Drive yet (DriveFS makes it with the first checkpoint)."""
    full_drive(drive, 5 * GB, trash=3_000_000)
    store = store_on(mount, DriveFS(mount, drive))
    assert store.space() == drive_room(drive)
    assert "create_folder" not in drive.kinds() and not drive.named("colabkit")


def test_signed_in_a_new_runs_room_is_asked_again_after_a_passing_failure(mount, drive):
    full_drive(drive, 5 * GB)
    drive.fail("about", 503, "backendError", times=1)
    clock = FakeClock()
    store = store_on(mount, clock)
    assert store.space() == drive_room(drive)
    assert drive.kinds().count("about") == 2 and len(clock.sleeps) == 1  # on the given clock


def test_signed_in_an_api_that_fails_gives_the_mounts_figures(mount, drive, monkeypatch, caplog):
    Disks(monkeypatch).add(mount.parent, lambda: (7 * GB, 15 * GB))
    drive.fail("list", 403, "insufficientPermissions", times=1000)
    drive.fail("about", 403, "insufficientPermissions", times=1000)
    store = store_on(mount, DriveFS(mount, drive))
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        assert store.space() == Space(7 * GB, 15 * GB, None, MOUNT_SOURCE)
    (line,) = said(caplog, logging.DEBUG)
    assert line.startswith("Drive quota not readable through the API (") and "403" in line
    assert line.endswith("): the mount's figures")


def test_not_signed_in_the_room_is_the_mounts_figures_and_drive_is_not_asked(
    mount, drive, monkeypatch
):
    Disks(monkeypatch).add(mount.parent, lambda: (7 * GB, 15 * GB))
    store = store_on(mount, FakeClock(), signed_in=False)
    assert store.space() == Space(7 * GB, 15 * GB, None, MOUNT_SOURCE)
    assert drive.seen == []


# -- the sign-in: found where the user has one, never asked for -----------------------------------


@pytest.fixture
def colab_without_sign_in(monkeypatch):
    """In Colab, the user never ran ``auth.authenticate_user()``: a sign-in would be a dialog
    (here it counts its calls), and google-auth finds no credentials."""
    dialogs: list[str] = []
    auth = types.SimpleNamespace(authenticate_user=lambda: dialogs.append("sign in?"))
    monkeypatch.setitem(sys.modules, "google.colab", types.SimpleNamespace(auth=auth))
    monkeypatch.setattr(drive_auth, "running_in_colab", lambda environ=None: True)
    for variable in ("COLABKIT_DRIVE_CREDENTIALS", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(variable, raising=False)

    def no_credentials(*args, **kwargs):
        raise google.auth.exceptions.DefaultCredentialsError("no credentials")

    monkeypatch.setattr(google.auth, "default", no_credentials)
    return dialogs


def test_in_colab_without_a_sign_in_none_is_asked_for_and_puts_are_upload_pending(
    mount, drive, tmp_path, colab_without_sign_in
):
    """A dialog would stop the training loop until someone clicks."""
    store = DriveMountStore(mount / RUN, my_drive=mount, clock=FakeClock())
    assert store.confirms is None and not store.upload_pending  # not decided before it is needed
    store.put(checkpoint(tmp_path, FIRST), FIRST)
    assert colab_without_sign_in == []
    assert store.upload_pending and not store.signed_in and drive.seen == []


def test_a_key_in_the_environment_is_a_sign_in(mount, drive, tmp_path, signed_in):
    clock = DriveFS(mount, drive)
    store = DriveMountStore(mount / RUN, my_drive=mount, clock=clock)
    store.put(checkpoint(tmp_path, FIRST), FIRST)
    assert store.signed_in and not store.upload_pending
    assert drive.path(f"{RUN}/{FIRST}").size == 4096


def test_a_broken_key_falls_back_to_googles_default_sign_in_for_drive(
    mount, drive, tmp_path, monkeypatch
):
    """``$COLABKIT_DRIVE_CREDENTIALS`` naming no usable key, and Colab's sign-in done
    (google-auth's default credentials): that sign-in is used, asked for Drive's scope."""
    monkeypatch.setenv("COLABKIT_DRIVE_CREDENTIALS", str(tmp_path / "missing.json"))
    asked: list[object] = []

    def default(scopes=None):
        asked.append(scopes)
        return fake_credentials(), "project"

    monkeypatch.setattr(google.auth, "default", default)
    store = DriveMountStore(mount / RUN, my_drive=mount, clock=DriveFS(mount, drive))
    store.put(checkpoint(tmp_path, FIRST), FIRST)
    assert store.signed_in and asked == [[drive_auth.DRIVE_SCOPE]]
    assert drive.path(f"{RUN}/{FIRST}").size == 4096


def test_the_drive_api_store_is_the_runs_folder_opened_once(mount, drive, tmp_path):
    clock = DriveFS(mount, drive)
    store = store_on(mount, clock)
    store.put(checkpoint(tmp_path, FIRST), FIRST)
    api = store.drive_api()
    assert api.url == f"gdrive://{RUN}" and store.drive_api() is api
    assert [info.name for info in api.list()] == [FIRST]
