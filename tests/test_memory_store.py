"""MemoryStore joins the store contract: as the test double, it must behave like the others."""

from __future__ import annotations

import errno

import pytest
from store_contract import StoreContract

from colabkit.storage import MemoryStore


@pytest.fixture
def store():
    return MemoryStore("contract")


@pytest.fixture
def break_put(store, monkeypatch):
    def arm():
        def read_half_then_fail(local_path):
            with open(local_path, "rb") as f:
                f.read(1024 * 1024)
            monkeypatch.undo()
            raise OSError(errno.EIO, "Input/output error (injected)")

        monkeypatch.setattr(store, "_read_source", read_half_then_fail)

    return arm


class TestMemoryStoreContract(StoreContract):
    pass


def test_shared_store_is_per_name():
    a = MemoryStore.shared("test-memory-a")
    assert MemoryStore.shared("test-memory-a") is a
    assert MemoryStore.shared("test-memory-b") is not a
    assert a.url == "memory://test-memory-a"
