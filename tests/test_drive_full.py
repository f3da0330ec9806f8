"""Issue 26, end to end: Drive's space as users have it (15 GB shared with Gmail, a trash that
keeps counting, 750 GB of uploads a day), met by ``colabkit.fit`` training a tiny real Keras
model on the fake clock, against the fake Drive (``fake_drive``) through the real client library,
and through the mount with DriveFS played by ``fake_drivefs``.

Sizes are scaled, not faked: a checkpoint here is the real checkpoint of the tiny model (a few
KB), and the account's quota is 75 of them, as 15 GB holds 75 checkpoints of 200 MB; the daily
upload limit is 3750 of them (750 GB). Time is fake: each epoch (one step) takes ten minutes of
it, so 72 epochs with ``save_every="10m"`` are a 12-hour run of 72 saves. DriveFS runs all the
time on Colab; the fake one mirrors the mount at each ``sleep``, so ten minutes pass in sleeps of
30 seconds. Before each ten minutes pass, the previous save has reached the store once (a store
that keeps up with a save every ten minutes): see ``Watched``.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from pathlib import Path

import keras
import numpy as np
import pytest
from fake_drive import FOLDER, UPLOAD_CAP_MESSAGE, fake_credentials, open_store
from fake_drivefs import DriveFS
from fakes import mount_table

import colabkit
import colabkit.env
from colabkit.checkpoint.format import checkpoint_name, step_of
from colabkit.checkpoint.manager import CheckpointManager
from colabkit.cli import main as cli_main
from colabkit.clock import FakeClock
from colabkit.duration import format_size
from colabkit.errors import StoreError
from colabkit.storage.drive_mount import DriveMountStore
from colabkit.training.deadline import SessionDeadline

FEATURES, SAMPLES = 2, 8  # one step an epoch
KEEP = 3
MINUTE = 60.0
DRIVEFS_STEP = 30.0  # seconds between two passes of DriveFS (the fake mirrors at each sleep)
SCALE_QUOTA = 75  # checkpoints in the quota: 15 GB / 200 MB
SCALE_GMAIL = 5  # checkpoints' worth of Gmail and Photos in it: 1 GB
SCALE_DAY = 3750  # checkpoints in the daily upload limit: 750 GB / 200 MB
RUN = "colabkit/run"  # the run's folder below My Drive (what fake_drive.open_store opens)


# -- a tiny model, trained for real ----------------------------------------------------------------


def tiny_model() -> keras.Model:
    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def tiny_data():
    x = np.random.default_rng(0).normal(size=(SAMPLES, FEATURES)).astype("float32")
    return x, x[:, :1] * 2.0 - x[:, 1:]


def fit(store, clock, tmp_path, callbacks, model=None, **kw):
    """``colabkit.fit`` as a user calls it, with the test's store, clock and cache folder."""
    x, y = tiny_data()
    options = dict(
        store=store,
        cache_dir=tmp_path / "vm-cache",
        epochs=8,
        batch_size=SAMPLES,
        seed=1,
        keep=KEEP,
        session_limit=False,
        verbose=0,
        clock=clock,
        callbacks=callbacks,
    )
    options.update(kw)
    before = set(threading.enumerate())  # another test's threads (a fit it interrupted) are its own
    try:
        return colabkit.fit(model or tiny_model(), x, y, **options)
    finally:
        settle(before)


def settle(before: set[threading.Thread], timeout: float = 30.0) -> None:
    """Waits for the background threads this fit started to end. Stopped at the session limit,
    ``fit`` returns while an upload may still be under way (left to finish on its own, as the VM
    is about to go); it must end on this test's fake Drive, not land in the next test's."""
    for thread in set(threading.enumerate()) - before:
        if thread.name.startswith("colabkit-") and thread is not threading.current_thread():
            thread.join(timeout)
            assert not thread.is_alive(), f"{thread.name} still running after {timeout} s"


