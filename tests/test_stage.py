"""colabkit.stage: training data from the Drive mount, the Drive API, a bucket or a local path,
copied to local disk verified, resumable and cached."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from colabkit import staging
from colabkit.clock import FakeClock
from colabkit.errors import ConfigError
from colabkit.staging import StageError, job, sources, stage

ROOT = Path(__file__).resolve().parents[1]


def tree(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` by relative path (the staging bookkeeping left out)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and staging.STATE_DIR not in p.parts
    }


def make_folder(root: Path) -> dict[str, bytes]:
    files = {
        "a/0.png": os.urandom(3000),
        "a/1.png": os.urandom(70_000),
        "b/2.png": b"",
        "labels.csv": b"id,label\n0,a\n1,a\n2,b\n",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def archive(folder: Path, path: Path) -> Path:
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path, "w") as zf:
            for file in sorted(folder.rglob("*")):
                zf.write(file, file.relative_to(folder).as_posix())
    else:
        mode = "w:gz" if path.name.endswith(("gz", "tgz")) else "w"
        with tarfile.open(path, mode) as tf:
            for file in sorted(folder.iterdir()):
                tf.add(file, file.name)
    return path


def touch_later(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


class Reads:
    """Replaces colabkit.staging.sources._open_file: records every open (and its offset); once
    ``fail_after`` bytes were read in all, the next ``times`` reads fail with ``code``."""

    def __init__(self, monkeypatch, *, fail_after: int | None = None, times: int = 1, code=None):
        self.opens: list[str] = []
        self.offsets: list[int] = []
        self.served = 0
        self.fail_after, self.times = fail_after, times
        self.code = code or errno.ENOTCONN
        monkeypatch.setattr(sources, "_open_file", self.open)

    def open(self, path):
        self.opens.append(Path(path).name)
        return _Flaky(open(path, "rb"), self)  # noqa: SIM115


class _Flaky(io.RawIOBase):
    def __init__(self, file, reads: Reads) -> None:
        self.file, self.reads = file, reads

    def seek(self, offset, whence=0):
        self.reads.offsets.append(offset)
        return self.file.seek(offset, whence)

    def read(self, n=-1):
        r = self.reads
        if r.fail_after is not None and r.times and r.served >= r.fail_after:
            r.times -= 1
            raise OSError(r.code, os.strerror(r.code))
        failing = r.fail_after is not None and r.times and r.served < r.fail_after
        limit = min(n, r.fail_after - r.served) if failing else n  # stop at the failure point
        data = self.file.read(limit)
        r.served += len(data)
        return data

    def close(self):
        self.file.close()
        super().close()


# -- local paths and the Drive mount ---------------------------------------------------------


def test_a_folder_is_copied_whole_and_a_second_call_returns_at_once(tmp_path, monkeypatch):
    files = make_folder(tmp_path / "images")
    got = stage(tmp_path / "images", tmp_path / "local")
    assert got == tmp_path / "local" / "images" and tree(got) == files
    reads = Reads(monkeypatch)
    assert stage(tmp_path / "images", tmp_path / "local") == got
    assert reads.opens == []  # unchanged: nothing read again


def test_a_changed_source_is_copied_again_and_replaces_the_old_copy(tmp_path):
    files = make_folder(tmp_path / "images")
    stage(tmp_path / "images", tmp_path / "local")
    (tmp_path / "images" / "a" / "1.png").write_bytes(b"new")
    touch_later(tmp_path / "images" / "a" / "1.png")
    (tmp_path / "images" / "b" / "2.png").unlink()
    got = stage(tmp_path / "images", tmp_path / "local")
    files["a/1.png"] = b"new"
    del files["b/2.png"]
    assert tree(got) == files


def test_a_file_is_staged_as_a_file(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"\x93NUMPY" * 1000)
    got = stage(str(tmp_path / "x.npz"), tmp_path / "local")
    assert got == tmp_path / "local" / "x.npz" and got.read_bytes() == b"\x93NUMPY" * 1000


@pytest.fixture
def mount(staging_mydrive):
    """The Drive mount as stage sees it (conftest's ``mount`` is DriveFS for the stores)."""
    return staging_mydrive


def test_errno_107_midway_is_retried_on_the_clock_and_the_copy_continues(
    tmp_path, monkeypatch, mount
):
    data = os.urandom(5 * 1024 * 1024)
    (mount / "big.bin").write_bytes(data)
    reads = Reads(monkeypatch, fail_after=2 * 1024 * 1024, times=2)
    clock = FakeClock()
    got = stage(mount / "big.bin", tmp_path / "local", clock=clock)
    assert got.read_bytes() == data
    assert clock.sleeps == [1, 2]  # backoff, no real sleeping
    # Continued from the bytes already written (not from 0), then read once more to verify.
    assert reads.offsets == [0, 2 * 1024 * 1024, 2 * 1024 * 1024, 0]


def test_backoff_starts_over_after_progress(tmp_path, monkeypatch, mount):
    """A mount that drops now and then during a long copy: every drop after bytes arrived
    gets the short delay again, not an ever longer one that runs out."""
    data = os.urandom(4 * 1024 * 1024)
    (mount / "big.bin").write_bytes(data)

    class Dropping(Reads):
        def open(self, path):
            self.fail_after, self.times = self.served + 512 * 1024, 1
            return super().open(path)

    Dropping(monkeypatch, fail_after=0)
    clock = FakeClock()
    assert stage(mount / "big.bin", tmp_path / "local", clock=clock).read_bytes() == data
    assert len(clock.sleeps) >= 8 and set(clock.sleeps) == {1}


def test_a_mount_that_stays_down_fails_in_one_line_and_the_next_call_continues(
    tmp_path, monkeypatch, mount
):
    data = os.urandom(3 * 1024 * 1024)
    (mount / "big.bin").write_bytes(data)
    Reads(monkeypatch, fail_after=1024 * 1024, times=100)
    clock = FakeClock()
    with pytest.raises(StageError) as raised:
        stage(mount / "big.bin", tmp_path / "local", clock=clock)
    assert clock.sleeps == list(job.RETRY_DELAYS)
    message = str(raised.value)
    assert "\n" not in message and "kept failing" in message and "run the same call" in message
    assert not (tmp_path / "local" / "big.bin").exists()

    reads = Reads(monkeypatch)  # the mount is back
    assert stage(mount / "big.bin", tmp_path / "local").read_bytes() == data
    assert reads.offsets[0] == 1024 * 1024  # from where it stopped


def test_two_reads_of_the_mount_that_differ_are_refused(tmp_path, monkeypatch, mount):
    (mount / "data.bin").write_bytes(b"x" * 1000)
    opened = []

    def flipping(path):
        opened.append(path)
        return io.BytesIO(b"x" * 1000 if len(opened) == 1 else b"y" * 1000)

    monkeypatch.setattr(sources, "_open_file", flipping)
    with pytest.raises(StageError, match="two reads through the Drive mount gave different"):
        stage(mount / "data.bin", tmp_path / "local")
    assert not (tmp_path / "local" / "data.bin").exists()


def test_a_local_source_changing_during_the_copy_is_not_trusted(tmp_path, monkeypatch):
    source = tmp_path / "data.bin"
    source.write_bytes(b"a" * 100)

    def growing(path):
        file = open(path, "rb")  # noqa: SIM115
        source.write_bytes(b"b" * 100)
        touch_later(source)
        return file

    monkeypatch.setattr(sources, "_open_file", growing)
    with pytest.raises(StageError, match="changed while it was copied"):
        stage(source, tmp_path / "local")
    assert not (tmp_path / "local" / "data.bin").exists()


KILLER = """
import os, signal, sys
from pathlib import Path
from colabkit import staging
from colabkit.staging import job, sources

real, served = sources._open_file, [0]
log = open(sys.argv[3], "a")

class Killing:
    def __init__(self, f): self.f = f
    def __enter__(self): return self
    def __exit__(self, *a): self.f.close()
    def seek(self, n, w=0):
        log.write(f"seek {n}\\n"); log.flush(); return self.f.seek(n, w)
    def read(self, n=-1):
        if served[0] >= int(sys.argv[4]):
            os.kill(os.getpid(), signal.SIGKILL)
        data = self.f.read(min(n, 1 << 18))
        served[0] += len(data)
        return data

job.WORKERS = 1  # one file at a time: the kill lands at a known byte
sources._open_file = lambda p: (log.write(f"open {Path(p).name}\\n"), Killing(real(p)))[1]
staging.stage(sys.argv[1], sys.argv[2])
"""


def run_killer(source, dest, log, kill_after):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", KILLER, str(source), str(dest), str(log), str(kill_after)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_a_kill_mid_file_continues_from_that_byte(tmp_path):
    data = os.urandom(8 * 1024 * 1024)
    (tmp_path / "big.bin").write_bytes(data)
    killed = run_killer(tmp_path / "big.bin", tmp_path / "local", tmp_path / "log", 3 << 20)
    assert killed.returncode == -9, killed.stderr
    assert not (tmp_path / "local" / "big.bin").exists()
    done = run_killer(tmp_path / "big.bin", tmp_path / "local", tmp_path / "log2", 1 << 40)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "local" / "big.bin").read_bytes() == data
    assert (tmp_path / "log2").read_text().splitlines()[:2] == ["open big.bin", f"seek {3 << 20}"]


