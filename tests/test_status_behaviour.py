"""``colabkit status`` tells the run's true state: the newest complete epoch's metrics, a run a
callback stopped early as finished, and never a superseded session's stray checkpoint.

Runs are trained for real (test_fit's tiny model, 6 steps an epoch) on a clock that advances
10 s per step; status is read through the CLI as a user does.
"""

from __future__ import annotations

import keras
import pytest
from test_fit import RaiseAt
from test_status import status_json, train
from two_vms import stray_after_takeover

import colabkit
from colabkit.cli import main
from colabkit.clock import FakeClock


@pytest.fixture
def clock():
    return FakeClock(start=1_796_000_000.0)


class EpochLogs(keras.callbacks.Callback):
    """What Keras hands the callbacks at each epoch's end (what the History records)."""

    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[dict[str, float]] = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(dict(logs))


def test_the_metrics_are_the_newest_complete_epochs(tmp_path, clock, capsys):
    run = tmp_path / "run"
    seen = EpochLogs()
    with pytest.raises(RuntimeError):
        train(run, clock, seen, RaiseAt(2, 2))  # epochs 1 and 2 done, killed in epoch 3
    first, second = seen.epochs
    assert first != second  # else the test could not tell them apart
    report = status_json(run, capsys)
    assert (report["epoch"], report["step_in_epoch"]) == (2, 2)
    assert report["metrics"] == second
    assert main(["status", str(run)]) == 0
    shown = ", ".join(f"{k} {v:.4g}" for k, v in second.items())
    assert f"\nmetrics     {shown}\n" in capsys.readouterr().out

    history = train(run, clock, seen)  # resumed and finished: epoch 3's metrics now
    report = status_json(run, capsys)
    assert report["state"] == "finished" and report["metrics"] == seen.epochs[-1]
    assert report["metrics"] == {k: v[-1] for k, v in history.history.items()}
    assert report["metrics"] != second


def test_a_run_stopped_early_by_a_callback_is_finished_with_nothing_left(tmp_path, clock, capsys):
    run = tmp_path / "run"
    early = keras.callbacks.EarlyStopping(monitor="loss", min_delta=10.0, patience=1)
    history = train(run, clock, early, epochs=5)
    assert len(history.history["loss"]) == 2 and history.stop_reason == "stopped by a callback"

    report = status_json(run, capsys)
    assert report["state"] == "finished" and report["stop_reason"] == "stopped by a callback"
    assert (report["epoch"], report["epochs"], report["global_step"]) == (2, 5, 12)
    assert report["forecast"]["seconds_left"] == 0.0  # nothing more will train
    assert report["forecast"]["more_sessions"] is None and report["forecast"]["finish"] is None
    assert [entry["reason"] for entry in report["session_log"]] == ["stopped by a callback"]
    assert main(["status", str(run)]) == 0
    text = capsys.readouterr().out
    assert "state       finished: epoch 2/5 done (stopped by a callback)\n" in text
    assert "to finish" not in text and "in progress" not in text

    again = train(run, clock, early, epochs=5)  # Run all again: nothing trains
    assert again.already_finished and again.history == history.history
    after = status_json(run, capsys)
    for key in ("state", "stop_reason", "global_step", "sessions", "checkpoint", "session_log"):
        assert after[key] == report[key], key


def test_a_superseded_sessions_stray_checkpoint_is_not_the_runs_state(tmp_path, capsys):
    """The old VM committed step 8 after a new VM had taken the run over from step 4 and
    committed 6 (tests/two_vms.py): the run is where the new VM left it."""
    run = stray_after_takeover(tmp_path)
    report = status_json(run, capsys)
    assert report["checkpoint"]["name"] == "ckpt-000000000006.ckpt"
    assert (report["global_step"], report["epoch"], report["step_in_epoch"]) == (6, 1, 0)
    assert report["state"] == "in progress" and report["sessions"] == 2
    assert [entry["resumed_step"] for entry in report["session_log"]] == [None, 4]
    assert "state       in progress: epoch 1/3 done\n" in colabkit.status(run).text()
