"""The Drive mount's confirmation: signed in for the Drive API, a checkpoint written to the mount
counts only once Drive itself holds its bytes. What must not pass for that confirmation: an
older version of the file, of the same name and size, that Drive holds already; and an API that
stops answering in the middle of confirming.

The mount is a folder in a fake mount table; Drive's client (DriveFS) is ``fake_drivefs.DriveFS``,
which uploads what the mount holds into the fake Drive after a lag, on the injected clock; the
Drive API is the real client over ``responses`` (``fake_drive``).
"""

from __future__ import annotations

import hashlib
import logging
import os

import numpy as np
import pytest
from fake_drive import fake_credentials
from fake_drivefs import DriveFS

from colabkit.checkpoint.format import checkpoint_name
from colabkit.checkpoint.manager import CheckpointManager
from colabkit.errors import StoreError
from colabkit.storage.drive_mount import DriveMountStore

RUN = "colabkit/run/checkpoints"
NAME = checkpoint_name(20)


def holding_checkpoints(relative: str) -> bool:
    """DriveFS keeps checkpoint uploads back (a stuck upload, a slow line)."""
    return relative.endswith(".ckpt")


def store_on(mount, clock, **kwargs) -> DriveMountStore:
    return DriveMountStore(
        mount / RUN, my_drive=mount, credentials=fake_credentials(), clock=clock, **kwargs
    )