def test_a_kill_mid_folder_skips_the_files_done_and_continues_the_one_cut(tmp_path):
    source = tmp_path / "images"
    source.mkdir()
    for i in range(6):
        (source / f"{i}.bin").write_bytes(os.urandom(1 << 20))
    killed = run_killer(source, tmp_path / "local", tmp_path / "log", (7 << 20) // 2)
    assert killed.returncode == -9, killed.stderr
    done = run_killer(source, tmp_path / "local", tmp_path / "log2", 1 << 40)
    assert done.returncode == 0, done.stderr
    assert tree(tmp_path / "local" / "images") == tree(source)
    # Files 0-2 were whole: not read again; file 3 continues from its 3.5 MiB - 3 MiB.
    log = (tmp_path / "log2").read_text().splitlines()
    assert log == ["open 3.bin", f"seek {1 << 19}", "open 4.bin", "seek 0", "open 5.bin", "seek 0"]


# -- archives --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["data.zip", "data.tar", "data.tar.gz", "data.tgz"])
def test_an_archive_is_extracted_after_it_verified(tmp_path, name, monkeypatch):
    files = make_folder(tmp_path / "content")
    archive(tmp_path / "content", tmp_path / name)
    got = stage(tmp_path / name, tmp_path / "local")
    assert got == tmp_path / "local" / "data" and tree(got) == files
    assert tree(tmp_path / "local") == {f"data/{k}": v for k, v in files.items()}  # no archive
    reads = Reads(monkeypatch)
    assert stage(tmp_path / name, tmp_path / "local") == got and reads.opens == []


@pytest.mark.parametrize("name", ["data.zip", "data.tar.gz"])
def test_a_corrupt_archive_is_refused_and_nothing_is_left_half_extracted(tmp_path, name):
    make_folder(tmp_path / "content")
    path = archive(tmp_path / "content", tmp_path / name)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])  # cut short: an upload that did not finish
    with pytest.raises(StageError) as raised:
        stage(path, tmp_path / "local")
    suffix = ".zip" if name.endswith(".zip") else ".tar.gz"
    assert f"is not a valid {suffix} archive" in str(raised.value)
    assert "\n" not in str(raised.value)
    assert tree(tmp_path / "local") == {}
    leftovers = [p.name for p in (tmp_path / "local" / staging.STATE_DIR).iterdir()]
    assert not any(n.endswith((".extracting", ".partial")) for n in leftovers)


