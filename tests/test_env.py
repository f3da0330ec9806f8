"""Environment detection, session clock, default directories and durations."""

from __future__ import annotations

from pathlib import Path

import pytest

from colabkit.clock import FakeClock
from colabkit.duration import format_duration, format_size, parse_duration
from colabkit.env import (
    SystemView,
    cache_dir_for,
    default_run_dir,
    detect,
    mount_type,
)
from colabkit.errors import ConfigError

BOOT = 1_700_000_000  # btime in /proc/stat
PID1_STAT = "1 (docker-init) S 0 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 3000 1 2 3"


def machine(
    *,
    files: dict[str, str] | None = None,
    exists: set[str] = frozenset(),
    environ: dict[str, str] | None = None,
    now: float = BOOT + 3600,
    tmp: Path = Path("/nonexistent"),
) -> SystemView:
    """A machine described by its files, marker paths, variables and clock."""
    files = files or {}

    def read_text(path: str) -> str:
        if path not in files:
            raise FileNotFoundError(path)
        return files[path]

    return SystemView(
        environ=environ or {},
        exists=lambda path: path in exists or path in files,
        read_text=read_text,
        clock=FakeClock(start=now),
        cwd=lambda: tmp / "work",
        home=lambda: tmp / "home",
        clock_ticks=100,
    )


PROC = {"/proc/stat": f"cpu  1 2 3\nbtime {BOOT}\nprocesses 9\n", "/proc/1/stat": PID1_STAT}


def test_colab_is_detected_from_its_marker_file_and_runtime_start_from_pid_1():
    env = detect(system=machine(files={**PROC, "/var/colab/hostname": "colab-vm"}))
    assert env.kind == "colab"
    assert "/var/colab/hostname exists" in env.evidence
    assert env.session_start == BOOT + 30  # 3000 ticks of 1/100 s after boot
    assert "/proc/1/stat" in env.session_start_source
    assert env.session_limit_s == 12 * 3600
    assert env.time_left(BOOT + 30 + 3600) == 11 * 3600


def test_kaggle_sets_colab_release_tag_too_but_is_reported_as_kaggle():
    environ = {"COLAB_RELEASE_TAG": "release-colab_20250101", "KAGGLE_KERNEL_RUN_TYPE": "Batch"}
    env = detect(system=machine(files=PROC, exists={"/kaggle"}, environ=environ))
    assert env.kind == "kaggle"
    assert "KAGGLE_KERNEL_RUN_TYPE=Batch" in env.evidence
    assert default_run_dir("exp1", env) == Path("/kaggle/working/colabkit/exp1")
    assert env.session_limit_s == 12 * 3600  # Kaggle's GPU sessions end after 12 h too


def test_colab_release_tag_alone_means_colab():
    env = detect(system=machine(environ={"COLAB_RELEASE_TAG": "release-colab_20250101"}))
    assert env.kind == "colab"


def test_local_session_is_this_process_not_the_machine_boot(tmp_path):
    self_stat = "4242 (python (3.11)) R 1 2 3 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 360000 1 2"
    files = {"/proc/stat": f"btime {BOOT}\n", "/proc/self/stat": self_stat, **{}}
    env = detect(system=machine(files=files, tmp=tmp_path))
    assert env.kind == "local"
    assert env.session_start == BOOT + 3600  # parsed past the ')' inside the command name
    assert env.session_start_source.startswith("process start")
    assert default_run_dir("exp1", env) == tmp_path / "work" / "runs" / "exp1"
    cache = cache_dir_for("file:///work/runs/exp1/checkpoints", env)
    assert cache.parent == tmp_path / "home" / ".cache" / "colabkit"
    assert cache.name.startswith("exp1-")


def test_session_start_falls_back_to_boot_time_then_to_now():
    colab = {"/var/colab/hostname"}
    boot_only = detect(system=machine(files={"/proc/stat": f"btime {BOOT}\n"}, exists=colab))
    assert boot_only.session_start == BOOT
    assert "btime" in boot_only.session_start_source
    nothing = detect(system=machine(exists=colab, now=BOOT + 99))
    assert nothing.session_start == BOOT + 99
    assert "unreadable" in nothing.session_start_source


def test_time_left_counts_down_with_the_clock_and_goes_negative_past_the_limit():
    env = detect(session_limit="24h", system=machine(files=PROC, exists={"/var/colab/hostname"}))
    assert env.deadline == BOOT + 30 + 24 * 3600
    assert env.time_left(BOOT + 30) == 24 * 3600
    assert env.time_left(BOOT + 30 + 25 * 3600) == -3600
    assert env.elapsed(BOOT + 90) == 60


def test_a_local_process_has_no_session_limit_unless_one_is_given():
    assert detect(system=machine(files=PROC)).session_limit_s is None  # "auto"
    assert detect(session_limit="AUTO", system=machine(files=PROC)).session_limit_s is None
    assert detect(session_limit="2h", system=machine(files=PROC)).session_limit_s == 7200


def test_no_session_limit():
    env = detect(session_limit=None, system=machine(files=PROC))
    assert env.deadline is None and env.time_left(BOOT) is None


@pytest.mark.parametrize("bad", ["0", "-1h", "12 hours", "", True, "nan", [12]])
def test_bad_session_limit_is_one_clear_error(bad):
    with pytest.raises(ConfigError, match=r"session_limit=.*Expected a positive duration"):
        detect(session_limit=bad, system=machine())


