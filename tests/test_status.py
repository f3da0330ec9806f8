"""``colabkit status``: a run in progress, a finished run, an empty folder, a wrong path.

Runs are trained for real (tiny model, ``test_fit``'s helpers) on a clock that advances 10 s per
step, so the time trained and the forecast are exact.
"""

from __future__ import annotations

import json
import re

import keras
import pytest
from test_fit import RaiseAt, fit, make_model

import colabkit
from colabkit.cli import main
from colabkit.clock import FakeClock

KEYS = {
    "schema", "run", "state", "stop_reason", "global_step", "epoch", "step_in_epoch",
    "steps_per_epoch", "epochs", "sessions", "train_seconds", "checkpoint", "metrics", "forecast",
    "session_log", "space",
}  # fmt: skip


@pytest.fixture
def clock():
    return FakeClock(start=1_796_000_000.0)


def train(run_dir, clock, *callbacks, epochs=3):
    class Tick(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            clock.advance(10.0)

    return fit(make_model(), run_dir, epochs=epochs, save_every="1steps", clock=clock,
               callbacks=[Tick(), *callbacks])  # fmt: skip


def status_json(run_dir, capsys) -> dict:
    assert main(["status", str(run_dir), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_run_in_progress_after_two_sessions(tmp_path, clock, capsys):
    run = tmp_path / "run"
    with pytest.raises(RuntimeError):
        train(run, clock, RaiseAt(0, 4))  # session 1: killed after 4 steps (4 saved)
    with pytest.raises(RuntimeError):
        train(run, clock, RaiseAt(1, 2))  # session 2: to epoch 2, step 2

    report = status_json(run, capsys)
    assert report.keys() == KEYS
    assert report["run"] == (run / "checkpoints").as_uri()
    assert report["state"] == "in progress" and report["stop_reason"] is None
    assert (report["epoch"], report["step_in_epoch"], report["steps_per_epoch"]) == (1, 2, 6)
    assert report["global_step"] == 8 and report["epochs"] == 3
    assert report["sessions"] == 2
    assert report["train_seconds"] == 80.0  # 8 steps of 10 s
    assert report["checkpoint"]["name"] == "ckpt-000000000008.ckpt"
    assert report["checkpoint"]["step"] == 8 and report["checkpoint"]["size"] > 0
    assert set(report["metrics"]) == {"accuracy", "loss"}  # epoch 1's
    assert report["forecast"]["seconds_per_epoch"] == 60.0
    assert report["forecast"]["seconds_left"] == 100.0  # 10 steps left
    # away from the training session its limit is unknown: not "0 more" and a date in 1970
    assert report["forecast"]["more_sessions"] is None
    assert report["forecast"]["finish"] is None
    first, second = report["session_log"]  # how each session started and ended
    assert (first["resumed_step"], first["global_step"]) == (None, 4)
    assert (second["resumed_step"], second["global_step"]) == (4, 8)
    assert first["reason"] == second["reason"] == "failed: RuntimeError"
    assert first["runtime"]["environment"] == "local" and first["runtime"]["accelerator"]
    assert first["runtime"]["keras"] == keras.version() and first["host"]
    assert second["started"] > first["started"]

    assert main(["status", str(run)]) == 0
    text = capsys.readouterr().out
    assert "state       in progress: epoch 2/3 at step 2/6\n" in text
    assert "sessions    2, 1 min of training\n" in text
    assert "checkpoint  ckpt-000000000008.ckpt (" in text
    plan = "1 min an epoch in the sessions so far; 1.7 epochs left, about 2 min"
    assert f"to finish   {plan}\n" in text
    assert re.search(r"\nsession 2   \w{3} \d\d \d\d:\d\d UTC on \S+ \(local, [^)]*keras [^)]+\), "
                     r"from step 4 to step 8: failed: RuntimeError\n", text)  # fmt: skip


def test_a_finished_run(tmp_path, clock, capsys):
    train(tmp_path / "run", clock)
    report = status_json(tmp_path / "run", capsys)
    assert report["state"] == "finished"
    assert (report["epoch"], report["step_in_epoch"], report["global_step"]) == (3, 0, 18)
    assert report["forecast"]["seconds_left"] == 0.0 and report["sessions"] == 1
    assert [entry["reason"] for entry in report["session_log"]] == ["finished"]
    html = colabkit.status(tmp_path / "run")._repr_html_()  # what a notebook cell shows
    assert "<th style='text-align:left'>state</th>" in html and "finished: epoch 3/3 done" in html
    assert "to finish" not in html


def test_an_empty_folder_and_a_path_that_does_not_exist(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    report = status_json(tmp_path / "empty", capsys)
    assert report["state"] == "not started" and report["checkpoint"] is None
    assert report["session_log"] == []
    assert report.keys() == KEYS
    assert main(["status", str(tmp_path / "empty")]) == 0
    assert "not started: no checkpoint yet" in capsys.readouterr().out

    assert main(["status", str(tmp_path / "typo")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"Error: No run at {tmp_path / 'typo'}: the folder does not exist.")
    assert not (tmp_path / "typo").exists()  # status changes nothing


def test_a_damaged_newest_checkpoint_speaks_through_the_one_before(tmp_path, clock, capsys):
    train(tmp_path / "run", clock, epochs=1)
    (tmp_path / "run" / "checkpoints" / "ckpt-000000000006.ckpt").write_bytes(b"damaged")
    report = status_json(tmp_path / "run", capsys)
    assert report["checkpoint"]["name"] == "ckpt-000000000005.ckpt"
    assert report["state"] == "in progress" and report["global_step"] == 5
