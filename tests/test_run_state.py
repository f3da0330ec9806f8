"""The saved run state (``state.json``): one owner, read back by every reader the same way."""

from __future__ import annotations

import json
import subprocess
import sys

from colabkit.checkpoint import RunState, record_from_state


def test_what_the_loop_writes_reads_back_equal():
    state = RunState(
        config={"batch_size": 32, "seed": 7},
        steps_per_epoch=10,
        epoch=2,
        step=3,
        history={"loss": [0.5, 0.25]},
        resumes=[{"epoch": 1, "step": 4, "global_step": 14, "time": 1.0}],
        train_seconds=12.5,
        total_epochs=5,
        callbacks=[{"class": "EarlyStopping"}],
        versions={"keras": "3.13.2"},
    )
    written = json.loads(json.dumps(state.to_json()))  # as state.json holds it
    back = RunState.read(written)
    assert back.global_step == 23 == written["global_step"]
    assert back.to_json() == state.to_json()


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
