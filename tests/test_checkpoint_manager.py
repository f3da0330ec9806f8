"""CheckpointManager: background saving, mirroring, pruning, resume, and a store that fails."""

from __future__ import annotations

import errno
import logging
import threading
import weakref

import numpy as np
import pytest

from colabkit.checkpoint.format import checkpoint_name, step_of, verify, write_checkpoint
from colabkit.checkpoint.manager import CheckpointManager
from colabkit.checkpoint.policy import KeepBest, KeepLast
from colabkit.clock import FakeClock
from colabkit.errors import CheckpointError, ConfigError, StoreError
from colabkit.storage import LocalStore, MemoryStore, atomic
from colabkit.storage.faults import FaultyStore


def arrays_for(step):
    return {"model/0000": np.full((4, 3), step, np.float32), "rng": np.array([step, 1], np.uint32)}


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def store():
    return FaultyStore(MemoryStore("manager-test"))


@pytest.fixture
def make(tmp_path, store, clock):
    managers = []

    def make(**kwargs):
        kwargs.setdefault("cache_dir", tmp_path / "cache")
        manager = CheckpointManager(kwargs.pop("store", store), clock=clock, **kwargs)
        managers.append(manager)
        return manager

    yield make
    for manager in managers:  # tests may leave failures behind: stop without waiting
        manager._closed = True
        manager._pipeline.stop()


def save(manager, step, **metrics):
    return manager.save(step, arrays_for(step), {"epoch": step // 10}, metrics=metrics or None)


def checkpoint_calls(store, op):
    """How often ``op`` was called on a checkpoint (not on a session's claim)."""
    return sum(1 for called, name in store.log if called == op and step_of(name) is not None)


def names(store):
    """The store's checkpoints (the sessions' claims beside them are tested on their own)."""
    return [info.name for info in store.list() if not info.name.startswith("sessions/")]


def test_save_reaches_the_store_and_restores_exactly(make, store):
    manager = make()
    assert manager.latest() is None and manager.restore() is None
    assert save(manager, 10, loss=0.5) == checkpoint_name(10)
    manager.wait()
    assert manager.status == "ok"
    assert names(store) == [checkpoint_name(10)]
    record = manager.latest()
    assert (record.step, record.epoch, record.metrics) == (10, 1, {"loss": 0.5})
    contents = manager.restore()
    np.testing.assert_array_equal(contents.arrays["model/0000"], arrays_for(10)["model/0000"])
    assert contents.state["step"] == 10 and contents.state["epoch"] == 1


def test_resume_on_a_new_vm_downloads_from_the_store(make, store, tmp_path):
    first = make()
    save(first, 5)
    first.close()
    fresh = make(cache_dir=tmp_path / "new-vm")
    assert fresh.latest().step == 5
    assert fresh.restore().state["step"] == 5


def test_should_save_reads_the_injected_clock(make, clock):
    manager = make(save_policy="10m")
    assert not manager.should_save(step=1, epoch_end=True)
    clock.advance(600)
    assert manager.should_save(step=2, epoch_end=False)
    save(manager, 2)
    assert not manager.should_save(step=3, epoch_end=False)
    clock.advance(600)
    assert not manager.should_save(step=2, epoch_end=False)  # never twice for one step
    assert manager.should_save(step=3, epoch_end=False)


def test_restore_restarts_the_step_count_of_the_policy(make):
    manager = make(save_policy="100steps")
    save(manager, 250)
    manager.wait()
    resumed = make()
    resumed._save_policy = manager._save_policy
    resumed.restore()
    assert not resumed.should_save(step=300, epoch_end=False)
    assert resumed.should_save(step=350, epoch_end=False)


def test_pruning_keeps_policy_and_newest_in_store_and_little_in_cache(make, store, tmp_path):
    manager = make(keep_policy=KeepLast(2) | KeepBest(1, "val_loss"))
    for step, loss in [(10, 0.9), (20, 0.1), (30, 0.5), (40, 0.6), (50, 0.7)]:
        save(manager, step, val_loss=loss)
        manager.wait()
    assert names(store) == [checkpoint_name(s) for s in (20, 40, 50)]
    assert sorted(p.name for p in (tmp_path / "cache").glob("*.ckpt")) == [checkpoint_name(50)]


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (
            errno.ENOTCONN,
            "the Drive mount dropped: remount with colabkit.setup() or "
            "drive.mount(..., force_remount=True)",
        ),
        (errno.ENOSPC, "no space left"),
        (errno.EIO, "I/O error"),
    ],
)
def test_failing_store_never_stops_saving_and_newest_arrives_after_recovery(
    make, store, clock, caplog, code, reason
):
    manager = make(keep_policy=1, retry_delays=(1, 2, 4))
    save(manager, 10)
    manager.wait()
    store.fail(code)
    with caplog.at_level(logging.WARNING, logger="colabkit.checkpoint"):
        for step in (20, 30, 40):
            save(manager, step)  # never raises, never blocks
            manager.wait_staged()
        with pytest.raises(StoreError) as failure:
            manager.wait()
    assert reason in str(failure.value)
    assert manager.status.startswith("failing: ") and reason in manager.status
    assert names(store) == [checkpoint_name(10)]  # nothing pruned before a newer commit
    warnings = [r for r in caplog.records if "not reaching" in r.getMessage()]
    assert len(warnings) == 1 and reason in warnings[0].getMessage()
    if code == errno.ENOSPC:  # a full disk is named as such, not as a full Drive
        assert warnings[0].getMessage().startswith(f"The disk under {store.url} is full")
        assert "Drive" not in warnings[0].getMessage().split("(")[0]
    assert clock.sleeps[:3] == [1, 2, 4]
    store.heal()
    manager.wait()
    assert manager.status == "ok"
    assert names(store) == [checkpoint_name(40)]
    assert manager.latest().step == 40


