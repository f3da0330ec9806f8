"""``colabkit doctor``: the environment, accelerator, Drive and session-time report.

The JSON form is a documented interface (docs/doctor.md) checked against :data:`DOCTOR_SCHEMA`
by :func:`validate`, a small dependency-free validator for the JSON Schema subset used here.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from colabkit import __version__
from colabkit.drive import DriveHealth, drive_health, mount_state
from colabkit.duration import format_duration, format_size
from colabkit.env import AUTO, Environment, detect
from colabkit.errors import invalid_argument
from colabkit.findings import Finding
from colabkit.frameworks import FRAMEWORKS, FrameworkView
from colabkit.gpu import AcceleratorReport, accelerator_report
from colabkit.schema import DOCTOR_SCHEMA, SCHEMA_VERSION, validate
from colabkit.staging import data_finding
from colabkit.storage.base import Space, disk_space
from colabkit.summary import render_html, render_text, summary_rows

__all__ = ["DOCTOR_SCHEMA", "DoctorReport", "DriveStatus", "diagnose", "validate"]

LOW_TIME_LEFT_S = 3600.0
#: Below this much free on Drive, doctor warns: a few checkpoints of a small model, or not one
#: of a big one (and the trash, which counts, may hold what a run deleted).
LOW_DRIVE_SPACE = 1_000_000_000
DriveState = Literal["not-colab", "not-mounted", "healthy", "stale", "unhealthy"]


@dataclass(frozen=True)
class DriveStatus:
    """The Drive mount as doctor found it (doctor never mounts)."""

    mountpoint: Path
    status: DriveState
    finding: Finding | None = None
    space: Space | None = None  # the mount's figures (Drive's quota), where it is healthy


@dataclass(frozen=True)
class DoctorReport:
    """Everything ``colabkit doctor`` reports."""

    environment: Environment
    accelerator: AcceleratorReport
    drive: DriveStatus
    checked_at: float
    data: tuple[str, ...] = ()

    @property
    def findings(self) -> tuple[Finding, ...]:
        """All findings, most severe first."""
        data = data_finding(self.data)
        extra = [f for f in (self.drive.finding, _time_finding(self), data) if f is not None]
        order = {"error": 0, "warning": 1, "info": 2}
        return tuple(sorted([*self.accelerator.findings, *extra], key=lambda f: order[f.severity]))

    @property
    def ok(self) -> bool:
        """No error findings (a missing GPU alone is a warning: training still works)."""
        return not any(f.severity == "error" for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        """The documented JSON form (docs/doctor.md); validates against DOCTOR_SCHEMA."""
        env = self.environment
        environment = {
            "kind": env.kind,
            "evidence": list(env.evidence),
            "session_start": env.session_start,
            "session_start_source": env.session_start_source,
            "session_limit_s": env.session_limit_s,
            "time_left_s": env.time_left(self.checked_at),
            "drive_mounted": env.drive_mounted,
            "durable_root": str(env.durable_root),
            "cache_root": str(env.cache_root),
            "staging_root": str(env.cache_root),  # deprecated: the old name of cache_root
        }
        accel = self.accelerator
        space = self.drive.space
        return {
            "schema_version": SCHEMA_VERSION,
            "colabkit_version": __version__,
            "checked_at": self.checked_at,
            "ok": self.ok,
            "environment": environment,
            "accelerator": {
                "gpu_source": accel.gpu_source,
                "keras_backend": accel.keras_backend,
                "gpus": [dataclasses.asdict(g) for g in accel.gpus],
                "frameworks": [_framework_json(v) for v in accel.frameworks],
                "tpu": {
                    "present": accel.tpu.present,
                    "runtime": accel.tpu.runtime,
                    "evidence": list(accel.tpu.evidence),
                },
            },
            "drive": {
                "mountpoint": str(self.drive.mountpoint),
                "status": self.drive.status,
                "free_bytes": space.free if space else None,
                "total_bytes": space.total if space else None,
            },
            "findings": [dataclasses.asdict(f) for f in self.findings],
        }

    def text(self) -> str:
        """The report as plain text for a terminal."""
        return render_text(self._rows(), self.findings)

    def html(self) -> str:
        """The report as an HTML table for a notebook."""
        return render_html(self._rows(), self.findings)

    def _rows(self) -> list[tuple[str, str]]:
        rows = summary_rows(self.environment, self.accelerator, self.checked_at)
        rows.append(("Drive", f"{self.drive.status} ({self.drive.mountpoint})"))
        if self.drive.space is not None and self.drive.space.free is not None:
            of = f" of {format_size(self.drive.space.total)}" if self.drive.space.total else ""
            rows.append(("Drive space", f"{format_size(self.drive.space.free)} free{of}"))
        return rows


def _framework_json(view: FrameworkView) -> dict[str, Any]:
    data = dataclasses.asdict(view)
    data["devices"] = list(view.devices)
    return data


def _time_finding(report: DoctorReport) -> Finding | None:
    left = report.environment.time_left(report.checked_at)
    if left is None or left >= LOW_TIME_LEFT_S:
        return None
    return Finding(
        "warning",
        "session-ending",
        f"About {format_duration(left)} left before the session limit (estimate)",
        "Let colabkit save and stop now; after the disconnect, run the notebook again to resume.",
    )


def check_drive(
    env: Environment,
    *,
    listdir: Callable[[str], list[str]] = os.listdir,
    health: Callable[[Path], DriveHealth] = drive_health,
) -> DriveStatus:
    """Looks at the Drive mount without mounting it; probes a write where it is mounted."""
    mountpoint = env.drive_mountpoint
    if env.kind != "colab":
        return DriveStatus(mountpoint, "not-colab")
    state = mount_state(mountpoint, listdir)
    if state == "absent":
        fix = "colabkit.setup() mounts it (it asks for consent once per VM)."
        note = Finding("info", "drive-not-mounted", f"Drive is not mounted at {mountpoint}", fix)
        return DriveStatus(mountpoint, "not-mounted", note)
    if state == "stale":
        return DriveStatus(mountpoint, "stale", _drive_error("drive-stale", mountpoint, None))
    result = health(mountpoint / "MyDrive")
    if result.ok:
        space = _mount_space(mountpoint / "MyDrive")
        return DriveStatus(mountpoint, "healthy", _space_finding(space), space)
    return DriveStatus(mountpoint, "unhealthy", _drive_error("drive-unhealthy", mountpoint, result))


def _mount_space(my_drive: Path) -> Space | None:
    """The mount's filesystem figures: Drive's client fills them with the account's quota
    (what ``df /content/drive`` shows); the trash is counted in, not told apart."""
    try:
        space = disk_space(my_drive, "the Drive mount's figures")
    except OSError:
        return None
    return space if space.total else None


def _space_finding(space: Space | None) -> Finding | None:
    if space is None or space.free is None or space.free >= LOW_DRIVE_SPACE:
        return None
    return Finding(
        "warning",
        "drive-space-low",
        f"Google Drive has {format_size(space.free)} free of {format_size(space.total or 0)}: "
        "a run needs room for keep + 1 checkpoints there",
        "Empty Drive's trash (https://drive.google.com/drive/trash: deleted files count for "
        "30 days), delete other files, or train with a smaller keep.",
    )


def _drive_error(code: str, mountpoint: Path, result: DriveHealth | None) -> Finding:
    if result is None:
        message = f"The Drive mount at {mountpoint} is stale (Transport endpoint is not connected)"
        fix = "colabkit.setup() or colabkit.drive.mount_drive() remounts it."
        return Finding("error", code, message, fix)
    return Finding("error", code, result.message, result.fix)


def diagnose(
    *,
    session_limit: str | float | None = AUTO,
    environment: Environment | None = None,
    accelerator: AcceleratorReport | None = None,
    drive: DriveStatus | None = None,
    environ: Mapping[str, str] | None = None,
    frameworks: str | Iterable[str] = FRAMEWORKS,
    data: Iterable[str | os.PathLike[str]] = (),
) -> DoctorReport:
    """Runs every check (frameworks in subprocesses) and returns the report.

    Args:
        session_limit: The session limit to count time left against: a duration, None, or
            ``"auto"`` (12 h in Colab and Kaggle, none elsewhere).
        environment: A detected environment (detected when None).
        accelerator: An accelerator report (built when None; this asks every framework).
        drive: A Drive status (checked when None).
        environ: Environment variables for the accelerator report.
        frameworks: Which frameworks to ask: names, or a comma-separated string where
            ``"none"`` (or ``""``) asks none.
        data: Paths of the training data, to say whether they are read through the Drive
            mount (and how to stage them instead).

    Raises:
        ConfigError: A bad ``session_limit`` or an unknown framework name.
    """
    names = parse_frameworks(frameworks)
    env = environment or detect(session_limit=session_limit)
    accel = accelerator or accelerator_report(frameworks=names, environ=environ)
    status = drive or check_drive(env)
    paths = tuple(os.fspath(p) for p in data)
    return DoctorReport(env, accel, status, env.detected_at, paths)


def parse_frameworks(frameworks: str | Iterable[str]) -> tuple[str, ...]:
    """Framework names from ``"tensorflow,jax"`` or a list; ``"none"`` means none."""
    if isinstance(frameworks, str):
        text = frameworks.strip().lower()
        parts = [] if text in ("", "none") else [p.strip() for p in text.split(",")]
    else:
        parts = list(frameworks)
    if any(p not in FRAMEWORKS for p in parts):
        expected = "a comma-separated subset of tensorflow,jax,torch, or 'none'"
        raise invalid_argument("frameworks", frameworks, expected)
    return tuple(dict.fromkeys(parts))


def schema_errors(document: Any) -> list[str]:
    """Where ``document`` breaks :data:`DOCTOR_SCHEMA` (empty when it is valid)."""
    return validate(document, DOCTOR_SCHEMA)
