"""Drive mount, remount, retries, fallback, flush, and the health probe, on a fake google.colab."""

from __future__ import annotations

import dataclasses
import errno
import os
import sys
from pathlib import Path

import pytest
from fakes import fake_colab_drive, mount_table

from colabkit.clock import FakeClock
from colabkit.drive import OsFileOps, drive_health, flush_drive, mount_drive
from colabkit.env import SystemView, detect
from colabkit.errors import ConfigError, DriveError


@pytest.fixture
def colab_drive(monkeypatch):
    """The fake ``google.colab.drive``, imported the way a user imports the real one."""
    yield from fake_colab_drive(monkeypatch)


def environment(kind: str):
    markers = {"colab": {"/var/colab/hostname"}, "local": set()}[kind]
    return detect(system=SystemView(environ={}, exists=lambda p: p in markers))


COLAB = environment("colab")
LOCAL = environment("local")


def mount(colab_drive, mountpoint: Path, clock: FakeClock | None = None, **kwargs):
    return mount_drive(
        mountpoint,
        env=COLAB,
        colab_drive=colab_drive,
        listdir=colab_drive.listdir,
        clock=clock or FakeClock(),
        **kwargs,
    )


def test_first_mount_creates_my_drive_and_the_second_is_a_no_op(colab_drive, tmp_path):
    mountpoint = tmp_path / "drive"
    first = mount(colab_drive, mountpoint)
    assert first.status == "mounted" and first.my_drive == mountpoint / "MyDrive"
    assert first.my_drive.is_dir()
    assert colab_drive.calls == [
        dict(mountpoint=str(mountpoint), force_remount=False, timeout_ms=120000, readonly=False)
    ]
    (first.my_drive / "keep.txt").write_text("checkpoint")
    second = mount(colab_drive, mountpoint)
    assert second.status == "already-mounted" and second.attempts == 0
    assert len(colab_drive.calls) == 1
    assert (second.my_drive / "keep.txt").read_text() == "checkpoint"


def test_the_real_import_path_is_used_when_no_module_is_injected(colab_drive, tmp_path):
    result = mount_drive(tmp_path / "drive", env=COLAB, clock=FakeClock())
    assert result.mounted and colab_drive.calls  # imported google.colab.drive, the fake one


def test_a_stale_mount_is_remounted_with_force_remount(colab_drive, tmp_path):
    mountpoint = tmp_path / "drive"
    mount(colab_drive, mountpoint)
    (mountpoint / "MyDrive" / "ckpt.zip").write_bytes(b"weights")
    colab_drive.make_stale(mountpoint)
    with pytest.raises(OSError) as stale:
        colab_drive.listdir(str(mountpoint / "MyDrive"))
    assert stale.value.errno == errno.ENOTCONN
    result = mount(colab_drive, mountpoint)
    assert result.status == "remounted"
    assert colab_drive.calls[-1]["force_remount"] is True
    assert colab_drive.listdir(str(mountpoint / "MyDrive")) == ["ckpt.zip"]


def test_a_timeout_is_retried_with_backoff_then_mounts(colab_drive, tmp_path):
    clock = FakeClock()
    colab_drive.fail_next(colab_drive.TIMEOUT, times=2)
    result = mount(colab_drive, tmp_path / "drive", clock)
    assert result.status == "mounted" and result.attempts == 3
    assert clock.sleeps == [5.0, 10.0]
    assert [c["force_remount"] for c in colab_drive.calls] == [False, True, True]


def test_repeated_timeouts_end_in_one_clear_error(colab_drive, tmp_path):
    clock = FakeClock()
    colab_drive.fail_next(ValueError("mount failed"), times=3)
    with pytest.raises(DriveError) as raised:
        mount(colab_drive, tmp_path / "drive", clock, attempts=3, backoff_s=2)
    message = str(raised.value)
    assert "after 3 attempt(s)" in message and "last error: mount failed" in message
    assert "consent dialog was not answered" in message and "Drive outage" in message
    assert "drive=False" in message
    assert clock.sleeps == [2, 4]
    assert isinstance(raised.value, OSError)  # DriveError is an OSError for existing handlers


