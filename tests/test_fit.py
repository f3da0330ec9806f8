"""colabkit.fit in-process: resume semantics, guards, interruptions, deadline, BackupAndRestore.

Real Keras training (TensorFlow backend unless KERAS_BACKEND says otherwise) on a tiny model.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import keras
import numpy as np
import pytest

import colabkit
from colabkit.clock import FakeClock
from colabkit.errors import ConfigError, ResumeMismatchError
from colabkit.storage import open_store
from colabkit.training.deadline import SessionDeadline

N, FEATURES, BATCH = 96, 6, 16  # 6 steps per epoch


class BatchCounter(keras.layers.Layer):
    """Counts the batches the model is trained on (Keras' own interruption-test device)."""

    def build(self, input_shape):
        self.batches = self.add_weight(shape=(), initializer="zeros", trainable=False)

    def call(self, x, training=False):
        if training:
            self.batches.assign_add(1.0)
        return x


def make_model(width: int = 8, optimizer: str = "adam") -> keras.Model:
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            BatchCounter(),
            keras.layers.Dense(width, activation="relu"),
            keras.layers.Dropout(0.25),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def make_data(n: int = N):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, FEATURES)).astype("float32")
    y = np.eye(2, dtype="float32")[(x[:, 0] > 0).astype(int)]
    return x, y


def counter(model: keras.Model) -> float:
    return float(np.asarray(model.layers[0].batches))


def fit(model, run_dir, **kw):
    x, y = kw.pop("data", make_data())
    options = dict(
        run_dir=run_dir,
        cache_dir=str(run_dir) + "-cache",
        epochs=3,
        batch_size=BATCH,
        seed=5,
        session_limit=False,
        verbose=0,
    )
    options.update(kw)
    return colabkit.fit(model, x, y, **options)


def checkpoints_in(store) -> list[str]:
    return [o.name for o in store.list() if not o.name.startswith("sessions/")]


def checkpoints(run_dir: Path) -> list[str]:
    """Checkpoint names, archived ones included (not the sessions' claims)."""
    names = [o.name for o in open_store(run_dir / "checkpoints").list()]
    return [name for name in names if not name.startswith("sessions/")]


class RaiseAt(keras.callbacks.Callback):
    """Raises mid-fit at (epoch, batch), once."""

    def __init__(self, epoch: int, batch: int):
        super().__init__()
        self.at, self.epoch = (epoch, batch), None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise RuntimeError("interrupted")


