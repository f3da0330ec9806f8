"""The contract every Store passes.

A store's test module joins it with a few lines: a test class that inherits ``StoreContract``
and provides two fixtures, ``store`` (an empty store) and ``break_put`` (a function that, when
called, makes the store's *next* ``put`` fail midway, after some bytes have moved).
"""

from __future__ import annotations

import os

import pytest

from colabkit.storage.base import ObjectInfo, md5_file


def _write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


class StoreContract:
    """Mix into a test class that provides the ``store`` and ``break_put`` fixtures."""

    def test_put_get_roundtrip(self, store, tmp_path):
        data = os.urandom(70_000) + b"end"
        src = _write(tmp_path / "src.bin", data)
        info = store.put(src, "ckpt-000000000001.zip")
        assert isinstance(info, ObjectInfo)
        assert info.name == "ckpt-000000000001.zip"
        assert info.size == len(data)
        assert info.md5 == md5_file(src)
        dst = tmp_path / "out" / "copy.bin"
        dst.parent.mkdir()
        got = store.get("ckpt-000000000001.zip", dst)
        assert dst.read_bytes() == data
        assert got.size == len(data)

    def test_empty_object(self, store, tmp_path):
        src = _write(tmp_path / "empty", b"")
        assert store.put(src, "empty").size == 0
        assert store.stat("empty").size == 0

    def test_put_replaces_existing(self, store, tmp_path):
        store.put(_write(tmp_path / "a", b"first"), "x")
        store.put(_write(tmp_path / "b", b"second version"), "x")
        store.get("x", tmp_path / "out")
        assert (tmp_path / "out").read_bytes() == b"second version"
        assert [o.name for o in store.list()] == ["x"]

    def test_stat_matches_put(self, store, tmp_path):
        src = _write(tmp_path / "a", b"hello world")
        put = store.put(src, "dir/a")
        stat = store.stat("dir/a")
        assert (stat.name, stat.size, stat.md5) == (put.name, put.size, put.md5)

    @pytest.mark.parametrize("op", ["get", "stat", "delete"])
    def test_missing_name_raises_file_not_found(self, store, tmp_path, op):
        with pytest.raises(FileNotFoundError):
            if op == "get":
                store.get("nope", tmp_path / "out")
            else:
                getattr(store, op)("nope")
        assert not (tmp_path / "out").exists()

    def test_missing_local_file_put_raises_and_leaves_nothing(self, store, tmp_path):
        with pytest.raises(FileNotFoundError):
            store.put(tmp_path / "does-not-exist", "x")
        assert store.list() == []

    def test_failed_put_leaves_no_visible_object(self, store, tmp_path, break_put):
        src = _write(tmp_path / "big", os.urandom(3 * 1024 * 1024))
        break_put()
        with pytest.raises(OSError):
            store.put(src, "ckpt")
        assert store.list() == []
        with pytest.raises(FileNotFoundError):
            store.stat("ckpt")

    def test_failed_put_keeps_previous_object(self, store, tmp_path, break_put):
        store.put(_write(tmp_path / "old", b"old bytes"), "ckpt")
        src = _write(tmp_path / "new", os.urandom(3 * 1024 * 1024))
        break_put()
        with pytest.raises(OSError):
            store.put(src, "ckpt")
        store.get("ckpt", tmp_path / "out")
        assert (tmp_path / "out").read_bytes() == b"old bytes"
        assert [o.name for o in store.list()] == ["ckpt"]

    @pytest.mark.parametrize(
        "bad",
        ["../x", "a/../../x", "/abs", "a\\b", "a\x00b", "", ".", "a//b", "a/", "./a", ".."],
    )
    def test_unsafe_names_rejected(self, store, tmp_path, bad):
        src = _write(tmp_path / "a", b"x")
        with pytest.raises(ValueError):
            store.put(src, bad)
        for op in ("stat", "delete"):
            with pytest.raises(ValueError):
                getattr(store, op)(bad)
        with pytest.raises(ValueError):
            store.get(bad, tmp_path / "out")
        assert store.list() == []

    def test_list_sorted_stable_and_prefixed(self, store, tmp_path):
        for name in ["ckpt-3", "ckpt-1", "other", "ckpt-2", "sub/ckpt-9"]:
            store.put(_write(tmp_path / name.replace("/", "_"), name.encode()), name)
        names = [o.name for o in store.list()]
        assert names == sorted(names)
        assert names == ["ckpt-1", "ckpt-2", "ckpt-3", "other", "sub/ckpt-9"]
        assert [o.name for o in store.list()] == names
        assert [o.name for o in store.list("ckpt-")] == ["ckpt-1", "ckpt-2", "ckpt-3"]
        assert [o.name for o in store.list("sub/")] == ["sub/ckpt-9"]
        sizes = {o.name: o.size for o in store.list()}
        assert sizes["other"] == len(b"other")

    def test_delete_removes(self, store, tmp_path):
        store.put(_write(tmp_path / "a", b"a"), "a")
        store.put(_write(tmp_path / "b", b"b"), "b")
        store.delete("a")
        assert [o.name for o in store.list()] == ["b"]
        with pytest.raises(FileNotFoundError):
            store.stat("a")

    def test_get_does_not_leave_partial_file_on_missing(self, store, tmp_path):
        dst = tmp_path / "keep"
        dst.write_bytes(b"precious")
        with pytest.raises(FileNotFoundError):
            store.get("absent", dst)
        assert dst.read_bytes() == b"precious"

    def test_url_is_a_string(self, store):
        assert isinstance(store.url, str) and store.url