def test_an_archive_member_that_escapes_its_folder_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.writestr("ok.txt", b"ok")
        zf.writestr("../../escaped.txt", b"gotcha")
    with pytest.raises(StageError, match="would land outside its folder"):
        stage(tmp_path / "evil.zip", tmp_path / "local")
    assert not list(tmp_path.rglob("escaped.txt")) and tree(tmp_path / "local") == {}


# -- space, names, arguments -------------------------------------------------------------------


def test_too_little_disk_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    make_folder(tmp_path / "images")

    class Usage:
        total, used, free = 10**9, 10**9 - 50_000, 50_000

    monkeypatch.setattr(job.shutil, "disk_usage", lambda path: Usage)
    with pytest.raises(StageError) as raised:
        stage(tmp_path / "images", tmp_path / "local")
    message = str(raised.value)
    assert "Not enough local disk" in message and "73.0 KB more" in message
    assert "50.0 KB is free" in message and "\n" not in message
    assert not (tmp_path / "local").exists()


def test_a_disk_that_fills_up_midway_is_one_line_and_not_retried(tmp_path, monkeypatch, mount):
    (mount / "big.bin").write_bytes(os.urandom(1 << 20))
    Reads(monkeypatch, fail_after=1 << 18, code=errno.ENOSPC)  # (a write, in real life)
    clock = FakeClock()
    with pytest.raises(StageError) as raised:
        stage(mount / "big.bin", tmp_path / "local", clock=clock)
    assert "local disk filled up" in str(raised.value) and "\n" not in str(raised.value)
    assert clock.sleeps == []


