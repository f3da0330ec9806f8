"""colabkit.callbacks.BackupAndRestore as a drop-in for keras.callbacks.BackupAndRestore.

Each behaviour Keras' own tests check (keras/src/callbacks/backup_and_restore_test.py) runs here
against both callbacks where they are meant to agree: real training of a tiny model whose first
layer counts the batches its weights have seen, so a resume shows how many batches ran in all.
A test that asserts something colabkit does on purpose and Keras does not says so ("ours").
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import colabkit.callbacks
from colabkit.errors import CheckpointError

KERAS = keras.callbacks.BackupAndRestore
OURS = colabkit.callbacks.BackupAndRestore
N, BATCH = 10, 4  # 3 batches an epoch, the last one short

both = pytest.mark.parametrize("cls", [KERAS, OURS], ids=["keras", "colabkit"])


class SeenBatches(keras.layers.Layer):
    """Counts the training batches in a variable: a backup holds the count of its weights."""

    def build(self, input_shape):
        self.seen = self.add_weight(shape=(), initializer="zeros", trainable=False)

    def call(self, x, training=False):
        if training:
            self.seen.assign_add(1.0)
        return x


def make_model(steps_per_execution: int = 1) -> keras.Model:
    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((3,)), SeenBatches(), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse", steps_per_execution=steps_per_execution)
    return model


def seen(model: keras.Model) -> int:
    return int(np.asarray(model.layers[0].seen))


def train(model, callbacks, epochs, n=N, batch_size=BATCH):
    x = np.random.default_rng(0).random((n, 3)).astype("float32")
    return model.fit(
        x, x[:, :1], batch_size=batch_size, epochs=epochs, verbose=0, callbacks=callbacks
    )


class Interrupt(keras.callbacks.Callback):
    """Raises after batch ``batch`` of ``epoch`` (0-based), or at the end of ``epoch``."""

    def __init__(self, epoch: int, batch: int | None = None, slow_disk=None):
        super().__init__()
        self.at, self.epoch, self.slow_disk = (epoch, batch), 0, slow_disk

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.slow_disk is not None and (self.epoch, batch) == self.at:
            self.slow_disk.set()  # the backup of the interrupted batch is written slowly

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise RuntimeError("interrupted")

    def on_epoch_end(self, epoch, logs=None):
        if self.at == (epoch, None):
            raise RuntimeError("interrupted")


def interrupted(model, callback, at, epochs=6, wait=True, slow_disk=None):
    """Trains with ``callback`` until ``Interrupt(*at)`` raises; then (``wait``) lets ours
    finish writing its last backup (a re-run at once is its own test below)."""
    with pytest.raises(RuntimeError, match="interrupted"):
        train(model, [callback, Interrupt(*at, slow_disk=slow_disk)], epochs)
    if wait:
        settle(callback)


def settle(callback) -> None:
    """Ours uploads in the background: wait until backup_dir holds the newest backup (Keras
    writes it there before the next batch)."""
    manager = getattr(callback, "manager", None)
    if manager is not None:
        manager.wait()


def newest_backup(backup_dir: Path) -> Path:
    """The file holding the newest backup's weights: Keras' latest.weights.h5, our newest
    checkpoint."""
    ours = sorted(backup_dir.glob("checkpoints/ckpt-*.ckpt"))
    return ours[-1] if ours else backup_dir / "latest.weights.h5"


def files_in(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


@pytest.fixture(autouse=True)
def _interrupted_fits_let_go_of_their_runs():
    """A fit that raised keeps its run's lock (the kernel's next fit is the same trainer): let
    go of those this test's fits left, as a new kernel would, so later tests find none held."""
    from colabkit.checkpoint import runs

    before = set(runs._HELD)
    yield
    for path in set(runs._HELD) - before:
        runs._HELD[path].release()


@pytest.fixture
def new_machine(tmp_path, monkeypatch):
    """Restarting on a new Colab VM: our local copies (under $XDG_CACHE_HOME) are gone; only
    backup_dir remains. Keras keeps nothing outside backup_dir."""

    def restart():
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "new-vm-cache"))

    return restart


# --------------------------------------------------------------------------------- arguments