def test_returns_full_history_and_finished_run_returns_at_once(tmp_path):
    model = make_model()
    history = fit(model, tmp_path / "run")
    assert len(history.history["loss"]) == 3 and history.completed
    assert history.resumes == []
    assert counter(model) == 18
    again = make_model()
    rerun = fit(again, tmp_path / "run")
    assert rerun.history == history.history
    assert counter(again) == 18  # final weights loaded, no batch trained again
    for a, b in zip(model.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_more_epochs_continue_the_run(tmp_path):
    fit(make_model(), tmp_path / "run", epochs=2)
    model = make_model()
    history = fit(model, tmp_path / "run", epochs=4)
    assert len(history.history["loss"]) == 4
    assert history.resumes[0]["epoch"] == 2 and history.resumes[0]["step"] == 0
    assert counter(model) == 24


class ValidationBatches(keras.callbacks.Callback):
    """Records each validation pass's batch count, from batch begins or batch ends."""

    def __init__(self, hook: str = "begin"):
        super().__init__()
        self.counts: list[int] = []
        if hook == "end":
            self.on_test_batch_end = self._count

    def on_test_begin(self, logs=None):
        self.counts.append(0)

    def on_test_batch_begin(self, batch, logs=None):
        if "on_test_batch_end" not in vars(self):
            self._count(batch, logs)

    def _count(self, batch, logs=None):
        self.counts[-1] += 1


def test_validation_runs_at_the_training_batch_size_like_model_fit(tmp_path):
    # 48 validation samples: 3 batches of 16 (Keras' fallback of 32 would make 2).
    ours, keras_own = ValidationBatches(), ValidationBatches()
    fit(make_model(), tmp_path / "run", validation_split=0.5, callbacks=[ours])
    x, y = make_data()
    make_model().fit(
        x, y, epochs=3, batch_size=BATCH, validation_split=0.5, verbose=0, callbacks=[keras_own]
    )
    assert ours.counts == keras_own.counts == [3, 3, 3]
    chosen = ValidationBatches()
    fit(make_model(), tmp_path / "other", validation_split=0.5, validation_batch_size=24,
        callbacks=[chosen])  # fmt: skip
    assert chosen.counts == [2, 2, 2]


def test_validation_data_can_be_anything_model_fit_validates_on(tmp_path):
    """Only training needs colabkit's replayable order: validation may be a tf.data.Dataset or
    a PyDataset, as in model.fit, also when the run resumes."""
    tf = pytest.importorskip("tensorflow")
    x, y = make_data()

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return x[i * 10 : (i + 1) * 10], y[i * 10 : (i + 1) * 10]

    for name, validation, batches in [
        ("tf.data", tf.data.Dataset.from_tensor_slices((x[:30], y[:30])).batch(10), 3),
        ("pydataset", Batches(), 4),
    ]:
        seen = ValidationBatches()
        with pytest.raises(RuntimeError, match="interrupted"):
            fit(make_model(), tmp_path / name, save_every="1steps", validation_data=validation,
                callbacks=[RaiseAt(1, 2)])  # fmt: skip
        history = fit(make_model(), tmp_path / name, validation_data=validation, callbacks=[seen])
        assert history.resumes and len(history.history["val_loss"]) == 3
        assert seen.counts == [batches, batches]  # the resumed call validates epochs 2 and 3


def test_batch_end_hooks_are_forwarded_only_to_callbacks_that_have_them(tmp_path):
    """Keras waits for every step's result when any callback has a batch-end hook: colabkit's
    own loop must not add one, yet a user's hook must still be called."""
    from keras.src.utils.python_utils import is_default

    from colabkit.training.loop import resumable_loop

    def loop(*callbacks):
        user = keras.callbacks.CallbackList(list(callbacks))
        return resumable_loop(
            user_callbacks=user, manager=None, data=None, progress=None, restored=None,
            stops=None, deadline=None, clock_seconds=None, epochs=1,
        )  # fmt: skip

    quiet = loop(ValidationBatches())
    assert is_default(quiet.on_train_batch_end) and is_default(quiet.on_test_batch_end)
    test_end = loop(ValidationBatches("end"))
    assert is_default(test_end.on_train_batch_end) and not is_default(test_end.on_test_batch_end)
    train_end = loop(RaiseAt(9, 9))
    assert not is_default(train_end.on_train_batch_end) and is_default(train_end.on_test_batch_end)

    ends = ValidationBatches("end")
    fit(make_model(), tmp_path / "run", validation_split=0.5, callbacks=[ends])
    assert ends.counts == [3, 3, 3]


def test_interrupted_mid_epoch_every_batch_trained_once(tmp_path):
    """Keras' interruption scenario, through colabkit.fit: a callback raises mid-fit."""
    model = make_model()
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(model, tmp_path / "run", save_every="1steps", callbacks=[RaiseAt(1, 3)])
    resumed = make_model()
    history = fit(resumed, tmp_path / "run", save_every="1steps")
    assert history.resumes[0]["epoch"] == 1 and history.resumes[0]["step"] == 3
    assert counter(resumed) == 18  # 3 epochs x 6 batches, none twice, none skipped
    reference = make_model()
    ref = fit(reference, tmp_path / "reference", save_every="1steps")
    assert history.history == ref.history
    for a, b in zip(resumed.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(batch_size=8), "batch_size=16"),
        (dict(seed=6), "seed=5"),
        (dict(data=make_data(80)), "train_samples=96"),
        (dict(model=lambda: make_model(width=9)), "model architecture differs"),
        (dict(model=lambda: make_model(optimizer="sgd")), "optimizer differs"),
    ],
)
def test_guards_name_what_differs_and_overwrite_nothing(tmp_path, change, message):
    run = tmp_path / "run"
    fit(make_model(), run, epochs=1)
    before = {p: p.read_bytes() for p in (run / "checkpoints").rglob("*") if p.is_file()}
    model = change.pop("model", make_model)()
    with pytest.raises(ResumeMismatchError, match=message) as info:
        fit(model, run, epochs=2, **change)
    assert "fresh=True" in str(info.value) and "\n" not in str(info.value)
    after = {p: p.read_bytes() for p in (run / "checkpoints").rglob("*") if p.is_file()}
    assert after == before


