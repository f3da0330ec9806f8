"""Save and keep policies: pure functions of (step, epoch end, time, checkpoints)."""

from __future__ import annotations

import re

import pytest

from colabkit.checkpoint.policy import (
    CheckpointRecord,
    KeepAll,
    KeepBest,
    KeepEvery,
    KeepLast,
    SaveAny,
    SaveEveryEpoch,
    SaveEverySeconds,
    SaveEverySteps,
    parse_keep,
    parse_save_every,
)
from colabkit.errors import ConfigError

HOUR = 3600.0


def ask(policy, step=1, epoch_end=False, now=0.0, last_step=None, last_time=0.0):
    return policy.should_save(
        step=step, epoch_end=epoch_end, now=now, last_save_step=last_step, last_save_time=last_time
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("epoch", SaveEveryEpoch()),
        (" Epoch ", SaveEveryEpoch()),
        ("500steps", SaveEverySteps(500)),
        ("1 step", SaveEverySteps(1)),
        ("500", SaveEverySteps(500)),
        (500, SaveEverySteps(500)),
        ("10m", SaveEverySeconds(600.0)),
        ("2h", SaveEverySeconds(7200.0)),
        ("30s", SaveEverySeconds(30.0)),
        ("epoch|10m", SaveAny((SaveEveryEpoch(), SaveEverySeconds(600.0)))),
        (["epoch", 100], SaveAny((SaveEveryEpoch(), SaveEverySteps(100)))),
        (SaveEverySteps(3), SaveEverySteps(3)),
    ],
)
def test_parse_save_every(value, expected):
    assert parse_save_every(value) == expected


@pytest.mark.parametrize(
    "bad", ["10x", "", "0steps", 0, -5, True, None, 1.5j, "epoch|", "epoch|nope"]
)
def test_bad_save_every_is_one_clear_line(bad):
    with pytest.raises(ConfigError) as e:
        parse_save_every(bad)
    assert str(e.value) == (
        f"Invalid value for argument `save_every`. Received: save_every={bad!r}. Expected 'epoch', "
        "a number of steps such as '500steps', or a duration such as '10m' or '2h'."
    )


def test_bad_save_every_names_the_caller_argument():
    with pytest.raises(ConfigError, match=re.escape("`save_freq`. Received: save_freq='10x'")):
        parse_save_every("10x", argname="save_freq")


def test_every_epoch_saves_only_at_epoch_end():
    policy = parse_save_every("epoch")
    assert ask(policy, epoch_end=True)
    assert not ask(policy, step=10**6, now=10**6)


def test_every_steps_counts_from_the_last_save():
    policy = parse_save_every("500steps")
    assert not ask(policy, step=499)
    assert ask(policy, step=500)
    assert not ask(policy, step=900, last_step=500)  # e.g. resumed from step 500
    assert ask(policy, step=1000, last_step=500)


def test_every_minutes_uses_the_time_it_is_given():
    policy = parse_save_every("10m")
    assert not ask(policy, now=599.0, last_time=0.0)
    assert ask(policy, now=600.0, last_time=0.0)
    assert not ask(policy, now=1100.0, last_time=600.0)
    assert not ask(policy, now=10**9, last_time=None)  # nothing to measure from


def test_combination_saves_when_any_part_says_so():
    policy = parse_save_every("epoch|10m")
    assert ask(policy, epoch_end=True, now=1.0)
    assert ask(policy, now=601.0)
    assert not ask(policy, now=599.0)


def rec(step, created=0.0, **metrics):
    return CheckpointRecord(name=f"c{step}", step=step, created=created, metrics=metrics)


def test_parse_keep():
    assert parse_keep(3) == KeepLast(3)
    assert parse_keep(None) == KeepAll()
    best = KeepBest(1, "val_loss")
    assert parse_keep(best) is best
    for bad in (0, -1, True, "3", 2.5):
        with pytest.raises(
            ConfigError, match=re.escape(f"Received: keep={bad!r}. Expected an integer >= 1")
        ):
            parse_keep(bad)


def test_keep_last_keeps_highest_steps_whatever_the_order():
    records = [rec(30), rec(10), rec(50), rec(40), rec(20)]
    assert KeepLast(2).select(records, now=0) == {"c50", "c40"}
    assert KeepLast(10).select(records, now=0) == {r.name for r in records}


def test_keep_every_keeps_one_per_period_and_is_stable():
    records = [rec(i, created=i * 0.5 * HOUR) for i in range(10)]  # every 30 minutes
    kept = KeepEvery(hours=2).select(records, now=5 * HOUR)
    assert kept == {"c0", "c4", "c8"}
    survivors = [r for r in records if r.name in kept] + [rec(10, created=5 * HOUR)]
    assert KeepEvery(hours=2).select(survivors, now=5 * HOUR) >= kept


def test_keep_best_by_metric_and_mode():
    records = [rec(1, loss=0.5, acc=0.7), rec(2, loss=0.3, acc=0.9), rec(3, loss=0.4), rec(4)]
    assert KeepBest(1, "loss").select(records, now=0) == {"c2"}
    assert KeepBest(2, "loss").select(records, now=0) == {"c2", "c3"}
    assert KeepBest(1, "acc", mode="max").select(records, now=0) == {"c2"}
    assert KeepBest(1, "loss").select([rec(1, loss=float("nan"))], now=0) == set()
    with pytest.raises(ConfigError, match="mode"):
        KeepBest(1, "loss", mode="lowest")


def test_keep_policies_combine_as_a_union():
    records = [rec(1, loss=0.1), rec(2, loss=0.9), rec(3, loss=0.8), rec(4, loss=0.7)]
    assert (KeepLast(2) | KeepBest(1, "loss")).select(records, now=0) == {"c4", "c3", "c1"}
    assert parse_keep([KeepLast(1), KeepBest(1, "loss")]).select(records, now=0) == {"c4", "c1"}
