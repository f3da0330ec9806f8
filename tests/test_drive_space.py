"""Drive space as users have it (issue 26): 15 GB shared with Gmail and Photos, a trash that keeps
counting, room for keep + 1 checkpoints checked before the first save.

Through the public surface: ``colabkit.fit`` (real Keras training of a small model, about 0.8 MB
a checkpoint), a ``CheckpointManager``, and the ``colabkit`` command in-process (``status``,
``doctor``, ``ckpt purge``, ``train mnist``). Drive is the fake behind ``responses``
(``fake_drive``); the mount is a folder with a fake mount table, whose filesystem figures
(``statvfs``, what ``df /content/drive`` shows) are those of the fake Drive's quota; signed in,
DriveFS (``fake_drivefs``) uploads what the mount holds after a lag, on the fake clock.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from pathlib import Path

import keras
import numpy as np
import pytest
from fake_drive import FakeDrive, fake_credentials, open_store
from fake_drivefs import DriveFS
from test_fit import make_data

import colabkit
import colabkit.env
from colabkit.checkpoint.manager import CheckpointManager
from colabkit.cli import main
from colabkit.clock import FakeClock
from colabkit.doctor import schema_errors
from colabkit.duration import format_size
from colabkit.storage.drive_mount import DriveMountStore

GB = 2**30
QUOTA = 15 * GB  # a free account: Drive, Gmail and Photos together
WIDTH = 256  # two hidden layers: 68,098 weights, about 0.8 MB a checkpoint with Adam's moments
TRASH_URL = "https://drive.google.com/drive/trash"
SIGN_IN = "from google.colab import auth; auth.authenticate_user()"
ROOM = "this run needs"  # in the line that says a store lacks room
UNITS = {"B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3}


# -- helpers --------------------------------------------------------------------------------------


def make_model() -> keras.Model:
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(WIDTH, activation="relu"),
            keras.layers.Dense(WIDTH, activation="relu"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def one_checkpoint(model: keras.Model) -> int:
    """About one checkpoint's bytes, from the model's variables: its weights and Adam's two
    moments of each, 4 bytes a number (what training writes is within a few % of it)."""
    return 3 * 4 * model.count_params()


def train(model: keras.Model, tmp_path: Path, **kwargs) -> keras.callbacks.History:
    x, y = make_data()
    options = dict(epochs=2, batch_size=16, seed=5, keep=3, session_limit=False, verbose=0)
    options.update(kwargs)
    options.setdefault("cache_dir", tmp_path / "cache")
    return colabkit.fit(model, x, y, **options)


def size_of(text: str) -> int:
    """Bytes from a figure as ``format_size`` writes it ("2.0 MB")."""
    number, unit = text.split()
    return round(float(number) * UNITS[unit])


def room_lines(caplog) -> list[str]:
    """The warnings that a store or this VM's disk lacks room for the run's checkpoints."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
        and r.name.startswith("colabkit")
        and (ROOM in r.getMessage() or "the run needs" in r.getMessage())
    ]


def first_index(caplog, text: str) -> int:
    return next(i for i, r in enumerate(caplog.records) if text in r.getMessage())


def first_checkpoint_upload(drive: FakeDrive) -> int:
    """Where in the fake's requests the first checkpoint went up: an upload goes under a
    temporary name, and is renamed to ``ckpt-...`` once Drive's md5 matches."""
    return next(
        i
        for i, seen in enumerate(drive.seen)
        if (seen.json or {}).get("name", "").startswith("ckpt-")
    )


def near(said: int, actual: int, within: float = 0.05) -> bool:
    return abs(said - actual) <= within * actual