def test_a_refusal_is_not_retried(colab_drive, tmp_path):
    mountpoint = tmp_path / "drive"
    mountpoint.mkdir()
    (mountpoint / "notes.txt").write_text("mine")
    clock = FakeClock()
    with pytest.raises(DriveError, match="already contain files.*Fix: mount into an empty folder"):
        mount(colab_drive, mountpoint, clock)
    assert len(colab_drive.calls) == 1 and clock.sleeps == []
    assert (mountpoint / "notes.txt").read_text() == "mine"


def test_outside_colab_mounting_falls_back_without_crashing(colab_drive, tmp_path):
    result = mount_drive(tmp_path / "drive", env=LOCAL, colab_drive=colab_drive)
    assert result.status == "not-colab" and not result.mounted
    assert "local folder" in result.message and "DriveApiStore" in result.message
    assert colab_drive.calls == [] and not (tmp_path / "drive").exists()


def test_colab_without_google_colab_importable_falls_back(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "google.colab", None)  # makes the import fail
    result = mount_drive(tmp_path / "drive", env=COLAB)
    assert result.status == "not-colab" and "google.colab is not importable" in result.message


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"mountpoint": "/content/my drive"}, "mountpoint"),
        ({"timeout_ms": 0}, "timeout_ms"),
        ({"attempts": 0}, "attempts"),
        ({"backoff_s": -1}, "backoff_s"),
    ],
)
def test_bad_mount_arguments(colab_drive, kwargs, name):
    with pytest.raises(ConfigError, match=f"argument `{name}`"):
        mount_drive(env=COLAB, colab_drive=colab_drive, **kwargs)
    assert colab_drive.calls == []


def test_flush_unmounts_and_a_new_mount_brings_the_files_back(colab_drive, tmp_path):
    mountpoint = tmp_path / "drive"
    mount(colab_drive, mountpoint)
    (mountpoint / "MyDrive" / "ckpt.zip").write_bytes(b"weights")
    env = dataclasses.replace(COLAB, drive_mountpoint=mountpoint)
    assert flush_drive(env=env, colab_drive=colab_drive) is True
    assert colab_drive.flushes and not (mountpoint / "MyDrive").exists()  # it unmounted
    mount(colab_drive, mountpoint)
    assert (mountpoint / "MyDrive" / "ckpt.zip").read_bytes() == b"weights"


def test_flush_outside_colab_is_a_no_op_and_a_failed_flush_raises(
    colab_drive, tmp_path, monkeypatch
):
    assert flush_drive(env=LOCAL, colab_drive=colab_drive) is False

    class Broken:
        listdir = staticmethod(os.listdir)

        def flush_and_unmount(self, timeout_ms):
            raise ValueError("flush_and_unmount failed")

    (tmp_path / "drive" / "MyDrive").mkdir(parents=True)
    mount_table(monkeypatch, tmp_path, tmp_path / "drive")  # mounted
    env = dataclasses.replace(COLAB, drive_mountpoint=tmp_path / "drive")
    with pytest.raises(DriveError, match="recent writes may not have reached Drive"):
        flush_drive(env=env, colab_drive=Broken())


def test_flush_says_when_drive_is_not_mounted_and_flushes_nothing(colab_drive, tmp_path, caplog):
    env = dataclasses.replace(COLAB, drive_mountpoint=tmp_path / "drive")
    with caplog.at_level("INFO", logger="colabkit"):
        assert flush_drive(env=env, colab_drive=colab_drive) is False
    assert colab_drive.flushes == [] and "not mounted" in caplog.text
    assert "flushed" not in caplog.text.replace("nothing to flush", "")


def test_health_probe_on_a_real_folder_leaves_nothing_behind(tmp_path):
    health = drive_health(tmp_path)
    assert health.ok and health.status == "ok"
    assert list(tmp_path.iterdir()) == []
    health.raise_for_status()


def test_health_of_a_missing_folder(tmp_path):
    health = drive_health(tmp_path / "not-there")
    assert (health.status, health.errno) == ("missing", errno.ENOENT)
    assert "mount_drive()" in health.fix


@dataclasses.dataclass
class FailingFiles(OsFileOps):
    """Real files, except that one operation fails with ``error``."""

    error: int
    on: str = "write"

    def write(self, path, data):
        self._maybe_fail("write")
        super().write(path, data)

    def read(self, path):
        self._maybe_fail("read")
        return super().read(path)

    def _maybe_fail(self, operation):
        if operation == self.on:
            raise OSError(self.error, f"simulated {errno.errorcode[self.error]}")


