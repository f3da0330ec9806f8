"""On the Drive mount, "durable" means on Drive: a checkpoint written to /content/drive is only in
the VM's Drive cache until Drive's client uploads it. With an API sign-in each one is confirmed
by Drive's md5 before it counts; without, it is reported as on the mount, upload pending.

The mount is a folder with a fake mount table; Drive's client is played by ``fake_drivefs.DriveFS``,
which copies what the mount holds into the fake Drive only after a lag, on the injected clock.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from fake_drive import fake_credentials
from fake_drivefs import DriveFS

from colabkit.checkpoint.format import checkpoint_name
from colabkit.checkpoint.manager import CheckpointManager
from colabkit.clock import FakeClock
from colabkit.errors import StoreError
from colabkit.storage import open_store
from colabkit.storage.drive_mount import DriveMountStore

LAG = 20.0  # seconds of (fake) time between a write to the mount and Drive holding it


def manager_on(store, clock, tmp_path):
    return CheckpointManager(store, cache_dir=tmp_path / "cache", clock=clock)


def save(manager, step):
    manager.save(step, {"w": np.full(1000, step, np.float32)}, {"epoch": 0})


def test_with_a_sign_in_a_checkpoint_is_durable_only_once_drive_has_its_md5(
    mount, drive, tmp_path, caplog
):
    clock = DriveFS(mount, drive)
    root = mount / "colabkit" / "run" / "checkpoints"
    store = DriveMountStore(root, my_drive=mount, credentials=fake_credentials(), clock=clock)
    manager = manager_on(store, clock, tmp_path)
    with caplog.at_level(logging.DEBUG, logger="colabkit"):
        save(manager, 1)
        manager.wait()
    assert "is durable in" in caplog.text and "upload pending" not in caplog.text
    assert sum(clock.sleeps) >= LAG  # it waited for Drive, not for the mount
    on_drive = drive.path(f"colabkit/run/checkpoints/{checkpoint_name(1)}")
    assert on_drive.data == (root / checkpoint_name(1)).read_bytes()
    assert manager.status == "ok" and store.confirms is True
    manager.close()


def test_an_upload_that_never_lands_is_not_durable_and_the_retry_does_not_rewrite_it(
    mount, drive, tmp_path, caplog
):
    clock = DriveFS(mount, drive, lag=0.0)
    clock.holds = lambda relative: relative.endswith(".ckpt")  # it does not upload checkpoints
    root = mount / "colabkit" / "run" / "checkpoints"
    store = DriveMountStore(root, my_drive=mount, credentials=fake_credentials(), clock=clock,
                            confirm_delays=(5, 10))  # fmt: skip
    manager = CheckpointManager(store, cache_dir=tmp_path / "cache", clock=clock,
                                retry_delays=(1,))  # fmt: skip
    with caplog.at_level(logging.DEBUG, logger="colabkit"):
        save(manager, 1)
        with pytest.raises(StoreError, match="Drive does not hold it yet .*upload is pending"):
            manager.wait()
    assert "is durable" not in caplog.text
    written = (root / checkpoint_name(1)).stat().st_mtime_ns
    clock.holds = lambda relative: False  # Drive's client catches up
    manager.wait()
    assert (root / checkpoint_name(1)).stat().st_mtime_ns == written  # not written again
    assert drive.path(f"colabkit/run/checkpoints/{checkpoint_name(1)}").data
    manager.close()


def test_without_a_sign_in_it_is_reported_on_the_mount_upload_pending(
    mount, tmp_path, caplog, monkeypatch
):
    import google.auth

    def not_signed_in(*args, **kwargs):
        raise google.auth.exceptions.DefaultCredentialsError("no credentials")

    for variable in ("COLABKIT_DRIVE_CREDENTIALS", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(google.auth, "default", not_signed_in)
    store = open_store(mount / "colabkit" / "run" / "checkpoints")
    assert isinstance(store, DriveMountStore)  # how fit and setup open a run on the mount
    clock = FakeClock()
    manager = manager_on(store, clock, tmp_path)
    with caplog.at_level(logging.DEBUG, logger="colabkit"):
        save(manager, 1)
        manager.wait()
        save(manager, 2)
        manager.wait()
    assert clock.sleeps == []  # nothing to wait for: nothing can confirm
    assert "is durable" not in caplog.text
    assert caplog.text.count("Drive uploads it in the background (not confirmed") == 2
    assert caplog.text.count("auth.authenticate_user()") == 1  # said once, never asked
    assert manager.status == "on the Drive mount, upload pending"
    manager.close()
