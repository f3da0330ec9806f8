"""A fake ``google.colab.drive`` that behaves like the real one, on a folder the test chooses.

Like colabtools' ``drive.py``: ``mount()`` returns at once (printing a note) when ``MyDrive``
already exists and ``force_remount`` is False; otherwise it first unmounts whatever is there
(which clears a stale mount), refuses a mountpoint that already holds files, and on success
creates ``<mountpoint>/MyDrive``. ``flush_and_unmount()`` unmounts: the mountpoint is left
empty and the files come back on the next mount, as they would from Drive.

Test controls: ``fail_next(error, times)`` makes the next mounts raise (the real timeout is
``ValueError('mount failed: timeout during initial read of root folder; ...')``),
``make_stale(mountpoint)`` leaves a mount whose every access raises ``OSError(errno 107)``
through ``listdir``, ``calls`` records every ``mount()``, ``reset()`` starts over.
``answer_consent(*answers)``: how the user answers the consent dialog that every ``mount()``
shows, one answer per call (then "allow"): "decline" raises ``MessageError("Error: credential
propagation was unsuccessful")`` before the mount is touched; "ignore" (nobody answers) makes
colabtools' ``blocking_request`` return None without raising, and the mount then runs out of
time in pexpect: ``pexpect.exceptions.TIMEOUT``.
``mount_table``: a file the fake keeps as the kernel keeps ``/proc/mounts`` (a ``fuse.drive``
line per mount, gone on unmount; a stale mount stays listed), for colabkit to read instead.
"""

from __future__ import annotations

import errno
import os
import shutil

try:
    from pexpect.exceptions import TIMEOUT as PexpectTimeout
except ImportError:  # pragma: no cover - pexpect ships with IPython on Linux

    class PexpectTimeout(Exception):  # the same name as pexpect's, which colabkit goes by
        pass

    PexpectTimeout.__name__ = "TIMEOUT"


class MessageError(Exception):
    """``google.colab._message.MessageError``: what a declined consent dialog raises."""


TIMEOUT = ValueError(
    "mount failed: timeout during initial read of root folder; for more info: "
    "https://research.google.com/colaboratory/faq.html#drive-timeout"
)

calls: list[dict] = []
mount_table: str | None = None
flushes: list[int] = []
_failures: list[BaseException] = []
_consent: list[str] = []
_mounted: set[str] = set()
_stale: set[str] = set()


def reset() -> None:
    calls.clear()
    flushes.clear()
    _failures.clear()
    _consent.clear()
    _mounted.clear()
    _stale.clear()
    _write_mount_table()


def _write_mount_table() -> None:
    if mount_table is None:
        return
    lines = ["proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0"]
    for mountpoint in sorted(_mounted):
        escaped = mountpoint.replace("\\", "\\134").replace(" ", "\\040")
        options = "rw,nosuid,nodev,relatime,user_id=0,group_id=0,allow_other"
        lines.append(f"drive {escaped} fuse.drive {options} 0 0")
    with open(mount_table, "w") as f:
        f.write("\n".join(lines) + "\n")


def fail_next(error: BaseException, times: int = 1) -> None:
    _failures.extend([error] * times)


def answer_consent(*answers: str) -> None:
    assert all(a in ("allow", "decline", "ignore") for a in answers), answers
    _consent.extend(answers)


def make_stale(mountpoint: str) -> None:
    _stale.add(os.path.abspath(os.fspath(mountpoint)))


def listdir(path: str) -> list[str]:
    """``os.listdir`` as seen through the (possibly stale) FUSE mount."""
    full = os.path.abspath(os.fspath(path))
    for mountpoint in _stale:
        if full == mountpoint or full.startswith(mountpoint + os.sep):
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected", path)
    return os.listdir(path)


def _cloud(mountpoint: str) -> str:
    return mountpoint.rstrip(os.sep) + ".cloud"


def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
    calls.append(
        dict(
            mountpoint=mountpoint,
            force_remount=force_remount,
            timeout_ms=timeout_ms,
            readonly=readonly,
        )
    )
    if " " in mountpoint:
        raise ValueError("Mountpoint must not contain a space.")
    mountpoint = os.path.abspath(os.path.expanduser(mountpoint))
    my_drive = os.path.join(mountpoint, "MyDrive")
    # colabtools asks for consent first, on every call, even when Drive is already mounted
    answer = _consent.pop(0) if _consent else "allow"
    if answer == "decline":
        raise MessageError("Error: credential propagation was unsuccessful")
    # The real one looks for "<mountpoint>/My Drive", which only a mount has: files left on
    # local disk under an unmounted mountpoint do not make it "already mounted".
    mounted = mountpoint in _mounted and os.path.isdir(my_drive)
    if not force_remount and mountpoint not in _stale and mounted:
        print(
            f"Drive already mounted at {mountpoint}; to attempt to forcibly remount, "
            f'call drive.mount("{mountpoint}", force_remount=True).'
        )
        return
    _unmount(mountpoint)  # the real one runs `umount -f`, which also clears a stale mount
    _stale.discard(mountpoint)
    if _failures:
        raise _failures.pop(0)
    # colabtools' checks of the mountpoint, in its order and words (drive.py:191-203)
    if os.path.islink(mountpoint):
        raise ValueError("Mountpoint must not be a symlink")
    if os.path.isdir(mountpoint) and os.listdir(mountpoint):
        raise ValueError("Mountpoint must not already contain files")
    if not os.path.isdir(mountpoint) and os.path.exists(mountpoint):
        raise ValueError("Mountpoint must either be a directory or not exist")
    if not os.path.isdir(os.path.dirname(mountpoint)):
        raise ValueError("Mountpoint must be in a directory that exists")
    if answer == "ignore":  # no credentials reach DriveFS: pexpect waits timeout_ms/1000 + 30 s
        raise PexpectTimeout(f"Timeout exceeded after {timeout_ms / 1000 + 30:.0f} s.")
    if os.path.isdir(_cloud(mountpoint)):
        os.makedirs(mountpoint, exist_ok=True)
        shutil.move(_cloud(mountpoint), my_drive)
    os.makedirs(my_drive, exist_ok=True)
    _mounted.add(mountpoint)
    _write_mount_table()
    print(f"Mounted at {mountpoint}")


def _unmount(mountpoint: str) -> None:
    if mountpoint in _mounted:
        shutil.move(os.path.join(mountpoint, "MyDrive"), _cloud(mountpoint))
        _mounted.discard(mountpoint)
        _write_mount_table()


def flush_and_unmount(timeout_ms=24 * 60 * 60 * 1000):
    if not _mounted:
        print("Drive not mounted, so nothing to flush and unmount.")
        return
    flushes.append(timeout_ms)
    for mountpoint in list(_mounted):
        _unmount(mountpoint)