@both
@pytest.mark.parametrize("save_freq", ["batch", 0.15, None])
def test_save_freq_neither_epoch_nor_an_int_is_refused(tmp_path, cls, save_freq):
    with pytest.raises(ValueError, match="Invalid value for argument `save_freq`"):
        cls(str(tmp_path / "backup"), save_freq=save_freq)


@pytest.mark.parametrize("save_freq", [0, -1, True])
def test_save_freq_below_one_or_a_bool_other_than_false_is_refused(tmp_path, save_freq):
    """Ours: Keras 3.15 takes any int (a bool too) and, as every count is >= it, backs up
    after every batch."""
    with pytest.raises(ValueError, match="Invalid value for argument `save_freq`"):
        OURS(str(tmp_path / "backup"), save_freq=save_freq)


@both
@pytest.mark.parametrize("backup_dir", ["", None])
def test_an_empty_backup_dir_is_refused_with_keras_message(cls, backup_dir):
    with pytest.raises(ValueError, match=re.escape("Empty `backup_dir` argument passed")):
        cls(backup_dir)


# ---------------------------------------------------------------------- interrupt and resume


@both
@pytest.mark.parametrize("same_callback", [True, False], ids=["same-callback", "new-callback"])
def test_interrupted_at_an_epoch_end_continues_with_the_next_epoch(tmp_path, cls, same_callback):
    """As Keras' test: the same callback fits again; or a notebook cell run again makes a new
    one (and a new model)."""
    backup_dir = tmp_path / "backup"
    callback = cls(str(backup_dir))
    interrupted(make_model(), callback, at=(1, None))  # after epoch 2 of 6, backed up
    assert backup_dir.is_dir()
    model = make_model()
    history = train(model, [callback if same_callback else cls(str(backup_dir))], epochs=5)
    assert history.epoch == [2, 3, 4]
    assert seen(model) == 15  # 6 batches from the backup + 3 epochs x 3
    assert not backup_dir.exists()


@both
@pytest.mark.parametrize(
    ("save_freq", "at", "epochs", "batches"),
    [
        (1, (0, 1), [0, 1, 2, 3, 4], 2 + 15),  # as Keras' test
        (2, (1, 0), [1, 2, 3, 4], 4 + 12),  # backed up after the first batch of epoch 2
    ],
)
def test_interrupted_mid_epoch_restarts_that_epoch_at_batch_0_from_the_last_backup(
    tmp_path, cls, save_freq, at, epochs, batches
):
    """Both restore the weights of the newest backup and restart its epoch at batch 0: the
    batches of that epoch in the backup are trained again (colabkit.fit resumes exactly)."""
    backup_dir = tmp_path / "backup"
    callback = cls(str(backup_dir), save_freq=save_freq)
    model = make_model()
    interrupted(model, callback, at=at)
    assert backup_dir.is_dir()
    assert seen(model) == at[0] * 3 + at[1] + 1  # all of them backed up
    model = make_model()
    history = train(model, [callback], epochs=5)
    assert history.epoch == epochs
    assert seen(model) == batches
    assert not backup_dir.exists()


@pytest.mark.parametrize("cls", [KERAS, OURS], ids=["keras", "colabkit"])
def test_save_freq_counts_batches_under_steps_per_execution(tmp_path, cls):
    backup_dir = tmp_path / "backup"
    model = make_model(steps_per_execution=2)  # on_train_batch_end after batches 1, 3, 5, 7
    with pytest.raises(RuntimeError, match="interrupted"):
        train(model, [cls(str(backup_dir), save_freq=2), Interrupt(0, 5)], 3, n=8, batch_size=1)
    model = make_model(steps_per_execution=2)
    train(model, [cls(str(backup_dir), save_freq=2)], 1, n=8, batch_size=1)
    assert seen(model) == 6 + 8  # the backup after batch 6, then the epoch from batch 0