class Disks:
    """``os.statvfs`` answering chosen figures (bytes free, bytes in all) for the paths under
    chosen folders, and the real figures everywhere else."""

    def __init__(self, monkeypatch) -> None:
        self.real = os.statvfs
        self.places: list[tuple[Path, object]] = []
        monkeypatch.setattr(os, "statvfs", self)

    def add(self, folder: Path, figures) -> None:
        """``figures()``: (free, total) bytes, asked at each call."""
        self.places.append((Path(folder).absolute(), figures))

    def __call__(self, path):
        asked = Path(os.fspath(path)).absolute()
        for folder, figures in self.places:
            if asked == folder or folder in asked.parents:
                free, total = figures()
                # f_bsize, f_frsize, f_blocks, f_bfree, f_bavail, f_files, f_ffree, f_favail,
                # f_flag, f_namemax: 1-byte blocks, so the figures are exact
                return os.statvfs_result((1, 1, total, free, free, 10**6, 10**6, 10**6, 0, 255))
        return self.real(path)


def quota_of(drive: FakeDrive):
    """The mount's figures as Drive's client fills them: the account's quota and what is free
    of it (the trash counted in, not told apart)."""
    return lambda: (max(0, drive.quota - drive.usage), drive.quota)


def leave_free(drive: FakeDrive, free: int, *, trash: int = 0) -> None:
    """A 15 GB account with ``free`` bytes left: Gmail and Photos hold the rest, and the trash
    holds ``trash`` bytes (a file the user deleted from an old project)."""
    drive.quota = QUOTA
    if trash:
        old = drive.add("old-project", mime="application/vnd.google-apps.folder")
        drive.add("model.h5", old.id, size=trash, trashed=True)
    drive.other_usage = QUOTA - free - drive.usage


@pytest.fixture
def disks(monkeypatch):
    return Disks(monkeypatch)


# -- 1. room before the first save: the Drive API -------------------------------------------------


@pytest.mark.parametrize("trash", [0, 1_500_000], ids=["trash-empty", "trash-holds-1.5MB"])
def test_a_drive_without_room_for_keep_plus_one_is_said_once_before_the_first_checkpoint(
    drive, tmp_path, caplog, trash
):
    model = make_model()
    checkpoint = one_checkpoint(model)
    free = int(2.5 * checkpoint)  # room for 2.5 checkpoints; keep=3 needs 4 (3, and 1 uploading)
    leave_free(drive, free, trash=trash)
    store = open_store(drive)
    with caplog.at_level(logging.DEBUG, logger="colabkit"):
        history = train(model, tmp_path, store=store, clock=FakeClock())

    assert history.completed and history.durable  # the two checkpoints had room: training went on
    (line,) = room_lines(caplog)
    assert line.startswith(f"Drive ({store.url}) has {format_size(free)} free of 16.1 GB (")
    said = re.search(r"needs (\S+ [KMG]?B) more there \(keep=3 checkpoints of (\S+ [KMG]?B)", line)
    written = [f.size for f in drive.files.values() if f.name.startswith("ckpt-")]
    assert len(written) == 2
    assert near(size_of(said[2]), written[0])  # a checkpoint, as it turned out
    assert near(size_of(said[1]), 4 * written[0])  # keep=3 and one more while it uploads
    assert "a smaller keep" in line and "empty Drive's trash" in line and TRASH_URL in line
    assert SIGN_IN not in line  # the API deletes for good: nothing to sign in for
    if trash:
        assert f"({format_size(trash)} of it in the trash; Drive's storage quota)" in line
        assert f"empty Drive's trash (it holds {format_size(trash)})" in line
    else:
        assert "(Drive's storage quota)" in line and "in the trash" not in line
    # said before any checkpoint reached Drive: the quota was read before the first one went up
    assert drive.kinds().index("about") < first_checkpoint_upload(drive)
    assert first_index(caplog, ROOM) < first_index(caplog, "is durable in")


