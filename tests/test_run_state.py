"""The saved run state (``state.json``): one owner, read back by every reader the same way."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np

from colabkit.checkpoint import CheckpointManager, RunState, record_from_state
from colabkit.clock import FakeClock
from colabkit.storage import MemoryStore


def test_what_the_loop_writes_reads_back_equal():
    state = RunState(
        config={"batch_size": 32, "seed": 7},
        steps_per_epoch=10,
        epoch=2,
        step=3,
        history={"loss": [0.5, 0.25]},
        resumes=[{"epoch": 1, "step": 4, "global_step": 14, "time": 1.0}],
        finished=True,
        stop_reason="EarlyStopping",
        train_seconds=12.5,
        epoch_fingerprint="9f2c",
        total_epochs=5,
        callbacks=[{"class": "EarlyStopping"}],
        versions={"keras": "3.13.2"},
    )
    written = json.loads(json.dumps(state.to_json()))  # as state.json holds it
    back = RunState.read(written)
    assert back.global_step == 23 == written["global_step"]
    assert back.to_json() == state.to_json()
    assert back == dataclasses.replace(state, counted_steps=23)  # every field, none in `other`


def test_state_json_keeps_its_key_names():
    """Older and newer colabkits read each other's checkpoints: the keys are the file format."""
    written = RunState(callbacks=[{"class": "EarlyStopping"}]).to_json()
    assert sorted(written) == sorted(
        ["global_step", "epoch", "step_in_epoch", "steps_per_epoch", "run", "history", "resumes",
         "finished", "stop_reason", "train_seconds", "epoch_fingerprint", "total_epochs",
         "versions", "callbacks"]
    )  # fmt: skip
    assert "callbacks" not in RunState().to_json()  # written only when there are some


def test_what_the_manager_adds_reads_back(tmp_path):
    store, clock = MemoryStore("run-state"), FakeClock()
    first = CheckpointManager(store, cache_dir=tmp_path / "a", clock=clock)
    first.save(12, {"w": np.zeros(2, np.float32)}, RunState(epoch=1).to_json())
    first.close()
    manager = CheckpointManager(store, cache_dir=tmp_path / "b", clock=clock)
    manager.restore()  # a second session, resumed from the first one's step 12
    state = RunState(steps_per_epoch=10, epoch=2, step=4, history={"loss": [0.5, 0.25]})
    manager.save(24, {"w": np.zeros(2, np.float32)}, state.to_json(), metrics={"loss": 0.25})
    manager.wait()
    back = RunState.read(manager.restore().state)
    manager.close()
    assert (back.checkpoint_step, back.checkpoint_metrics) == (24, {"loss": 0.25})
    assert back.session == manager.sessions.id != first.sessions.id
    assert back.lineage == [[first.sessions.id, 12]]
    assert back.created == clock.time()
    assert (
        back.other == {}
    )  # the format's own keys (colabkit_version, format_version) are not carried
    facts = dict(checkpoint_step=None, checkpoint_metrics={}, session=None, lineage=[])
    rest = dataclasses.replace(back, **facts, created=None, other={}, counted_steps=None)
    assert rest == state


def test_zero_is_a_value_not_a_missing_one():
    back = RunState.read({"epoch": 0, "step_in_epoch": 0, "global_step": 0, "step": 5})
    assert (back.epoch, back.step, back.has_epoch, back.global_step) == (0, 0, True, 0)
    assert RunState.read({"train_seconds": 0.5, "created": 0.25}).train_seconds == 0.5
    assert RunState.read({"created": 0.25}).created == 0.25


def test_odd_values_read_as_defaults_never_fail():
    """A hand-edited or foreign state.json: a listing or status must still read it."""
    back = RunState.read(
        {
            "steps_per_epoch": "ten",
            "epoch": -1,
            "step_in_epoch": True,
            "history": {"loss": [0.1, "x"], "acc": [0.5]},
            "resumes": [None, {"epoch": 1}],
            "finished": "yes",
            "train_seconds": float("nan"),
            "total_epochs": 0,
            "created": "today",
            "checkpoint_metrics": {"loss": "low", "acc": 0.5},
            "session": 3,
            "run": [],
        }
    )
    assert (back.steps_per_epoch, back.epoch, back.step, back.has_epoch) == (None, 0, 0, False)
    assert back.history == {"acc": [0.5]}
    assert back.resumes == [{"epoch": 1}]
    assert back.finished is False and back.train_seconds == 0.0 and back.total_epochs is None
    assert back.created is None and back.checkpoint_metrics == {"acc": 0.5}
    assert back.session is None and back.config == {}


def test_a_callback_checkpoint_counts_its_own_steps():
    """``callbacks.Checkpoint`` does not know the steps per epoch: its own count is the step."""
    written = RunState(epoch=3, step=0, counted_steps=41).to_json()
    assert written["global_step"] == 41
    assert RunState.read(written).global_step == 41
    assert RunState.read({"step": 9}).global_step == 9  # the manager's step, nothing else


def test_a_newer_colabkits_keys_are_kept_the_files_own_are_not_carried_on():
    back = RunState.read(
        {"frozen": {"name": "frozen-ab.ckpt"}, "format_version": 2, "future": [1], "epoch": 1}
    )
    written = back.to_json()
    assert written["future"] == [1]
    # a resumed run's next checkpoint says its own frozen record, never the restored one's
    assert "frozen" not in written and "format_version" not in written


def test_old_versions_are_read():
    back = RunState.read({"keras": {"version": "3.8.0", "backend": "jax"}})
    assert back.versions == {"keras": "3.8.0", "backend": "jax"}  # colabkit 0.1's shape
    assert "keras" not in back.to_json()


def test_the_catalogue_reads_through_it():
    record = record_from_state("ckpt-000000000012.ckpt", {"epoch": 2, "created": 5.0}, 10)
    assert (record.step, record.epoch, record.created) == (12, 2, 5.0)
    assert record_from_state("ckpt-000000000012.ckpt", {}, None).epoch is None


def test_it_is_read_without_keras():
    code = (
        "import sys; from colabkit.checkpoint import RunState; RunState.read({}); "
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
