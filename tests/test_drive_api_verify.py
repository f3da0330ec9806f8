"""verify_on_drive: a file written to the mount counts as uploaded only when the API agrees."""

from __future__ import annotations

import pytest
from fake_drive import open_store

from colabkit.errors import ConfigError, StoreError
from colabkit.storage.drive_transport import RetryPolicy
from colabkit.storage.drive_verify import verify_on_drive


@pytest.fixture
def mount(tmp_path):
    """A stand-in for /content/drive/MyDrive holding a checkpoint written to the mount."""
    path = tmp_path / "MyDrive" / "colabkit" / "run" / "checkpoints" / "ckpt-1.zip"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"checkpoint bytes")
    return tmp_path / "MyDrive", path


def test_false_until_drive_holds_the_same_bytes(drive, mount):
    root, path = mount
    store = open_store(drive)
    assert verify_on_drive(path, store, mount_root=root) is False
    store.put(path, "checkpoints/ckpt-1.zip")  # what DriveFS's background upload does
    assert verify_on_drive(path, store, mount_root=root) is True
    path.write_bytes(b"checkpoint bytez")  # same size, newer local bytes not uploaded yet
    assert verify_on_drive(path, store, mount_root=root) is False


def test_a_path_outside_the_stores_folder_is_rejected(drive, mount, tmp_path):
    root, _path = mount
    outside = tmp_path / "MyDrive" / "colabkit" / "other.zip"
    outside.write_bytes(b"x")
    with pytest.raises(ConfigError, match="local_mount_path"):
        verify_on_drive(outside, open_store(drive), mount_root=root)


def test_could_not_ask_is_an_error_not_false(drive, mount):
    root, path = mount
    store = open_store(drive, retry=RetryPolicy(max_attempts=2))
    drive.fail("list", 403, "insufficientFilePermissions", times=10)
    with pytest.raises(StoreError):
        verify_on_drive(path, store, mount_root=root)