def test_a_drive_with_room_is_asked_and_nothing_is_said(drive, tmp_path, caplog):
    model = make_model()
    leave_free(drive, 50 * one_checkpoint(model), trash=3_000_000)
    with caplog.at_level(logging.DEBUG, logger="colabkit"):
        history = train(model, tmp_path, store=open_store(drive), clock=FakeClock())
    assert history.completed and history.durable
    assert drive.kinds().count("about") == 1  # asked once, before the first save
    assert room_lines(caplog) == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "colabkit" in r.name]


# -- 2. room before the first save: the Drive mount -----------------------------------------------


def test_on_the_mount_not_signed_in_the_mounts_figures_are_said_and_signing_in_is_a_fix(
    drive, mount, disks, not_signed_in, tmp_path, caplog
):
    """Not signed in, the mount's filesystem figures are all there is: Drive's client fills
    them with the quota (the trash counted in, not told apart)."""
    model = make_model()
    free = int(2.5 * one_checkpoint(model))
    leave_free(drive, free, trash=1_500_000)
    disks.add(mount.parent, quota_of(drive))
    run_dir = mount / "colabkit" / "run"
    with caplog.at_level(logging.DEBUG, logger="colabkit"):
        history = train(model, tmp_path, run_dir=run_dir, clock=FakeClock())

    assert history.completed
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("ckpt-*")) == [
        "ckpt-000000000006.ckpt",
        "ckpt-000000000012.ckpt",
    ]
    (line,) = room_lines(caplog)
    url = (run_dir / "checkpoints").as_uri()
    assert line.startswith(
        f"Drive ({url}) has {format_size(free)} free of 16.1 GB (the Drive mount's figures); "
    )
    assert "keep=3 checkpoints of" in line and "in the trash" not in line  # the mount cannot tell
    assert "a smaller keep" in line and "empty Drive's trash at" in line
    assert f"sign in ({SIGN_IN}) so that old checkpoints are deleted for good" in line
    assert drive.seen == []  # nothing asked Drive: there is no sign-in
    assert first_index(caplog, ROOM) < first_index(caplog, "is on the Drive mount")


def signed_in_mount(mount, drive, run_dir: Path) -> tuple[DriveMountStore, DriveFS]:
    """The run's checkpoints folder on the mount, signed in for the Drive API; DriveFS (the
    clock) uploads what the mount holds 20 s after it is written."""
    clock = DriveFS(mount, drive)
    root = run_dir / "checkpoints"
    store = DriveMountStore(root, my_drive=mount, credentials=fake_credentials(), clock=clock)
    return store, clock


def test_on_the_mount_signed_in_drives_own_figures_are_said_with_the_trash(
    drive, mount, disks, tmp_path, caplog
):
    """The run's folder is on Drive already (made in an earlier session, DriveFS mirrored it):
    signed in, the room is Drive's quota as ``about.get`` tells it, the trash apart."""
    model = make_model()
    free = int(2.5 * one_checkpoint(model))
    leave_free(drive, free, trash=1_500_000)
    disks.add(mount.parent, lambda: (10 * GB, 10 * GB))  # not what is said: Drive's figures are
    run_dir = mount / "colabkit" / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    parent = "root"
    for part in ("colabkit", "run", "checkpoints"):
        parent = drive.add_folder(part, parent).id
    store, clock = signed_in_mount(mount, drive, run_dir)
    with caplog.at_level(logging.DEBUG, logger="colabkit"):
        history = train(model, tmp_path, store=store, clock=clock)

    assert history.completed and history.durable
    assert "about" in drive.kinds()
    (line,) = room_lines(caplog)
    assert line.startswith(
        f"Drive ({store.url}) has {format_size(free)} free of 16.1 GB "
        "(1.5 MB of it in the trash; Drive's storage quota); "
    )
    assert "empty Drive's trash (it holds 1.5 MB)" in line and SIGN_IN not in line
    assert first_index(caplog, ROOM) < first_index(caplog, "is durable in")