@pytest.mark.parametrize(
    ("cls", "same_callback"),
    [
        pytest.param(KERAS, True, id="keras"),
        pytest.param(OURS, True, id="colabkit-same-callback"),
        pytest.param(OURS, False, id="colabkit-new-callback"),
    ],
)
def test_a_rerun_at_once_resumes_from_the_backup_of_the_interrupted_batch(
    tmp_path, monkeypatch, cls, same_callback
):
    """Keras writes each backup before the next batch; ours writes it in a background thread,
    here slowly (a big model), and the fit is run again as soon as it raised."""
    from colabkit.checkpoint import write_checkpoint

    slow_disk = threading.Event()

    def slow_write(*args, **kwargs):
        if slow_disk.is_set():
            time.sleep(2.0)
        return write_checkpoint(*args, **kwargs)

    # the writer thread's own name for it (the package's internals, patched for this test only)
    monkeypatch.setattr("colabkit.checkpoint.pipeline.write_checkpoint", slow_write)
    backup_dir = str(tmp_path / "backup")
    callback = cls(backup_dir, save_freq=1)
    # 5 batches backed up, the last backup slowly
    interrupted(make_model(), callback, at=(1, 1), wait=False, slow_disk=slow_disk)
    model = make_model()
    rerun = callback if same_callback else cls(backup_dir, save_freq=1)
    fast_disk = keras.callbacks.LambdaCallback(on_train_begin=lambda logs: slow_disk.clear())
    history = train(model, [rerun, fast_disk], epochs=2)
    assert history.epoch == [1]
    assert seen(model) == 5 + 3


# ------------------------------------------------------------------------------- corruption


@both
def test_a_corrupt_newest_backup_falls_back_to_the_previous_one(tmp_path, new_machine, cls):
    """double_checkpoint=True keeps two backups; the newest is unreadable after a restart."""
    backup_dir = tmp_path / "backup"
    callback = cls(str(backup_dir), double_checkpoint=True)
    interrupted(make_model(), callback, at=(1, None))  # backups after epochs 1 and 2
    newest_backup(backup_dir).write_bytes(b"0")
    new_machine()
    model = make_model()
    history = train(model, [cls(str(backup_dir), double_checkpoint=True)], epochs=5)
    assert history.epoch == [1, 2, 3, 4]  # from the backup after epoch 1
    assert seen(model) == 3 + 12
    assert not backup_dir.exists()


@pytest.mark.parametrize("cls", [KERAS, OURS], ids=["keras", "colabkit"])
def test_an_unreadable_only_backup_stops_the_fit_instead_of_starting_over(
    tmp_path, new_machine, cls
):
    backup_dir = tmp_path / "backup"
    callback = cls(str(backup_dir))
    interrupted(make_model(), callback, at=(1, None))
    corrupt = newest_backup(backup_dir)
    corrupt.write_bytes(b"0")
    new_machine()
    model = make_model()
    with pytest.raises((OSError, CheckpointError)):
        train(model, [cls(str(backup_dir))], epochs=5)
    assert seen(model) == 0
    assert corrupt.read_bytes() == b"0"  # left for the user to look at


def test_ours_resumes_from_its_local_copy_when_the_copy_in_backup_dir_is_corrupt(tmp_path):
    """Ours: each backup is also in a local cache folder, and the copy that verifies is used.
    Keras (one backup) raises OSError here; with double_checkpoint it loses an epoch."""
    backup_dir = tmp_path / "backup"
    callback = OURS(str(backup_dir))
    interrupted(make_model(), callback, at=(1, None))
    newest_backup(backup_dir).write_bytes(b"0")
    model = make_model()
    history = train(model, [OURS(str(backup_dir))], epochs=5)
    assert history.epoch == [2, 3, 4]
    assert seen(model) == 6 + 9
    assert not backup_dir.exists()


# ------------------------------------------------------------------------- the end of a fit


@both
def test_a_fit_that_ends_removes_the_backup_dir_and_the_next_fit_starts_over(tmp_path, cls):
    backup_dir = tmp_path / "runs" / "backup"
    callback = cls(str(backup_dir))
    interrupted(make_model(), callback, at=(0, None))
    train(make_model(), [callback], epochs=2)
    assert not backup_dir.exists()
    assert (tmp_path / "runs").is_dir()  # only backup_dir goes, not the folder it is in
    model = make_model()
    history = train(model, [cls(str(backup_dir))], epochs=2)
    assert history.epoch == [0, 1] and seen(model) == 6
    assert not backup_dir.exists()


