"""``colabkit.setup()``: one call at the top of a notebook before training.

It detects where it runs, checks the accelerator, mounts Drive in Colab, picks and creates the run
and cache directories, and shows one summary. Everything that can fail for a user-fixable
reason fails here, before any training starts: arguments first, then the GPU (before the Drive
consent dialog, so a CPU runtime is caught without clicking through it), then Drive.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from colabkit.clock import SYSTEM_CLOCK, Clock
from colabkit.drive import MountResult, mount_drive
from colabkit.env import (
    AUTO,
    Environment,
    cache_dir_for,
    check_run_name,
    detect,
    resolve_session_limit,
)
from colabkit.errors import DriveError, invalid_argument
from colabkit.findings import Finding
from colabkit.gpu import FRAMEWORKS, AcceleratorReport, accelerator_report
from colabkit.gpu import require_gpu as _require_gpu
from colabkit.staging import data_finding
from colabkit.storage.local import LocalStore
from colabkit.summary import render_html, render_text, summary_rows
from colabkit.validate import renamed_attribute

logger = logging.getLogger(__name__)

DEFAULT_RUN_NAME = "default"
Mounter = Callable[[Environment], MountResult]
_DRIVE_EXPECTED = "'auto', True, False, or a folder path (str or os.PathLike)"


@dataclass(frozen=True)
class Session:
    """What ``setup()`` found and prepared; pass ``run_dir`` to ``colabkit.fit``.

    Attributes:
        run_name: The run's name (its folder name).
        environment: Where this runs and the session clock.
        accelerator: GPUs, what Keras' backend sees, TPU, with findings.
        run_dir: Durable run directory (checkpoints and outputs), created.
        cache_dir: Fast local cache directory, created (lost with the VM).
        drive: What mounting Drive did, or None when Drive was not involved.
        data: The training data's paths given to ``setup`` (judged for the Drive mount).
    """

    run_name: str
    environment: Environment
    accelerator: AcceleratorReport
    run_dir: Path
    cache_dir: Path
    drive: MountResult | None
    data: tuple[str, ...] = ()

    staging_dir = renamed_attribute("staging_dir", "cache_dir")

    @property
    def findings(self) -> tuple[Finding, ...]:
        """The accelerator's findings, and where the training data is read from."""
        data = data_finding(self.data)
        return (*self.accelerator.findings, *([data] if data else []))

    @property
    def deadline(self) -> float | None:
        """Seconds since the epoch when the session limit is reached (None: no limit)."""
        return self.environment.deadline

    def summary_rows(self) -> list[tuple[str, str]]:
        rows = summary_rows(self.environment, self.accelerator, self.environment.detected_at)
        drive = "not used" if self.drive is None else self.drive.status
        rows += [("Drive", drive), ("Run dir", str(self.run_dir))]
        return [*rows, ("Cache", f"{self.cache_dir} (local, lost with the VM)")]

    def summary_text(self) -> str:
        """The summary as plain text."""
        return render_text(self.summary_rows(), self.findings)

    def _repr_html_(self) -> str:
        """The summary as an HTML table (Jupyter and Colab call this)."""
        return render_html(self.summary_rows(), self.findings)