def test_on_the_mount_signed_in_a_new_runs_room_is_drives_own_figures_too(
    drive, mount, disks, tmp_path, caplog
):
    """A new run: its folder is not on Drive yet when the room is checked (DriveFS mirrors it
    with the first checkpoint). The quota is the account's all the same."""
    model = make_model()
    free = int(2.5 * one_checkpoint(model))
    leave_free(drive, free, trash=1_500_000)
    disks.add(mount.parent, quota_of(drive))
    store, clock = signed_in_mount(mount, drive, mount / "colabkit" / "new-run")
    with caplog.at_level(logging.DEBUG, logger="colabkit"):
        history = train(model, tmp_path, store=store, clock=clock)

    assert history.completed and history.durable
    lines = room_lines(caplog)
    assert len(lines) == 1
    assert "(1.5 MB of it in the trash; Drive's storage quota)" in lines[0]
    assert "about" in drive.kinds()


# -- 3. this VM's disk, where checkpoints are staged ----------------------------------------------


def test_a_local_disk_without_room_for_two_checkpoints_is_said_naming_the_cache_folder(
    drive, disks, tmp_path, caplog
):
    model = make_model()
    free = int(1.5 * one_checkpoint(model))
    leave_free(drive, 100 * one_checkpoint(model))  # Drive has room: only the disk is short
    cache = tmp_path / "cache"
    disks.add(cache, lambda: (free, 100 * 10**9))
    with caplog.at_level(logging.DEBUG, logger="colabkit"):
        history = train(
            model, tmp_path, store=open_store(drive), cache_dir=cache, clock=FakeClock()
        )

    assert history.completed and history.durable
    (line,) = room_lines(caplog)
    assert line.startswith(f"This VM's disk has {format_size(free)} free at {cache}, ")
    said = re.search(r"the run needs (\S+ [KMG]?B) more there \(the newest checkpoint while", line)
    written = [f.size for f in drive.files.values() if f.name.startswith("ckpt-")]
    assert near(size_of(said[1]), 2 * written[0])  # two checkpoints: the newest and the next
    assert "cache_dir=" in line
    assert first_index(caplog, "the run needs") < first_index(caplog, "is durable in")


# -- 4. checked again when checkpoints grow -------------------------------------------------------


def test_the_room_is_checked_again_only_when_a_checkpoint_is_more_than_10_percent_bigger(
    drive, tmp_path, caplog
):
    leave_free(drive, 1_200_000)
    clock = FakeClock()
    manager = CheckpointManager(
        open_store(drive, clock=clock), cache_dir=tmp_path / "vm", keep_policy=3, clock=clock
    )
    rng = np.random.default_rng(0)

    def save(step: int, numbers: int) -> None:
        manager.save(step, {"w": rng.normal(size=numbers).astype(np.float32)}, {"epoch": step})
        manager.wait()
        for thread in threading.enumerate():  # the check runs beside the upload: let it end
            if thread.name == "colabkit-space-check":
                thread.join()

    with caplog.at_level(logging.WARNING, logger="colabkit"):
        save(1, 10_000)  # 40 KB: keep=3 and one more fit in 1.2 MB
        assert (drive.kinds().count("about"), room_lines(caplog)) == (1, [])
        save(2, 10_500)  # 5 % bigger: not checked again
        assert (drive.kinds().count("about"), room_lines(caplog)) == (1, [])
        save(3, 100_000)  # 400 KB: 4 of them do not fit
        assert drive.kinds().count("about") == 2
        (line,) = room_lines(caplog)
        save(4, 100_000)  # the same size: not checked again, not said again
        assert drive.kinds().count("about") == 2 and room_lines(caplog) == [line]
    manager.close()
    # What is free depends on whether the checkpoint that grew had landed when Drive was asked
    # (the check runs beside its upload); what is needed counts it either way.
    _free, more = re.match(
        r"Drive \(gdrive://colabkit/run\) has ([\d.]+) (?:KB|MB) free of 16\.1 GB[^;]*; "
        r"this run needs ([\d.]+) MB more there \(keep=3 checkpoints of 400\.",
        line,
    ).groups()
    assert float(more) in (1.1, 1.5)  # 4 of 400 KB, less what of the run is there already


