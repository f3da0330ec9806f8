"""Room for a run's checkpoints (colabkit.checkpoint.space) with plain numbers: what a keep policy
bounds, what a run needs where, and the one line that says what is short, word for word.

tests/test_drive_space.py checks the same lines through ``colabkit.fit`` on a fake Drive.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import pytest

from colabkit.checkpoint import space
from colabkit.checkpoint.policy import KeepAll, KeepBest, KeepEvery, KeepLast
from colabkit.checkpoint.space import Need, check_run, kept_at_most, on_drive, shortfalls
from colabkit.duration import format_size
from colabkit.storage.base import ObjectInfo, Space
from colabkit.storage.drive_mount import SIGN_IN

MB = 1_000_000
FROZEN = "frozen-0123456789abcdef.ckpt"
TRASH = "https://drive.google.com/drive/trash"


@dataclass
class Store:
    """A store as the room check sees one: its url, its listing and what it says of its room."""

    url: str
    room: Space | Exception | None = None
    objects: tuple[tuple[str, int], ...] = ()

    def space(self) -> Space | None:
        if isinstance(self.room, Exception):
            raise self.room
        return self.room

    def list(self) -> list[ObjectInfo]:
        if isinstance(self.room, OSError):
            raise self.room
        return [ObjectInfo(name, size, None, 0.0) for name, size in self.objects]


@dataclass
class MountStore(Store):
    """The Drive mount, not signed in (it has ``signed_in``: it is on Drive)."""

    signed_in: bool = False


@pytest.fixture
def disk(monkeypatch):
    """This VM's disk under the cache folder: ``disk.free`` bytes free (plenty by default)."""

    class Disk:
        free = 10**12

    monkeypatch.setattr(space, "disk_space", lambda path: Space(Disk.free, 10**13, None, "disk"))
    return Disk


def test_keep_policies_bound_the_checkpoints_kept():
    assert kept_at_most(KeepLast(3)) == 3
    assert kept_at_most(KeepBest(2, "val_loss")) == 3  # its 2 best and the newest
    assert kept_at_most(KeepLast(3) | KeepBest(1, "val_loss")) == 5
    assert kept_at_most(KeepLast(3) | KeepAll()) is None
    assert kept_at_most(KeepAll()) is None and kept_at_most(KeepEvery(hours=1)) is None


def test_what_a_run_needs_is_said_by_its_parts():
    need = Need(checkpoint=MB, frozen=0, kept=3)
    assert (need.in_store, need.in_cache) == (4 * MB, 2 * MB)
    assert need.store_parts() == "keep=3 checkpoints of 1.0 MB and one more while it uploads"
    every = Need(checkpoint=MB, frozen=5 * MB, kept=None)
    assert (every.in_store, every.in_cache) == (7 * MB, 7 * MB)
    assert every.store_parts() == (
        "every checkpoint kept (keep=None), 1.0 MB each, and 5.0 MB of frozen weights stored once"
    )
    frozen = Need(MB, 5 * MB, 2).store_parts()
    assert frozen.endswith("while it uploads, and 5.0 MB of frozen weights stored once")


def test_the_drive_mount_not_signed_in_says_every_fix_in_one_line(disk, tmp_path):
    store = MountStore("/content/drive/MyDrive/run", Space(MB, 15_000 * MB, None, "the mount"))
    (line,) = shortfalls(Need(MB, 0, 3), store, tmp_path)
    assert line == (
        "Drive (/content/drive/MyDrive/run) has 1.0 MB free of 15.0 GB (the mount); this run "
        "needs 4.0 MB more there (keep=3 checkpoints of 1.0 MB and one more while it uploads). "
        "Training goes on, and checkpoints stay on this VM's disk while there is no room. "
        f"To make room: a smaller keep, empty Drive's trash at {TRASH}, sign in ({SIGN_IN}) so "
        "that old checkpoints are deleted for good or delete other files on Drive."
    )


def test_through_the_drive_api_the_trash_is_said_and_no_sign_in_is_asked(disk, tmp_path):
    store = Store("gdrive://runs/a", Space(MB, 15_000 * MB, 2 * MB, "Drive's storage quota"))
    (line,) = shortfalls(Need(MB, 0, 3), store, tmp_path)
    assert line == (
        "Drive (gdrive://runs/a) has 1.0 MB free of 15.0 GB (2.0 MB of it in the trash; Drive's "
        "storage quota); this run needs 4.0 MB more there (keep=3 checkpoints of 1.0 MB and one "
        "more while it uploads). Training goes on, and checkpoints stay on this VM's disk while "
        f"there is no room. To make room: a smaller keep, empty Drive's trash (it holds 2.0 MB) "
        f"at {TRASH} or delete other files on Drive."
    )


def test_another_store_is_named_by_its_url_and_its_fix_is_free_space_there(disk, tmp_path):
    store = Store("/mnt/disk/run", Space(MB, None, None, "local disk"))
    (line,) = shortfalls(Need(MB, 0, 1), store, tmp_path)
    assert line == (
        "/mnt/disk/run has 1.0 MB free (local disk); this run needs 2.0 MB more there "
        "(keep=1 checkpoints of 1.0 MB and one more while it uploads). Training goes on, and "
        "checkpoints stay on this VM's disk while there is no room. To make room: a smaller keep "
        "or free space there."
    )


def test_a_short_local_disk_names_the_cache_folder(disk, tmp_path):
    disk.free = MB
    (line,) = shortfalls(Need(MB, 0, 3), Store("/mnt/disk/run"), tmp_path)
    assert line == (
        f"This VM's disk has 1.0 MB free at {tmp_path}, and the run needs 2.0 MB more there "
        "(the newest checkpoint while the next one is written). Free disk space (datasets copied "
        "to /content, old runs in ~/.cache/colabkit), or pass cache_dir= a folder on a bigger "
        "disk."
    )


