"""Where colabkit runs (Colab, Kaggle, a local machine) and how much session time is left.

Detection only reads: environment variables, the existence of a few marker files, ``/proc`` and
the clock, all injected through :class:`SystemView` so tests can describe any machine.

Session start, and how far to trust it:

1. ``/proc/1/stat`` start time (+ ``btime`` from ``/proc/stat``) -- when the runtime's first
   process started, i.e. when this Colab/Kaggle runtime (VM or container) came up. "Restart
   session" keeps it (Colab's limit keeps counting too); "Disconnect and delete runtime" starts a
   new runtime and a new clock. Accurate to the second. Colab does not publish how it enforces
   its limit (it can also end a session earlier when resources are short), so the time left is a
   best estimate, never a promise.
2. ``btime`` alone (kernel boot) when PID 1 cannot be read: the VM may predate the runtime, so
   the time left is underestimated (errs on the safe side: colabkit saves early, never late).
3. On a local machine the "session" is the Python process (``/proc/self/stat``): boot time says
   nothing about how long a laptop or a workstation stays up.
4. When ``/proc`` is unreadable (macOS, Windows): the moment of detection.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from colabkit.clock import SYSTEM_CLOCK, Clock
from colabkit.duration import parse_duration
from colabkit.errors import invalid_argument
from colabkit.validate import renamed_attribute

Kind = Literal["colab", "kaggle", "local"]

COLAB_MARKER = "/var/colab/hostname"
KAGGLE_ROOT = "/kaggle"
COLAB_DRIVE_MOUNTPOINT = Path("/content/drive")
COLAB_CACHE_ROOT = Path("/content/colabkit-cache")
KAGGLE_DURABLE_ROOT = Path("/kaggle/working/colabkit")
DEFAULT_SESSION_LIMIT = "12h"
#: ``session_limit="auto"``: Colab's and Kaggle's 12 h limit there, no limit elsewhere.
AUTO = "auto"
_LIMITED_KINDS = ("colab", "kaggle")
#: How long before the session limit training stops: time to save, upload and flush.
SESSION_MARGIN = "15m"
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


#: The kernel's table of mounts. colabtools decides whether Drive is mounted from it (type
#: ``fuse.drive``), not from what the folder holds: once Drive is unmounted, whatever is written
#: under ``/content/drive`` lands on local disk and would look like a mount when listed.
MOUNT_TABLE = "/proc/mounts"


def mount_type(mountpoint: str | os.PathLike[str], read_text=None) -> str | None:
    """The type of what is mounted at ``mountpoint`` (``"fuse.drive"`` for Colab's Drive), ``""``
    when nothing is, or None where there is no mount table to read (not Linux)."""
    try:
        table = (read_text or _read_text)(MOUNT_TABLE)
    except OSError:
        return None
    target = os.path.abspath(os.fspath(mountpoint))
    found = ""
    for line in table.splitlines():
        fields = line.split()
        if len(fields) >= 3 and _unescape(fields[1]) == target:
            found = fields[2]  # the last line wins: a later mount hides an earlier one
    return found


def drive_in_mount_table(mountpoint: str | os.PathLike[str], read_text=None) -> bool | None:
    """Whether the mount table has Google Drive (``fuse.drive``) at ``mountpoint``; None where
    there is no table to read (not Linux)."""
    kind = mount_type(mountpoint, read_text)
    return None if kind is None else kind == "fuse.drive"


def unmounted_drive(path: str | os.PathLike[str]) -> Path | None:
    """Colab's Drive mountpoint when ``path`` is under it and nothing is mounted there (what
    is written there lands on local disk, lost with the VM); else None."""
    mountpoint = COLAB_DRIVE_MOUNTPOINT
    under = Path(os.path.abspath(os.fspath(path))).is_relative_to(mountpoint)
    return mountpoint if under and mount_type(mountpoint) == "" else None


def _unescape(field: str) -> str:
    """A path as /proc/mounts writes it (space, tab, newline, backslash as octal escapes)."""
    for escaped, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(escaped, char)
    return field


@dataclass(frozen=True)
class SystemView:
    """The parts of the machine that detection reads; tests replace them.

    Attributes:
        environ: Environment variables.
        exists: Whether a path exists (marker files, the Drive mount).
        read_text: Reads a small text file such as ``/proc/stat``; raises ``OSError``.
        clock: Current time.
        cwd: Base of the local run directory (``./runs``).
        home: Base of the local cache directory (``~/.cache``).
        clock_ticks: ``SC_CLK_TCK``, the unit of start times in ``/proc/<pid>/stat``.
    """

    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    exists: Callable[[str], bool] = os.path.exists
    read_text: Callable[[str], str] = _read_text
    clock: Clock = SYSTEM_CLOCK
    cwd: Callable[[], Path] = Path.cwd
    home: Callable[[], Path] = Path.home
    clock_ticks: int = field(default_factory=lambda: _clock_ticks())


def _clock_ticks() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):  # not POSIX
        return 100


@dataclass(frozen=True)
class Environment:
    """Where this runs and the session clock, as detected once.

    Attributes:
        kind: ``"colab"``, ``"kaggle"`` or ``"local"``.
        evidence: The facts that decided ``kind`` (human-readable).
        session_start: Seconds since the epoch when the session started (see module docstring).
        session_start_source: Where ``session_start`` came from.
        session_limit_s: The session limit in seconds, or None for no limit.
        detected_at: Seconds since the epoch at detection.
        drive_mounted: Whether Google Drive is mounted at ``drive_mountpoint``.
        drive_mountpoint: Where Colab mounts Drive.
        durable_root: Default parent of run directories (survives the VM where possible).
        cache_root: Default parent of local cache directories (fast, lost with the VM).
    """

    kind: Kind
    evidence: tuple[str, ...]
    session_start: float
    session_start_source: str
    session_limit_s: float | None
    detected_at: float
    drive_mounted: bool
    drive_mountpoint: Path
    durable_root: Path
    cache_root: Path

    staging_root = renamed_attribute("staging_root", "cache_root")

    @property
    def deadline(self) -> float | None:
        """Seconds since the epoch when the session limit is reached, or None without a limit."""
        if self.session_limit_s is None:
            return None
        return self.session_start + self.session_limit_s

    def time_left(self, now: float) -> float | None:
        """Seconds left before the session limit at ``now`` (negative once past it)."""
        deadline = self.deadline
        return None if deadline is None else deadline - now

    def elapsed(self, now: float) -> float:
        """Seconds since the session started."""
        return now - self.session_start


def detect(
    *, session_limit: str | float | None = AUTO, system: SystemView | None = None
) -> Environment:
    """Detects where this runs and when the session started.

    Args:
        session_limit: How long a session may run (``"12h"`` for free Colab, ``"24h"`` for paid
            plans), None for no limit, or ``"auto"``: 12 h in Colab and Kaggle, none elsewhere
            (a local process has no session limit).
        system: What to read; the real machine by default.

    Raises:
        ConfigError: ``session_limit`` is not a duration.
    """
    system = system or SystemView()
    kind, evidence = _detect_kind(system)
    limit = resolve_session_limit(session_limit, kind)
    now = system.clock.time()
    start, source = _session_start(kind, system, now)
    mounted = kind == "colab" and _drive_mounted(system)
    return Environment(
        kind=kind,
        evidence=evidence,
        session_start=start,
        session_start_source=source,
        session_limit_s=limit,
        detected_at=now,
        drive_mounted=mounted,
        drive_mountpoint=COLAB_DRIVE_MOUNTPOINT,
        durable_root=_durable_root(kind, mounted, system),
        cache_root=_cache_root(kind, system),
    )


def _detect_kind(system: SystemView) -> tuple[Kind, tuple[str, ...]]:
    """Kaggle first: it runs Colab's base image, so it also sets ``COLAB_RELEASE_TAG``."""
    env = system.environ
    kaggle = []
    if env.get("KAGGLE_KERNEL_RUN_TYPE"):
        kaggle.append(f"KAGGLE_KERNEL_RUN_TYPE={env['KAGGLE_KERNEL_RUN_TYPE']}")
    if system.exists(KAGGLE_ROOT):
        kaggle.append(f"{KAGGLE_ROOT} exists")
    if kaggle:
        return "kaggle", tuple(kaggle)
    colab = []
    if system.exists(COLAB_MARKER):
        colab.append(f"{COLAB_MARKER} exists")
    if env.get("COLAB_RELEASE_TAG"):
        colab.append(f"COLAB_RELEASE_TAG={env['COLAB_RELEASE_TAG']}")
    if colab:
        return "colab", tuple(colab)
    return "local", ("no Colab or Kaggle marker",)


