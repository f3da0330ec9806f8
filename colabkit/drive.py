"""Google Drive in Colab: an idempotent mount, a health check, and the only flush there is.

Over ``google.colab.drive`` (imported lazily, only in Colab). What goes wrong, and what this
module does about it:

- Mounting twice: the second call sees Drive in the mount table and does nothing.
- "Mounted" is what the mount table says (``fuse.drive``, as colabtools reads it), never what
  the folder holds: after an unmount, files written under ``/content/drive`` are on local disk.
- A stale mount ("Transport endpoint is not connected", errno 107, typically hours into a run):
  detected on access and remounted with ``force_remount=True``.
- A timeout (the consent dialog not answered, a Drive outage, a huge root folder): retried with
  backoff on the injected clock, then one error that names the usual causes.
- Not in Colab: no crash; the result says to fall back to a local folder now, or to the Drive
  API (:class:`colabkit.storage.DriveApiStore`) for durable storage.

Files written into the mount land in a local cache and upload later; ``flush_drive()`` is the
only way to force the upload, and it *unmounts* (Colab offers no flush without unmount).
"""

from __future__ import annotations

import errno
import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from colabkit.clock import SYSTEM_CLOCK, Clock
from colabkit.env import COLAB_DRIVE_MOUNTPOINT, Environment, detect, drive_in_mount_table
from colabkit.errors import DriveError, invalid_argument
from colabkit.validate import positive_int

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_MS = 120_000
FLUSH_TIMEOUT_MS = 24 * 60 * 60 * 1000
MountStatus = Literal["mounted", "already-mounted", "remounted", "not-colab"]
MountState = Literal["mounted", "absent", "stale"]
_TIMEOUT_CAUSE = (
    "Usual causes: the Drive consent dialog was not answered (it appears on every new VM) or "
    "a Google Drive outage. Answer the dialog and run again, or pass drive=False to train on "
    "local disk (lost with the VM)."
)


@dataclass(frozen=True)
class MountResult:
    """What ``mount_drive`` did.

    Attributes:
        status: ``"mounted"``, ``"already-mounted"``, ``"remounted"`` (a stale mount was
            replaced) or ``"not-colab"`` (nothing mounted: fall back, see ``message``).
        mountpoint: Where Drive is (or would be) mounted.
        my_drive: ``<mountpoint>/MyDrive`` when mounted, else None.
        attempts: How many times ``drive.mount`` was called.
        message: One line for the user.
    """

    status: MountStatus
    mountpoint: Path
    my_drive: Path | None
    attempts: int
    message: str

    @property
    def mounted(self) -> bool:
        """Whether Drive is mounted now."""
        return self.my_drive is not None


def _import_colab_drive() -> Any:
    return importlib.import_module("google.colab.drive")


def mount_drive(
    mountpoint: str | os.PathLike[str] = COLAB_DRIVE_MOUNTPOINT,
    *,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
    readonly: bool = False,
    attempts: int = 3,
    backoff_s: float = 5.0,
    env: Environment | None = None,
    colab_drive: Any = None,
    listdir: Callable[[str], list[str]] = os.listdir,
    clock: Clock = SYSTEM_CLOCK,
) -> MountResult:
    """Mounts Google Drive at ``mountpoint`` unless it is already mounted and healthy.

    Args:
        mountpoint: Where to mount (Colab's convention: ``/content/drive``).
        timeout_ms: Passed to ``drive.mount``.
        readonly: Passed to ``drive.mount``.
        attempts: How many times to try a mount that times out.
        backoff_s: Wait before the second attempt; doubles after each failure.
        env: Where this runs; detected when None.
        colab_drive: The ``google.colab.drive`` module (injected in tests).
        listdir: Lists a folder (injected in tests to simulate a stale mount).
        clock: Sleeps between attempts.

    Returns:
        A result whose ``status`` is ``"not-colab"`` outside Colab (nothing raised).

    Raises:
        ConfigError: A bad argument.
        DriveError: Drive could not be mounted; the message says why and what to do.
    """
    mountpoint = _check_mount_args(mountpoint, timeout_ms, attempts, backoff_s)
    env = env or detect(session_limit=None)
    if env.kind != "colab":
        return _not_colab(mountpoint, f"not running in Colab ({env.kind})")
    if colab_drive is None:
        try:
            colab_drive = _import_colab_drive()
        except ImportError as e:
            return _not_colab(mountpoint, f"google.colab is not importable ({e})")
    state = mount_state(mountpoint, listdir)
    if state == "mounted":
        return MountResult("already-mounted", mountpoint, mountpoint / "MyDrive", 0, "")
    args = (mountpoint, timeout_ms, readonly, state == "stale")
    return _mount_with_retries(colab_drive, args, attempts, backoff_s, listdir, clock)


