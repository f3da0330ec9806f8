"""The plan across sessions: how many more sessions a run needs (a part of a session is one
more session) and when it is done, with plain numbers and then through ``colabkit.fit`` over
three sessions of a limited length, on a clock that advances 100 s per step.
"""

from __future__ import annotations

import re
import time

import keras
import pytest
from test_fit import fit, make_model
from test_plan import shown

from colabkit.clock import FakeClock
from colabkit.forecast import Forecast
from colabkit.training.deadline import SessionDeadline

START = time.mktime((2026, 12, 1, 10, 0, 0, 0, 0, 0)) - time.timezone  # Dec 01 10:00 UTC


def plan(epochs: int, global_step: int = 0) -> Forecast:
    """1 s a step, 100 steps an epoch; 1000 s left in this session, 10000 s in each new one."""
    return Forecast(global_step, 100, epochs, seconds_per_step=1.0, session_left=1000.0,
                    session_length=10_000.0, now=START)  # fmt: skip


@pytest.mark.parametrize(
    ("epochs", "more"),
    [
        (12, 1),  # 0.2 of a new session's work after this one
        (110, 1),  # exactly one
        (130, 2),  # 1.2 sessions of work: two more sessions, not one
        (210, 2),  # exactly two
        (211, 3),  # 2.01
    ],
)
def test_a_part_of_a_session_left_is_one_more_session(epochs, more):
    assert plan(epochs).more_sessions == more
    assert f"then {more} more session{'s' if more > 1 else ''}: " in plan(epochs).line()


def test_work_that_fits_this_session_needs_no_more_and_one_step_more_needs_one():
    assert plan(10).more_sessions == 0  # exactly what is left in this session
    assert plan(11, global_step=99).more_sessions == 1  # one step more than that
    assert plan(10).line().endswith("ends in this session (17 min left in it)")


def test_several_sessions_say_how_many_and_when_the_last_one_ends():
    ahead = plan(130)  # 13000 s: 1000 here, then 10000 and 2000
    assert ahead.finish == START + 13_000.0  # each session starting as the last one stops
    assert ahead.reaches_epoch == 10
    assert ahead.line() == (
        "epoch 0/130 done; 2 min an epoch here; 130 epochs left, about 3 h 37 min; this session "
        "reaches epoch 10 before its limit, then 2 more sessions: done about Dec 01 13:36 UTC "
        "if each starts at once"
    )


def plan_lines(out: str) -> list[str]:
    return [line.strip() for line in shown(out).splitlines() if "an epoch" in line]


def test_fit_plans_a_run_of_three_sessions_and_keeps_to_its_finish(tmp_path, capsys):
    """10 epochs of 10 min (6 steps of 100 s); a session trains 45 min (a 1 h limit, stopped
    15 min before it). After epoch 1: 90 min left, 35 of them here, then 55 min: 1.2 sessions of
    work, so two more sessions. Each session starts as the last one stops: every plan names the
    same finish, and the run ends then."""
    clock = FakeClock(start=START)

    class Tick(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            clock.advance(100.0)

    def session():
        limit = SessionDeadline("15m", session_limit="1h", session_start=clock.time(),
                                clock=clock)  # fmt: skip
        return fit(make_model(), tmp_path / "run", epochs=10, save_every="epoch", verbose=2,
                   clock=clock, callbacks=[Tick(), limit])  # fmt: skip

    first = session()
    assert first.stop_reason == "deadline" and len(first.history["loss"]) == 4
    lines = plan_lines(capsys.readouterr().out)
    assert lines[0] == (
        "colabkit: epoch 1/10 done; 10 min an epoch here; 9 epochs left, about 1 h 30 min; "
        "this session reaches epoch 4 before its limit, then 2 more sessions: done about "
        "Dec 01 11:40 UTC if each starts at once"
    )
    assert len(lines) == 4  # after epochs 1-4: the same count and finish each time
    assert all("then 2 more sessions: done about Dec 01 11:40 UTC" in line for line in lines)

    second = session()
    assert second.stop_reason == "deadline"
    lines = plan_lines(capsys.readouterr().out)
    assert lines[0] == (
        "colabkit: epoch 5/10 at step 3/6; 10 min an epoch in earlier sessions; 5.5 epochs "
        "left, about 55 min; this session reaches epoch 9 before its limit, then 1 more "
        "session: done about Dec 01 11:40 UTC if each starts at once"
    )

    third = session()
    assert third.completed and third.stop_reason is None
    lines = plan_lines(capsys.readouterr().out)
    assert re.search(r"ends in this session \(45 min left in it\)$", lines[0])
    assert time.strftime("%b %d %H:%M", time.gmtime(clock.time())) == "Dec 01 11:40"