def test_exactly_the_room_needed_is_enough_and_a_byte_less_is_not(disk, tmp_path):
    need = Need(MB, 0, 3)  # 4 MB in the store, 2 MB on this VM's disk
    store = Store("/mnt/disk/run", Space(4 * MB, None, None, "local disk"))
    disk.free = 2 * MB
    assert shortfalls(need, store, tmp_path) == []
    store.room, disk.free = Space(4 * MB - 1, None, None, "local disk"), 2 * MB - 1
    assert len(shortfalls(need, store, tmp_path)) == 2
    # what the run holds there already is replaced, not added to
    assert shortfalls(need, store, tmp_path, held_in_store=1, held_in_cache=1) == []
    disk.free = MB
    (line,) = shortfalls(need, store, tmp_path, held_in_store=1, held_in_cache=MB // 2)
    assert "needs 1.5 MB more there" in line


def test_a_store_that_cannot_tell_its_room_is_not_warned_about(disk, tmp_path, caplog):
    need = Need(MB, 0, 3)
    assert shortfalls(need, Store("/mnt/disk/run", None), tmp_path) == []
    assert shortfalls(need, Store("/mnt/disk/run", Space(None, None, None, "?")), tmp_path) == []
    with caplog.at_level(logging.DEBUG, logger="colabkit"):
        failing = Store("gdrive://runs/a", PermissionError("token expired"))
        assert shortfalls(need, failing, tmp_path) == []
    assert caplog.messages == ["Could not read the free space of gdrive://runs/a: token expired"]

    class NoSpace:  # a store of yours that does not say its room (no space(), no url)
        def __repr__(self) -> str:
            return "my store"

    assert shortfalls(need, NoSpace(), tmp_path) == []
    assert on_drive(NoSpace()) is False

    class Failing(NoSpace):  # nor its url, and its space() fails: it is named as it prints
        def space(self):
            raise OSError("no quota here")

    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="colabkit"):
        assert shortfalls(need, Failing(), tmp_path) == []
    assert caplog.messages == ["Could not read the free space of my store: no quota here"]


def test_check_run_counts_what_the_run_holds_already_frozen_weights_included(disk, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "ckpt-000000000010.ckpt").write_bytes(b"x" * (MB // 2))
    (cache / FROZEN).write_bytes(b"f" * MB)
    (cache / "notes.txt").write_bytes(b"n" * MB)  # not the run's: not counted
    disk.free = MB
    # the cache needs 2 checkpoints and the frozen weights (3 MB); it holds 1.5 MB of them
    (line,) = check_run(Store("/mnt/disk/run"), cache, MB, None, 3)
    assert "needs 1.5 MB more there" in line
    # the store holds 1 checkpoint and the frozen object; it needs 4 + 1 MB
    store = Store(
        "/mnt/disk/run",
        Space(2 * MB, None, None, "local disk"),
        (("ckpt-000000000010.ckpt", MB), (FROZEN, MB), ("notes.txt", 5 * MB)),
    )
    disk.free = 10 * MB
    (line,) = check_run(store, cache, MB, None, 3)
    assert "needs 3.0 MB more there" in line and "1.0 MB of frozen weights stored once" in line
    (line,) = check_run(store, cache, MB, 2 * MB, 3)  # the frozen bytes as the caller counts them
    assert "needs 4.0 MB more there" in line and "2.0 MB of frozen weights stored once" in line
    store.room = OSError(5, "Input/output error")  # a listing that fails counts nothing held
    assert check_run(store, cache, MB, None, 3) == []  # nor can it tell its room


def test_files_pruned_while_the_check_runs_count_nothing(disk, tmp_path, monkeypatch):
    """The check runs in its own thread while the run commits and prunes: a checkpoint listed and
    then pruned, or the whole cache folder gone, is not held and is no error."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / FROZEN).write_bytes(b"f" * MB)
    listed = ["ckpt-000000000010.ckpt", "ckpt-000000000011.ckpt"]  # listed, pruned since
    monkeypatch.setattr(space, "cache_names", lambda folder: listed)
    real_listdir = os.listdir
    stale = "frozen-fedcba9876543210.ckpt"  # an old frozen object, listed and then deleted
    monkeypatch.setattr(os, "listdir", lambda folder: [*real_listdir(folder), stale])
    disk.free = MB
    (line,) = check_run(Store("/mnt/disk/run"), cache, MB, None, 3)
    assert "needs 2.0 MB more there" in line  # 2 checkpoints + 1 MB frozen, of which 1 MB held
    (cache / FROZEN).unlink()
    cache.rmdir()
    (line,) = check_run(Store("/mnt/disk/run"), cache, MB, None, 3)
    assert "needs 2.0 MB more there" in line  # 2 checkpoints, nothing frozen, nothing held


def test_what_the_cache_holds_is_counted_to_the_byte(disk, tmp_path):
    """A VM whose disk has exactly what the run still needs is not warned; a byte less is."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "ckpt-000000000010.ckpt").write_bytes(b"x" * 1234)
    (cache / FROZEN).write_bytes(b"f" * 567)
    store = Store("/mnt/disk/run")
    disk.free = 2 * MB + 567 - (1234 + 567)  # two checkpoints and the frozen, less what is held
    for frozen_bytes in (None, 567):  # counted in the cache, or as the caller counts them
        assert check_run(store, cache, MB, frozen_bytes, 3) == []
        disk.free -= 1
        (line,) = check_run(store, cache, MB, frozen_bytes, 3)
        assert f"the run needs {format_size(disk.free + 1)} more there" in line
        disk.free += 1
