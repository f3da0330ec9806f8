"""Hostile Drive names never steer a download outside its target, and tokens never reach logs."""

from __future__ import annotations

import logging
import os

import pytest
from fake_drive import open_store

from colabkit.errors import StoreError

SECRETS = ("token-0", "token-1", "refresh-secret-1234", "client-secret-5678")
HOSTILE = ["../../x", "a/b", "x\x00y", "..", ".", "back\\slash"]


@pytest.fixture
def store(drive):
    return open_store(drive)


def _tree(root) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files
    )


def test_hostile_names_are_not_listed_and_mirroring_stays_inside(drive, store, tmp_path, caplog):
    folder = drive.path("colabkit/run").id
    for name in HOSTILE:
        drive.add(name, folder, b"evil")
    sneaky = drive.add_folder("..", folder)
    drive.add("x", sneaky.id, b"evil")
    drive.add("ok", folder, b"fine")
    target = tmp_path / "mirror" / "inner"
    target.mkdir(parents=True)

    with caplog.at_level(logging.WARNING):
        listed = store.list()
    for info in listed:  # what a "download the whole run" loop does
        store.get(info.name, target / info.name)

    assert [o.name for o in listed] == ["ok"]
    assert _tree(tmp_path) == [os.path.join("mirror", "inner", "ok")]
    assert "unsafe name" in caplog.text


@pytest.mark.parametrize(
    "name, error",
    # A Drive file literally named "a/b" is not the store's "a/b" (file b in subfolder a).
    [("../../x", ValueError), ("x\x00y", ValueError), ("a/b", FileNotFoundError)],
)
def test_hostile_names_cannot_be_asked_for(drive, store, tmp_path, name, error):
    drive.add(name, drive.path("colabkit/run").id, b"evil")
    with pytest.raises(error):
        store.get(name, tmp_path / "out")
    with pytest.raises(error):
        store.stat(name)
    assert _tree(tmp_path) == []


def test_tokens_never_reach_logs_or_errors(drive, tmp_path, caplog):
    with caplog.at_level(logging.DEBUG):
        store = open_store(drive)
        data = os.urandom(2 * 1024 * 1024 + 1)
        (tmp_path / "a").write_bytes(data)
        drive.fail("chunk", 401, "authError", skip=1)  # forces a token refresh mid-upload
        drive.fail("chunk", 503, "backendError", skip=1)
        store.put(tmp_path / "a", "ckpt")
        store.get("ckpt", tmp_path / "b")
        drive.fail("multipart", 403, "insufficientFilePermissions")
        (tmp_path / "s").write_bytes(b"small")
        with pytest.raises(StoreError) as caught:
            store.put(tmp_path / "s", "small")
    assert drive.kinds().count("token") == 1
    assert (tmp_path / "b").read_bytes() == data
    logged = caplog.text + str(caught.value) + repr(store)
    assert "Drive" in caplog.text
    for secret in SECRETS:
        assert secret not in logged
