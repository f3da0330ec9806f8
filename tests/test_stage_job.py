"""One staging job (colabkit/staging/job.py) through ``colabkit.stage``: each line it says, word
for word; its bookkeeping across interrupted calls; the in-kernel copy and its fallback; the
archive checks; sources that state an md5 or fetch whole files (a bucket, the Drive API), played
by small fakes put where ``stage`` opens its source.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import shutil
import stat
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
from test_stage import Reads, archive, make_folder, tree

from colabkit import staging
from colabkit.clock import FakeClock
from colabkit.duration import format_size
from colabkit.staging import StageError, job, sources, stage
from colabkit.staging.sources import Entry

TAIL_AGAIN = "run the same call again."
ENOTCONN = f"[Errno {errno.ENOTCONN}] {os.strerror(errno.ENOTCONN)}"


def refused(call) -> str:
    with pytest.raises(StageError) as raised:
        call()
    return str(raised.value)


class Usage:
    """What ``shutil.disk_usage`` says: ``free`` bytes."""

    def __init__(self, monkeypatch, free: int) -> None:
        self.free, self.total, self.used = free, 10**12, 10**12 - free
        monkeypatch.setattr(job.shutil, "disk_usage", lambda path: self)


@pytest.fixture(autouse=True)
def not_a_notebook(monkeypatch):
    """Progress is a plain line outside a notebook; a notebook test on the same worker may have
    imported ipykernel, which would turn it into a tqdm bar."""
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)


@pytest.fixture
def mount(staging_mydrive):
    """The Drive mount as stage sees it (conftest's ``mount`` is DriveFS for the stores)."""
    return staging_mydrive


# -- what it says ----------------------------------------------------------------------------


def test_too_little_disk_names_the_folder_that_is_there_and_exactly_enough_is_enough(
    tmp_path, monkeypatch
):
    data = os.urandom(10_000)
    (tmp_path / "x.bin").write_bytes(data)
    Usage(monkeypatch, job.RESERVE + 9_999)
    dest = tmp_path / "new" / "local"  # not there yet: the disk under tmp_path is said
    assert refused(lambda: stage(tmp_path / "x.bin", dest)) == (
        f"Not enough local disk to stage {tmp_path / 'x.bin'}: it needs 10.0 KB more, "
        f"{format_size(job.RESERVE + 9_999)} is free on {tmp_path}. Free some space, or pass "
        "dest= a folder on a larger disk."
    )
    Usage(monkeypatch, job.RESERVE + 10_000)
    assert stage(tmp_path / "x.bin", dest).read_bytes() == data


def test_an_archive_needs_room_for_itself_and_what_it_holds(tmp_path, monkeypatch):
    make_folder(tmp_path / "content")
    path = archive(tmp_path / "content", tmp_path / "data.tar")
    size = path.stat().st_size
    Usage(monkeypatch, job.RESERVE + 2 * size - 1)
    message = refused(lambda: stage(path, tmp_path / "local"))
    assert f"it needs {format_size(2 * size)} more" in message
    Usage(monkeypatch, job.RESERVE + 2 * size)
    assert tree(stage(path, tmp_path / "local")) == tree(tmp_path / "content")


def test_a_continued_copy_needs_room_for_what_is_left(tmp_path, monkeypatch, mount):
    data = os.urandom(3 * 1024 * 1024)
    (mount / "big.bin").write_bytes(data)
    Reads(monkeypatch, fail_after=1024 * 1024, times=100)
    refused(lambda: stage(mount / "big.bin", tmp_path / "local", clock=FakeClock()))
    Reads(monkeypatch)
    Usage(monkeypatch, job.RESERVE + 2 * 1024 * 1024 - 1)
    assert f"it needs {format_size(2 * 1024 * 1024)} more" in refused(
        lambda: stage(mount / "big.bin", tmp_path / "local")
    )
    Usage(monkeypatch, job.RESERVE + 2 * 1024 * 1024)
    assert stage(mount / "big.bin", tmp_path / "local").read_bytes() == data


@pytest.mark.parametrize("name", ["data.zip", "data.tar.gz", "data.tgz"])
def test_room_to_extract_is_what_the_archive_holds_not_its_size(tmp_path, monkeypatch, name):
    (tmp_path / "content").mkdir()
    (tmp_path / "content" / "zeros.bin").write_bytes(bytes(5_000_000))  # compresses to little
    if name.endswith(".zip"):
        with zipfile.ZipFile(tmp_path / name, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.write(tmp_path / "content" / "zeros.bin", "zeros.bin")
    else:
        archive(tmp_path / "content", tmp_path / name)
    holds = 5_000_000 if name.endswith(".zip") else None
    Usage(monkeypatch, job.RESERVE + 1_000_000)  # room for the archive, not for what it holds
    message = refused(lambda: stage(tmp_path / name, tmp_path / "local"))
    if holds is None:  # a gzip says its size modulo 4 GiB: the tar's, blocks included
        holds = int.from_bytes((tmp_path / name).read_bytes()[-4:], "little")
    assert message == (
        f"Not enough local disk to extract {tmp_path / name}: it needs {format_size(holds)}, "
        f"{format_size(job.RESERVE + 1_000_000)} is free on {tmp_path / 'local'}. Free some "
        "space, or pass dest= a folder on a larger disk (the downloaded archive is kept)."
    )
    Usage(monkeypatch, job.RESERVE + holds - 1)
    refused(lambda: stage(tmp_path / name, tmp_path / "local"))
    Usage(monkeypatch, job.RESERVE + holds)
    got = stage(tmp_path / name, tmp_path / "local")
    assert (got / "zeros.bin").read_bytes() == bytes(5_000_000)


def test_a_mount_that_stays_down_says_so_and_each_retry_is_a_line(
    tmp_path, monkeypatch, mount, caplog
):
    (mount / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    Reads(monkeypatch, fail_after=1024 * 1024, times=100)
    with caplog.at_level(logging.WARNING, logger="colabkit"):
        message = refused(lambda: stage(mount / "big.bin", tmp_path / "local", clock=FakeClock()))
    attempts = len(job.RETRY_DELAYS) + 1
    assert message == (
        f"Reading 'big.bin' from {mount / 'big.bin'} kept failing ({ENOTCONN}) after {attempts} "
        "attempts; what was copied is kept. Reconnect (for the Drive mount: drive.mount(..., "
        f"force_remount=True)) and {TAIL_AGAIN[:-1]} to continue."
    )
    assert caplog.messages == [
        f"Reading big.bin failed ({ENOTCONN}); retrying in {delay}s." for delay in job.RETRY_DELAYS
    ]


def test_a_mount_down_from_the_first_byte_backs_off_from_the_shortest_delay(
    tmp_path, monkeypatch, mount
):
    data = os.urandom(100_000)
    (mount / "x.bin").write_bytes(data)
    Reads(monkeypatch, fail_after=0, times=3)
    clock = FakeClock()
    assert stage(mount / "x.bin", tmp_path / "local", clock=clock).read_bytes() == data
    assert clock.sleeps == list(job.RETRY_DELAYS[:3])


def test_a_full_disk_midway_says_what_to_do(tmp_path, monkeypatch, mount):
    (mount / "big.bin").write_bytes(os.urandom(1 << 20))
    Reads(monkeypatch, fail_after=1 << 18, code=errno.ENOSPC)
    assert refused(lambda: stage(mount / "big.bin", tmp_path / "local", clock=FakeClock())) == (
        f"The local disk filled up while staging {mount / 'big.bin'}; what was copied is kept. "
        "Free some space (or pass dest= a folder on a larger disk) and " + TAIL_AGAIN
    )


def test_two_reads_of_the_mount_that_differ_say_so_and_what_to_do(tmp_path, monkeypatch, mount):
    (mount / "data.bin").write_bytes(b"x" * 1000)
    reads = iter([b"x" * 1000, b"y" * 1000])
    monkeypatch.setattr(sources, "_open_file", lambda path: io.BytesIO(next(reads)))
    assert refused(lambda: stage(mount / "data.bin", tmp_path / "local")) == (
        f"Copy of 'data.bin' from {mount / 'data.bin'} did not verify (two reads through the "
        "Drive mount gave different bytes); it was discarded. Run the same call again (the rest "
        "of the copy is kept)."
    )


def test_a_folder_it_did_not_stage_is_named_with_the_way_out(tmp_path):
    make_folder(tmp_path / "images")
    (tmp_path / "local" / "images").mkdir(parents=True)
    assert refused(lambda: stage(tmp_path / "images", tmp_path / "local")) == (
        f"{tmp_path / 'local' / 'images'} exists and was not staged there by colabkit; it was "
        "left as it is. Pass dest= another folder, or move it away."
    )


def test_a_source_changed_since_its_copy_began_is_said_and_copied_from_its_start(
    tmp_path, monkeypatch, mount, caplog
):
    source = mount / "big.bin"
    source.write_bytes(os.urandom(2 * 1024 * 1024))
    Reads(monkeypatch, fail_after=1024 * 1024, times=100)
    refused(lambda: stage(source, tmp_path / "local", clock=FakeClock()))
    source.write_bytes(data := os.urandom(2 * 1024 * 1024 + 1))
    reads = Reads(monkeypatch)
    with caplog.at_level(logging.INFO, logger="colabkit"):
        assert stage(source, tmp_path / "local").read_bytes() == data
    assert reads.offsets[0] == 0
    assert f"{source} changed since its copy began: copying it again." in caplog.messages
    assert f"Staged {source} at {tmp_path / 'local' / 'big.bin'}." in caplog.messages


# -- its bookkeeping across calls ----------------------------------------------------------------


def test_a_changed_source_whose_new_copy_was_cut_still_replaces_the_old_copy(
    tmp_path, monkeypatch, mount
):
    source = mount / "big.bin"
    source.write_bytes(os.urandom(2 * 1024 * 1024))
    stage(source, tmp_path / "local")
    source.write_bytes(data := os.urandom(3 * 1024 * 1024))
    Reads(monkeypatch, fail_after=1024 * 1024, times=100)
    refused(lambda: stage(source, tmp_path / "local", clock=FakeClock()))  # the new copy: cut
    Reads(monkeypatch)
    assert stage(source, tmp_path / "local").read_bytes() == data  # not "not staged by colabkit"


def test_a_done_list_cut_mid_line_by_a_kill_is_read_up_to_that_line(tmp_path, monkeypatch):
    files = make_folder(tmp_path / "images")
    Reads(monkeypatch, fail_after=50_000, times=100, code=errno.ENOTCONN)
    monkeypatch.setattr(job, "WORKERS", 1)
    refused(lambda: stage(tmp_path / "images", tmp_path / "local", clock=FakeClock()))
    done = tmp_path / "local" / staging.STATE_DIR / "images.done"
    with open(done, "a") as log:
        log.write('{"path": "a/1.pn')  # a kill while the line was written
    Reads(monkeypatch)
    assert tree(stage(tmp_path / "images", tmp_path / "local")) == files


def test_a_partial_copy_longer_than_its_source_is_started_over(tmp_path, monkeypatch, mount):
    source = mount / "big.bin"
    source.write_bytes(data := os.urandom(2 * 1024 * 1024))
    Reads(monkeypatch, fail_after=1024 * 1024, times=100)
    refused(lambda: stage(source, tmp_path / "local", clock=FakeClock()))
    partial = tmp_path / "local" / staging.STATE_DIR / "big.bin.partial"
    partial.write_bytes(os.urandom(3 * 1024 * 1024))  # not a prefix of this source
    reads = Reads(monkeypatch)
    assert stage(source, tmp_path / "local").read_bytes() == data
    assert reads.offsets[0] == 0


def test_a_kill_as_the_copy_was_put_in_place_leaves_nothing_that_skips_files_later(
    tmp_path, monkeypatch
):
    """Killed after the record says "complete" and before the list of files done is removed:
    once the staged folder is deleted, the next call copies every file again."""
    files = make_folder(tmp_path / "images")
    commit, kept = job.Job.commit, {}

    def commit_killed_before_the_last_step(self, target):
        kept["done"] = self.done_log.read_text()
        commit(self, target)

    monkeypatch.setattr(job.Job, "commit", commit_killed_before_the_last_step)
    got = stage(tmp_path / "images", tmp_path / "local")
    monkeypatch.undo()
    (tmp_path / "local" / staging.STATE_DIR / "images.done").write_text(kept["done"])
    shutil.rmtree(got)  # the user deletes the staged copy
    assert tree(stage(tmp_path / "images", tmp_path / "local")) == files


def test_a_kill_during_extraction_is_continued_without_copying_again(tmp_path, monkeypatch):
    files = make_folder(tmp_path / "content")
    path = archive(tmp_path / "content", tmp_path / "data.zip")

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(zipfile.ZipFile, "extractall", killed)
    with pytest.raises(KeyboardInterrupt):
        stage(path, tmp_path / "local")
    monkeypatch.undo()
    reads = Reads(monkeypatch)
    assert tree(stage(path, tmp_path / "local")) == files and reads.opens == []


def test_a_kill_after_extracting_needs_no_more_room_to_finish(tmp_path, monkeypatch):
    """Extracted whole, then killed before its commit: what is left takes no more disk, so a
    disk now full (the contents are on it) does not refuse the rerun."""
    files = make_folder(tmp_path / "content")
    path = archive(tmp_path / "content", tmp_path / "data.zip")

    def killed(self, target):
        raise KeyboardInterrupt

    monkeypatch.setattr(job.Job, "commit", killed)
    with pytest.raises(KeyboardInterrupt):
        stage(path, tmp_path / "local")
    monkeypatch.undo()
    Usage(monkeypatch, 0)
    reads = Reads(monkeypatch)
    assert tree(stage(path, tmp_path / "local")) == files and reads.opens == []


def test_folders_nested_deeper_are_copied_whole(tmp_path):
    files = {"a/b/c/0.png": b"0", "a/b/1.png": b"1", "d/e/f/g/2.png": os.urandom(5000)}
    for name, data in files.items():
        (tmp_path / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "images" / name).write_bytes(data)
    assert tree(stage(tmp_path / "images", tmp_path / "local")) == files


def test_a_file_of_yours_named_like_a_cut_download_is_staged_too(tmp_path):
    files = make_folder(tmp_path / "images")
    (tmp_path / "images" / ".colabkit-get-1.part").write_bytes(b"yours")
    files[".colabkit-get-1.part"] = b"yours"
    assert tree(stage(tmp_path / "images", tmp_path / "local")) == files


def test_progress_counts_only_what_is_left_of_a_continued_copy(
    tmp_path, monkeypatch, mount, capsys
):
    from colabkit.clock import FakeClock as Clock

    class Slow(Clock):
        def monotonic(self):
            self.advance(4)
            return super().monotonic()

    (mount / "big.bin").write_bytes(data := os.urandom(3 * job.CHUNK))
    Reads(monkeypatch, fail_after=job.CHUNK, times=100)
    refused(lambda: stage(mount / "big.bin", tmp_path / "local", clock=FakeClock(), progress=False))
    Reads(monkeypatch)
    assert stage(mount / "big.bin", tmp_path / "local", clock=Slow()).read_bytes() == data
    last = capsys.readouterr().err.splitlines()[-1]
    left = format_size(2 * job.CHUNK)
    assert last.startswith(f"colabkit: staged {mount / 'big.bin'}: {left} of {left} (100%)")


# -- the copy in the kernel, and without it ----------------------------------------------------


class CopyFileRange:
    """``os.copy_file_range`` that fails with ``code`` from its call number ``fail_at`` on."""

    def __init__(self, monkeypatch, code: int, fail_at: int = 0) -> None:
        self.real, self.code, self.fail_at, self.calls = os.copy_file_range, code, fail_at, 0
        monkeypatch.setattr(os, "copy_file_range", self)

    def __call__(self, *args):
        self.calls += 1
        if self.calls > self.fail_at:
            raise OSError(self.code, os.strerror(self.code))
        return self.real(*args)


def test_without_copy_file_range_files_are_copied_through_python(tmp_path, monkeypatch):
    """Python on macOS, or built without it."""
    monkeypatch.delattr(os, "copy_file_range")
    (tmp_path / "x.bin").write_bytes(data := os.urandom(300_000))
    assert stage(tmp_path / "x.bin", tmp_path / "local").read_bytes() == data


@pytest.mark.parametrize("code", [errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP])
def test_a_file_system_without_copy_file_range_is_copied_through_python(
    tmp_path, monkeypatch, code
):
    (tmp_path / "x.bin").write_bytes(data := os.urandom(300_000))
    fake = CopyFileRange(monkeypatch, code)
    assert stage(tmp_path / "x.bin", tmp_path / "local").read_bytes() == data
    assert fake.calls == 1


def test_copy_file_range_failing_midway_is_not_retried_through_python(tmp_path, monkeypatch):
    """Bytes it copied are on disk: starting over in Python from the file's position would
    write them twice. The error stands (the next call continues from what was written)."""
    monkeypatch.setattr(job, "CHUNK", 64 * 1024)
    (tmp_path / "x.bin").write_bytes(data := os.urandom(300_000))
    fake = CopyFileRange(monkeypatch, errno.EXDEV, fail_at=2)
    with pytest.raises(OSError) as raised:
        stage(tmp_path / "x.bin", tmp_path / "local")
    assert raised.value.errno == errno.EXDEV
    monkeypatch.setattr(os, "copy_file_range", fake.real)
    assert stage(tmp_path / "x.bin", tmp_path / "local").read_bytes() == data


def shrinking(source: Path, keep: int):
    """``_open_file`` that opens the real file, then cuts it to ``keep`` bytes (the source
    changed after it was listed)."""

    def open_file(path):
        file = open(path, "rb")  # noqa: SIM115 - the copy closes it
        os.truncate(source, keep)
        return file

    return open_file


def test_a_source_that_shrank_after_it_was_listed_is_refused_not_waited_on(tmp_path, monkeypatch):
    source = tmp_path / "x.bin"
    source.write_bytes(os.urandom(300_000))
    monkeypatch.setattr(sources, "_open_file", shrinking(source, 200_000))
    said: list[str] = []
    thread = threading.Thread(
        target=lambda: said.append(refused(lambda: stage(source, tmp_path / "local"))),
        daemon=True,
    )
    thread.start()
    thread.join(30)
    assert said, "stage did not return"
    assert said[0].startswith(
        f"Copy of 'x.bin' from {source} did not verify (200000 bytes arrived, the source has "
        "300000); it was discarded."
    )


def growing(source: Path, more: bytes):
    def open_file(path):
        file = open(path, "rb")  # noqa: SIM115 - the copy closes it
        with open(source, "ab") as grown:
            grown.write(more)
        return file

    return open_file


@pytest.mark.parametrize("continued", [False, True], ids=["from-the-start", "continued"])
def test_a_source_that_grew_after_it_was_listed_is_copied_to_its_listed_size_then_refused(
    tmp_path, monkeypatch, continued
):
    """Exactly the bytes listed are copied (in chunks); that the source changed is then what
    is said, not a size that does not match."""
    monkeypatch.setattr(job, "CHUNK", 4096)
    source = tmp_path / "x.bin"
    source.write_bytes(os.urandom(10_000))
    if continued:
        Reads(monkeypatch, fail_after=3000, times=100)
        refused(lambda: stage(source, tmp_path / "local", clock=FakeClock()))
    monkeypatch.setattr(sources, "_open_file", growing(source, os.urandom(9000)))
    message = refused(lambda: stage(source, tmp_path / "local"))
    assert message == (
        f"Copy of 'x.bin' from {source} did not verify (it changed while it was copied); it was "
        "discarded. Run the same call again (the rest of the copy is kept)."
    )


# -- archives ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "member", ["../../escaped.txt", "..\\..\\escaped.txt", "/abs.txt", "\\abs.txt", "C:", "C:x"]
)
def test_an_archive_member_that_would_land_outside_is_refused_naming_it(tmp_path, member):
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.writestr("a", b"one letter: fine")
        zf.writestr(member, b"gotcha")
    url = tmp_path / "evil.zip"
    assert refused(lambda: stage(url, tmp_path / "local")) == (
        f"{url} is not a valid .zip archive (BadZipFile: member {member!r} of {url} would land "
        "outside its folder); nothing was extracted. Check the file at its source (re-create or "
        "re-upload it)."
    )


def test_a_file_too_short_to_be_an_archive_is_refused_as_one(tmp_path):
    (tmp_path / "data.tar.gz").write_bytes(b"\x1f\x8b")
    message = refused(lambda: stage(tmp_path / "data.tar.gz", tmp_path / "local"))
    assert message.startswith(f"{tmp_path / 'data.tar.gz'} is not a valid .tar.gz archive (")


def test_a_tar_cannot_plant_setuid_or_world_writable_files(tmp_path):
    with tarfile.open(tmp_path / "data.tar", "w") as tf:
        info = tarfile.TarInfo("run.sh")
        info.size, info.mode = 3, 0o6777
        tf.addfile(info, io.BytesIO(b"x=1"))
    got = stage(tmp_path / "data.tar", tmp_path / "local")
    mode = (got / "run.sh").stat().st_mode
    assert not mode & (stat.S_ISUID | stat.S_ISGID | stat.S_IWOTH | stat.S_IWGRP)


# A Python without data_filter never warns; Python 3.12 and later, with it taken away, warn
# that 3.14 will filter by default.
@pytest.mark.filterwarnings("ignore:Python 3.14 will, by default, filter:DeprecationWarning")
@pytest.mark.parametrize(
    ("name", "link"),
    [("../escaped.txt", None), ("ok/../../escaped.txt", None), ("link", "/etc/passwd"),
     ("hard", "../../escaped.txt")],
)  # fmt: skip
def test_without_tarfiles_data_filter_its_own_checks_refuse_what_would_land_outside(
    tmp_path, monkeypatch, name, link
):
    """Python before 3.10.12 / 3.11.4 has no ``tarfile.data_filter``: colabkit checks each
    member's name and link itself."""
    monkeypatch.delattr(tarfile, "data_filter")
    content = tmp_path / "content"
    make_folder(content)
    path = archive(content, tmp_path / "data.tar")
    with tarfile.open(path, "a") as tf:
        info = tarfile.TarInfo(name)
        if link is not None:
            info.type = tarfile.SYMTYPE if name == "link" else tarfile.LNKTYPE
            info.linkname = link
        tf.addfile(info, io.BytesIO(b""))
    shown = name if link is None else link
    assert refused(lambda: stage(path, tmp_path / "local")) == (
        f"{path} is not a valid .tar archive (BadZipFile: member {shown!r} of {path} would land "
        "outside its folder); nothing was extracted. Check the file at its source (re-create or "
        "re-upload it)."
    )
    assert not list(tmp_path.rglob("escaped.txt")) and tree(tmp_path / "local") == {}
    assert tree(stage(archive(content, tmp_path / "good.tar"), tmp_path / "local")) == tree(content)


def extraction_fails(monkeypatch, error: OSError) -> None:
    def fail(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(zipfile.ZipFile, "extractall", fail)


def test_a_disk_that_fills_up_while_extracting_says_so(tmp_path, monkeypatch):
    make_folder(tmp_path / "content")
    path = archive(tmp_path / "content", tmp_path / "data.zip")
    extraction_fails(monkeypatch, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert refused(lambda: stage(path, tmp_path / "local")) == (
        f"The local disk filled up while extracting {path}; nothing of it was kept. Free some "
        "space, or pass dest= a folder on a larger disk."
    )


def test_an_error_of_the_disk_while_extracting_is_not_called_a_bad_archive(tmp_path, monkeypatch):
    make_folder(tmp_path / "content")
    path = archive(tmp_path / "content", tmp_path / "data.zip")
    extraction_fails(monkeypatch, PermissionError(errno.EACCES, "Permission denied"))
    with pytest.raises(PermissionError):
        stage(path, tmp_path / "local")
    monkeypatch.undo()  # the archive was kept: the next call extracts it
    assert tree(stage(path, tmp_path / "local")) == tree(tmp_path / "content")


# -- sources that state an md5 or fetch whole files ----------------------------------------------


class Bucket:
    """A one-file source that states its md5 (as a bucket does); ``serves`` is what its reads
    return (the file, or bytes that went wrong on the way)."""

    url, name, is_file, on_mount = "gs://bucket/data.bin", "data.bin", True, False

    def __init__(self, data: bytes, serves: bytes | None = None) -> None:
        self.data, self.serves = data, data if serves is None else serves
        self.md5 = hashlib.md5(data).hexdigest()

    def entries(self) -> list[Entry]:
        return [Entry(self.name, len(self.data), self.md5, self.md5)]

    def open_at(self, entry: Entry, offset: int):
        return io.BytesIO(self.serves[offset:])

    def check_unchanged(self, entry: Entry) -> str | None:
        return None


class Drive(Bucket):
    """A source that fetches whole files (as the Drive API does); the first ``drops`` fetches
    fail as a dropped connection does."""

    url = "gdrive://data.bin"

    def __init__(self, data: bytes, drops: int = 0) -> None:
        super().__init__(data)
        self.drops = drops

    def fetch(self, entry: Entry, target: Path) -> None:
        if self.drops:
            self.drops -= 1
            raise OSError(errno.ECONNRESET, os.strerror(errno.ECONNRESET))
        target.write_bytes(self.data)


def from_source(monkeypatch, source) -> None:
    monkeypatch.setattr(staging, "open_source", lambda *args: source)


def test_a_source_with_an_md5_is_checked_against_it(tmp_path, monkeypatch):
    data = os.urandom(100_000)
    from_source(monkeypatch, Bucket(data))
    assert stage("gs://bucket/data.bin", tmp_path / "local").read_bytes() == data
    flipped = bytes([data[0] ^ 1]) + data[1:]
    bad = Bucket(os.urandom(100_000))
    bad.serves = flipped
    from_source(monkeypatch, bad)
    got = hashlib.md5(flipped).hexdigest()
    assert refused(lambda: stage("gs://bucket/data.bin", tmp_path / "other")) == (
        f"Copy of 'data.bin' from gs://bucket/data.bin did not verify (md5 {got} differs from "
        f"the source's {bad.md5}); it was discarded. Run the same call again (the rest of the "
        "copy is kept)."
    )


def test_a_whole_file_fetch_dropped_is_retried_and_its_progress_counted(
    tmp_path, monkeypatch, capsys, caplog
):
    class Slow(FakeClock):
        def monotonic(self):
            self.advance(4)
            return super().monotonic()

    data = os.urandom(100_000)
    from_source(monkeypatch, Drive(data, drops=1))
    clock = Slow()
    with caplog.at_level(logging.WARNING, logger="colabkit"):
        assert stage("gdrive://data.bin", tmp_path / "local", clock=clock).read_bytes() == data
    reset = f"[Errno {errno.ECONNRESET}] {os.strerror(errno.ECONNRESET)}"
    assert caplog.messages == [f"Reading data.bin failed ({reset}); retrying in 1s."]
    assert clock.sleeps == [1]
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("colabkit: staged gdrive://data.bin: 100.0 KB of 100.0 KB (100%)")