def _session_start(kind: Kind, system: SystemView, now: float) -> tuple[float, str]:
    try:
        boot = _boot_time(system.read_text("/proc/stat"))
    except (OSError, ValueError):
        return now, "time of detection (/proc unreadable)"
    pid, what = ("1", "runtime start") if kind != "local" else ("self", "process start")
    try:
        ticks = _start_ticks(system.read_text(f"/proc/{pid}/stat"))
    except (OSError, ValueError):
        if kind == "local":
            return now, "time of detection (/proc/self/stat unreadable)"
        return boot, "boot time (/proc/stat btime)"
    return boot + ticks / system.clock_ticks, f"{what} (/proc/{pid}/stat)"


def _boot_time(proc_stat: str) -> float:
    """Parses ``btime`` (boot time, seconds since the epoch) from ``/proc/stat``."""
    for line in proc_stat.splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise ValueError("no btime line in /proc/stat")


def _start_ticks(pid_stat: str) -> int:
    """Parses field 22 (start time, clock ticks after boot) of ``/proc/<pid>/stat``.

    The command name (field 2) is in parentheses and may itself hold spaces or parentheses, so
    fields are counted from the last ``)``.
    """
    fields = pid_stat[pid_stat.rindex(")") + 1 :].split()
    return int(fields[19])


