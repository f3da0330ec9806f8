"""Verified mode for the Colab Drive mount: ask the Drive API whether an upload really landed.

A file written to ``/content/drive`` lands in a VM-local cache and is uploaded later; reading it
back from the mount reads the cache, which proves nothing about Drive. Only the API's
``md5Checksum`` does. Users who signed in for the API can call :func:`verify_on_drive` after a
checkpoint is written to the mount (e.g. before stopping at the session limit).
"""

from __future__ import annotations

import os

from colabkit.errors import invalid_argument
from colabkit.storage.base import md5_file
from colabkit.storage.drive_api import DriveApiStore

MY_DRIVE = "/content/drive/MyDrive"


def verify_on_drive(
    local_mount_path: str | os.PathLike[str],
    store: DriveApiStore,
    *,
    mount_root: str | os.PathLike[str] = MY_DRIVE,
) -> bool:
    """Whether Drive holds exactly the bytes of a file written under the mount.

    Args:
        local_mount_path: The file on the mount, inside the folder that ``store`` opens
            (``store`` for ``colabkit/run`` maps to ``<mount_root>/colabkit/run``).
        store: A ``DriveApiStore`` on My Drive (``root="root"``).
        mount_root: Where My Drive is mounted.

    Returns:
        True when the API reports the same size and md5 as the local file; False when Drive does
        not have it yet or holds other bytes (the upload is still pending: check again later).

    Raises:
        ConfigError: The path is not inside the store's folder on the mount.
        OSError: Drive could not be asked (never reported as False).
    """
    if store.root != "root":
        raise invalid_argument("store", store, "a DriveApiStore on My Drive (root='root')")
    folder = os.path.join(os.fspath(mount_root), *store.folder.split("/"))
    relative = os.path.relpath(os.path.abspath(local_mount_path), os.path.abspath(folder))
    if relative == os.curdir or relative.split(os.sep)[0] == os.pardir:
        raise invalid_argument(
            "local_mount_path", os.fspath(local_mount_path), f"a file under {folder!r}"
        )
    try:
        remote = store.stat(relative.replace(os.sep, "/"))
    except FileNotFoundError:
        return False
    if remote.size != os.path.getsize(local_mount_path):
        return False
    return remote.md5 == md5_file(local_mount_path)
