"""What a user sees of a run that spans sessions: the resume, the true step, the plan.

The plan's arithmetic with plain numbers, then through ``colabkit.fit`` with real Keras training,
a clock that advances 10 s per step, and the progress bar as Keras prints it.
"""

from __future__ import annotations

import re
import time

import keras
import pytest
from test_fit import RaiseAt, fit, make_model

from colabkit.clock import FakeClock
from colabkit.forecast import Forecast
from colabkit.training.deadline import SessionDeadline

HOUR = 3600.0


def test_a_run_that_ends_in_this_session():
    plan = Forecast(300, 100, 15, seconds_per_step=0.41, session_left=5 * HOUR)
    assert plan.line() == (
        "epoch 3/15 done; 41 s an epoch here; 12 epochs left, about 8 min; "
        "ends in this session (5 h left in it)"
    )
    assert plan.more_sessions == 0


def test_a_run_that_needs_more_sessions_says_how_many_and_when_it_ends():
    now = time.mktime((2026, 12, 1, 10, 0, 0, 0, 0, 0)) - time.timezone  # 10:00 UTC
    plan = Forecast(
        250, 100, 15, seconds_per_step=36.0, measured="earlier sessions",
        session_left=4 * HOUR, session_length=11.75 * HOUR, now=now,
    )  # fmt: skip
    # 1 h an epoch; 12.5 epochs left: 4 h here (to epoch 6), then 8.5 h: one more session
    assert plan.where() == "epoch 3/15 at step 50/100"
    assert plan.reaches_epoch == 6
    assert plan.more_sessions == 1
    assert plan.line() == (
        "epoch 3/15 at step 50/100; 1 h an epoch in earlier sessions; 12.5 epochs left, "
        "about 12 h 30 min; this session reaches epoch 6 before its limit, then 1 more session: "
        "done about Dec 01 22:30 UTC if each starts at once"
    )
    longer = Forecast(0, 100, 40, seconds_per_step=36.0, session_left=HOUR, session_length=HOUR)
    assert longer.more_sessions == 39 and longer.reaches_epoch == 1


def test_without_a_limit_or_a_pace_the_plan_says_what_it_knows():
    assert Forecast(0, 100, 5).line() == (
        "epoch 0/5 done; the time an epoch takes is known after the first one here"
    )
    assert Forecast(500, 100, 10, seconds_per_step=0.1).line().endswith("no session limit here")
    assert Forecast(500, 100, 5, seconds_per_step=0.1).seconds_left == 0.0


def test_a_run_of_unknown_length_says_where_it_is_without_a_total():
    """A checkpoint of an older colabkit does not record the run's epochs."""
    assert Forecast(300, 100, None).where() == "epoch 3 done"
    assert Forecast(350, 100, None, seconds_per_step=0.5).line() == (
        "epoch 4 at step 50/100; 50 s an epoch here"
    )


def test_under_a_second_left_is_said_as_such_not_about():
    assert Forecast(900, 100, 10, seconds_per_step=0.001).line() == (
        "epoch 9/10 done; < 1 s an epoch here; 1 epoch left, < 1 s; no session limit here"
    )


def test_the_plan_as_status_json_shows_it():
    plan = Forecast(
        250, 100, 15, seconds_per_step=36.0, measured="earlier sessions",
        session_left=4 * HOUR, session_length=11.75 * HOUR, now=1_000.0,
    )  # fmt: skip
    assert plan.to_json() == {
        "seconds_per_epoch": 3600.0,
        "measured": "earlier sessions",
        "seconds_left": 12.5 * HOUR,
        "more_sessions": 1,
        "finish": 1_000.0 + 12.5 * HOUR,
    }
    away = Forecast(250, 100, 15, seconds_per_step=36.0, limits_known=False)
    assert away.to_json()["more_sessions"] is None and away.to_json()["finish"] is None