def test_failure_lasts_then_a_later_save_retries_once(make, store):
    manager = make(retry_delays=(0,))
    store.fail(errno.EIO)
    save(manager, 1)
    with pytest.raises(StoreError):
        manager.wait()
    puts = checkpoint_calls(store, "put")
    store.heal()
    save(manager, 2)
    manager.wait()
    assert checkpoint_calls(store, "put") == puts + 1
    assert names(store)[-1] == checkpoint_name(2)


def test_slow_store_supersedes_pending_uploads_and_keeps_cache_small(make, store, tmp_path):
    manager = make(keep_policy=10)
    put_waiting = store.hold_puts()
    save(manager, 1)
    put_waiting.wait()
    for step in range(2, 8):
        save(manager, step)
        manager.wait_staged()
        staged = list((tmp_path / "cache").glob("*.ckpt"))
        assert len(staged) <= 3
    store.release_puts()
    manager.wait()
    assert names(store) == [checkpoint_name(1), checkpoint_name(7)]  # 2..6 never uploaded


def test_slow_disk_supersedes_pending_snapshots_and_frees_their_memory(make, store):
    manager = make(keep_policy=10)
    gate, entered = threading.Event(), threading.Event()

    def hold_first_write(event, path):
        if "ckpt-000000000001" in path and not gate.is_set():
            entered.set()
            gate.wait()

    previous = atomic.set_io_hook(hold_first_write)
    try:
        save(manager, 1)
        entered.wait()
        refs = []
        for step in (2, 3, 4):
            arrays = arrays_for(step)
            refs.append(weakref.ref(arrays["model/0000"]))
            manager.save(step, arrays, {})
            del arrays
        gate.set()
        manager.wait()
    finally:
        atomic.set_io_hook(previous)
    assert names(store) == [checkpoint_name(1), checkpoint_name(4)]
    assert refs[0]() is None and refs[1]() is None  # superseded snapshots are not kept


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_bad_newest_checkpoint_falls_back_to_previous_with_one_warning(
    make, tmp_path, caplog, damage
):
    store = LocalStore(tmp_path / "store")
    manager = make(store=store, keep_policy=5)
    for step in (10, 20):
        save(manager, step)
        manager.wait()
    newest = store.path(checkpoint_name(20))
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00junk" * 100)
    resumed = make(store=store, cache_dir=tmp_path / "vm2")
    with caplog.at_level(logging.WARNING):
        assert resumed.latest().step == 10
        assert resumed.latest().step == 10
        contents = resumed.restore()
    assert contents.state["step"] == 10
    warnings = [r for r in caplog.records if checkpoint_name(20) in r.getMessage()]
    assert len(warnings) == 1


def test_store_that_cannot_be_asked_is_not_no_checkpoint(make, store):
    manager = make()
    store.fail(errno.ENOTCONN, ops=("list",))
    with pytest.raises(StoreError, match="Drive mount dropped"):
        manager.latest()
    with pytest.raises(StoreError):
        manager.restore()


