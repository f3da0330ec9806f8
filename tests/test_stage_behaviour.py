"""colabkit.stage when the source changes or the mount reads wrong: an edit that keeps the size,
a change between an interrupted copy and its continuation, and reads that end early.

Each test goes through ``colabkit.stage`` as a user calls it. The mount's reads are played by
replacing ``colabkit.staging.sources._open_file`` (what every local and mount read opens); the
Drive API by the fake Drive behind ``responses``.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
from pathlib import Path

import pytest

from colabkit import staging
from colabkit.clock import FakeClock
from colabkit.staging import StageError, job, sources, stage

MiB = 1024 * 1024


@pytest.fixture
def on_mount(staging_mydrive):
    return staging_mydrive


@pytest.fixture(params=["local", "mount"])
def where(request, tmp_path, on_mount):
    """Where the source lives: a plain local folder, or the Drive mount."""
    folder = tmp_path / "data" if request.param == "local" else on_mount
    folder.mkdir(exist_ok=True)
    return folder


def tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and staging.STATE_DIR not in p.parts
    }


def edit_in_place(path: Path, data: bytes) -> None:
    """Rewrites ``path`` in place (same inode) with ``data``; its mtime moves on, as any write's
    does (set explicitly: two writes within one tick of the file system's clock share one)."""
    before = path.stat()
    with open(path, "r+b") as f:
        f.write(data)
        f.truncate()
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))


class Reads:
    """Plays the reads of the source: every open is recorded with its offset; ``down_after``
    bytes served in all, every read fails with errno 107 (the mount dropped) until ``up()``."""

    def __init__(self, monkeypatch, *, down_after: int | None = None) -> None:
        self.offsets: list[tuple[str, int]] = []
        self.served, self.down_after = 0, down_after
        monkeypatch.setattr(sources, "_open_file", self.open)

    def up(self) -> None:
        self.down_after = None

    def open(self, path):
        return _Played(open(path, "rb"), Path(path).name, self)  # noqa: SIM115


class _Played(io.RawIOBase):
    def __init__(self, file, name: str, reads: Reads) -> None:
        self.file, self.name, self.reads = file, name, reads

    def seek(self, offset, whence=0):
        self.reads.offsets.append((self.name, offset))
        return self.file.seek(offset, whence)

    def read(self, n=-1):
        r = self.reads
        if r.down_after is not None and r.served >= r.down_after:
            raise OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN))
        limit = n if r.down_after is None else min(n, r.down_after - r.served)
        data = self.file.read(limit)
        r.served += len(data)
        return data

    def close(self):
        self.file.close()
        super().close()


def interrupted(source: Path, dest: Path, monkeypatch, after: int) -> None:
    """A ``stage`` call whose source stops answering after ``after`` bytes (the mount stays
    down): it fails, keeping what it copied for the next call to continue."""
    monkeypatch.setattr(job, "WORKERS", 1)  # one file at a time: the cut lands at a known byte
    Reads(monkeypatch, down_after=after)
    with pytest.raises(StageError, match="kept failing"):
        stage(source, dest, clock=FakeClock())


# -- (a) an edit that keeps the size ---------------------------------------------------------


def test_a_file_edited_in_place_with_the_same_size_is_copied_again(tmp_path, where):
    source = where / "labels.csv"
    source.write_bytes(b"id,label\n0,cat\n1,dog\n")
    got = stage(source, tmp_path / "local")
    edit_in_place(source, b"id,label\n0,dog\n1,cat\n")  # relabelled: not one byte more or less
    assert stage(source, tmp_path / "local") == got
    assert got.read_bytes() == b"id,label\n0,dog\n1,cat\n"


def test_a_file_in_a_folder_edited_in_place_with_the_same_size_is_copied_again(tmp_path, where):
    (where / "images" / "a").mkdir(parents=True)
    files = {"a/0.png": os.urandom(3000), "a/1.png": os.urandom(5000), "labels.csv": b"0,a\n"}
    for name, data in files.items():
        (where / "images" / name).write_bytes(data)
    got = stage(where / "images", tmp_path / "local")
    files["a/1.png"] = os.urandom(5000)
    edit_in_place(where / "images" / "a" / "1.png", files["a/1.png"])
    assert stage(where / "images", tmp_path / "local") == got and tree(got) == files


def test_a_drive_file_replaced_by_one_of_the_same_size_is_downloaded_again(tmp_path, drive):
    from fake_drive import fake_credentials

    folder = drive.add_folder("data")
    old = drive.add("weights.bin", folder.id, os.urandom(4000))
    got = stage("gdrive://data/weights.bin", tmp_path / "local", credentials=fake_credentials())
    new = os.urandom(4000)
    drive.revise(old, new)  # a new version uploaded in Drive's web page: same size, new md5
    again = stage("gdrive://data/weights.bin", tmp_path / "local", credentials=fake_credentials())
    assert again == got and got.read_bytes() == new


# -- (b) a change between an interrupted copy and its continuation ---------------------------


@pytest.mark.parametrize("growth", [0, 3 * MiB], ids=["same-size", "grown"])
def test_a_file_changed_after_an_interrupted_copy_is_copied_from_its_start(
    tmp_path, where, monkeypatch, growth
):
    source = where / "big.bin"
    source.write_bytes(os.urandom(4 * MiB))
    interrupted(source, tmp_path / "local", monkeypatch, after=2 * MiB)

    new = os.urandom(4 * MiB + growth)
    edit_in_place(source, new)  # a new version while the copy waited
    reads = Reads(monkeypatch)
    got = stage(source, tmp_path / "local")
    assert hashlib.md5(got.read_bytes()).hexdigest() == hashlib.md5(new).hexdigest()
    assert reads.offsets[0] == ("big.bin", 0)  # not continued at 2 MiB: old bytes are not kept


