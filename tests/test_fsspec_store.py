"""FsspecStore joins the store contract over fsspec's memory and local file systems, plus what
only a bucket shows: verification before commit, driver errors never read as "absent", URLs."""

from __future__ import annotations

import base64
import errno
import hashlib
import importlib.util
import json
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from store_contract import StoreContract

from colabkit.checkpoint.format import checkpoint_name
from colabkit.checkpoint.manager import CheckpointManager
from colabkit.clock import FakeClock
from colabkit.errors import ConfigError, StoreError
from colabkit.storage import open_store
from colabkit.storage.fsspec_store import FsspecStore, server_md5

fsspec = pytest.importorskip("fsspec")
MemoryFileSystem = pytest.importorskip("fsspec.implementations.memory").MemoryFileSystem
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bucket():
    """A unique folder in fsspec's process-wide memory file system, emptied afterwards."""
    fs = fsspec.filesystem("memory")
    root = f"/colabkit-test-{uuid.uuid4().hex}"
    yield fs, root
    if fs.exists(root):
        fs.rm(root, recursive=True)


@pytest.fixture
def store(bucket):
    fs, root = bucket
    return FsspecStore(fs, f"{root}/checkpoints")


@pytest.fixture
def break_put(store, monkeypatch):
    def arm():
        def upload_then_fail(lpath, rpath, **kwargs):
            with open(lpath, "rb") as f:
                store.fs.pipe_file(rpath, f.read(1024 * 1024))  # some bytes reach the bucket
            raise OSError(errno.ECONNRESET, "Connection reset by peer (injected)")

        monkeypatch.setattr(store.fs, "put_file", upload_then_fail, raising=False)

    return arm


class TestFsspecMemoryContract(StoreContract):
    pass


class TestFsspecLocalContract(StoreContract):
    @pytest.fixture
    def store(self, tmp_path):
        return FsspecStore(fsspec.filesystem("file"), str(tmp_path / "bucket"))


def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _everything(store) -> list[str]:
    """Every object under the store's root, temporaries included (what the bucket bills for)."""
    return sorted(store.fs.find(store.root))


def test_failed_upload_leaves_nothing_in_the_bucket(store, tmp_path, break_put):
    store.put(_file(tmp_path / "old", b"old"), "ckpt")
    break_put()
    with pytest.raises(OSError, match="reset"):
        store.put(_file(tmp_path / "new", b"n" * 2_000_000), "ckpt")
    assert _everything(store) == [f"{store.root}/ckpt"]