def _check_mount_args(
    mountpoint: object, timeout_ms: object, attempts: object, backoff_s: object
) -> Path:
    if not isinstance(mountpoint, (str, os.PathLike)) or " " in os.fspath(mountpoint):
        raise invalid_argument("mountpoint", mountpoint, "a folder path without spaces")
    if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms <= 0:
        raise invalid_argument("timeout_ms", timeout_ms, "a positive integer of milliseconds")
    positive_int("attempts", attempts)
    if isinstance(backoff_s, bool) or not isinstance(backoff_s, (int, float)) or backoff_s < 0:
        raise invalid_argument("backoff_s", backoff_s, "a number of seconds >= 0")
    return Path(os.fspath(mountpoint))


def _not_colab(mountpoint: Path, why: str) -> MountResult:
    message = (
        f"Google Drive cannot be mounted here: {why}. Falling back to a local folder; for "
        "durable storage outside Colab use the Drive API (colabkit.storage.DriveApiStore)."
    )
    logger.info("%s", message)
    return MountResult("not-colab", mountpoint, None, 0, message)


def mount_state(mountpoint: Path, listdir: Callable[[str], list[str]] = os.listdir) -> MountState:
    """``"mounted"``, ``"absent"``, or ``"stale"`` (a mount that does not answer, e.g. errno 107).

    The mount table decides, as in colabtools: files left under an unmounted mountpoint are on
    local disk, not Drive. A stale FUSE mount can fail on ``MyDrive`` or already on the
    mountpoint itself.
    """
    if drive_in_mount_table(mountpoint) is False:
        return "absent"
    for folder, found in ((mountpoint / "MyDrive", "mounted"), (mountpoint, "absent")):
        try:
            listdir(str(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:
            logger.warning("Drive mount at %s does not answer (%s)", mountpoint, e)
            return "stale"
        return found
    return "absent"


def _mount_with_retries(
    colab_drive: Any,
    args: tuple[Path, int, bool, bool],
    attempts: int,
    backoff_s: float,
    listdir: Callable[[str], list[str]],
    clock: Clock,
) -> MountResult:
    mountpoint, timeout_ms, readonly, stale = args
    last: BaseException | None = None
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            clock.sleep(backoff_s * 2 ** (attempt - 2))
        try:
            colab_drive.mount(
                str(mountpoint),
                force_remount=stale or attempt > 1,
                timeout_ms=timeout_ms,
                readonly=readonly,
            )
        except NotImplementedError:  # colabtools on a runtime without Drive (Colab Enterprise)
            return _not_colab(mountpoint, "this runtime does not support drive.mount")
        except Exception as e:
            if not _is_retryable(e):
                raise DriveError(_mount_failure(mountpoint, e)) from e
            logger.warning("Drive mount attempt %d/%d failed: %s", attempt, attempts, e)
            last = e
            continue
        if mount_state(mountpoint, listdir) == "mounted":
            status: MountStatus = "remounted" if stale else "mounted"
            logger.info("Google Drive %s at %s", status, mountpoint)
            return MountResult(status, mountpoint, mountpoint / "MyDrive", attempt, "")
        last = DriveError(f"drive.mount returned but {mountpoint / 'MyDrive'} is not readable")
    raise DriveError(
        f"Could not mount Google Drive at {mountpoint} after {attempts} attempt(s) "
        f"(last error: {last}). {_TIMEOUT_CAUSE}"
    ) from last


def _is_retryable(error: Exception) -> bool:
    """Timeouts and generic "mount failed" are worth another try; a refusal is not."""
    if type(error).__name__ in ("TIMEOUT", "TimeoutError") or isinstance(error, TimeoutError):
        return True
    text = str(error)
    return isinstance(error, ValueError) and text.startswith("mount failed")


#: colabtools' refusals (drive.py) that another attempt cannot fix, and what can.
_REFUSALS = (
    ("already contain files", "mount into an empty folder, or move the files out of {mp}"),
    ("must not be a symlink", "mount at a real folder, not the symlink {mp}"),
    ("either be a directory or not exist", "{mp} is a file: mount somewhere else"),
    ("in a directory that exists", "create {mp}'s parent folder first, or mount elsewhere"),
    (
        "domain policy has disabled Drive",
        "this Google Workspace account may not use Drive on a VM: use another account, the "
        "Drive API (store='gdrive://...') with credentials, or drive=False",
    ),
)


def _mount_failure(mountpoint: Path, error: Exception) -> str:
    text = str(error)
    refusal = next((fix for said, fix in _REFUSALS if said in text), None)
    if refusal is not None:
        fix = refusal.format(mp=mountpoint)
    elif "credential propagation" in text or type(error).__name__ == "MessageError":
        fix = "access to Google Drive was declined: run again and allow it in the dialog"
    else:
        fix = "run again; if it keeps failing, Runtime → Disconnect and delete runtime"
    return f"Could not mount Google Drive at {mountpoint}: {text}. Fix: {fix}."


def flush_drive(
    *,
    timeout_ms: int = FLUSH_TIMEOUT_MS,
    env: Environment | None = None,
    colab_drive: Any = None,
) -> bool:
    """Uploads everything pending in the Drive cache, then UNMOUNTS Drive.

    Colab's ``drive.flush_and_unmount()`` is the only way to force pending uploads; there is no
    flush that keeps the mount. Call it when a run ends (colabkit does before the session
    limit), and call :func:`mount_drive` again to keep using Drive.

    Returns:
        True when flushed and unmounted; False outside Colab, or when Drive is not mounted
        (nothing to flush; said in the log).

    Raises:
        DriveError: The flush failed: files written recently may not be on Drive yet.
    """
    env = env or detect(session_limit=None)
    if env.kind != "colab":
        return False
    if colab_drive is None:
        try:
            colab_drive = _import_colab_drive()
        except ImportError:
            return False
    if mount_state(env.drive_mountpoint, getattr(colab_drive, "listdir", os.listdir)) == "absent":
        logger.info("Google Drive is not mounted at %s: nothing to flush.", env.drive_mountpoint)
        return False
    try:
        colab_drive.flush_and_unmount(timeout_ms=timeout_ms)
    except Exception as e:
        raise DriveError(
            f"Flushing Google Drive failed ({e}): recent writes may not have reached Drive. "
            "Fix: keep the runtime alive, mount again and check the newest checkpoint with "
            "`colabkit ckpt verify`."
        ) from e
    logger.info("Google Drive flushed and unmounted")
    return True


class FileOps(Protocol):
    """The file operations ``drive_health`` uses (injected in tests to simulate failures)."""

    def write(self, path: Path, data: bytes) -> None: ...
    def read(self, path: Path) -> bytes: ...
    def remove(self, path: Path) -> None: ...


class OsFileOps:
    """Real files: write with fsync so the probe reaches DriveFS, not only Python's buffer."""

    def write(self, path: Path, data: bytes) -> None:
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def read(self, path: Path) -> bytes:
        return path.read_bytes()

    def remove(self, path: Path) -> None:
        path.unlink()


HealthStatus = Literal["ok", "stale", "io-error", "no-space", "permission", "missing", "error"]

# errno -> (status, what it means, fix)
_CLASSIFIED: dict[int, tuple[HealthStatus, str, str]] = {
    errno.ENOTCONN: (
        "stale",
        "the Drive mount is stale (errno 107, Transport endpoint is not connected)",
        "remount: colabkit.drive.mount_drive() remounts with force_remount=True.",
    ),
    errno.EIO: (
        "io-error",
        "Drive answered with an I/O error (EIO), usually a storage quota or rate limit",
        "check free space at https://drive.google.com/settings/storage, keep fewer files per "
        "folder, wait a few minutes and retry.",
    ),
    errno.ENOSPC: (
        "no-space",
        "no space left (ENOSPC)",
        "free space on Google Drive (storage quota) or on the VM disk (`df -h /content`), or "
        "keep fewer checkpoints.",
    ),
    errno.EACCES: (
        "permission",
        "permission denied (EACCES)",
        "use a folder you can write (under MyDrive) and mount with readonly=False.",
    ),
    errno.ENOENT: (
        "missing",
        "the folder does not exist (ENOENT)",
        "mount Drive first (colabkit.drive.mount_drive()) or create the folder.",
    ),
}
_CLASSIFIED[errno.EDQUOT] = _CLASSIFIED[errno.ENOSPC]
_CLASSIFIED[errno.EPERM] = _CLASSIFIED[errno.EROFS] = _CLASSIFIED[errno.EACCES]
_CLASSIFIED[errno.ENOTDIR] = _CLASSIFIED[errno.ENOENT]


@dataclass(frozen=True)
class DriveHealth:
    """The result of writing, reading back and removing a probe file.

    Attributes:
        path: The folder checked.
        status: ``"ok"`` or what went wrong (``"stale"``, ``"io-error"``, ``"no-space"``,
            ``"permission"``, ``"missing"``, ``"error"``).
        message: What happened ("" when ok).
        fix: One line saying what to do ("" when ok).
        errno: The OS error number, when there was one.
        seconds: How long the probe took (a slow mount delays durability).
    """

    path: Path
    status: HealthStatus
    message: str = ""
    fix: str = ""
    errno: int | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def raise_for_status(self) -> None:
        """Raises :class:`DriveError` with the fix unless the check passed."""
        if not self.ok:
            raise DriveError(f"{self.message}. Fix: {self.fix}")


def drive_health(
    path: str | os.PathLike[str],
    *,
    files: FileOps | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> DriveHealth:
    """Checks that ``path`` (on the Drive mount, or anywhere) can be written and read back.

    Reading back from the mount reads DriveFS' local cache: this proves the mount works, not
    that the bytes reached Google's servers (only a flush or the Drive API's md5 proves that).
    """
    folder = Path(os.fspath(path))
    files = files or OsFileOps()
    probe = folder / f".colabkit-probe-{os.getpid()}-{os.urandom(4).hex()}"
    data = b"colabkit drive probe " + os.urandom(16)
    start = clock.monotonic()
    try:
        files.write(probe, data)
        try:
            same = files.read(probe) == data
        finally:
            files.remove(probe)
    except OSError as e:
        return _classify(folder, e, clock.monotonic() - start)
    seconds = clock.monotonic() - start
    if not same:
        fix = "remount with colabkit.drive.mount_drive() and check again."
        return DriveHealth(folder, "error", f"{folder}: probe read back different bytes", fix)
    return DriveHealth(folder, "ok", seconds=seconds)


def _classify(folder: Path, error: OSError, seconds: float) -> DriveHealth:
    status, meaning, fix = _CLASSIFIED.get(
        error.errno or -1, ("error", f"an OS error ({error})", "run the check again; remount.")
    )
    message = f"{folder} is not usable: {meaning}"
    logger.warning("Drive unhealthy: %s", message)
    return DriveHealth(folder, status, message, fix[:1].upper() + fix[1:], error.errno, seconds)