def test_a_folder_whose_files_changed_after_an_interrupted_copy_has_only_new_bytes(
    tmp_path, where, monkeypatch
):
    """0.bin was copied whole, 1.bin cut in the middle; both change (same sizes) before the
    next call: neither the whole old copy nor the half one is kept."""
    images = where / "images"
    images.mkdir()
    for i in range(3):
        (images / f"{i}.bin").write_bytes(os.urandom(MiB))
    reads_per_file = 2 if sources.on_drive_mount(images) else 1  # the mount's: read twice
    interrupted(images, tmp_path / "local", monkeypatch, after=reads_per_file * MiB + MiB // 2)

    files = {f"{i}.bin": os.urandom(MiB) for i in range(3)}
    for name, data in files.items():
        edit_in_place(images / name, data)
    reads = Reads(monkeypatch)
    assert tree(stage(images, tmp_path / "local")) == files
    assert ("0.bin", 0) in reads.offsets and ("1.bin", 0) in reads.offsets


def test_an_unchanged_file_continues_from_where_the_copy_stopped(tmp_path, where, monkeypatch):
    """The other side of the two tests above: nothing changed, nothing is read twice."""
    data = os.urandom(4 * MiB)
    (where / "big.bin").write_bytes(data)
    interrupted(where / "big.bin", tmp_path / "local", monkeypatch, after=2 * MiB)
    reads = Reads(monkeypatch)
    assert stage(where / "big.bin", tmp_path / "local").read_bytes() == data
    assert reads.offsets[0] == ("big.bin", 2 * MiB)


# -- (c) reads that end early ----------------------------------------------------------------


class Short(io.RawIOBase):
    """A read of the mount that ends ``missing`` bytes early, without an error: DriveFS serving
    a file its cache holds only part of, while ``stat`` tells the whole size."""

    def __init__(self, path, missing: int, piece: int | None = None) -> None:
        data = Path(path).read_bytes()
        self.data, self.position, self.piece = data[: len(data) - missing], 0, piece

    def seek(self, offset, whence=0):
        self.position = offset
        return offset

    def read(self, n=-1):
        n = len(self.data) if n is None or n < 0 else n
        n = min(n, self.piece) if self.piece else n
        chunk = self.data[self.position : self.position + n]
        self.position += len(chunk)
        return chunk


@pytest.mark.parametrize("missing", [1, 3 * MiB], ids=["last-byte", "most"])
def test_a_mount_read_that_ends_early_is_never_staged_as_whole(
    tmp_path, on_mount, monkeypatch, missing
):
    """Every read (the copy and the second read that checks it) ends at the same early byte,
    so the two reads agree: only the size the mount stated tells the copy is not whole."""
    data = os.urandom(4 * MiB)
    (on_mount / "big.bin").write_bytes(data)
    monkeypatch.setattr(sources, "_open_file", lambda path: Short(path, missing))
    with pytest.raises(StageError) as raised:
        stage(on_mount / "big.bin", tmp_path / "local", clock=FakeClock())
    assert f"{len(data) - missing} bytes arrived, the source has {len(data)}" in str(raised.value)
    assert not (tmp_path / "local" / "big.bin").exists()

    monkeypatch.setattr(sources, "_open_file", lambda path: open(path, "rb"))  # noqa: SIM115
    assert stage(on_mount / "big.bin", tmp_path / "local").read_bytes() == data  # next call


def test_a_folder_with_one_file_read_short_is_not_staged(tmp_path, on_mount, monkeypatch):
    images = on_mount / "images"
    images.mkdir()
    for i in range(3):
        (images / f"{i}.png").write_bytes(os.urandom(20_000))
    real = sources._open_file

    def one_short(path):
        return Short(path, 100) if Path(path).name == "1.png" else real(path)

    monkeypatch.setattr(sources, "_open_file", one_short)
    with pytest.raises(StageError, match="1.png.*19900 bytes arrived, the source has 20000"):
        stage(images, tmp_path / "local", clock=FakeClock())
    assert not (tmp_path / "local" / "images").exists()
    monkeypatch.setattr(sources, "_open_file", real)
    assert tree(stage(images, tmp_path / "local")) == tree(images)


def test_a_local_read_that_ends_early_is_never_staged_as_whole(tmp_path, monkeypatch):
    """A local disk (no second read there): the size stated is all that tells."""
    data = os.urandom(MiB)
    (tmp_path / "x.bin").write_bytes(data)
    monkeypatch.setattr(sources, "_open_file", lambda path: Short(path, 4096))
    with pytest.raises(StageError, match="1044480 bytes arrived, the source has 1048576"):
        stage(tmp_path / "x.bin", tmp_path / "local", clock=FakeClock())
    assert not (tmp_path / "local" / "x.bin").exists()


def test_short_reads_that_are_not_the_end_are_read_on(tmp_path, on_mount, monkeypatch):
    """FUSE answers a read with at most 128 KiB, fewer than asked for: not an end of file."""
    data = os.urandom(3 * MiB + 5)
    (on_mount / "big.bin").write_bytes(data)
    monkeypatch.setattr(sources, "_open_file", lambda path: Short(path, 0, piece=128 * 1024))
    assert stage(on_mount / "big.bin", tmp_path / "local").read_bytes() == data