@pytest.mark.parametrize(
    ("code", "status", "fix"),
    [
        (errno.ENOTCONN, "stale", "force_remount=True"),
        (errno.EIO, "io-error", "drive.google.com/settings/storage"),
        (errno.ENOSPC, "no-space", "Free space on Google Drive"),
        (errno.EDQUOT, "no-space", "Free space on Google Drive"),
        (errno.EACCES, "permission", "readonly=False"),
        (errno.EROFS, "permission", "readonly=False"),
    ],
)
def test_health_classifies_os_errors_with_a_fix(tmp_path, code, status, fix):
    health = drive_health(tmp_path, files=FailingFiles(code))
    assert (health.status, health.errno) == (status, code)
    assert fix in health.fix
    with pytest.raises(DriveError, match="Fix: "):
        health.raise_for_status()


def test_a_failed_read_back_still_removes_the_probe(tmp_path):
    health = drive_health(tmp_path, files=FailingFiles(errno.EIO, on="read"))
    assert health.status == "io-error"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fails", [False, True])
def test_the_flush_at_the_session_limit_is_bounded_by_the_time_left(monkeypatch, caplog, fails):
    """Colab's flush waits 24 h by default; at the limit it gets what is left before colabkit's
    last words, and a failed flush is a warning naming what may be missing."""
    from colabkit import drive
    from colabkit.training.deadline import FINAL_WORDS_S, SessionDeadline

    clock = FakeClock(start=10_000.0)
    deadline = SessionDeadline(
        "15m", session_limit="1h", session_start=10_000.0 - 2700, clock=clock
    )
    asked = []

    def flush(*, timeout_ms):
        asked.append(timeout_ms)
        if fails:
            raise DriveError("flush_and_unmount failed")
        return True

    monkeypatch.setattr(drive, "flush_drive", flush)
    with caplog.at_level("WARNING", logger="colabkit"):
        deadline.after_save(durable=True)
    assert asked == [int((15 * 60 - FINAL_WORDS_S) * 1000)]  # 14 minutes, not 24 hours
    assert ("may exist only in this VM's Drive cache" in caplog.text) is fails


@pytest.mark.parametrize(
    ("prepare", "error", "fix"),
    [
        ("symlink", None, "mount at a real folder, not the symlink"),
        ("file", None, "is a file: mount somewhere else"),
        ("no-parent", None, "create"),
        (None, ValueError("The domain policy has disabled Drive File Stream: x"), "Workspace"),
        (None, "MessageError", "declined: run again and allow it"),
    ],
    ids=["symlink", "a-file", "missing-parent", "domain-policy", "consent-declined"],
)
def test_each_refusal_of_the_mount_is_one_line_with_its_own_fix_and_no_retry(
    colab_drive, tmp_path, prepare, error, fix
):
    """colabtools' refusals, by its words: another attempt cannot help, a fix can."""
    mountpoint = tmp_path / "drive"
    if prepare == "symlink":
        (tmp_path / "elsewhere").mkdir()
        mountpoint.symlink_to(tmp_path / "elsewhere")
    elif prepare == "file":
        mountpoint.write_text("x")
    elif prepare == "no-parent":
        mountpoint = tmp_path / "missing" / "drive"
    if error == "MessageError":
        error = type("MessageError", (Exception,), {})(
            "Error: credential propagation was unsuccessful"
        )
    if error is not None:
        colab_drive.fail_next(error)
    clock = FakeClock()
    with pytest.raises(DriveError) as raised:
        mount(colab_drive, mountpoint, clock)
    assert fix in str(raised.value) and "\n" not in str(raised.value)
    assert clock.sleeps == [] and len(colab_drive.calls) == 1


def test_a_runtime_without_drive_mount_falls_back_to_local_disk_with_one_line(
    colab_drive, tmp_path, caplog
):
    """drive.mount raises NotImplementedError where the runtime has no Drive (Colab Enterprise):
    setup() runs on a local folder and says why, instead of failing."""
    import colabkit

    colab_drive.fail_next(NotImplementedError())
    env = dataclasses.replace(COLAB, drive_mountpoint=tmp_path / "drive",
                              durable_root=tmp_path / "runs")  # fmt: skip
    with caplog.at_level("WARNING", logger="colabkit"):
        session = colabkit.setup("r", environment=env, colab_drive=colab_drive, show=False,
                                 accelerator=_no_accelerator(), clock=FakeClock())  # fmt: skip
    assert session.run_dir == tmp_path / "runs" / "r" and session.run_dir.is_dir()
    assert "does not support drive.mount" in caplog.text and "lost with the VM" in caplog.text


