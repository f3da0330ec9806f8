"""Save and keep policies: pure functions of (step, epoch end, time, checkpoints)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from colabkit.checkpoint.policy import (
    CheckpointRecord,
    KeepAll,
    KeepBest,
    KeepEvery,
    KeepLast,
    KeepPolicy,
    SaveAny,
    SaveEveryEpoch,
    SaveEverySeconds,
    SaveEverySteps,
    as_lineage,
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


def test_policies_combine_with_or():
    policy = SaveEveryEpoch() | SaveEverySteps(10)
    assert policy == SaveAny((SaveEveryEpoch(), SaveEverySteps(10)))
    assert ask(policy, step=10) and ask(policy, step=3, epoch_end=True) and not ask(policy, step=9)


def test_the_smallest_values_are_accepted():
    assert parse_save_every(1) == parse_save_every("1steps") == SaveEverySteps(1)
    assert parse_keep(1) == KeepLast(1)
    records = [rec(1, created=0.0), rec(2, created=HOUR)]
    assert KeepEvery(hours=0.25).select(records, now=HOUR) == {"c1", "c2"}


@pytest.mark.parametrize(
    ("build", "argument", "value", "expected"),
    [
        (lambda: KeepLast(0), "k", 0, "an integer >= 1"),
        (lambda: KeepBest(0, "val_loss"), "k", 0, "an integer >= 1"),
        (lambda: KeepBest(1, ""), "monitor", "", "a metric name such as 'val_loss'"),
        (lambda: KeepBest(1, 5), "monitor", 5, "a metric name such as 'val_loss'"),
        (lambda: KeepBest(1, "loss", mode="lowest"), "mode", "lowest", "'min' or 'max'"),
        (lambda: KeepEvery(hours=0), "hours", 0, "a positive number of hours"),
        (lambda: KeepEvery(hours=-2), "hours", -2, "a positive number of hours"),
        (lambda: KeepEvery(hours=True), "hours", True, "a positive number of hours"),
        (lambda: KeepEvery(hours="2"), "hours", "2", "a positive number of hours"),
        (lambda: KeepEvery(hours=math.inf), "hours", math.inf, "a positive number of hours"),
        (lambda: KeepEvery(hours=math.nan), "hours", math.nan, "a positive number of hours"),
    ],
)
def test_a_bad_policy_is_refused_when_built_naming_its_argument(build, argument, value, expected):
    with pytest.raises(ConfigError) as e:
        build()
    assert (e.value.argument, repr(e.value.value), e.value.expected) == (
        argument,
        repr(value),
        expected,
    )
    assert str(e.value) == (
        f"Invalid value for argument `{argument}`. Received: {argument}={value!r}. "
        f"Expected {expected}."
    )


def test_a_numpy_integer_is_kept_as_a_python_int():
    """As every validator returns it (JSON and Keras take an int, not a numpy integer)."""
    assert type(KeepLast(np.int64(3)).k) is int and KeepLast(np.int64(3)) == KeepLast(3)
    assert type(KeepBest(np.int32(2), "loss").k) is int


def test_keep_best_ties_go_to_the_newer():
    records = [rec(1, loss=0.3, acc=0.9), rec(2, loss=0.3, acc=0.9), rec(3, loss=0.5, acc=0.1)]
    assert KeepBest(1, "loss").select(records, now=0) == {"c2"}
    assert KeepBest(1, "acc", mode="max").select(records, now=0) == {"c2"}


@pytest.mark.parametrize("bad", [[], [3], [KeepLast(1), 3], "3"])
def test_keep_given_a_list_takes_policies_only(bad):
    with pytest.raises(ConfigError, match=re.escape(f"Received: keep={bad!r}.")):
        parse_keep(bad)


def test_a_keep_policy_of_yours_is_given_the_time_also_inside_a_union():
    class KeepTheLastHour(KeepPolicy):
        def select(self, checkpoints, now):
            return {r.name for r in checkpoints if r.created >= now - HOUR}

    records = [rec(1, created=0.0), rec(2, created=2 * HOUR), rec(3, created=2.5 * HOUR)]
    assert (KeepLast(1) | KeepTheLastHour()).select(records, now=3 * HOUR) == {"c2", "c3"}


@pytest.mark.parametrize(
    ("written", "lineage"),
    [
        ([["b", 30], ["a", 12], [None, None]], (("b", 30), ("a", 12), (None, None))),
        ((("b", 30),), (("b", 30),)),
        (["a", 12], (("a", 12),)),  # one pair: how earlier checkpoints wrote it
        ([None, None], ((None, None),)),
        ([], None),
        (None, None),
        (5, None),
        ([["a", 12, 1]], None),
        ([["a"]], None),
        ([["a", 12], "x"], None),
        ([[3, 12]], None),
        ([["a", "12"]], None),
        ([["a", True]], None),
        ([["a", 1.5]], None),
    ],
)
def test_a_lineage_is_read_from_json_and_anything_else_is_none(written, lineage):
    assert as_lineage(written) == lineage
