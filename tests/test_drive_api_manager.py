"""The checkpoint manager mirrors to a DriveApiStore (over the fake Drive) and resumes from it."""

from __future__ import annotations

import numpy as np
from fake_drive import open_store

from colabkit.checkpoint.format import checkpoint_name
from colabkit.checkpoint.manager import CheckpointManager
from colabkit.clock import FakeClock


def checkpoint_names(store):
    """The store's checkpoints (the sessions' claims beside them are tested on their own)."""
    return [o.name for o in store.list() if not o.name.startswith("sessions/")]


def test_checkpoints_reach_drive_verified_and_a_new_vm_resumes_from_them(drive, tmp_path):
    clock = FakeClock()
    store = open_store(drive, clock=clock)
    manager = CheckpointManager(store, cache_dir=tmp_path / "vm1", keep_policy=2, clock=clock)
    drive.fail("multipart", 503, "backendError")  # Drive hiccups once during mirroring
    for step in (1, 2, 3):
        manager.save(step, {"w": np.full(5, step, np.float32)}, {"epoch": step})
        manager.wait()
    manager.close()
    assert checkpoint_names(store) == [checkpoint_name(2), checkpoint_name(3)]

    fresh = CheckpointManager(
        open_store(drive, clock=clock), cache_dir=tmp_path / "vm2", clock=clock
    )
    contents = fresh.restore()
    fresh.close()
    assert contents.state["step"] == 3
    np.testing.assert_array_equal(contents.arrays["w"], np.full(5, 3, np.float32))
    assert drive.faults[0].times == 0


def test_a_shared_drive_content_manager_prunes_to_the_trash(drive, tmp_path):
    """On a shared drive only organizers may delete; a content manager's pruning trashes the
    old checkpoints (Drive empties the trash after 30 days), and the run reads only the kept."""
    drive.add_shared_drive("sd1", role="fileOrganizer")
    clock = FakeClock()
    store = open_store(drive, clock=clock, root="sd1")
    manager = CheckpointManager(store, cache_dir=tmp_path / "vm1", keep_policy=1, clock=clock)
    for step in (1, 2, 3):
        manager.save(step, {"w": np.full(5, step, np.float32)}, {"epoch": step})
        manager.wait()
    manager.close()
    assert checkpoint_names(store) == [checkpoint_name(3)]
    trashed = sorted(f.name for f in drive.files.values() if f.trashed)
    assert trashed == [checkpoint_name(1), checkpoint_name(2)]
    lists = [s.params for s in drive.seen if s.kind == "list"]
    assert all(p.get("corpora") == "drive" and p.get("driveId") == "sd1" for p in lists)