def file_of(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


# -- (d) an older version of the same name and size on Drive ---------------------------------


def test_an_older_version_of_the_same_size_on_drive_does_not_confirm_the_new_one(
    mount, drive, tmp_path
):
    """A checkpoint saved again under its name (a session that resumed from an older checkpoint
    trains the same steps again): same size, other bytes. Drive holds the older version until
    DriveFS uploads the new one; the put counts only once Drive holds the new bytes."""
    clock = DriveFS(mount, drive)
    store = store_on(mount, clock, confirm_delays=(5, 10, 20))
    old, new = os.urandom(64 * 1024), os.urandom(64 * 1024)
    store.put(file_of(tmp_path, "old", old), NAME)
    assert drive.path(f"{RUN}/{NAME}").data == old

    clock.holds = holding_checkpoints
    with pytest.raises(StoreError, match="Drive does not hold it yet"):
        store.put(file_of(tmp_path, "new", new), NAME)
    assert (mount / RUN / NAME).read_bytes() == new  # on the mount: in the VM's Drive cache
    assert drive.path(f"{RUN}/{NAME}").data == old  # on Drive: still the older version

    clock.holds = lambda relative: False  # DriveFS uploads it now
    info = store.put(tmp_path / "new", NAME)  # the pipeline's retry of the same put
    assert info.md5 == hashlib.md5(new).hexdigest()
    assert drive.path(f"{RUN}/{NAME}").data == new


def test_a_put_of_new_bytes_over_an_old_copy_of_the_same_size_writes_them(mount, drive, tmp_path):
    """The mount holding the older version (of the same size) is no reason to skip the write:
    Drive then confirms the older bytes, and the new checkpoint was never written."""
    clock = DriveFS(mount, drive, lag=0.0)
    store = store_on(mount, clock)
    old, new = os.urandom(64 * 1024), os.urandom(64 * 1024)
    store.put(file_of(tmp_path, "old", old), NAME)
    info = store.put(file_of(tmp_path, "new", new), NAME)
    assert info.md5 == hashlib.md5(new).hexdigest()
    assert (mount / RUN / NAME).read_bytes() == new
    assert drive.path(f"{RUN}/{NAME}").data == new


def test_a_checkpoint_saved_again_is_not_durable_while_drive_holds_the_older_one(
    mount, drive, tmp_path, caplog
):
    """The same through the checkpoint manager: the session that saves step 20 again says it
    is not durable, rather than counting the first session's step 20 on Drive."""
    clock = DriveFS(mount, drive)
    store = store_on(mount, clock, confirm_delays=(5, 10, 20))
    first = CheckpointManager(store, cache_dir=tmp_path / "one", clock=clock)
    first.save(20, {"w": np.full(1000, 1, np.float32)}, {"epoch": 1})
    first.close()
    before = drive.path(f"{RUN}/{NAME}").data

    clock.holds = holding_checkpoints
    again = CheckpointManager(
        store_on(mount, clock, confirm_delays=(5, 10, 20)),
        cache_dir=tmp_path / "two",
        clock=clock,
        retry_delays=(1,),
    )
    again.save(20, {"w": np.full(1000, 2, np.float32)}, {"epoch": 1})
    with caplog.at_level(logging.DEBUG, logger="colabkit"), pytest.raises(StoreError):
        again.wait()
    saved = (tmp_path / "two" / NAME).read_bytes()
    assert len(saved) == len(before) and saved != before  # same name, same size, new bytes
    assert "is durable in" not in caplog.text
    assert again.status.startswith("failing: ") and again.last_committed is None

    clock.holds = lambda relative: False
    again.wait()
    assert drive.path(f"{RUN}/{NAME}").data == saved
    assert again.status == "ok" and again.last_committed == NAME
    again.close()


# -- (e) the API failing in the middle of confirming -----------------------------------------


class ApiFailsMidConfirm(DriveFS):
    """DriveFS as the clock; once a checkpoint sits on the mount and colabkit first waits for
    Drive to hold it (Drive answered "not yet"), the Drive API starts answering 503 to every
    listing, for longer than colabkit retries."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.failing = False

    def sleep(self, seconds: float) -> None:
        if not self.failing and any(self.my_drive.glob(f"{RUN}/*.ckpt")):
            self.failing = True
            self.drive.fail("list", 503, "backendError", times=1000)
        super().sleep(seconds)


def test_an_api_failing_mid_confirmation_is_upload_pending_not_durable(
    mount, drive, tmp_path, caplog
):
    clock = ApiFailsMidConfirm(mount, drive)
    clock.holds = holding_checkpoints  # Drive never gets it: a "durable" would be a lie
    store = store_on(mount, clock)
    manager = CheckpointManager(store, cache_dir=tmp_path / "staging", clock=clock)
    arrays = {"w": np.arange(1000, dtype=np.float32)}
    with caplog.at_level(logging.DEBUG, logger="colabkit"):
        manager.save(20, arrays, {"epoch": 1})
        manager.wait()  # training is not held: the checkpoint counts as on the mount
    assert clock.failing and "list" in drive.kinds()

    assert manager.status == "on the Drive mount, upload pending"
    assert store.upload_pending and not store.signed_in
    assert "is durable in" not in caplog.text
    assert "Cannot confirm uploads through the Drive API" in caplog.text
    assert "Drive uploads it in the background (not confirmed" in caplog.text
    assert not drive.named(NAME)  # indeed not on Drive

    # Not lost: whole on the mount (for DriveFS to upload) and in local staging.
    staged = (tmp_path / "staging" / NAME).read_bytes()
    assert (mount / RUN / NAME).read_bytes() == staged
    manager.close()
    resumed = CheckpointManager(store_on(mount, clock), cache_dir=tmp_path / "new-vm", clock=clock)
    restored = resumed.restore()
    assert restored is not None and restored.name == NAME
    np.testing.assert_array_equal(restored.arrays["w"], arrays["w"])
    resumed.close()


def test_fit_does_not_call_a_checkpoint_the_api_could_not_confirm_durable(
    mount, drive, tmp_path, capsys
):
    """colabkit.fit on the mount, signed in, the API failing while it confirms: the run's last
    line must not say the checkpoint is durable (Drive does not hold it; the manager's own
    status is "on the Drive mount, upload pending")."""
    import keras

    import colabkit

    clock = ApiFailsMidConfirm(mount, drive)
    clock.holds = holding_checkpoints
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.ones((8, 2), np.float32)
    colabkit.fit(
        model, x, x[:, :1], store=store_on(mount, clock), epochs=2, batch_size=4, verbose=1,
        clock=clock, cache_dir=tmp_path / "staging", session_limit=False,
    )  # fmt: skip
    assert clock.failing and not drive.named(checkpoint_name(4))
    (last,) = [line for line in capsys.readouterr().out.splitlines() if "run finished" in line]
    assert "is durable in" not in last
    assert "is on the Drive mount" in last and "upload pending" in last
    assert "the Drive API failed while confirming" in last  # the reason, not "no sign-in"
