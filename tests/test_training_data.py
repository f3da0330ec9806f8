"""The resumable batch order and the state snapshot helpers (no training)."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from colabkit.errors import ConfigError, ResumeMismatchError
from colabkit.training import state
from colabkit.training.data import ArrayBatches, DatasetBatches, train_validation_split


def ids(batches, epoch):
    batches.epoch = epoch
    return [batches[i][1].tolist() for i in range(len(batches))]


def test_each_epoch_visits_every_sample_once_in_an_order_fixed_by_seed_and_epoch():
    x = np.arange(50, dtype="float32").reshape(50, 1)
    y = np.arange(50)
    batches = ArrayBatches(x, y, batch_size=8, seed=3)
    assert len(batches) == math.ceil(50 / 8)
    e0, e1 = ids(batches, 0), ids(batches, 1)
    assert sorted(sum(e0, [])) == list(range(50)) == sorted(sum(e1, []))
    assert e0 != e1  # reshuffled every epoch
    again = ArrayBatches(x, y, batch_size=8, seed=3)
    assert ids(again, 1) == e1  # a new process sees the same epoch order
    assert ids(ArrayBatches(x, y, batch_size=8, seed=4), 1) != e1
    for i in range(len(batches)):  # x and y stay paired
        batches.epoch = 1
        bx, by = batches[i]
        np.testing.assert_array_equal(bx[:, 0], by)


def test_resumed_epoch_starts_at_its_next_step():
    x = np.arange(40, dtype="float32").reshape(40, 1)
    y = np.arange(40)
    full = ArrayBatches(x, y, batch_size=6, seed=0)
    resumed = ArrayBatches(x, y, batch_size=6, seed=0)
    resumed.start_step = 4
    assert len(resumed) == len(full) - 4
    assert ids(resumed, 2) == ids(full, 2)[4:]
    with pytest.raises(IndexError):
        resumed[len(resumed)]


def test_user_pydataset_batches_in_a_seeded_order():
    class Squares(keras.utils.PyDataset):
        def __len__(self):
            return 7

        def __getitem__(self, i):
            return np.full((2, 1), i, "float32"), np.full((2,), i)

    batches = DatasetBatches(Squares(), seed=1)
    order = [int(batches[i][1][0]) for i in range(7)]
    assert sorted(order) == list(range(7)) and order != list(range(7))
    batches.start_step = 5
    assert [int(batches[i][1][0]) for i in range(2)] == order[5:]


def test_validation_split_matches_keras():
    x = np.arange(20).reshape(20, 1)
    y = np.arange(20)
    (tx, ty, _), (vx, vy, _) = train_validation_split(x, y, None, 0.25)
    assert ty.tolist() == list(range(15)) and vy.tolist() == list(range(15, 20))
    with pytest.raises(ConfigError, match="validation_split"):
        train_validation_split(x, y, None, 0.99)


def test_callback_state_roundtrip_with_arrays_and_infinities():
    early = keras.callbacks.EarlyStopping(restore_best_weights=True)
    early.wait, early.best, early.best_epoch = 2, np.float32(0.5), 3
    early.best_weights = [np.ones((2, 2)), np.zeros(3)]
    plateau = keras.callbacks.ReduceLROnPlateau()
    plateau.best, plateau.wait, plateau.cooldown_counter = math.inf, 1, 0

    class Custom(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seen = []

        def get_state(self):
            return {"seen": list(self.seen)}

        def set_state(self, s):
            self.seen = s["seen"]

    custom = Custom()
    custom.seen = [1, 2]
    states, arrays = state.capture_callbacks(
        [early, keras.callbacks.TerminateOnNaN(), plateau, custom]
    )
    import json

    states = json.loads(json.dumps(states))  # what the checkpoint stores
    fresh = [
        keras.callbacks.EarlyStopping(restore_best_weights=True),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.ReduceLROnPlateau(),
        Custom(),
    ]
    state.restore_callbacks(fresh, states, arrays)
    assert (fresh[0].wait, fresh[0].best, fresh[0].best_epoch) == (2, 0.5, 3)
    np.testing.assert_array_equal(fresh[0].best_weights[0], np.ones((2, 2)))
    assert fresh[2].best == math.inf and fresh[2].wait == 1
    assert fresh[3].seen == [1, 2]
    # A stateless callback added in front, and EarlyStopping left out: matched by class.
    plateau_again = keras.callbacks.ReduceLROnPlateau()
    state.restore_callbacks([keras.callbacks.CSVLogger("x.csv"), plateau_again], states, arrays)
    assert plateau_again.best == math.inf and plateau_again.wait == 1


def test_restore_with_a_different_model_is_refused_before_assigning_anything():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    arrays = {"model/0000": np.zeros((3, 4), "float32"), "model/0001": np.zeros(2, "float32")}
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ResumeMismatchError, match="shape"):
        state.restore_variables(model, arrays, metrics=False)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_on_tensorflow_the_pipeline_gives_exactly_the_batches_of_the_order(monkeypatch):
    """ArrayBatches.for_fit on TensorFlow (a tf.data pipeline, no Python per step) yields the
    batches ``batch()`` defines, for any epoch and resume step, the epoch set after it is built
    (as the loop's on_epoch_begin does)."""
    pytest.importorskip("tensorflow")
    import keras

    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    x = np.random.default_rng(0).random((100, 3))
    y = np.arange(100)
    data = ArrayBatches(x, y, batch_size=16, seed=3)
    for epoch, start in [(0, 0), (1, 0), (1, 3), (4, 6)]:
        data.start_step = start
        dataset = data.for_fit(epoch)
        data.epoch = epoch
        got = list(dataset.as_numpy_iterator())
        assert len(got) == len(data) == 7 - start
        for step, (gx, gy) in enumerate(got, start):
            ex, ey = data.batch(step)
            np.testing.assert_array_equal(gy, ey)
            np.testing.assert_array_equal(gx, ex.astype("float32"))


def test_ten_thousand_variables_and_more_are_restored_each_to_its_own_position():
    """Keys are ``metrics/0000`` ... ``metrics/10000``: sorted as text, ``10000`` comes before
    ``1001``. Each value must reach the variable at its own position."""
    from colabkit.training.state import restore_metrics

    class Variable:
        def __init__(self, i):
            self.path, self.shape, self.dtype, self.value = f"v{i}", (1,), "float32", None

        def assign(self, value):
            self.value = value

    class Model:
        metrics_variables = [Variable(i) for i in range(10_002)]

    arrays = {f"metrics/{i:04d}": np.array([i], np.float32) for i in range(10_002)}
    restore_metrics(Model, arrays)
    assert all(v.value[0] == i for i, v in enumerate(Model.metrics_variables))