@pytest.fixture(scope="module")
def ckpt_bytes(tmp_path_factory) -> int:
    """The size of one real checkpoint of the tiny model (the unit the quotas are scaled by)."""
    run = tmp_path_factory.mktemp("probe")
    x, y = tiny_data()
    colabkit.fit(
        tiny_model(),
        x,
        y,
        run_dir=run / "run",
        cache_dir=run / "cache",
        epochs=1,
        batch_size=SAMPLES,
        seed=1,
        session_limit=False,
        verbose=0,
        clock=FakeClock(),
    )
    (ckpt,) = (run / "run" / "checkpoints").glob("ckpt-*")
    return ckpt.stat().st_size


class Watched:
    """A store exactly as given, plus a record of each ``put`` that returned or raised, which
    the test waits on (``wait_tried``). It changes nothing the store does."""

    def __init__(self, store) -> None:
        self.inner, self.url = store, store.url
        self.tried: list[tuple[str, BaseException | None]] = []
        self._cond = threading.Condition()

    def __getattr__(self, attr):  # signed_in, space, remove_leftovers, ... as the store has them
        return getattr(self.inner, attr)

    def put(self, local_path, name):
        error = None
        try:
            return self.inner.put(local_path, name)
        except BaseException as e:
            error = e
            raise
        finally:
            with self._cond:
                self.tried.append((name, error))
                self._cond.notify_all()

    def get(self, name, local_path):
        return self.inner.get(name, local_path)

    def list(self, prefix=""):
        return self.inner.list(prefix)

    def stat(self, name):
        return self.inner.stat(name)

    def delete(self, name):
        return self.inner.delete(name)

    def wait_tried(self, name: str, timeout: float = 60.0) -> None:
        with self._cond:
            done = self._cond.wait_for(lambda: any(n == name for n, _ in self.tried), timeout)
        assert done, f"{name} never reached the store's put"


class Epochs(keras.callbacks.Callback):
    """Each epoch (one step) takes ``minutes`` of fake time, passed in DriveFS' small steps.

    Before they pass, the previous save (step ``epoch``) has been tried by the store once; then
    ``at[epoch]()`` runs (what happens to Drive meanwhile), and ``watch()`` after each step.
    """

    def __init__(self, clock, store: Watched, minutes=10, at=None, watch=lambda: None) -> None:
        super().__init__()
        self.clock, self.store, self.minutes = clock, store, minutes
        self.at, self.watch = at or {}, watch

    def on_epoch_end(self, epoch, logs=None):
        if epoch > 0:
            self.store.wait_tried(checkpoint_name(epoch))
        if epoch in self.at:
            self.at[epoch]()
        for _ in range(int(self.minutes * MINUTE / DRIVEFS_STEP)):
            self.clock.sleep(DRIVEFS_STEP)
            self.watch()


def pass_time(clock, seconds: float) -> None:
    for _ in range(int(seconds / DRIVEFS_STEP)):
        clock.sleep(DRIVEFS_STEP)


# -- Drive, the mount, and what they hold ----------------------------------------------------------


def mount_store(mount, clock, *, signed_in: bool) -> DriveMountStore:
    root = mount / RUN / "checkpoints"
    credentials = fake_credentials() if signed_in else None
    return DriveMountStore(root, my_drive=mount, credentials=credentials, clock=clock)


def checkpoints_on(drive, *, trashed: bool = False) -> dict[str, object]:
    return {
        f.name: f
        for f in drive.files.values()
        if step_of(f.name) is not None and drive.in_trash(f) == trashed
    }


def small_files(drive) -> int:
    """Bytes of the run's files on Drive that are not checkpoints (the sessions' claims)."""
    return sum(
        f.size for f in drive.files.values() if step_of(f.name) is None and not drive.in_trash(f)
    )


def warnings_with(records, text: str) -> list[logging.LogRecord]:
    return [r for r in records if r.levelno == logging.WARNING and text in r.getMessage()]


class Snapshots(logging.Handler):
    """Each colabkit warning (not the errors), with ``probe()`` taken the moment it is logged."""

    def __init__(self, probe) -> None:
        super().__init__(logging.WARNING)
        self.probe, self.seen = probe, []

    def emit(self, record):
        if record.levelno == logging.WARNING:
            self.seen.append((record.getMessage(), self.probe()))


# -- 1. Acceptance A: a 12-hour run, keep=3, a checkpoint every 10 minutes, in 15 GB ---------------