def test_corrupted_upload_is_detected_by_reading_back_and_not_committed(
    store, tmp_path, monkeypatch
):
    store.put(_file(tmp_path / "old", b"old bytes"), "ckpt")

    def upload_flipped(lpath, rpath, **kwargs):  # same size, one bit different
        data = bytearray(Path(lpath).read_bytes())
        data[5] ^= 1
        store.fs.pipe_file(rpath, bytes(data))

    monkeypatch.setattr(store.fs, "put_file", upload_flipped, raising=False)
    with pytest.raises(StoreError, match="came back different"):
        store.put(_file(tmp_path / "new", b"new payload bytes"), "ckpt")
    store.get("ckpt", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"old bytes"
    assert _everything(store) == [f"{store.root}/ckpt"]


def test_large_upload_is_checked_by_size_without_reading_back(bucket, tmp_path, monkeypatch):
    fs, root = bucket
    store = FsspecStore(fs, root, read_back_limit=10)
    monkeypatch.setattr(fs, "cat_file", _forbidden, raising=False)
    assert store.put(_file(tmp_path / "a", b"x" * 11), "a").size == 11

    def upload_truncated(lpath, rpath, **kwargs):
        fs.pipe_file(rpath, Path(lpath).read_bytes()[:-1])

    monkeypatch.setattr(fs, "put_file", upload_truncated, raising=False)
    with pytest.raises(StoreError, match="came back different"):
        store.put(_file(tmp_path / "b", b"y" * 11), "b")
    assert [o.name for o in store.list()] == ["a"]


def _forbidden(*args, **kwargs):
    raise AssertionError("read back although the server's checksum or the size decides")


def _with_info(monkeypatch, fs, **extra):
    real = fs.info
    monkeypatch.setattr(fs, "info", lambda path, **kw: {**real(path, **kw), **extra}, raising=False)


def test_server_md5_decides_without_reading_back(store, tmp_path, monkeypatch):
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    _with_info(monkeypatch, store.fs, md5Hash=wrong)  # GCS reports a different md5
    monkeypatch.setattr(store.fs, "cat_file", _forbidden, raising=False)
    with pytest.raises(StoreError, match="came back different"):
        store.put(_file(tmp_path / "a", b"payload"), "a")
    assert _everything(store) == []


def test_s3_etag_equal_to_md5_skips_the_read_back_and_a_multipart_etag_does_not(
    store, tmp_path, monkeypatch
):
    data = b"payload"
    _with_info(monkeypatch, store.fs, ETag=f'"{hashlib.md5(data).hexdigest()}"')
    real_cat = store.fs.cat_file
    monkeypatch.setattr(store.fs, "cat_file", _forbidden, raising=False)
    assert store.put(_file(tmp_path / "a", data), "a").md5 == hashlib.md5(data).hexdigest()

    _with_info(monkeypatch, store.fs, ETag='"0123456789abcdef0123456789abcdef-2"')
    reads = []
    monkeypatch.setattr(
        store.fs, "cat_file", lambda p, **kw: reads.append(p) or real_cat(p), raising=False
    )
    store.put(_file(tmp_path / "b", data), "b")
    assert len(reads) == 1


def test_server_md5_reads_gcs_and_azure_but_not_s3_etags():
    digest = hashlib.md5(b"x").digest()
    assert server_md5({"md5Hash": base64.b64encode(digest).decode()}) == digest.hex()
    assert server_md5({"content_settings": {"content_md5": bytearray(digest)}}) == digest.hex()
    assert server_md5({"ETag": f'"{digest.hex()}"'}) is None
    assert server_md5({"md5Hash": "not base64!"}) is None


def test_failed_commit_keeps_the_previous_object(store, tmp_path, monkeypatch):
    store.put(_file(tmp_path / "old", b"old"), "ckpt")

    def mv_fails(*args, **kwargs):
        raise PermissionError(errno.EACCES, "AccessDenied on CopyObject (injected)")

    monkeypatch.setattr(store.fs, "mv", mv_fails, raising=False)
    with pytest.raises(PermissionError):
        store.put(_file(tmp_path / "new", b"new"), "ckpt")
    assert _everything(store) == [f"{store.root}/ckpt"]
    assert store.stat("ckpt").md5 == hashlib.md5(b"old").hexdigest()


class DriverError(Exception):
    """What gcsfs and adlfs raise for HTTP failures: not an OSError."""


@pytest.mark.parametrize("op", ["list", "get", "stat", "delete"])
def test_a_driver_failure_is_an_oserror_never_absent(store, tmp_path, monkeypatch, op):
    store.put(_file(tmp_path / "a", b"a"), "a")

    def unavailable(*args, **kwargs):
        raise DriverError("503 Service Unavailable")

    monkeypatch.setattr(store.fs, "info", unavailable, raising=False)
    with pytest.raises(StoreError, match="503") as e:
        if op == "get":
            store.get("a", tmp_path / "out")
        else:
            getattr(store, op)(*([] if op == "list" else ["a"]))
    assert not isinstance(e.value, FileNotFoundError)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("call", ["info", "find"])
def test_a_listing_refused_by_the_bucket_raises(store, tmp_path, monkeypatch, call):
    store.put(_file(tmp_path / "a", b"a"), "a")

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "AccessDenied (injected)")

    monkeypatch.setattr(store.fs, call, denied, raising=False)
    with pytest.raises(PermissionError):
        store.list()


def test_leftovers_are_invisible_and_only_stale_ones_are_removed(bucket, tmp_path):
    fs, root = bucket
    clock = FakeClock(start=4_000_000_000.0)  # "now" is well after the files' real times
    store = FsspecStore(fs, root, clock=clock)
    store.put(_file(tmp_path / "x", b"x"), "sub/x")
    fs.pipe_file(f"{root}/sub/.ckpt-000000000005.ckpt.tmp-1-aaaa", b"half")
    assert [o.name for o in store.list()] == ["sub/x"]
    assert store.remove_leftovers(older_than=4_000_000_000.0) == []  # too young to go
    assert store.remove_leftovers() == ["sub/.ckpt-000000000005.ckpt.tmp-1-aaaa"]
    assert _everything(store) == [f"{root}/sub/x"]


def test_open_store_opens_fsspec_urls_and_the_url_reopens_the_same_store(tmp_path):
    url = f"fsspec+memory://colabkit-test-{uuid.uuid4().hex}/run"
    store = open_store(url)
    assert isinstance(store, FsspecStore) and store.url == url
    store.put(_file(tmp_path / "a", b"a"), "a")
    assert [o.name for o in open_store(store.url).list()] == ["a"]
    store.delete("a")


@pytest.mark.skipif(importlib.util.find_spec("s3fs") is not None, reason="s3fs is installed")
def test_a_missing_driver_names_the_pip_package_in_one_line():
    with pytest.raises(ConfigError, match="pip install s3fs") as e:
        open_store("s3://bucket/runs")
    assert "\n" not in str(e.value)


def test_missing_fsspec_names_both_packages(monkeypatch):
    monkeypatch.setitem(sys.modules, "fsspec", None)  # makes `import fsspec` fail
    with pytest.raises(ConfigError, match="pip install fsspec gcsfs"):
        open_store("gs://bucket/runs")