def _no_accelerator():
    from colabkit.gpu import GpuQuery, accelerator_report
    from colabkit.tpu import TpuInfo

    return accelerator_report(
        frameworks=[], environ={}, gpu_query=lambda: GpuQuery((), "none"),
        framework_check=lambda names: (), tpu_probe=lambda environ: TpuInfo(False),
    )  # fmt: skip


def test_mounted_is_read_from_the_mount_table_not_from_leftover_files(colab_drive, tmp_path):
    """After a flush (an unmount) a late write lands on local disk under the mountpoint. It must
    not pass for a mount: colabtools' mount then refuses the non-empty folder, and colabkit's
    own checks read the mount table as colabtools does."""
    mountpoint = tmp_path / "drive"
    mount(colab_drive, mountpoint)
    env = dataclasses.replace(COLAB, drive_mountpoint=mountpoint)
    assert flush_drive(env=env, colab_drive=colab_drive) is True
    (mountpoint / "MyDrive" / "late").mkdir(parents=True)  # e.g. a ModelCheckpoint after it
    assert flush_drive(env=env, colab_drive=colab_drive) is False  # nothing is mounted
    with pytest.raises(DriveError, match="must not already contain files.*Fix: mount into an"):
        mount(colab_drive, mountpoint)


def test_nothing_is_written_under_the_mountpoint_while_drive_is_not_mounted(
    colab_drive, tmp_path, monkeypatch
):
    import colabkit.env
    from colabkit.storage import LocalStore

    mountpoint = tmp_path / "drive"
    monkeypatch.setattr(colabkit.env, "COLAB_DRIVE_MOUNTPOINT", mountpoint)
    store = LocalStore(mountpoint / "MyDrive" / "colabkit" / "run" / "checkpoints")
    (tmp_path / "ckpt").write_bytes(b"weights")
    for call in (lambda: store.put(tmp_path / "ckpt", "ckpt"), store.list):
        with pytest.raises(OSError, match=r"^Google Drive is not mounted at .*Mount it first"):
            call()
    assert not mountpoint.exists()  # nothing was created on local disk under it
    mount(colab_drive, mountpoint)
    store.put(tmp_path / "ckpt", "ckpt")
    assert [o.name for o in store.list()] == ["ckpt"]
    elsewhere = LocalStore(tmp_path / "runs" / "run")  # outside the mountpoint: never refused
    elsewhere.put(tmp_path / "ckpt", "ckpt")


def test_an_unanswered_consent_dialog_is_asked_again_then_said_in_one_line(colab_drive, tmp_path):
    """Nobody answers: colabtools does not raise at the dialog; the mount then runs out of time
    in pexpect. Each retry shows the dialog again; in the end the error names the dialog."""
    clock = FakeClock()
    colab_drive.answer_consent("ignore", "allow")
    result = mount(colab_drive, tmp_path / "drive", clock)
    assert result.status == "mounted" and result.attempts == 2 and clock.sleeps == [5.0]
    colab_drive.reset()
    colab_drive.answer_consent("ignore", "ignore", "ignore")
    with pytest.raises(DriveError) as raised:
        mount(colab_drive, tmp_path / "other", FakeClock())
    message = str(raised.value)
    assert "last error: Timeout exceeded" in message
    assert "consent dialog was not answered" in message and "\n" not in message
    assert len(colab_drive.calls) == 3 and not (tmp_path / "other" / "MyDrive").exists()


def test_a_declined_consent_is_not_retried_and_touches_nothing(colab_drive, tmp_path):
    """colabtools asks before it unmounts anything: a stale mount declined stays as it was."""
    mountpoint = tmp_path / "drive"
    mount(colab_drive, mountpoint)
    (mountpoint / "MyDrive" / "ckpt").write_bytes(b"weights")
    colab_drive.make_stale(mountpoint)
    colab_drive.answer_consent("decline")
    clock = FakeClock()
    with pytest.raises(DriveError, match="declined: run again and allow it") as raised:
        mount(colab_drive, mountpoint, clock)
    assert "\n" not in str(raised.value) and clock.sleeps == []
    assert mount(colab_drive, mountpoint).status == "remounted"  # allowed this time
    assert (mountpoint / "MyDrive" / "ckpt").read_bytes() == b"weights"