# -- 5. colabkit status: the run's bytes and the store's room -------------------------------------


STATUS_ROW = re.compile(r"^space +(.*)$", re.M)


def test_status_of_a_run_on_drive_shows_its_bytes_and_drives_room_with_the_trash(
    drive, signed_in, tmp_path, capsys
):
    leave_free(drive, 20_000_000, trash=1_500_000)
    train(make_model(), tmp_path, store=open_store(drive), clock=FakeClock())
    held = sum(f.size for f in drive.files.values() if f.name.startswith(("ckpt-", "frozen-")))
    assert held > 1_500_000  # two checkpoints

    assert main(["status", "gdrive://colabkit/run", "--json"]) == 0
    space = json.loads(capsys.readouterr().out)["space"]
    assert space == {
        "held": held,
        "free": QUOTA - drive.usage,
        "total": QUOTA,
        "trash": 1_500_000,
        "source": "Drive's storage quota",
    }
    assert main(["status", "gdrive://colabkit/run"]) == 0
    (row,) = STATUS_ROW.findall(capsys.readouterr().out)
    assert row == (
        f"{format_size(held)} of checkpoints; {format_size(QUOTA - drive.usage)} free of 16.1 GB "
        "(1.5 MB of it in the trash; Drive's storage quota)"
    )


def test_status_of_a_local_run_shows_its_bytes_and_the_disks_room(disks, tmp_path, capsys):
    run = tmp_path / "run"
    train(make_model(), tmp_path, run_dir=run, clock=FakeClock())
    held = sum(p.stat().st_size for p in (run / "checkpoints").glob("ckpt-*"))
    disks.add(run, lambda: (7 * 10**9, 100 * 10**9))

    assert main(["status", str(run), "--json"]) == 0
    space = json.loads(capsys.readouterr().out)["space"]
    assert space == {
        "held": held,
        "free": 7 * 10**9,
        "total": 100 * 10**9,
        "trash": None,
        "source": "local disk",
    }
    assert main(["status", str(run)]) == 0
    (row,) = STATUS_ROW.findall(capsys.readouterr().out)
    assert row == f"{format_size(held)} of checkpoints; 7.0 GB free of 100.0 GB (local disk)"


# -- 6. colabkit doctor: the mount's room ---------------------------------------------------------