def test_a_folder_that_stage_did_not_make_is_never_replaced(tmp_path):
    make_folder(tmp_path / "images")
    mine = tmp_path / "local" / "images"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(StageError, match="was not staged there by colabkit"):
        stage(tmp_path / "images", tmp_path / "local")
    assert tree(mine) == {"notes.txt": b"keep me"}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("/no/such/data.zip", "nothing is at this path"),
        ("", "Expected a local file, folder or archive"),
        ("ftp2://x/y", "Expected a local file, folder or archive"),
        ("/", "a file or a folder below the root"),
        (42, "Received: source=42"),
    ],
)
def test_a_source_that_is_not_there_is_one_line(tmp_path, source, message):
    with pytest.raises(ConfigError) as raised:
        stage(source, tmp_path / "local")
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert not (tmp_path / "local").exists()


def test_a_destination_inside_the_source_is_refused(tmp_path):
    make_folder(tmp_path / "images")
    with pytest.raises(ConfigError, match="a folder outside the source"):
        stage(tmp_path / "images", tmp_path / "images" / "local")
    assert not (tmp_path / "images" / "local").exists()


def test_a_drive_path_before_drive_is_mounted_says_to_mount_it(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "MOUNTPOINTS", (tmp_path / "drive",))
    with pytest.raises(ConfigError) as raised:
        stage(tmp_path / "drive" / "MyDrive" / "data.zip", tmp_path / "local")
    assert "Drive is not mounted here. Run colabkit.setup()" in str(raised.value)
    (tmp_path / "drive" / "MyDrive").mkdir(parents=True)  # mounted: the file is just missing
    with pytest.raises(ConfigError, match="nothing is at this path"):
        stage(tmp_path / "drive" / "MyDrive" / "data.zip", tmp_path / "local")


def test_the_default_destination_is_the_cache_outside_colab(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "x.bin").write_bytes(b"x")
    assert stage(tmp_path / "x.bin") == tmp_path / "cache" / "colabkit" / "data" / "x.bin"