def test_colab_run_dir_is_on_drive_only_when_drive_is_mounted():
    marker = {"/var/colab/hostname"}
    unmounted = detect(system=machine(files=PROC, exists=marker))
    assert not unmounted.drive_mounted
    assert default_run_dir("mnist", unmounted) == Path("/nonexistent/work/runs/mnist")
    mounted = detect(system=machine(files=PROC, exists=marker | {"/content/drive/MyDrive"}))
    assert mounted.drive_mounted
    assert default_run_dir("mnist", mounted) == Path("/content/drive/MyDrive/colabkit/mnist")
    cache = cache_dir_for("file:///content/drive/MyDrive/colabkit/mnist/checkpoints", mounted)
    assert cache.parent == Path("/content/colabkit-cache") and cache.name.startswith("mnist-")


def test_xdg_cache_home_is_respected_outside_colab(tmp_path):
    env = detect(system=machine(environ={"XDG_CACHE_HOME": str(tmp_path / "xdg")}))
    assert cache_dir_for("file:///a/r/checkpoints", env).parent == tmp_path / "xdg" / "colabkit"


def test_two_runs_of_one_name_in_different_places_never_share_a_cache_folder(tmp_path):
    env = detect(system=machine(environ={"XDG_CACHE_HOME": str(tmp_path)}))
    here = cache_dir_for("file:///a/mnist/checkpoints", env)
    there = cache_dir_for("file:///b/mnist/checkpoints", env)
    assert here != there and here == cache_dir_for("file:///a/mnist/checkpoints", env)


@pytest.mark.parametrize("bad", ["", "a/b", "..", ".hidden", "-x", "a b", None, 3, "x" * 200])
def test_bad_run_names_are_rejected(bad):
    env = detect(system=machine())
    with pytest.raises(ConfigError, match="run_name"):
        default_run_dir(bad, env)


def test_detect_on_this_machine_is_local_with_a_readable_clock():
    env = detect()
    assert env.kind == "local"  # the test machines are neither Colab nor Kaggle
    assert env.session_start <= env.detected_at


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("12h", 43200), ("90m", 5400), ("15m", 900), ("30s", 30), ("1h30m", 5400), ("2.5h", 9000),
     (" 24H ", 86400), ("1d", 86400), ("45", 45), (45, 45), (0.5, 0.5), ("1h 30m", 5400),
     ("2 h", 7200)],
)  # fmt: skip
def test_parse_duration(text, seconds):
    assert parse_duration(text, "every") == seconds


@pytest.mark.parametrize("bad", ["0", "0s", "-5", "h", "12x", "1h-30m", "", None, False, "inf"])
def test_parse_duration_rejects_with_the_argument_name(bad):
    with pytest.raises(ConfigError, match=r"Invalid value for argument `save_every`"):
        parse_duration(bad, "save_every")


def test_a_bad_duration_is_echoed_and_named_by_default_as_a_duration():
    with pytest.raises(ConfigError) as refused:
        parse_duration("soon")
    assert (refused.value.argument, refused.value.value) == ("duration", "soon")
    assert str(refused.value) == (
        "Invalid value for argument `duration`. Received: duration='soon'. Expected a positive "
        "duration such as '12h', '90m', '1h30m', '30s', or a number of seconds."
    )


@pytest.mark.parametrize(
    ("size", "said"),
    [(0, "0 B"), (512, "512 B"), (999, "999 B"), (1000, "1.0 KB"), (1_234_567, "1.2 MB"),
     (999_949, "999.9 KB"), (15_000_000_000, "15.0 GB"), (2 * 10**13, "20000.0 GB"),
     (-2048, "-2.0 KB")],
)  # fmt: skip
def test_format_size_says_bytes_in_powers_of_1000_up_to_gigabytes(size, said):
    assert format_size(size) == said


def test_format_duration_is_said_as_a_person_says_it_at_every_scale():
    assert format_duration(0) == "< 1 s"
    assert format_duration(0.4) == "< 1 s"
    assert format_duration(1) == "1 s"
    assert format_duration(44.6) == "45 s"
    assert format_duration(59.4) == "59 s"
    assert format_duration(59.6) == "1 min"  # never "60 s"
    assert format_duration(150) == "3 min"  # half up, not to even
    assert format_duration(250) == "4 min"
    assert format_duration(3599) == "1 h"  # never "60 min"
    assert format_duration(2 * 3600 + 10 * 60) == "2 h 10 min"
    assert format_duration(11 * 3600 + 58 * 60) == "11 h 58 min"
    assert format_duration(26 * 3600) == "26 h"
    assert format_duration(-180) == "-3 min"
    assert format_duration(float("nan")) == "unknown"


def test_drive_counts_as_mounted_only_where_the_mount_table_says_so():
    """As colabtools decides: a MyDrive folder left on local disk after an unmount is no mount."""
    marker = {"/var/colab/hostname", "/content/drive/MyDrive"}
    table = "proc /proc proc rw 0 0\n"
    leftovers = detect(system=machine(files={**PROC, "/proc/mounts": table}, exists=marker))
    assert not leftovers.drive_mounted
    drive = "drive /content/drive fuse.drive rw,nosuid,nodev,relatime 0 0\n"
    mounted = detect(system=machine(files={**PROC, "/proc/mounts": table + drive}, exists=marker))
    assert mounted.drive_mounted
    spaced = "drive /content/my\\040drive fuse.drive rw 0 0\n"
    assert mount_type("/content/my drive", lambda path: spaced) == "fuse.drive"
    assert mount_type("/content/drive", lambda path: spaced) == ""