@pytest.mark.parametrize("free", [3 * 10**9, 500 * 10**6], ids=["3GB-free", "500MB-free"])
def test_doctor_in_colab_shows_drives_room_and_warns_under_1_gb(
    mount, disks, monkeypatch, capsys, free
):
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab_20260101-060000_RC00")
    disks.add(mount.parent, lambda: (free, QUOTA))

    assert main(["doctor", "--frameworks", "none", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert schema_errors(report) == []
    assert report["environment"]["kind"] == "colab" and report["drive"]["status"] == "healthy"
    assert (report["drive"]["free_bytes"], report["drive"]["total_bytes"]) == (free, QUOTA)
    low = [f for f in report["findings"] if f["code"] == "drive-space-low"]
    assert main(["doctor", "--frameworks", "none"]) == 0
    text = capsys.readouterr().out
    assert re.search(rf"^Drive space: +{format_size(free)} free of 16\.1 GB$", text, re.M)
    if free >= 10**9:
        assert low == []
        return
    (finding,) = low
    assert finding["severity"] == "warning"
    assert finding["message"].startswith("Google Drive has 500.0 MB free of 16.1 GB")
    assert TRASH_URL in finding["fix"] and "smaller keep" in finding["fix"]
    assert "500.0 MB free of 16.1 GB" in text


# -- 7. colabkit ckpt purge: the run's own files in Drive's trash, nothing else --------------------

MB = 10**6
#: In the run's folder, in Drive's trash, colabkit's: deleted for good by a purge.
RUNS_TRASH = {
    "ckpt-000000000004.ckpt": 1 * MB,  # pruned on the mount without a sign-in
    "ckpt-000000000008.ckpt": 1 * MB,
    ".ckpt-000000000002.ckpt.tmp-123-abcd1234": 0,  # pruned without a sign-in: emptied first
    ".ckpt-000000000003.ckpt.tmp-456-0123abcd": 1 * MB,  # emptied, but Drive had the full one
    "frozen-0123456789abcdef.ckpt": 2 * MB,  # a frozen object a fresh start left behind
    ".colabkit-upload-5f1c0e2b7a9d4c3e8f6a1b2c3d4e5f60": 500_000,  # an upload never renamed
}
#: In the same folder, in the trash, the user's own (not colabkit's names): they stay.
USERS_TRASH = {"notes.txt": 1000, "ckpt-final.ckpt": 3000, "ckpt-5.ckpt": 4000}


def drive_with_trash(drive: FakeDrive, folder: str) -> dict[str, object]:
    """The run's folder on Drive (``folder``) with this run's and the user's files in the trash,
    a checkpoint of the run not in the trash, and another run's checkpoint in the trash."""
    drive.quota = QUOTA
    ids = {}
    for run in (folder, folder.replace("/run", "/other-run")):
        parent = "root"
        for part in run.split("/"):
            found = [f for f in drive.named(part, parent) if f.mime.endswith("folder")]
            parent = found[0].id if found else drive.add_folder(part, parent).id
        ids[run] = parent
    files = {}
    for name, size in {**RUNS_TRASH, **USERS_TRASH}.items():
        files[name] = drive.add(name, ids[folder], size=size, trashed=True)
    files["kept"] = drive.add("ckpt-000000000012.ckpt", ids[folder], size=6 * MB)
    other = folder.replace("/run", "/other-run")
    files["other"] = drive.add("ckpt-000000000004.ckpt", ids[other], size=7 * MB, trashed=True)
    return files


def _touch(path: Path) -> Path:
    path.touch()
    return path


def purged_for_good(drive: FakeDrive, files: dict, before: int) -> None:
    """Exactly this run's trashed files went, for good, and the quota got their bytes back."""
    gone = {name for name, file in files.items() if file.id not in drive.files}
    assert gone == set(RUNS_TRASH)
    assert before - drive.usage == sum(RUNS_TRASH.values())
    assert drive.files[files["kept"].id].trashed is False
    assert "empty_trash" not in drive.kinds()  # never the whole trash


@pytest.mark.parametrize("output", ["text", "json"])
@pytest.mark.parametrize("where", ["gdrive", "mount"])
def test_ckpt_purge_deletes_for_good_only_this_runs_files_in_drives_trash(
    drive, mount, signed_in, tmp_path, capsys, where, output
):
    if where == "gdrive":
        run_dir, url = "gdrive://colabkit/run", "gdrive://colabkit/run"
        files = drive_with_trash(drive, "colabkit/run")
    else:  # the mount, signed in: the trash is reached through the Drive API
        run = mount / "colabkit" / "run"
        (run / "checkpoints").mkdir(parents=True)
        os.truncate(_touch(run / "checkpoints" / "ckpt-000000000012.ckpt"), 6 * MB)
        run_dir, url = str(run), (run / "checkpoints").as_uri()
        files = drive_with_trash(drive, "colabkit/run/checkpoints")
    before = drive.usage

    assert main(["ckpt", "purge", run_dir, *(["--json"] if output == "json" else [])]) == 0
    out = capsys.readouterr().out
    purged_for_good(drive, files, before)
    freed = sum(RUNS_TRASH.values())
    if output == "json":
        report = json.loads(out)
        assert report["store"] == url and report["freed"] == freed
        assert sorted((d["name"], d["size"]) for d in report["deleted"]) == sorted(
            RUNS_TRASH.items()
        )
        return
    first, *each = out.splitlines()
    assert first == (
        f"deleted 6 file(s) of this run from Drive's trash for good, freeing "
        f"{format_size(freed)} ({url})"
    )
    assert sorted(each) == sorted(
        f"  deleted {name} ({format_size(size)})" for name, size in RUNS_TRASH.items()
    )


def test_ckpt_purge_on_the_mount_not_signed_in_says_to_sign_in_and_deletes_nothing(
    drive, mount, not_signed_in, tmp_path, capsys
):
    run = mount / "colabkit" / "run"
    (run / "checkpoints").mkdir(parents=True)
    files = drive_with_trash(drive, "colabkit/run/checkpoints")
    before = dict(drive.files)

    assert main(["ckpt", "purge", str(run)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("Error: Drive's trash is reached through the Drive API only")
    assert "nothing was deleted" in line and SIGN_IN in line
    assert drive.files == before and drive.seen == []
    assert all(f.trashed for name, f in files.items() if name != "kept")


def test_ckpt_purge_of_a_local_run_has_nothing_to_purge(tmp_path, capsys):
    run = tmp_path / "run"
    train(make_model(), tmp_path, run_dir=run, epochs=1, clock=FakeClock())
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())

    assert main(["ckpt", "purge", str(run)]) == 0
    assert capsys.readouterr().out == (
        f"nothing to purge: {(run / 'checkpoints').as_uri()} is not on Google Drive "
        "(deleting there is final)\n"
    )
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == kept


# -- 8. colabkit train mnist on a Drive nearly full -----------------------------------------------


def test_train_mnist_with_a_store_on_a_nearly_full_drive_says_so_and_finishes(
    drive, signed_in, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up lines: not relayed
    leave_free(drive, 1 * MB, trash=300_000)  # a checkpoint of the convnet is about 0.4 MB
    run = tmp_path / "run"
    args = ["--dataset", "mnist-5k", "--limit", "600", "--epochs", "1", "--seed", "3"]
    args += ["--run-dir", str(run), "--store", "gdrive://colabkit/mnist"]

    assert main(["train", "mnist", *args]) == 0
    captured = capsys.readouterr()
    (line,) = [s for s in captured.err.splitlines() if ROOM in s]
    assert line.startswith(
        "colabkit: Drive (gdrive://colabkit/mnist) has 1.0 MB free of 16.1 GB "
        "(300.0 KB of it in the trash; Drive's storage quota); this run needs "
    )
    assert "keep=3 checkpoints of" in line and "empty Drive's trash (it holds 300.0 KB)" in line
    assert "its last checkpoint (ckpt-000000000005.ckpt) is durable in gdrive://" in captured.out
    assert "Test accuracy: " in captured.out  # the run finished, its outputs written
    assert (run / "outputs" / "results.txt").exists()
    assert [f.name for f in drive.files.values() if f.name.startswith("ckpt-")] == [
        "ckpt-000000000005.ckpt"
    ]


def test_ckpt_purge_of_a_run_folder_deleted_on_the_mount_is_one_error_line(
    drive, mount, signed_in, tmp_path, capsys
):
    """The user deletes an old run's folder in Drive's web page or on the mount: DriveFS trashes
    it with everything in it, and Drive's quota does not get the bytes back."""
    drive.quota = QUOTA
    clock = DriveFS(mount, drive)
    run = mount / "colabkit" / "old-run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "ckpt-000000000006.ckpt").write_bytes(b"c" * 1000)
    clock.flush()
    for path in sorted(run.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    run.rmdir()
    clock.flush()
    assert drive.path("colabkit/old-run").trashed and drive.usage_in_trash == 1000
    before = dict(drive.files)

    code = main(["ckpt", "purge", str(run)])
    captured = capsys.readouterr()
    assert code == 1 and captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("Error: ") and "colabkit/old-run" in line
    assert drive.files == before