def test_fresh_archives_instead_of_deleting(tmp_path):
    run = tmp_path / "run"
    fit(make_model(), run, epochs=1)
    old = checkpoints(run)
    model = make_model(width=9)
    history = fit(model, run, epochs=1, fresh=True)
    assert history.resumes == []
    names = checkpoints(run)
    assert any(n.startswith("archive/") and n.endswith(old[-1]) for n in names)


def test_numpy_integers_are_taken_like_python_ints(tmp_path):
    # e.g. epochs computed with numpy; model.fit takes them, so does colabkit.fit.
    history = fit(
        make_model(), tmp_path / "run", epochs=np.int64(2), batch_size=np.int32(BATCH),
        seed=np.uint8(5), keep=np.int64(2), validation_split=0.25,
        validation_batch_size=np.int64(8),
    )  # fmt: skip
    assert len(history.history["loss"]) == 2
    same = fit(make_model(), tmp_path / "py", epochs=2, validation_split=0.25,
               validation_batch_size=8)  # fmt: skip
    assert history.history == same.history


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (dict(epochs=0), "`epochs`"),
        (dict(batch_size=0), "`batch_size`"),
        (dict(validation_split=0.5, validation_batch_size=0), "`validation_batch_size`"),
        (dict(save_every="10x"), "`save_every`"),
        (dict(keep=0), "`keep`"),
        (dict(validation_split=1.5), "`validation_split`"),
        (dict(seed=-1), "`seed`"),
    ],
)
def test_bad_arguments_one_line_and_nothing_written(tmp_path, kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        fit(make_model(), tmp_path / "run", **kwargs)
    assert "Received" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def _generator():
    yield make_data()


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (dict(data=(make_data()[0], make_data()[1][:10])), "differ in length"),
        (dict(sample_weight=np.ones(5)), "differ in length"),
        (dict(data=(_generator(), None)), "wrap a Python generator in a PyDataset"),
        (dict(data=([1, 2, 3], None)), "`x`"),
        (dict(run_dir=123), "`run_dir`"),
        (dict(callbacks=keras.callbacks.EarlyStopping()), "`callbacks`"),
        (dict(session_limit="10m"), "longer than the margin"),
    ],
)
def test_unusable_data_and_arguments_get_one_line(tmp_path, kwargs, fragment):
    kwargs.setdefault("run_dir", tmp_path / "run")
    run_dir = kwargs.pop("run_dir")
    with pytest.raises(ConfigError, match=fragment) as info:
        fit(make_model(), run_dir, **kwargs)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_uncompiled_model_and_missing_run_dir(tmp_path):
    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(2)])
    with pytest.raises(ConfigError, match="compile"):
        fit(model, tmp_path / "run")
    with pytest.raises(ConfigError, match="run_dir"):
        colabkit.fit(make_model(), *make_data(), epochs=1)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="file"):
        fit(make_model(), tmp_path / "file")