def setup(
    run_name: str | None = None,
    *,
    drive: str | bool | os.PathLike[str] = "auto",
    require_gpu: bool = False,
    session_limit: str | float | None = AUTO,
    show: bool = True,
    environment: Environment | None = None,
    accelerator: AcceleratorReport | None = None,
    colab_drive: Any = None,
    clock: Clock = SYSTEM_CLOCK,
    data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] = (),
) -> Session:
    """Prepares a training session and shows one summary.

    Args:
        run_name: Folder name of the run; re-running with the same name resumes it
            (default ``"default"``).
        drive: ``"auto"`` mounts Drive in Colab and uses a local folder elsewhere; ``True``
            requires Drive (Colab only); ``False`` never mounts (in Colab the run is then lost
            with the VM); a path puts the run under that folder (mounting Drive first when the
            path is on the Colab mount).
        require_gpu: Raise, with the fix, unless Keras' backend can use a GPU.
        session_limit: Session length to count time left against (``"12h"`` free Colab,
            ``"24h"`` paid), None for no limit, or ``"auto"``: 12 h in Colab and Kaggle, none
            elsewhere.
        show: Show the summary (HTML in a notebook, text in a terminal).
        environment: A detected environment (tests; detected when None).
        accelerator: An accelerator report (tests; built when None, asking only Keras'
            backend, in a subprocess).
        colab_drive: The ``google.colab.drive`` module (tests; imported when None).
        clock: Waits between Drive mount attempts (tests pass a fake clock).
        data: Where the training data is (a path or several): read through the Drive mount,
            the summary says so, with the fix (``colabkit.stage``).

    Raises:
        ConfigError: A bad argument (nothing is created).
        AcceleratorError: ``require_gpu`` and no usable GPU.
        DriveError: Drive was required or expected in Colab and could not be mounted.
    """
    name = check_run_name(DEFAULT_RUN_NAME if run_name is None else run_name)
    _check_drive_arg(drive)
    if not isinstance(require_gpu, bool):
        raise invalid_argument("require_gpu", require_gpu, "True or False")
    env = environment or detect(session_limit=session_limit)  # a bad value fails here or below
    env = dataclasses.replace(env, session_limit_s=resolve_session_limit(session_limit, env.kind))
    accel = accelerator or accelerator_report(frameworks=_backend_only())
    if require_gpu:
        _require_gpu(accel)
    env, mount, root = _durable_root(
        env,
        drive,
        lambda e: mount_drive(e.drive_mountpoint, env=e, colab_drive=colab_drive, clock=clock),
    )
    run_dir = root / name
    # The folder colabkit.fit(run_dir=session.run_dir) will stage in (its checkpoints' store).
    cache = cache_dir_for(LocalStore(run_dir / "checkpoints").url, env)
    paths = (data,) if isinstance(data, (str, os.PathLike)) else tuple(data)
    session = Session(name, env, accel, run_dir, cache, mount, tuple(map(os.fspath, paths)))
    _create_dirs(session)
    logger.info("colabkit session %r: run dir %s", name, session.run_dir)
    if show:
        _show(session)
    return session


def _check_drive_arg(drive: object) -> None:
    if isinstance(drive, (bool, os.PathLike)) or (isinstance(drive, str) and drive.strip()):
        return
    raise invalid_argument("drive", drive, _DRIVE_EXPECTED)


def _backend_only() -> tuple[str, ...]:
    backend = os.environ.get("KERAS_BACKEND", "tensorflow") or "tensorflow"
    return (backend,) if backend in FRAMEWORKS else ()


def _durable_root(
    env: Environment, drive: str | bool | os.PathLike[str], mounter: Mounter
) -> tuple[Environment, MountResult | None, Path]:
    """Mounts Drive where asked; returns the (updated) environment, the mount, the run root."""
    local_root = env.durable_root if not env.drive_mounted else Path.cwd() / "runs"
    if drive is False:
        return env, None, local_root
    if isinstance(drive, (str, os.PathLike)) and drive != "auto":
        path = Path(os.fspath(drive)).expanduser()
        on_mount = env.kind == "colab" and path.is_relative_to(env.drive_mountpoint)
        if not on_mount:
            return env, None, path
        env, mount = _mount(env, mounter, fall_back=False)
        return env, mount, path
    if env.kind != "colab":
        if drive is True:
            expected = "'auto', False or a folder path outside Colab (Drive mounts only in Colab)"
            raise invalid_argument("drive", drive, expected)
        return env, None, env.durable_root
    env, mount = _mount(env, mounter, fall_back=drive == "auto")
    return env, mount, env.durable_root if mount.mounted else local_root


def _mount(
    env: Environment, mounter: Mounter, *, fall_back: bool
) -> tuple[Environment, MountResult]:
    mount = mounter(env)
    if mount.my_drive is not None:
        root = mount.my_drive / "colabkit"
        return dataclasses.replace(env, drive_mounted=True, durable_root=root), mount
    if fall_back:
        logger.warning("Using local disk, lost with the VM: %s", mount.message)
        return env, mount
    raise DriveError(f"{mount.message} Fix: run in Colab, or pass drive=False.")


def _create_dirs(session: Session) -> None:
    for folder in (session.run_dir, session.cache_dir):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DriveError(
                f"Cannot create {folder} ({e}). Fix: check that the path is writable "
                "(`colabkit doctor` checks the Drive mount), or choose another with drive=PATH."
            ) from e


def _show(session: Session) -> None:
    """HTML in a notebook kernel, plain text elsewhere (IPython is never imported here)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None and getattr(shell, "kernel", None) is not None:
        from IPython.display import HTML, display

        display(HTML(session._repr_html_()))
    else:
        print(session.summary_text())