def shown(text: str) -> str:
    """Console text as a user sees it: colours gone, each progress-bar redraw on its own line."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text).replace("\r", "\n").replace("\b", "")


@pytest.fixture
def ticking():
    clock = FakeClock(start=1_000.0)

    class Tick(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            clock.advance(10.0)  # each step takes 10 s: an epoch of 6 steps, a minute

    return clock, Tick()


def test_a_resume_is_announced_and_its_epoch_counted_from_its_true_step(tmp_path, capsys, ticking):
    clock, tick = ticking
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(make_model(), tmp_path / "run", save_every="1steps", verbose=1, clock=clock,
            callbacks=[tick, RaiseAt(1, 3)])  # fmt: skip
    first = shown(capsys.readouterr().out)
    assert "colabkit: new run, checkpoints in file://" in first
    assert "3 epochs of 6 steps; the plan follows the first epoch." in first
    assert "colabkit: epoch 1/3 done; 1 min an epoch here; 2 epochs left, about 2 min" in first

    limit = SessionDeadline("15m", session_limit="1h", session_start=clock.time(), clock=clock)
    fit(make_model(), tmp_path / "run", save_every="1steps", verbose=1, clock=clock,
        callbacks=[tick, limit])  # fmt: skip
    out = shown(capsys.readouterr().out)
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    resumed = next(line for line in lines if line.startswith("colabkit: resuming"))
    assert re.fullmatch(
        r"colabkit: resuming from ckpt-000000000009\.ckpt \(step 9\) in file://\S+/run/"
        r"checkpoints: epoch 2/3 at step 3/6; session 2 of this run, 2 min trained so far\.",
        resumed,
    )
    assert (  # the pace of session 1 (90 s for 9 steps), the limit of this one (45 min)
        "colabkit: epoch 2/3 at step 3/6; 1 min an epoch in earlier sessions; 1.5 epochs "
        "left, about 2 min; ends in this session (45 min left in it)"
    ) in lines
    epoch_2 = lines[lines.index("Epoch 2/3") + 1 : lines.index("Epoch 3/3")]
    counts = [line.split()[0] for line in epoch_2 if re.match(r"\d+/6 ", line)]
    assert counts[0] == "4/6" and counts[-1] == "6/6"  # steps 1-3 were trained in session 1
    assert "Epoch 1/3" not in lines
    assert "colabkit: epoch 2/3 done; 1 min an epoch here; 1 epoch left, about 1 min; " \
        "ends in this session (45 min left in it)" in lines  # fmt: skip


def test_verbose_0_prints_nothing_and_the_finished_run_says_so(tmp_path, capsys, caplog):
    fit(make_model(), tmp_path / "run", verbose=0)
    assert capsys.readouterr().out == ""
    fit(make_model(), tmp_path / "run", verbose=2)
    out = capsys.readouterr().out
    assert out == (
        "colabkit: the run already finished at epoch 3/3 (all epochs trained); "
        "loaded its final weights.\n"
    )


def test_the_stop_message_starts_on_its_own_line_after_the_progress_bar(tmp_path, capsys):
    import os
    import signal

    class CtrlC(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        fit(make_model(), tmp_path / "run", verbose=1, callbacks=[CtrlC()])
    out = shown(capsys.readouterr().out)
    assert "\ncolabkit: SIGINT: saved step 3 (epoch 1); re-run the same call to resume.\n" in out
    bar = out.split("\ncolabkit: SIGINT")[0].splitlines()[-1]
    assert re.match(r"\d/6 ━+ ", bar)  # the bar's last state: its line ended before the message


def test_model_fit_with_the_checkpoint_callback_announces_its_resume_and_its_limits(
    tmp_path, capsys
):
    from test_fit import make_data

    import colabkit

    x, y = make_data()
    first = make_model()
    first.fit(x, y, batch_size=16, epochs=2, verbose=0,
              callbacks=[colabkit.callbacks.Checkpoint(tmp_path / "run")])  # fmt: skip
    assert "resuming" not in capsys.readouterr().out
    again = make_model()
    again.fit(x, y, batch_size=16, epochs=3, verbose=2,
              callbacks=[colabkit.callbacks.Checkpoint(tmp_path / "run")])  # fmt: skip
    out = capsys.readouterr().out
    assert re.search(
        r"colabkit: resuming from ckpt-000000000012\.ckpt \(step 12\) in file://\S+ at epoch 3 "
        r"\(model\.fit restarts an epoch at batch 0; its TensorBoard batch steps restart at 0 and "
        r"a CSVLogger keeps earlier rows only with append=True: colabkit\.fit continues all "
        r"three\)\.",
        out,
    )
    assert "Epoch 3/3" in out and "Epoch 1/3" not in out