def test_checkpoint_only_in_cache_is_restored_and_then_uploaded(make, store, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    write_checkpoint(cache / checkpoint_name(70), arrays_for(70), {"step": 70})
    (cache / f".{checkpoint_name(80)}.tmp-1-abcd").write_bytes(b"half")  # crash leftover
    manager = make()
    assert manager.restore().state["step"] == 70
    manager.wait()
    assert names(store) == [checkpoint_name(70)]
    assert sorted(p.name for p in cache.glob("*.ckpt")) == [checkpoint_name(70)]


def test_archive_moves_everything_and_deletes_nothing(make, store, clock, tmp_path):
    manager = make(keep_policy=5)
    for step in (1, 2):
        save(manager, step)
        manager.wait()
    prefix = manager.archive()
    assert prefix.startswith("archive/20")
    assert manager.latest() is None
    assert names(store) == [f"{prefix}/{checkpoint_name(s)}" for s in (1, 2)]
    store.get(f"{prefix}/{checkpoint_name(2)}", tmp_path / "check")
    assert verify(tmp_path / "check")["step"] == 2
    assert manager.archive() is None  # nothing left to archive: no empty folder either
    assert len(names(store)) == 2
    save(manager, 3)
    manager.wait()
    again = manager.archive()
    assert again.startswith(prefix) and again != prefix  # same second: a new folder
    assert f"{again}/{checkpoint_name(3)}" in names(store) and len(names(store)) == 3


@pytest.mark.parametrize(
    ("kwargs", "argname"),
    [
        ({"save_policy": "10x"}, "save_policy"),
        ({"keep_policy": 0}, "keep_policy"),
        ({"retry_delays": ()}, "retry_delays"),
    ],
)
def test_bad_configuration_is_refused_up_front(make, kwargs, argname):
    with pytest.raises(ConfigError, match=f"`{argname}`"):
        make(**kwargs)


def test_bad_save_arguments_raise_before_anything_is_written(make, store, tmp_path):
    manager = make()
    with pytest.raises(ConfigError, match="state"):
        manager.save(1, arrays_for(1), {"model": object()})
    with pytest.raises(ConfigError, match="metrics"):
        manager.save(1, arrays_for(1), {}, metrics={"loss": "low"})
    with pytest.raises(ConfigError, match="step"):
        manager.save(1, arrays_for(1), {"step": 2})
    manager.wait()
    assert names(store) == [] and list((tmp_path / "cache").iterdir()) == []


def test_close_reports_failure_and_refuses_later_saves(make, store):
    manager = make(retry_delays=(0,))
    store.fail(errno.ENOSPC)
    save(manager, 1)
    with pytest.raises(StoreError, match="no space left"):
        manager.close()
    with pytest.raises(CheckpointError, match="after close"):
        save(manager, 2)


def test_list_and_restore_of_a_chosen_older_checkpoint(make):
    manager = make(keep_policy=5)
    for step in (10, 20, 30):
        save(manager, step, loss=1 / step)
        manager.wait()
    records = manager.list()
    assert [(r.step, r.epoch, r.metrics) for r in records] == [
        (10, 1, {"loss": 0.1}),
        (20, 2, {"loss": 0.05}),
        (30, 3, {"loss": 1 / 30}),
    ]
    contents = make().restore(records[1])
    assert contents.state["step"] == 20
    np.testing.assert_array_equal(contents.arrays["rng"], arrays_for(20)["rng"])


def test_keep_last_prunes_without_downloading_old_checkpoints(make, store, tmp_path):
    first = make(keep_policy=2)
    for step in (1, 2, 3):
        save(first, step)
        first.wait()
    gets = checkpoint_calls(store, "get")
    resumed = make(keep_policy=2, cache_dir=tmp_path / "new-vm")
    resumed.restore()  # downloads the newest: 1 get
    save(resumed, 4)
    resumed.wait()
    assert checkpoint_calls(store, "get") == gets + 1
    assert names(store) == [checkpoint_name(3), checkpoint_name(4)]


def test_a_bug_in_pruning_is_logged_and_never_leaves_wait_hanging(make, store, caplog):
    class BrokenKeep(KeepLast):
        def select(self, checkpoints, now):
            raise RuntimeError("bug in a keep policy")

    manager = make(keep_policy=BrokenKeep(1))
    save(manager, 1)
    manager.wait(timeout=30)  # returns instead of waiting forever on a dead mirror thread
    save(manager, 2)
    manager.wait(timeout=30)
    assert names(store)[-1] == checkpoint_name(2)  # the mirror thread is still alive
    assert "bug in a keep policy" in caplog.text
    manager.close()


def test_close_with_a_timeout_gives_up_on_a_hung_store_and_keeps_the_staged_copy(
    make, store, tmp_path
):
    manager = make()
    put_waiting = store.hold_puts()
    save(manager, 1)
    put_waiting.wait()  # the upload is stuck inside the store
    with pytest.raises(TimeoutError, match="not yet durable"):
        manager.close(timeout=0)
    store.release_puts()
    assert verify(tmp_path / "cache" / checkpoint_name(1))  # whole, ready for the next run


def test_a_damaged_checkpoint_is_named_where_the_user_keeps_it(tmp_path, clock, caplog):
    """The warning names the run directory's file (the one to look at or delete), not the
    copy in the local cache it was read from; one never uploaded is named in cache."""
    from colabkit.storage import LocalStore

    store = LocalStore(tmp_path / "run" / "checkpoints")
    writer = CheckpointManager(store, cache_dir=tmp_path / "vm1", clock=clock)
    for step in (1, 2):
        save(writer, step)
        writer.wait()
    writer.close()
    (tmp_path / "run" / "checkpoints" / checkpoint_name(2)).write_bytes(b"damaged on Drive")
    reader = CheckpointManager(store, cache_dir=tmp_path / "vm2", clock=clock)  # a new VM
    with caplog.at_level(logging.WARNING):
        assert reader.restore().state["step"] == 1
    (warning,) = [r.getMessage() for r in caplog.records if "Skipping" in r.getMessage()]
    assert warning.startswith(f"Skipping checkpoint {store.url}/{checkpoint_name(2)}: ")
    assert str(tmp_path / "vm2") not in warning
    assert warning.endswith("resume uses the newest checkpoint that verifies.")
    reader.close()