@pytest.mark.parametrize("bad", ["s3://", "gs:///", "fsspec+nope://x/y", "ftp://host/x"])
def test_open_store_rejects_unusable_bucket_urls_in_one_line(bad):
    with pytest.raises(ConfigError) as e:
        open_store(bad)
    assert "\n" not in str(e.value)


def test_a_host_that_cannot_be_reached_is_a_store_error_in_one_line(monkeypatch):
    def unreachable(url, **kwargs):  # what paramiko does for sftp:// at connection
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(fsspec.core, "url_to_fs", unreachable)
    with pytest.raises(StoreError, match="Could not open sftp://alice@nohost/x") as e:
        open_store("sftp://alice:s3cret@nohost/x")
    assert "s3cret" not in str(e.value) and "\n" not in str(e.value)


def test_constructor_rejects_mixed_arguments():
    fs = fsspec.filesystem("memory")
    with pytest.raises(ConfigError, match="root"):
        FsspecStore("memory://b/x", "other")
    with pytest.raises(ConfigError, match="root"):
        FsspecStore(fs)
    with pytest.raises(ConfigError, match="storage_options"):
        FsspecStore(fs, "b", storage_options={"key": "k"})
    with pytest.raises(ConfigError, match="url_or_fs"):
        FsspecStore(42, "b")
    with pytest.raises(ConfigError, match="read_back_limit"):
        FsspecStore(fs, "b", read_back_limit=-1)


def test_url_hides_a_password(monkeypatch):
    monkeypatch.setattr(
        fsspec.core, "url_to_fs", lambda url, **kw: (fsspec.filesystem("memory"), "/host/x")
    )
    store = FsspecStore("sftp://alice:s3cret@host/x")
    assert store.url == "sftp://alice@host/x" and "s3cret" not in repr(store)


def test_importing_colabkit_storage_does_not_import_fsspec():
    code = (
        "import json, sys, colabkit, colabkit.storage\n"
        "colabkit.storage.open_store('memory://x')\n"
        "print(json.dumps('fsspec' in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) is False


def test_checkpoint_manager_mirrors_to_a_bucket_and_a_new_vm_restores(bucket, tmp_path):
    fs, root = bucket
    url = f"fsspec+memory://{root.lstrip('/')}/run"
    arrays = {"model/0000": np.arange(12, dtype=np.float32).reshape(4, 3)}
    with CheckpointManager(url, cache_dir=tmp_path / "vm-1", keep_policy=2) as first:
        for step in (10, 20, 30):
            first.save(step, arrays | {"step": np.array([step])}, {"epoch": step // 10})
            first.wait()
    assert sorted(fs.ls(f"{root}/run", detail=False)) == [
        f"{root}/run/{checkpoint_name(20)}",
        f"{root}/run/{checkpoint_name(30)}",
        f"{root}/run/sessions",  # the session's claim on the run
    ]
    fresh = CheckpointManager(url, cache_dir=tmp_path / "vm-2")
    contents = fresh.restore()
    fresh.close()
    assert contents.state["step"] == 30 and contents.state["epoch"] == 3
    np.testing.assert_array_equal(contents.arrays["model/0000"], arrays["model/0000"])
    np.testing.assert_array_equal(contents.arrays["step"], [30])


class ListingCacheFS(MemoryFileSystem):
    """Like s3fs and gcsfs: remembers listings and answers info() from them until invalidated."""

    def find(self, path, *args, **kwargs):
        found = super().find(path, *args, **kwargs)
        root = self._strip_protocol(path)
        self.dircache[root] = [i for n, i in found.items() if self._parent(n) == root]
        return found

    def info(self, path, **kwargs):
        path = self._strip_protocol(path)
        if self._parent(path) in self.dircache and path not in self.dircache:
            return self._ls_from_cache(path)[0]  # FileNotFoundError if the listing is stale
        return super().info(path, **kwargs)

    def invalidate_cache(self, path=None):
        if path is None:
            self.dircache.clear()
        for parent in [path, *self._all_parents(path)] if path else []:
            self.dircache.pop(parent, None)

    def _all_parents(self, path):
        while path.rstrip("/") and (path := self._parent(path)):
            yield path


def test_objects_another_machine_put_are_seen_despite_cached_listings(bucket, tmp_path):
    fs, root = bucket
    here = FsspecStore(ListingCacheFS(skip_instance_cache=True), root)
    elsewhere = FsspecStore(fs, root)
    here.put(_file(tmp_path / "1", b"one"), "ckpt-1")
    assert [o.name for o in here.list()] == ["ckpt-1"]  # the listing is now cached
    elsewhere.put(_file(tmp_path / "2", b"two"), "ckpt-2")
    assert here.stat("ckpt-2").size == 3
    here.get("ckpt-2", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"two"
    assert [o.name for o in here.list()] == ["ckpt-1", "ckpt-2"]
    here.delete("ckpt-2")
    with pytest.raises(FileNotFoundError):
        elsewhere.stat("ckpt-2")