@both
def test_delete_checkpoint_false_keeps_the_backup_and_a_rerun_trains_nothing(tmp_path, cls):
    backup_dir = tmp_path / "backup"
    train(make_model(), [cls(str(backup_dir), delete_checkpoint=False)], epochs=3)
    assert files_in(backup_dir)
    done = make_model()
    history = train(done, [cls(str(backup_dir), delete_checkpoint=False)], epochs=5)
    assert history.epoch == [3, 4] and seen(done) == 15  # more epochs continue the run
    assert files_in(backup_dir)
    model = make_model()
    history = train(model, [cls(str(backup_dir), delete_checkpoint=False)], epochs=5)
    assert history.epoch == [] and seen(model) == 15  # the final weights, nothing trained
    for ours, theirs in zip(model.get_weights(), done.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert files_in(backup_dir)


def test_a_fit_right_after_one_that_trained_nothing_keeps_the_run(tmp_path, monkeypatch):
    """Ours only (Keras has no claims): fits in a row keeping their backups, the second with
    nothing left to train; its claim on the run reaches backup_dir slowly (Drive)."""
    from colabkit.checkpoint import Sessions

    slow, release, landed = threading.Event(), threading.Event(), threading.Event()
    claim = Sessions.claim

    def slow_claim(self, *args, **kwargs):
        if not slow.is_set():
            return claim(self, *args, **kwargs)
        slow.clear()
        release.wait(timeout=3.0)
        time.sleep(1.05 - time.time() % 1)  # stamped a later second than claims made meanwhile
        try:
            return claim(self, *args, **kwargs)
        finally:
            landed.set()

    monkeypatch.setattr(Sessions, "claim", slow_claim)
    backup_dir = str(tmp_path / "backup")
    train(make_model(), [OURS(backup_dir, delete_checkpoint=False)], epochs=3)
    slow.set()
    history = train(make_model(), [OURS(backup_dir, delete_checkpoint=False)], epochs=3)
    assert history.epoch == []
    history = train(make_model(), [OURS(backup_dir, delete_checkpoint=False)], epochs=5)
    assert history.epoch == [3, 4]
    release.set()
    assert landed.wait(timeout=10.0)
    model = make_model()
    history = train(model, [OURS(backup_dir, delete_checkpoint=False)], epochs=5)
    assert history.epoch == [] and seen(model) == 15


@pytest.mark.parametrize(
    ("cls", "kept"),
    [(KERAS, None), (OURS, ["checkpoints/best.keras", "mine/log.txt", "notes.txt"])],
)
def test_a_users_files_in_backup_dir_survive_our_cleanup(tmp_path, cls, kept):
    """Ours: Keras' on_train_end rmtree's backup_dir, the user's files with it; ours deletes
    its own backups and the folders they leave empty (a file of the user's next to the backups
    themselves included)."""
    backup_dir = tmp_path / "backup"
    (backup_dir / "mine").mkdir(parents=True)
    (backup_dir / "checkpoints").mkdir(parents=True)
    (backup_dir / "notes.txt").write_text("mine")
    (backup_dir / "mine" / "log.txt").write_text("mine")
    (backup_dir / "checkpoints" / "best.keras").write_text("mine")
    callback = cls(str(backup_dir))
    interrupted(make_model(), callback, at=(0, None))
    train(make_model(), [callback], epochs=2)
    assert (files_in(backup_dir) if backup_dir.exists() else None) == kept


def test_save_freq_false_restores_but_never_backs_up(tmp_path):
    """Ours: Keras 3 documents save_freq=False for preemption checkpointing, which it no longer
    has, and as every count is >= False it backs up after every batch."""
    backup_dir = tmp_path / "backup"
    interrupted(make_model(), OURS(str(backup_dir)), at=(0, None))
    model = make_model()
    restore_only = OURS(str(backup_dir), save_freq=False)
    interrupted(model, restore_only, at=(2, 1), epochs=5)
    assert seen(model) == 3 + 5  # restored the backup after epoch 1, trained 5 batches
    model = make_model()
    history = train(model, [OURS(str(backup_dir))], epochs=5)
    assert history.epoch == [1, 2, 3, 4]  # from the same backup: nothing newer was saved
    assert seen(model) == 3 + 12