def test_session_deadline_stops_at_the_right_step_with_a_durable_checkpoint(tmp_path):
    clock = FakeClock(start=1_000.0)

    class Tick(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            clock.advance(60.0)  # each step takes a minute

    # Session started at 1000 s, limit 20 min, margin 15 min: stop once 5 minutes are used.
    deadline = SessionDeadline("15m", session_limit="20m", session_start=1_000.0, clock=clock)
    model = make_model()
    history = fit(model, tmp_path / "run", callbacks=[Tick(), deadline], clock=clock)
    assert not history.completed and history.stop_reason == "deadline"
    assert counter(model) == 5
    # durable: the checkpoint is in the store (not only in cache), at step 5
    assert checkpoints(tmp_path / "run")[-1] == "ckpt-000000000005.ckpt"
    resumed = make_model()
    done = fit(resumed, tmp_path / "run")
    assert done.completed and counter(resumed) == 18


def test_a_store_that_hangs_at_the_session_limit_is_given_up_before_the_limit(tmp_path, capsys):
    """The store takes nothing (a hung Drive mount): fit must say so while the VM lives, not
    wait past the session limit; the checkpoint stays in local cache."""
    from colabkit.storage import LocalStore
    from colabkit.storage.faults import FaultyStore

    clock = FakeClock(start=1_000.0)

    class Tick(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            clock.advance(60.0 if batch < 4 else 16 * 60.0)  # step 5 ends at the limit itself

    store = FaultyStore(LocalStore(tmp_path / "store"))
    store.hold_puts()
    deadline = SessionDeadline("15m", session_limit="20m", session_start=1_000.0, clock=clock)
    result = {}

    def train():
        result["history"] = fit(make_model(), tmp_path / "run", store=store,
                                callbacks=[Tick(), deadline], clock=clock)  # fmt: skip

    runner = threading.Thread(target=train, daemon=True)
    runner.start()
    runner.join(timeout=300)  # a guard only: the fixed code returns at once, the old one never
    store.release_puts()
    assert not runner.is_alive(), "fit kept waiting for a store that hangs past the limit"
    history = result["history"]
    assert history.stop_reason == "deadline" and not history.durable
    assert "NOT yet durable" in capsys.readouterr().out
    assert (tmp_path / "run-cache" / "ckpt-000000000005.ckpt").exists()


@pytest.mark.parametrize("store_hangs", [False, True])
def test_session_deadline_in_a_plain_model_fit(tmp_path, caplog, store_hangs):
    """colabkit.callbacks for users who keep model.fit: saved and durable at the deadline, or,
    when the store takes nothing, given up on before the limit with the staged copy kept."""
    from colabkit.callbacks import Checkpoint
    from colabkit.storage import LocalStore
    from colabkit.storage.faults import FaultyStore

    clock = FakeClock(start=1_000.0)
    minutes = [1, 1, 1, 1, 16 if store_hangs else 1, 1]  # per step; the limit is at minute 20

    class Tick(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            clock.advance(60.0 * minutes[batch])

    store = FaultyStore(LocalStore(tmp_path / "store"))
    checkpoint = Checkpoint(store=store, cache_dir=tmp_path / "cache", clock=clock)
    deadline = SessionDeadline(
        "15m", session_limit="20m", session_start=1_000.0, clock=clock, checkpoint=checkpoint
    )
    if store_hangs:
        store.hold_puts()
    model, (x, y) = make_model(), make_data()
    result = {}

    def train():
        callbacks = [Tick(), checkpoint, deadline]
        model.fit(x, y, batch_size=BATCH, epochs=3, verbose=0, callbacks=callbacks)
        result["done"] = True

    runner = threading.Thread(target=train, daemon=True)
    runner.start()
    runner.join(timeout=300)  # a guard only: the fixed code returns at once
    store.release_puts()
    assert result.get("done"), "model.fit kept waiting for a store that hangs past the limit"
    assert counter(model) == 5  # stopped after the step that reached the deadline
    staged = tmp_path / "cache" / "ckpt-000000000005.ckpt"
    if store_hangs:
        assert "Checkpoint not durable" in caplog.text and staged.exists()
    else:
        assert checkpoints_in(LocalStore(tmp_path / "store")) == [staged.name]


def test_session_limit_argument_validated(tmp_path):
    with pytest.raises(ConfigError, match="session_limit"):
        fit(make_model(), tmp_path / "run", session_limit="soon")


SIGNAL_JOB = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import keras
import test_fit as t
class Send(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 2 and not os.path.exists({marker!r}):
            open({marker!r}, "w").close()
            os.kill(os.getpid(), signal.{sig})
try:
    t.fit(t.make_model(), {run!r}, callbacks=[Send()])
except KeyboardInterrupt:
    print("KeyboardInterrupt re-raised")
    sys.exit(3)
print("finished")
"""


@pytest.mark.parametrize(("sig", "code"), [("SIGTERM", -signal.SIGTERM), ("SIGINT", 3)])
def test_signal_saves_at_the_next_step_then_stops(tmp_path, sig, code):
    run = tmp_path / "run"
    job = SIGNAL_JOB.format(
        tests=str(Path(__file__).parent), marker=str(tmp_path / "sent"), run=str(run), sig=sig
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", job], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == code, proc.stderr[-2000:]
    assert "finished" not in proc.stdout
    assert checkpoints(run)[-1] == "ckpt-000000000003.ckpt"  # saved right after batch 2
    (end,) = (run / "checkpoints" / "sessions").glob("*.end.json")  # recorded before obeying
    assert json.loads(end.read_text())["reason"] == sig
    resumed = make_model()
    history = fit(resumed, run)
    assert history.resumes[0]["global_step"] == 3 and counter(resumed) == 18


def test_drop_in_backup_and_restore_no_worse_than_keras(tmp_path):
    """Keras' interruption scenario in a plain model.fit: colabkit's BackupAndRestore against
    Keras' own, both saving every epoch; a callback raises in the middle of epoch 2."""
    x, y = make_data()
    counts = {}
    for name, cls in [
        ("keras", keras.callbacks.BackupAndRestore),
        ("colabkit", colabkit.callbacks.BackupAndRestore),
    ]:
        model = make_model()
        backup_dir = str(tmp_path / name)
        with pytest.raises(RuntimeError):
            model.fit(
                x,
                y,
                batch_size=BATCH,
                epochs=3,
                verbose=0,
                callbacks=[cls(backup_dir), RaiseAt(1, 3)],
            )
        model = make_model()
        history = model.fit(
            x, y, batch_size=BATCH, epochs=3, verbose=0, callbacks=[cls(backup_dir)]
        )
        counts[name] = (counter(model), len(history.history["loss"]))
    # Both restore after epoch 1 and retrain epochs 2-3: 1 epoch from the backup + 2 x 6 batches.
    assert counts["colabkit"] == counts["keras"] == (18.0, 2)
    assert not list((tmp_path / "colabkit").rglob("*.ckpt"))  # delete_checkpoint=True


def test_drop_in_backup_and_restore_validates_like_keras(tmp_path):
    with pytest.raises(ValueError, match="save_freq"):
        colabkit.callbacks.BackupAndRestore(str(tmp_path), save_freq=0)
    with pytest.raises(ValueError, match="backup_dir"):
        colabkit.callbacks.BackupAndRestore("")


def test_failing_store_delays_durability_not_training(tmp_path, caplog):
    import errno

    from colabkit.storage.faults import FaultyStore
    from colabkit.storage.local import LocalStore

    store = FaultyStore(LocalStore(tmp_path / "drive"))
    store.fail(errno.ENOTCONN, ops=("put",))  # the Drive mount dropped for the whole run
    model = make_model()
    history = fit(model, tmp_path / "unused", store=store, clock=FakeClock())
    assert history.completed and counter(model) == 18  # training was not held hostage
    assert history.durable is False
    assert "only in local cache" in caplog.text
    assert store.inner.list() == []
    store.heal()  # the mount is back: the re-run uploads the final checkpoint, trains nothing
    again = make_model()
    rerun = fit(again, tmp_path / "unused", store=store, clock=FakeClock())
    assert rerun.history == history.history and counter(again) == 18
    assert checkpoints_in(store.inner)[-1] == "ckpt-000000000018.ckpt"


def test_deleting_the_run_directory_starts_over(tmp_path, caplog):
    import shutil

    with pytest.raises(RuntimeError):  # an unfinished run keeps its newest copy in cache
        fit(make_model(), tmp_path / "run", save_every="1steps", callbacks=[RaiseAt(0, 3)])
    assert list(tmp_path.glob("run-cache/*.ckpt"))
    shutil.rmtree(tmp_path / "run")  # the user starts over by deleting the run directory
    model = make_model()
    history = fit(model, tmp_path / "run", epochs=1)
    assert history.resumes == [] and counter(model) == 6  # trained again, not resumed
    assert "No checkpoint in" in caplog.text
    assert list(tmp_path.glob("run-cache.stale-*/*.ckpt"))  # set aside, not deleted


def test_a_finished_durable_run_leaves_no_copy_in_the_checkpoint_cache(tmp_path):
    fit(make_model(), tmp_path / "run", epochs=1)
    assert not list(tmp_path.glob("run-cache/*.ckpt"))
    assert checkpoints(tmp_path / "run")  # the store keeps them


def test_drop_in_backup_and_restore_twice_in_the_same_folder_trains_twice(tmp_path):
    """After a finished run deleted its backups, a new fit must not resume from a cache."""
    x, y = make_data()
    for _ in range(2):
        model = make_model()
        backup = colabkit.callbacks.BackupAndRestore(str(tmp_path / "b"))
        history = model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0, callbacks=[backup])
        assert history.epoch == [0, 1] and counter(model) == 12


def test_every_checkpoint_corrupt_refuses_instead_of_starting_over(tmp_path):
    from colabkit.errors import CheckpointError

    fit(make_model(), tmp_path / "run", epochs=2)
    for path in (tmp_path / "run" / "checkpoints").glob("*.ckpt"):
        path.write_bytes(path.read_bytes()[:100])
    before = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    with pytest.raises(CheckpointError, match="None of the .* verifies") as info:
        fit(make_model(), tmp_path / "run", epochs=2)
    assert "fresh=True" in str(info.value)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == before
    history = fit(make_model(), tmp_path / "run", epochs=2, fresh=True)
    assert history.completed and history.resumes == []


def test_a_second_trainer_of_the_same_run_is_refused(tmp_path):
    from colabkit.checkpoint import runs

    cache = tmp_path / "run-cache"
    job = (
        f"import sys, time; sys.path.insert(0, {str(Path(__file__).parents[1])!r});"
        "from pathlib import Path; from colabkit.checkpoint import runs;"
        f"runs._lock(Path({str(cache)!r})); print('locked', flush=True); time.sleep(60)"
    )
    other = subprocess.Popen([sys.executable, "-c", job], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "locked"
        with pytest.raises(colabkit.ColabkitError, match=f"pid {other.pid}"):
            fit(make_model(), tmp_path / "run")
    finally:
        other.kill()
        other.wait()
    assert not (tmp_path / "run").exists()  # refused before writing anything
    fit(make_model(), tmp_path / "run", epochs=1)  # the lock died with its process
    assert not runs._HELD  # and this process released its own


def test_callbacks_import_like_keras_callbacks():
    from colabkit.callbacks import BackupAndRestore, Checkpoint, SessionDeadline

    assert issubclass(BackupAndRestore, keras.callbacks.Callback)
    assert colabkit.callbacks.Checkpoint is Checkpoint
    assert colabkit.callbacks.SessionDeadline is SessionDeadline


@pytest.mark.parametrize(
    ("marker", "session_limit", "hours"),
    [
        (None, None, None),  # a local process: no session limit
        ("/var/colab/hostname", None, 12.0),
        ("/kaggle", "auto", 12.0),
        (None, "24h", 24.0),  # given explicitly, it applies anywhere
        ("/var/colab/hostname", False, None),
    ],
)
def test_the_default_session_limit_follows_the_environment(
    monkeypatch, marker, session_limit, hours
):
    from colabkit import env
    from colabkit.training.deadline import deadline_for

    real_detect = env.detect
    system = env.SystemView(environ={}, exists=lambda path: path == marker)
    monkeypatch.setattr(env, "detect", lambda **kw: real_detect(system=system, **kw))
    deadline = deadline_for([], session_limit, FakeClock())
    if hours is None:
        assert deadline.deadline == float("inf")
    else:
        start = real_detect(system=system).session_start
        assert deadline.deadline == start + hours * 3600 - 15 * 60