def twelve_hours(drive, clock, store, tmp_path, ckpt_bytes, watch=lambda: None):
    """72 saves (one every ten minutes) on an account whose quota holds 75 checkpoints, 5 of
    them used by Gmail; returns the history and the biggest checkpoint Drive held."""
    drive.quota, drive.other_usage = SCALE_QUOTA * ckpt_bytes, SCALE_GMAIL * ckpt_bytes
    biggest = [0]

    def look():
        sizes = [f.size for f in checkpoints_on(drive).values()]
        biggest[0] = max([biggest[0], *sizes])
        watch()

    watched = Watched(store)
    history = fit(
        watched, clock, tmp_path, [Epochs(clock, watched, watch=look)], epochs=72, save_every="10m"
    )
    look()
    saved = {name for name, error in watched.tried if step_of(name) is not None and not error}
    assert len(history.history["loss"]) == 72 and history.completed
    return history, biggest[0], saved


def all_saved(history, saved) -> None:
    assert history.durable and len(saved) == 72  # a checkpoint every ten minutes, all stored


@pytest.mark.parametrize("where", ["mount", "gdrive"])
def test_a_12_hour_run_signed_in_never_holds_more_than_keep_plus_one_checkpoints_on_drive(
    where, request, drive, tmp_path, ckpt_bytes
):
    """(a) On the mount, signed in: pruning deletes for good through the API, so the trash
    gains nothing. The code before issue 26 deleted on the mount, which DriveFS turns into a
    move to the trash with the full bytes: each pruned checkpoint kept counting until Drive was
    full (about 65 in the trash at the peak), and this fails.
    (b) Through the API (gdrive): the model for (a). It passes on the code before issue 26 too
    (the API deleted for good already); kept as the bound (a) is measured against."""
    if where == "mount":
        mount = request.getfixturevalue("mount")
        clock = DriveFS(mount, drive)
        store = mount_store(mount, clock, signed_in=True)
    else:
        clock = FakeClock()
        store = open_store(drive, clock=clock)
    trash = [0]
    history, biggest, saved = twelve_hours(
        drive, clock, store, tmp_path, ckpt_bytes, watch=lambda: trash.append(drive.usage_in_trash)
    )
    # keep + 1 checkpoints (the kept ones and the one going up before the oldest is pruned),
    # and the sessions' claims (a claim rewritten: its old and new copy for a moment).
    bound = drive.other_usage + (KEEP + 1) * biggest + 2 * small_files(drive)
    assert drive.peak_usage <= bound, (
        f"Drive held {(drive.peak_usage - drive.other_usage) / ckpt_bytes:.1f} checkpoints "
        f"at its peak (trash included), {drive.usage_in_trash / ckpt_bytes:.1f} in the trash"
    )
    assert max(trash) == 0 and checkpoints_on(drive, trashed=True) == {}
    all_saved(history, saved)
    assert sorted(checkpoints_on(drive)) == [checkpoint_name(s) for s in (70, 71, 72)]


def test_a_12_hour_run_not_signed_in_warns_before_the_trash_fills_and_trashes_only_emptied_files(
    mount, drive, tmp_path, ckpt_bytes
):
    """(c) Not signed in, on the mount: colabkit cannot delete for good. It says so once, with
    the checkpoint's size, before the trash holds more than one checkpoint's bytes; what DriveFS
    moves to the trash is emptied first (0 bytes), so the trash never holds more than one
    checkpoint's bytes over the 12 hours (75 fit in the quota: the trash would fill it)."""
    clock = DriveFS(mount, drive)
    store = mount_store(mount, clock, signed_in=False)
    in_trash = Snapshots(lambda: drive.usage_in_trash)
    trash = [0]
    logging.getLogger("colabkit").addHandler(in_trash)
    try:
        history, _, saved = twelve_hours(
            drive,
            clock,
            store,
            tmp_path,
            ckpt_bytes,
            watch=lambda: trash.append(drive.usage_in_trash),
        )
        pass_time(clock, 10 * MINUTE)  # past the grace, DriveFS syncing all along
        getattr(store, "delete_emptied", lambda: None)()  # as a later prune does
        pass_time(clock, 10 * MINUTE)
    finally:
        logging.getLogger("colabkit").removeHandler(in_trash)
    said = [(m, t) for m, t in in_trash.seen if "trash" in m and "Drive is full" not in m]
    assert len(said) == 1, "one warning about the trash, with the checkpoint's size"
    message, trash_then = said[0]
    assert format_size(ckpt_bytes) in message and "colabkit ckpt purge" in message
    assert trash_then <= ckpt_bytes  # said before the trash holds more than one checkpoint
    pruned = checkpoints_on(drive, trashed=True)
    assert max(trash) <= ckpt_bytes, (
        f"the trash held {max(trash) / ckpt_bytes:.1f} checkpoints' bytes at most; "
        f"{sum(f.size > 0 for f in pruned.values())} of {len(pruned)} trashed with their bytes"
    )
    assert len(pruned) == 72 - KEEP and all(f.size == 0 for f in pruned.values())
    assert drive.usage_in_trash == 0
    all_saved(history, saved)