def test_progress_is_shown_for_long_copies(tmp_path, capsys, monkeypatch):
    # Outside a notebook: a test before this one in the same process may have imported
    # ipykernel (a notebook test), which switches progress to a tqdm bar.
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)

    class Slow(FakeClock):
        def monotonic(self):  # every look at the clock: 4 s later
            self.advance(4)
            return super().monotonic()

    (tmp_path / "big.bin").write_bytes(os.urandom(3 * job.CHUNK))
    stage(tmp_path / "big.bin", tmp_path / "local", clock=Slow())
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("colabkit: staging ") and "MB/s" in lines[0] and "left" in lines[0]
    assert lines[-1].startswith("colabkit: staged ") and "25.2 MB of 25.2 MB (100%)" in lines[-1]


def test_the_command_prints_the_local_path(tmp_path):
    make_folder(tmp_path / "images")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "colabkit", "stage", str(tmp_path / "images")]
    done = subprocess.run(
        [*command, "--dest", str(tmp_path / "local")], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0 and done.stdout == f"{tmp_path / 'local' / 'images'}\n"
    missing = subprocess.run(
        [*command[:-1], str(tmp_path / "nope")], capture_output=True, text=True, env=env
    )
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert missing.stderr.startswith("Error: ") and "nothing is at this path" in missing.stderr


# -- the Drive API and buckets -----------------------------------------------------------------


def test_the_drive_api_stages_files_folders_and_archives_md5_checked(tmp_path, drive):
    from fake_drive import fake_credentials

    data = drive.add_folder("data")
    images = drive.add_folder("images", data.id)
    files = {"0.png": os.urandom(5000), "1.png": os.urandom(9000)}
    for name, content in files.items():
        drive.add(name, images.id, content)
    sub = drive.add_folder("more", images.id)
    drive.add("2.png", sub.id, b"two")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("a.txt", b"alpha")
    drive.add("set.zip", data.id, buffer.getvalue())
    credentials = fake_credentials()

    got = stage("gdrive://data/images", tmp_path / "local", credentials=credentials)
    assert tree(got) == {**files, "more/2.png": b"two"}
    unzipped = stage("gdrive://data/set.zip", tmp_path / "local", credentials=credentials)
    assert tree(unzipped) == {"a.txt": b"alpha"}

    drive.seen.clear()  # unchanged: listed, not downloaded again
    assert stage("gdrive://data/images", tmp_path / "local", credentials=credentials) == got
    assert "download" not in drive.kinds() and "create_folder" not in drive.kinds()

    changed = drive.named("1.png")[0]
    changed.data = b"changed"
    changed.size, changed.md5 = 7, hashlib.md5(b"changed").hexdigest()
    assert (
        tree(stage("gdrive://data/images", tmp_path / "local", credentials=credentials))["1.png"]
        == b"changed"
    )


def test_a_drive_path_that_does_not_exist_creates_nothing(tmp_path, drive):
    from fake_drive import fake_credentials

    with pytest.raises(ConfigError, match="nothing is there"):
        stage("gdrive://nope/images", tmp_path / "local", credentials=fake_credentials())
    assert "create_folder" not in drive.kinds() and not drive.files


def test_a_bucket_folder_and_file_through_fsspec(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/images/0.png", b"zero")
    fs.pipe("/bucket/images/sub/1.png", b"one")
    fs.pipe("/bucket/w.bin", b"weights")
    try:
        got = stage("fsspec+memory://bucket/images", tmp_path / "local")
        assert tree(got) == {"0.png": b"zero", "sub/1.png": b"one"}
        file = stage("fsspec+memory://bucket/w.bin", tmp_path / "local")
        assert file.read_bytes() == b"weights"
        fs.pipe("/bucket/images/0.png", b"zero, changed")
        assert tree(stage("fsspec+memory://bucket/images", tmp_path / "local"))["0.png"] == (
            b"zero, changed"
        )
    finally:
        fs.rm("/bucket", recursive=True)


# -- saying when the data is read through the mount --------------------------------------------


def test_doctor_says_when_the_data_is_read_through_the_mount(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "colabkit", "doctor", "--frameworks", "none", "--json"]
    on_mount = "/content/drive/MyDrive/flowers"
    report = subprocess.run(
        [*command, "--data", str(tmp_path), "--data", on_mount],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    import json

    (finding,) = [f for f in json.loads(report.stdout)["findings"] if "data" in f["code"]]
    assert finding["code"] == "data-on-drive-mount" and finding["severity"] == "warning"
    assert on_mount in finding["message"] and f"colabkit.stage('{on_mount}')" in finding["fix"]
    local = subprocess.run([*command, "--data", str(tmp_path)], capture_output=True, text=True,
                           env=env, check=True)  # fmt: skip
    assert "data-on-drive-mount" not in local.stdout


def test_fit_says_when_an_image_folder_is_read_through_the_mount(tmp_path, mount, capsys):
    tf = pytest.importorskip("tensorflow")
    import keras
    import numpy as np

    import colabkit

    for i in range(4):
        folder = mount / "images" / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.full((4, 4, 1), i, np.uint8)
        (folder / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    data = keras.utils.image_dataset_from_directory(
        mount / "images", image_size=(4, 4), color_mode="grayscale", batch_size=2, seed=1
    ).prefetch(1)  # the file paths are one dataset deeper now
    model = keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(2)]
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    colabkit.fit(model, data, run_dir=tmp_path / "run", epochs=1, verbose=0)
    err = capsys.readouterr().err
    assert err.count("data-on-drive-mount") == 0 and err.count("Drive mount") == 1
    assert f"colabkit.stage('{mount / 'images'}')" in err


def test_the_drive_api_continues_from_the_files_already_downloaded(tmp_path, drive):
    from fake_drive import fake_credentials

    images = drive.add_folder("images")
    files = {"0.png": os.urandom(3000), "1.png": os.urandom(4000)}
    for name, content in files.items():
        drive.add(name, images.id, content)
    drive.fail("download", 403, "cannotDownloadFile", skip=1)  # the second download refused
    with pytest.raises(OSError, match="cannotDownloadFile|403"):
        stage("gdrive://images", tmp_path / "local", credentials=fake_credentials())
    partial = tmp_path / "local" / staging.STATE_DIR / "images.partial"
    (partial / ".colabkit-get-x1.part").write_bytes(b"half")  # as a kill mid-download leaves

    drive.seen.clear()
    got = stage("gdrive://images", tmp_path / "local", credentials=fake_credentials())
    assert drive.kinds().count("download") == 1  # the file done before was not fetched again
    assert tree(got) == files  # and nothing a cut download left behind


def test_in_a_notebook_progress_is_a_tqdm_bar_where_tqdm_is_installed(tmp_path, monkeypatch):
    import types

    bars = []

    class Bar:
        def __init__(self, total, desc, unit, unit_scale):
            self.total, self.desc, self.n, self.closed = total, desc, 0, False
            bars.append(self)

        def update(self, n):
            self.n += n

        def close(self):
            self.closed = True

    auto = types.ModuleType("tqdm.auto")
    auto.tqdm = Bar
    monkeypatch.setitem(sys.modules, "tqdm", types.ModuleType("tqdm"))
    monkeypatch.setitem(sys.modules, "tqdm.auto", auto)
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))

    class Slow(FakeClock):
        def monotonic(self):
            self.advance(4)
            return super().monotonic()

    data = os.urandom(3 * job.CHUNK)
    (tmp_path / "big.bin").write_bytes(data)
    Reads(monkeypatch)  # chunk by chunk (not copied in the kernel): the bar moves per chunk
    stage(tmp_path / "big.bin", tmp_path / "local", clock=Slow())
    (bar,) = bars
    assert (bar.total, bar.n, bar.closed) == (len(data), len(data), True)
    assert bar.desc == f"staging {tmp_path / 'big.bin'}"
