"""LocalStore joins the store contract, plus what only a folder shows: no leftovers, atomicity."""

from __future__ import annotations

import errno
import os

import pytest
from store_contract import StoreContract

from colabkit.errors import ConfigError
from colabkit.storage import LocalStore, MemoryStore, open_store
from colabkit.storage import local as local_module


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "store")


@pytest.fixture
def break_put(monkeypatch):
    def arm():
        real = local_module.copy_stream

        def copy_then_fail(src, dst):
            dst.write(src.read(1024 * 1024))  # some bytes reach the temporary file
            monkeypatch.setattr(local_module, "copy_stream", real)
            raise OSError(errno.EIO, "Input/output error (injected)")

        monkeypatch.setattr(local_module, "copy_stream", copy_then_fail)

    return arm


class TestLocalStoreContract(StoreContract):
    pass


def test_failed_put_leaves_no_file_on_disk(store, tmp_path, break_put):
    src = tmp_path / "src"
    src.write_bytes(os.urandom(2 * 1024 * 1024))
    break_put()
    with pytest.raises(OSError):
        store.put(src, "a/ckpt")
    assert [p.name for p in (store.root / "a").iterdir()] == []


def test_interrupted_put_leftover_is_invisible(store, tmp_path):
    store.put(_file(tmp_path / "x", b"x"), "x")
    (store.root / ".x.tmp-123-abcd").write_bytes(b"half")
    assert [o.name for o in store.list()] == ["x"]


def test_corrupted_copy_is_detected_and_not_committed(store, tmp_path, monkeypatch):
    monkeypatch.setattr(local_module, "md5_file", lambda path: "0" * 32)
    with pytest.raises(OSError, match="came back different"):
        store.put(_file(tmp_path / "x", b"payload"), "x")
    assert store.list() == []


def test_missing_root_is_empty_but_a_file_root_is_an_error(tmp_path):
    assert LocalStore(tmp_path / "nothing-here").list() == []
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(OSError):
        LocalStore(tmp_path / "file" / "below").list()


def test_open_store_urls(tmp_path):
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    assert open_store(tmp_path.as_uri()).root == tmp_path
    assert open_store(tmp_path).root == tmp_path
    assert open_store("memory://run-a") is open_store("memory://run-a")
    assert isinstance(open_store("memory://run-b"), MemoryStore)
    assert open_store("memory://run-a") is not open_store("memory://run-b")


@pytest.mark.parametrize("bad", ["", "ftp://host/x", "memory://", "gdrive://", "http://x/y", 3])
def test_open_store_rejects_bad_urls_in_one_line(bad):
    with pytest.raises(ConfigError, match=r"Invalid value for argument `url`.*gdrive://") as e:
        open_store(bad)
    assert "\n" not in str(e.value)


def _file(path, data):
    path.write_bytes(data)
    return path


def test_remove_leftovers_frees_only_stale_temporaries(store, tmp_path):
    store.put(_file(tmp_path / "x", b"x"), "sub/x")
    stale = store.root / "sub" / ".ckpt-000000000005.ckpt.tmp-1-aaaa"
    fresh = store.root / ".ckpt-000000000006.ckpt.tmp-2-bbbb"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"being written")
    os.utime(stale, (1, 1))
    assert store.remove_leftovers(older_than=3600) == ["sub/.ckpt-000000000005.ckpt.tmp-1-aaaa"]
    assert fresh.exists() and not stale.exists()
    assert [o.name for o in store.list()] == ["sub/x"]


def test_open_store_refuses_a_file(tmp_path):
    from colabkit.errors import ConfigError
    from colabkit.storage import open_store

    (tmp_path / "afile").write_text("not a folder")
    for given in (tmp_path / "afile", str(tmp_path / "afile"), (tmp_path / "afile").as_uri()):
        with pytest.raises(ConfigError, match="this is a file"):
            open_store(given)
    assert (tmp_path / "afile").read_text() == "not a folder"