# -- 2. Acceptance B: Drive is full from the 5th save on -------------------------------------------


def store_and_clock(where, request, drive, *, start=1_700_000_000.0):
    """Where the run's checkpoints go: through the API (a FakeClock), or the Drive mount signed
    in (DriveFS is the clock)."""
    if where == "gdrive":
        clock = FakeClock(start=start)
        return open_store(drive, clock=clock), clock
    mount = request.getfixturevalue("mount")
    clock = DriveFS(mount, drive, start=start)
    return mount_store(mount, clock, signed_in=True), clock


def new_vm(drive, tmp_path, monkeypatch) -> Path:
    """A new VM's Drive mount: what Drive holds, not what the old VM's Drive cache held."""
    mountpoint = tmp_path / "vm2" / "drive"
    (mountpoint / "MyDrive").mkdir(parents=True)
    monkeypatch.setattr(colabkit.env, "COLAB_DRIVE_MOUNTPOINT", mountpoint)
    mount_table(monkeypatch, mountpoint.parent, mountpoint)
    for file in drive.files.values():
        if file.mime == FOLDER or drive.in_trash(file):
            continue
        parts, parent = [file.name], drive.files.get(file.parents[0])
        while parent is not None:
            parts.insert(0, parent.name)
            parent = drive.files.get(parent.parents[0]) if parent.parents else None
        path = mountpoint / "MyDrive" / "/".join(parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(file.data)
    return mountpoint / "MyDrive"


@pytest.mark.parametrize("where", ["gdrive", "mount"])
def test_drive_full_at_the_5th_save_training_finishes_warns_by_cause_and_a_new_vm_resumes(
    where, request, drive, tmp_path, ckpt_bytes, caplog, monkeypatch
):
    """Through the API (gdrive), and on the mount signed in. Photos fill the account after the
    4th checkpoint: training goes on to the end; one warning says "Drive is full" (not an I/O
    error) and names the 4th as the newest durable one, said again at most every 30 minutes
    (once here through the API); nothing on Drive is deleted. After a kill, a new VM (in this
    process: the cache folder deleted, and on the mount a new mount holding what Drive holds,
    as the VM's disk and Drive cache die with it) with room again resumes from the 4th and ends
    where the run that was not killed did; the 4 durable checkpoints were never touched."""
    drive.quota = SCALE_QUOTA * ckpt_bytes
    store, clock = store_and_clock(where, request, drive)
    watched = Watched(store)
    full: dict[str, object] = {}

    def photos_fill_drive():  # after the 4th save is durable
        full["at"] = clock.monotonic()
        full["seen"] = len(drive.seen)
        full["trashed"] = len(getattr(clock, "trashed", []))
        full["md5"] = {n: f.md5 for n, f in checkpoints_on(drive).items()}
        drive.other_usage = drive.quota - drive.usage - ckpt_bytes // 2

    probe = Snapshots(clock.monotonic)
    logging.getLogger("colabkit").addHandler(probe)
    try:
        with caplog.at_level(logging.DEBUG, logger="colabkit"):
            history = fit(
                watched,
                clock,
                tmp_path,
                keep=None,
                model=(trained := tiny_model()),
                callbacks=[Epochs(clock, watched, 15, at={4: photos_fill_drive})],
            )
    finally:
        logging.getLogger("colabkit").removeHandler(probe)
    said_at = [t for m, t in probe.seen if "Drive is full" in m]
    assert len(history.history["loss"]) == 8 and history.completed  # training finished
    assert history.durable is False
    full_warnings = warnings_with(caplog.records, "Drive is full")
    assert full_warnings, "no warning says Drive is full: " + " | ".join(
        r.getMessage()[:160] for r in caplog.records if r.levelno >= logging.WARNING
    )
    first = full_warnings[0].getMessage()
    assert f"the newest durable one is {checkpoint_name(4)}" in first
    assert "empty its trash" in first and "I/O error" not in first
    assert not warnings_with(caplog.records, "Checkpoints are not reaching")  # no generic one
    # Said again at most every 30 minutes while it lasted: over 45 minutes (the 5th to the 8th
    # save, 15 minutes apart), so at least once again; through the API (no wait for a refusal)
    # the run ended less than an hour after the first: exactly once again.
    lasted = clock.monotonic() - full["at"]
    assert len(full_warnings) == len(said_at) >= 2, said_at
    assert len(said_at) <= 1 + lasted // (30 * MINUTE), (lasted, said_at)
    if where == "gdrive":
        assert len(said_at) == 2 and clock.monotonic() - said_at[0] < 60 * MINUTE, said_at
    # No checkpoint lost: the 4 durable ones intact, nothing deleted on Drive since.
    after = drive.seen[full["seen"] :]
    gone = [s for s in after if s.kind in ("delete", "empty_trash") or "trashed" in (s.json or {})]
    assert gone == [] and len(getattr(clock, "trashed", [])) == full["trashed"], (
        "something was deleted on Drive after it filled"
    )
    assert {n: f.md5 for n, f in checkpoints_on(drive).items()} == full["md5"]
    assert sorted(full["md5"]) == [checkpoint_name(s) for s in (1, 2, 3, 4)]

    # After a kill: a new VM (its disk is new: the cache folder is gone), room on Drive again.
    shutil.rmtree(tmp_path / "vm-cache")
    drive.other_usage = 0
    later = clock.time() + 3600
    if where == "gdrive":
        store2, clock2 = store_and_clock(where, request, drive, start=later)
    else:
        my_drive = new_vm(drive, tmp_path, monkeypatch)
        clock2 = DriveFS(my_drive, drive, start=later)
        store2 = mount_store(my_drive, clock2, signed_in=True)
    resumed = fit(store2, clock2, tmp_path, keep=None, callbacks=[], model=(model := tiny_model()))
    assert resumed.resumes[-1]["epoch"] == 4 and resumed.resumes[-1]["step"] == 0
    assert resumed.completed and resumed.durable and len(resumed.history["loss"]) == 8
    assert resumed.history["loss"][:4] == history.history["loss"][:4]
    for a, b in zip(model.get_weights(), trained.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # where the run that was not killed ended
    on_drive = checkpoints_on(drive)
    assert sorted(on_drive) == [checkpoint_name(s) for s in range(1, 9)]
    assert {n: on_drive[n].md5 for n in full["md5"]} == full["md5"]


# -- 3. The daily upload limit mid-run -------------------------------------------------------------


def test_the_daily_upload_limit_is_named_not_retried_for_minutes_and_uploads_resume_next_day(
    drive, tmp_path, ckpt_bytes, caplog
):
    """Through the API. The day's other uploads reach the limit after the 3rd checkpoint; the
    4th and 5th saves are refused. The warning names the daily limit; each refused save is tried
    about once (the limit lasts hours: retrying it every few seconds for minutes is a storm of
    requests that cannot succeed); training finishes; the next day uploads go up again."""
    clock = FakeClock()
    watched = Watched(open_store(drive, clock=clock))
    drive.upload_cap = SCALE_DAY * ckpt_bytes
    seen: dict[str, int] = {}

    def limit_reached():  # after the 3rd save
        seen["from"] = len(drive.seen)
        drive.uploaded_today = drive.upload_cap

    def new_day():  # after the 5th save was refused
        seen["to"] = len(drive.seen)
        drive.new_day()

    with caplog.at_level(logging.DEBUG, logger="colabkit"):
        history = fit(
            watched,
            clock,
            tmp_path,
            keep=None,
            callbacks=[Epochs(clock, watched, at={3: limit_reached, 5: new_day})],
        )
    assert len(history.history["loss"]) == 8 and history.completed and history.durable
    limited = warnings_with(caplog.records, "daily upload limit")
    assert len(limited) == 1 and "750 GB" in limited[0].getMessage()
    refused = [
        s
        for s in drive.seen[seen["from"] : seen["to"]]
        if s.kind in ("multipart", "resumable_start")
    ]
    saves_refused = 2  # the 4th and the 5th
    assert len(refused) <= saves_refused + 1, (
        f"{len(refused)} upload attempts for {saves_refused} saves during the limit"
    )
    assert warnings_with(caplog.records, f"Checkpoints reach {watched.url} again")
    assert sorted(checkpoints_on(drive))[-1] == checkpoint_name(8)


# -- 4. The transport tells the daily limit, the per-minute rate and a full Drive apart ------------


@pytest.mark.parametrize("size", [100, 300 * 1024], ids=["multipart", "resumable"])
def test_the_daily_upload_limit_is_an_upload_limit_error_not_retried(drive, tmp_path, size):
    clock = FakeClock()
    store = open_store(drive, clock=clock, chunk_size=256 * 1024)
    assert UPLOAD_CAP_MESSAGE == "User rate limit exceeded."  # what the fake answers, as Drive
    drive.upload_cap = 0  # reached: Drive answers 403 userRateLimitExceeded with that message
    (tmp_path / "ckpt").write_bytes(b"x" * size)
    drive.seen.clear()
    with pytest.raises(StoreError) as caught:
        store.put(tmp_path / "ckpt", "ckpt")
    tries = [s for s in drive.seen if s.kind in ("multipart", "resumable_start")]
    assert len(tries) == 1 and clock.sleeps == [], f"retried {len(tries) - 1} times"
    assert type(caught.value).__name__ == "UploadLimitError" and isinstance(caught.value, OSError)
    assert "daily upload limit" in str(caught.value)


def test_the_per_minute_rate_limit_is_retried_and_then_succeeds(drive, tmp_path):
    """Passes on the code before issue 26 too: it guards that telling the daily limit apart
    (by its exact message) does not stop the retries of the per-minute rate limit."""
    clock = FakeClock()
    store = open_store(drive, clock=clock)
    drive.fail("multipart", 403, "userRateLimitExceeded", times=2)  # Drive's long message
    (tmp_path / "ckpt").write_bytes(b"x" * 100)
    drive.seen.clear()
    assert store.put(tmp_path / "ckpt", "ckpt").size == 100
    assert [s.kind for s in drive.seen].count("multipart") == 3 and len(clock.sleeps) == 2


@pytest.mark.parametrize("size", [100, 300 * 1024], ids=["multipart", "resumable"])
def test_a_full_drive_is_a_store_full_error_not_retried(drive, tmp_path, size):
    clock = FakeClock()
    store = open_store(drive, clock=clock, chunk_size=256 * 1024)
    drive.quota = size - 1  # 403 storageQuotaExceeded
    (tmp_path / "ckpt").write_bytes(b"x" * size)
    drive.seen.clear()
    with pytest.raises(StoreError) as caught:
        store.put(tmp_path / "ckpt", "ckpt")
    tries = [s for s in drive.seen if s.kind in ("multipart", "resumable_start")]
    assert len(tries) == 1 and clock.sleeps == []
    assert type(caught.value).__name__ == "StoreFullError" and isinstance(caught.value, OSError)
    assert [f.name for f in drive.files.values() if f.mime != FOLDER] == []  # nothing left


# -- 5. The session limit with Drive full ----------------------------------------------------------


def test_at_the_session_limit_with_drive_full_the_last_line_says_why_not_durable(
    drive, tmp_path, ckpt_bytes, capsys
):
    """The session ends (limit 75 min, stop 15 min before) while Drive is full since the 4th
    save: the printed line says the checkpoint is NOT durable, that Drive is full, what to do,
    and which checkpoint the next session resumes from (the 3rd, the newest durable one)."""
    drive.quota = SCALE_QUOTA * ckpt_bytes
    clock = FakeClock()
    watched = Watched(open_store(drive, clock=clock))

    def fill():
        drive.other_usage = drive.quota - drive.usage - ckpt_bytes // 2

    deadline = SessionDeadline("15m", session_limit="75m", session_start=clock.time(), clock=clock)
    history = fit(
        watched,
        clock,
        tmp_path,
        epochs=20,
        keep=None,
        callbacks=[Epochs(clock, watched, at={3: fill}), deadline],
    )
    assert history.stop_reason == "deadline" and history.durable is False
    (line,) = [
        line for line in capsys.readouterr().out.splitlines() if "session limit near" in line
    ]
    assert "NOT yet durable" in line
    assert "Not durable because Drive is full" in line, line
    assert "empty its trash" in line  # what to do
    assert f"resumes from {checkpoint_name(3)}, the newest durable one" in line


# -- 6. Pruning on the mount touches only colabkit's pruned checkpoints ----------------------------


USER_FILES = {
    "notes.txt": b"my notes on this run",
    "ckpt-best.keras": b"a model the user saved by hand",
}


def _visible_run(mount, capsys) -> list[int]:
    code = cli_main(["ckpt", "ls", str(mount / RUN), "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return sorted(row["step"] for row in json.loads(out))


@pytest.mark.parametrize("signed_in", [True, False], ids=["signed-in", "not-signed-in"])
def test_pruning_on_the_mount_deletes_only_pruned_checkpoints_and_empties_them_for_a_while(
    mount, drive, tmp_path, signed_in, not_signed_in, capsys
):
    """A user's files in the run's folder (one named like a checkpoint) and the newest
    checkpoint survive every prune, on the mount and on Drive. Signed in, the pruned ones are
    gone for good (never in the trash). Not signed in, each is emptied at once and deleted only
    after the grace (5 minutes), at a later prune; ``CheckpointManager.list()`` and
    ``colabkit ckpt ls`` never show an emptied one."""
    clock = DriveFS(mount, drive)
    root = mount / RUN / "checkpoints"
    root.mkdir(parents=True)
    for name, data in USER_FILES.items():
        (root / name).write_bytes(data)
    (mount / RUN / "README.md").write_bytes(b"the run's notes")
    pass_time(clock, 2 * MINUTE)  # DriveFS uploads them
    store = mount_store(mount, clock, signed_in=signed_in)
    manager = CheckpointManager(store, cache_dir=tmp_path / "cache", keep_policy=1, clock=clock)

    def save(step, then_wait: float) -> list[str]:
        manager.save(step, {"w": np.full(2000, step, np.float32)}, {"epoch": step})
        manager.wait()
        assert [r.step for r in manager.list()] == [step]
        assert _visible_run(mount, capsys) == [step]
        emptied = [p for p in root.iterdir() if p.is_file() and p.stat().st_size == 0]
        pass_time(clock, then_wait)
        return sorted(p.name for p in emptied)

    assert save(1, 2 * MINUTE) == []
    first = save(2, 2 * MINUTE)  # prunes the 1st
    second = save(3, 6 * MINUTE)  # prunes the 2nd, 2 minutes after the 1st: it is still there
    third = save(4, 1 * MINUTE)  # prunes the 3rd; the 1st and 2nd are past the grace: gone
    if signed_in:
        assert first == second == third == []  # deleted for good through the API
        assert checkpoints_on(drive, trashed=True) == {}
    else:
        assert [checkpoint_name(1) in n for n in first] == [True]
        assert sorted(checkpoint_name(1) in n for n in second) == [False, True]
        assert [checkpoint_name(3) in n for n in third] == [True]
    for name, data in USER_FILES.items():
        assert (root / name).read_bytes() == data
        (on_drive,) = drive.named(name)
        assert on_drive.data == data and not drive.in_trash(on_drive)
    assert (mount / RUN / "README.md").exists()
    assert (root / checkpoint_name(4)).stat().st_size > 0
    pass_time(clock, MINUTE)
    assert sorted(n for n, f in checkpoints_on(drive).items() if f.size) == [checkpoint_name(4)]
    manager.close()