def _drive_mounted(system: SystemView) -> bool:
    in_table = drive_in_mount_table(COLAB_DRIVE_MOUNTPOINT, system.read_text)
    if in_table is False:
        return False
    return system.exists(str(COLAB_DRIVE_MOUNTPOINT / "MyDrive"))


def _durable_root(kind: Kind, drive_mounted: bool, system: SystemView) -> Path:
    if kind == "colab" and drive_mounted:
        return COLAB_DRIVE_MOUNTPOINT / "MyDrive" / "colabkit"
    if kind == "kaggle":
        return KAGGLE_DURABLE_ROOT
    return system.cwd() / "runs"


def _cache_root(kind: Kind, system: SystemView) -> Path:
    if kind == "colab":
        return COLAB_CACHE_ROOT
    xdg = system.environ.get("XDG_CACHE_HOME")
    cache = Path(xdg) if xdg else system.home() / ".cache"
    return cache / "colabkit"


def check_run_name(run_name: object) -> str:
    """Returns ``run_name`` if it can be one folder name everywhere (Drive, Linux, Windows).

    Raises:
        ConfigError: It is empty, has a path separator, starts with a dot, or is too long.
    """
    if not isinstance(run_name, str) or not _RUN_NAME.fullmatch(run_name):
        raise invalid_argument(
            "run_name",
            run_name,
            "a folder name of letters, digits, '.', '_' or '-' (at most 128, not starting "
            "with '.' or '-'), e.g. 'mnist-baseline'",
        )
    return run_name


def default_run_dir(run_name: str, env: Environment | None = None) -> Path:
    """The durable run directory for ``run_name`` (DESIGN.md, "Where things live").

    Colab with Drive mounted: ``/content/drive/MyDrive/colabkit/<run>``; Kaggle:
    ``/kaggle/working/colabkit/<run>``; elsewhere (including Colab without Drive, which is not
    durable): ``./runs/<run>``.
    """
    run_name = check_run_name(run_name)
    return (env or detect()).durable_root / run_name


def cache_dir_for(store_url: str, env: Environment | None = None) -> Path:
    """The fast local cache directory of the run whose checkpoints live at ``store_url``.

    ``<cache root>/<run>-<first 10 hex digits of sha256(store_url)>``: two runs of one name in
    different places never share a cache folder. The cache root is
    ``/content/colabkit-cache`` in Colab, elsewhere ``$XDG_CACHE_HOME/colabkit``, defaulting to
    ``~/.cache/colabkit``. Cache is never the only copy of anything.
    """
    tag = hashlib.sha256(store_url.encode()).hexdigest()[:10]
    name = Path(store_url.rstrip("/")).parent.name or "run"
    return (env or detect()).cache_root / f"{name}-{tag}"


def resolve_session_limit(session_limit: object, kind: Kind) -> float | None:
    """Seconds, or None for no limit; ``"auto"`` is 12 h in Colab and Kaggle, none elsewhere.

    Raises:
        ConfigError: ``session_limit`` is neither None, ``"auto"`` nor a duration.
    """
    if session_limit is None:
        return None
    if is_auto(session_limit):
        return parse_duration(DEFAULT_SESSION_LIMIT) if kind in _LIMITED_KINDS else None
    return parse_duration(session_limit, "session_limit")


def is_auto(session_limit: object) -> bool:
    """Whether ``session_limit`` is ``"auto"`` (in any case, spaces around ignored)."""
    return isinstance(session_limit, str) and session_limit.strip().lower() == AUTO


def check_session_limit(value: object, margin: object = SESSION_MARGIN) -> float:
    """``value`` as seconds, if it leaves time to train before the stop ``margin``.

    Raises:
        ConfigError: not a duration, or not longer than the margin (the run could only ever
            train one step per session).
    """
    limit = parse_duration(value, "session_limit")
    margin_s = parse_duration(margin, "margin")
    if limit <= margin_s:
        raise invalid_argument(
            "session_limit",
            value,
            f"a duration longer than the margin ({margin_s / 60:g} min) that colabkit keeps to "
            "save and upload before the limit",
        )
    return limit
