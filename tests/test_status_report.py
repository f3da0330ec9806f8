"""``colabkit status``, line by line and field by field, without training.

Each run here is written the way ``colabkit.fit`` writes it, through colabkit's own writers: a
``CheckpointManager`` on the run's store (claim, checkpoints with the run's state, the frozen
object before the first checkpoint that leaves variables to it, the session's end record),
on a fake clock, so that every time and age in the report is exact. What is asserted is what a
user reads: the whole text, the notebook table, and the JSON fields.
"""

from __future__ import annotations

import json
import logging
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fake_drive import open_store
from test_drive_space import QUOTA, Disks, leave_free
from test_status import status_json

import colabkit
from colabkit.checkpoint import (
    FROZEN_KEY,
    CheckpointManager,
    RunState,
    frozen_object_name,
    read_state,
    write_checkpoint,
)
from colabkit.cli import main
from colabkit.clock import FakeClock
from colabkit.duration import format_size
from colabkit.errors import CorruptCheckpointError
from colabkit.run_status import status_of
from colabkit.storage import LocalStore, MemoryStore

START = 1_796_000_000.0  # Nov 30 2026 00:53:20 UTC
HOST = socket.gethostname()
COLAB = {"environment": "colab", "accelerator": "1x Tesla T4", "keras": "3.10.0"}
WEIGHTS = {"dense/kernel": np.arange(24, dtype="float32").reshape(6, 4)}
SPE = 6  # steps an epoch
# the report's plain fields (checkpoint, forecast, session_log and space: their own asserts)
KEYS = (
    "schema", "run", "state", "stop_reason", "global_step", "epoch", "step_in_epoch",
    "steps_per_epoch", "epochs", "sessions", "train_seconds", "metrics",
)  # fmt: skip


class Run:
    """A run's checkpoint folder, written session by session as ``colabkit.fit`` writes it."""

    def __init__(self, tmp_path: Path, clock: FakeClock, store=None) -> None:
        self.dir = tmp_path / "run"
        self.store = store or LocalStore(self.dir / "checkpoints")
        self.clock = clock
        self.caches = tmp_path / "caches"
        self.ids: list[str] = []  # each session's id, as its claim and checkpoints name it

    def session(self, runtime: dict | None = COLAB) -> CheckpointManager:
        """A new session: resumes from what the store holds and claims the run."""
        manager = CheckpointManager(
            self.store, cache_dir=self.caches / str(len(self.ids)), clock=self.clock,
            keep_policy=None, runtime=(lambda: dict(runtime)) if runtime else None,
        )  # fmt: skip
        manager.restore()
        manager.claim()
        self.ids.append(manager.sessions.id)
        return manager

    def save(self, manager: CheckpointManager, run: RunState, frozen: dict | None = None) -> str:
        state = run.to_json()
        if frozen is not None:
            state[FROZEN_KEY] = frozen
        name = manager.save(run.global_step, dict(WEIGHTS), state)
        manager.wait()
        return name

    def freeze(self, manager: CheckpointManager, arrays: dict) -> dict:
        """Frozen variables stored once (``training.frozen``): the object in the session's
        cache, uploaded before the first checkpoint that names it; returns that record."""
        pending = manager.cache / "frozen-pending.ckpt"
        digests = write_checkpoint(pending, arrays, {"kind": "frozen"})
        name = frozen_object_name(digests)
        pending.rename(manager.cache / name)
        return {"name": name, "arrays": digests}

    def killed_after(self, *states: RunState) -> None:
        """A session that saves ``states`` and dies: no end record."""
        manager = self.session()
        for state in states:
            self.save(manager, state)
        manager.close()

    def end(self, manager: CheckpointManager, run: RunState, reason: str) -> None:
        """The session's last words (``ending.end_of_run``), then the manager closes."""
        manager.sessions.end(reason=reason, epoch=run.epoch, global_step=run.global_step,
                             durable=True)  # fmt: skip
        manager.close()


def in_progress(**changes) -> RunState:
    """Epoch 2 of 3 at step 2 of 6 (global step 8), 10 s a step, resumed once at step 4."""
    fields = dict(
        steps_per_epoch=SPE, epoch=1, step=2, total_epochs=3, train_seconds=80.0,
        history={"loss": [0.5], "accuracy": [0.75]},
        resumes=[{"epoch": 0, "step": 4, "global_step": 4, "time": START + 100}],
    )  # fmt: skip
    return RunState(**{**fields, **changes})


@pytest.fixture
def clock():
    return FakeClock(start=START)


@pytest.fixture
def two_sessions(tmp_path, clock):
    """Session 1 (Colab, a T4) trains to step 4 and stops at its deadline; session 2 (no
    runtime recorded) resumes at step 4, saves step 8 and is killed: no end record."""
    run = Run(tmp_path, clock)
    first = run.session()
    early = in_progress(epoch=0, step=4, train_seconds=40.0, resumes=[])
    run.save(first, early)
    clock.advance(5)
    run.end(first, early, "deadline")
    clock.advance(95)
    second = run.session(runtime=None)
    clock.advance(40)
    run.save(second, in_progress())
    second.close()  # killed: no end record
    return run


def test_the_report_of_a_run_in_progress_line_by_line(two_sessions, clock, disks):
    run = two_sessions
    held = sum(p.stat().st_size for p in run.store.root.glob("ckpt-*"))
    disks.add(run.dir, lambda: (7 * 10**9, 100 * 10**9))
    report = colabkit.status(run.dir)
    assert report.text(now=START + 140 + 30) == "\n".join(
        [
            f"run         {run.store.url}",
            "state       in progress: epoch 2/3 at step 2/6",
            "sessions    2, 1 min of training",
            "checkpoint  ckpt-000000000008.ckpt (30 s ago)",
            f"space       {format_size(held)} of checkpoints; 7.0 GB free of 100.0 GB (local disk)",
            "metrics     accuracy 0.75, loss 0.5",
            "to finish   1 min an epoch in the sessions so far; 1.7 epochs left, about 2 min",
            f"session 1   Nov 30 00:53 UTC on {HOST} (colab, 1x Tesla T4, keras 3.10.0), from "
            "the start to step 4: deadline",
            f"session 2   Nov 30 00:55 UTC on {HOST}, from step 4; no end recorded (killed, the "
            "VM died, or still training)",
        ]
    )


def test_the_json_of_a_run_in_progress(two_sessions, clock, disks):
    run = two_sessions
    held = sum(p.stat().st_size for p in run.store.root.glob("ckpt-*"))
    disks.add(run.dir, lambda: (7 * 10**9, 100 * 10**9))
    report = colabkit.status(run.dir).to_json()
    assert {key: report[key] for key in KEYS} == {
        "schema": 1, "run": run.store.url, "state": "in progress", "stop_reason": None,
        "global_step": 8, "epoch": 1, "step_in_epoch": 2, "steps_per_epoch": 6, "epochs": 3,
        "sessions": 2, "train_seconds": 80.0, "metrics": {"loss": 0.5, "accuracy": 0.75},
    }  # fmt: skip
    assert report["checkpoint"] == {
        "name": "ckpt-000000000008.ckpt",
        "step": 8,
        "created": START + 140,  # when session 2 saved it, not when the file was last touched
        "size": (run.store.root / "ckpt-000000000008.ckpt").stat().st_size,
    }
    assert report["space"] == {
        "held": held, "free": 7 * 10**9, "total": 100 * 10**9, "trash": None,
        "source": "local disk",
    }  # fmt: skip
    assert report["forecast"] == {
        "seconds_per_epoch": 60.0, "measured": "the sessions so far", "seconds_left": 100.0,
        "more_sessions": None, "finish": None,  # unknown away from the training session
    }  # fmt: skip
    first, second = report["session_log"]
    assert first == {
        "session": run.ids[0],
        "started": START,
        "host": HOST,
        "runtime": COLAB,
        "resumed_step": None,
        "ended": START + 5,
        "reason": "deadline",
        "global_step": 4,
        "epoch": 0,
    }
    assert second == {
        "session": run.ids[1],
        "started": START + 100,
        "host": HOST,
        "runtime": None,
        "resumed_step": 4,
        "ended": None,
        "reason": None,
        "global_step": None,
        "epoch": None,
    }


def test_a_run_a_callback_stopped_early_is_finished_with_nothing_left(tmp_path, clock):
    run = Run(tmp_path, clock)
    stopped = in_progress(epoch=2, step=0, total_epochs=5, finished=True,
                          stop_reason="stopped by a callback", train_seconds=120.0)  # fmt: skip
    run.killed_after(stopped)
    report = colabkit.status(run.dir)
    assert report.to_json()["state"] == "finished"
    assert report.to_json()["stop_reason"] == "stopped by a callback"
    assert report.to_json()["forecast"]["seconds_left"] == 0.0  # not 3 epochs' worth
    rows = dict(report.rows())
    assert rows["state"] == "finished: epoch 2/5 done (stopped by a callback)"
    assert "to finish" not in rows


def test_stop_reason_is_only_ever_that_of_a_finished_run(tmp_path, clock):
    """A state that names a reason without saying the run finished (a bare
    ``CheckpointManager.save`` of the user's own state) is a run in progress: ``--json``
    documents ``stop_reason`` as why a finished run stopped early."""
    run = Run(tmp_path, clock)
    run.killed_after(in_progress(stop_reason="stopped by a callback"))
    report = colabkit.status(run.dir)
    assert report.to_json()["stop_reason"] is None
    assert dict(report.rows())["state"] == "in progress: epoch 2/3 at step 2/6"


def test_a_state_without_its_creation_time_is_as_old_as_its_file(tmp_path, clock):
    """``status`` reads only ``state.json`` (no checksums): one edited by hand, its ``created``
    gone, still reads; the age is then the file's."""
    run = Run(tmp_path, clock)
    run.killed_after(in_progress())
    path = run.store.root / "ckpt-000000000008.ckpt"
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    state = json.loads(members["state.json"])
    del state["created"]
    members["state.json"] = json.dumps(state).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    modified = path.stat().st_mtime

    report = colabkit.status(run.dir)
    assert report.to_json()["checkpoint"]["created"] == modified
    assert dict(report.rows(now=modified + 30))["checkpoint"] == "ckpt-000000000008.ckpt (30 s ago)"


def test_a_checkpoint_that_leaves_frozen_variables_to_the_frozen_object(tmp_path, clock):
    run = Run(tmp_path, clock)
    session = run.session()
    frozen = run.freeze(session, {"encoder/kernel": np.ones((64, 64), "float32")})
    run.save(session, in_progress(), frozen=frozen)
    session.close()
    name, size = frozen["name"], (run.store.root / frozen["name"]).stat().st_size
    checkpoint = (run.store.root / "ckpt-000000000008.ckpt").stat().st_size

    report = colabkit.status(run.dir)
    assert report.to_json()["checkpoint"] == {
        "name": "ckpt-000000000008.ckpt", "step": 8, "created": START, "size": checkpoint,
        "frozen": name, "frozen_size": size,
    }  # fmt: skip
    assert report.to_json()["space"]["held"] == checkpoint + size  # claims are not counted
    assert dict(report.rows(now=START))["checkpoint"] == (
        f"ckpt-000000000008.ckpt (< 1 s ago); frozen variables in {name} "
        f"({format_size(size)}, stored once)"
    )

    (run.store.root / name).unlink()  # deleted by hand: the checkpoint cannot be restored
    report = colabkit.status(run.dir)
    assert report.to_json()["checkpoint"]["frozen_size"] is None
    assert dict(report.rows(now=START))["checkpoint"] == (
        f"ckpt-000000000008.ckpt (< 1 s ago); frozen variables in {name} (MISSING, stored once)"
    )


def test_a_checkpoint_from_a_clock_ahead_of_this_one_is_just_made_not_minus_5_s_old(
    tmp_path, clock
):
    run = Run(tmp_path, clock)
    run.killed_after(in_progress())
    rows = dict(colabkit.status(run.dir).rows(now=START - 5))
    assert rows["checkpoint"] == "ckpt-000000000008.ckpt (< 1 s ago)"


def test_a_store_that_cannot_tell_its_room_shows_the_runs_bytes_only(tmp_path, clock):
    store = MemoryStore("run", clock=clock)  # as an fsspec store (gs://, s3://): no space()
    run = Run(tmp_path, clock, store)
    run.killed_after(in_progress())
    held = store.list("ckpt-")[0].size
    report = status_of(store)
    assert report.to_json()["space"] == {
        "held": held, "free": None, "total": None, "trash": None, "source": None,
    }  # fmt: skip
    assert dict(report.rows())["space"] == f"{format_size(held)} of checkpoints"


def test_drives_trash_is_said_in_the_space_line(drive, tmp_path, clock):
    leave_free(drive, 20_000_000, trash=1_500_000)
    store = open_store(drive)
    run = Run(tmp_path, clock, store)
    run.killed_after(in_progress())
    held = sum(info.size for info in store.list("ckpt-"))
    free = QUOTA - drive.usage
    assert dict(status_of(store).rows())["space"] == (
        f"{format_size(held)} of checkpoints; {format_size(free)} free of 16.1 GB "
        "(1.5 MB of it in the trash; Drive's storage quota)"
    )


def test_without_a_recorded_time_the_time_to_finish_is_not_known(tmp_path, clock, capsys):
    run = Run(tmp_path, clock)
    run.killed_after(in_progress(train_seconds=0.0))  # an older colabkit's state
    report = status_json(run.dir, capsys)
    assert report["forecast"]["seconds_per_epoch"] is None
    assert report["forecast"]["seconds_left"] is None
    assert dict(colabkit.status(run.dir).rows())["to finish"] == "not known: no time recorded yet"


def test_the_pace_after_the_first_step_of_a_run(tmp_path, clock):
    run = Run(tmp_path, clock)
    first = in_progress(epoch=0, step=1, train_seconds=0.5, history={}, resumes=[])
    run.killed_after(first)
    report = colabkit.status(run.dir)
    assert report.to_json()["forecast"]["seconds_per_epoch"] == 3.0  # 0.5 s a step
    assert dict(report.rows())["to finish"] == (
        "3 s an epoch in the sessions so far; 2.8 epochs left, about 9 s"
    )


def test_a_checkpoint_from_before_the_first_step_has_no_pace(tmp_path, clock):
    run = Run(tmp_path, clock)
    run.killed_after(in_progress(epoch=0, step=0, train_seconds=2.0, history={}, resumes=[]))
    report = colabkit.status(run.dir)
    assert dict(report.rows())["to finish"] == "not known: no time recorded yet"


def test_a_run_whose_steps_per_epoch_is_not_known(tmp_path, clock, capsys):
    """The ``Checkpoint`` callback's state: steps counted, epochs unknown."""
    run = Run(tmp_path, clock)
    counted = RunState(counted_steps=40, train_seconds=400.0)
    run.killed_after(counted)
    report = status_json(run.dir, capsys)
    assert (report["global_step"], report["steps_per_epoch"]) == (40, None)
    assert report["forecast"] is None
    rows = dict(colabkit.status(run.dir).rows())
    assert rows["state"] == "in progress: step 40" and "to finish" not in rows


def test_a_run_not_started_line_by_line_and_as_a_notebook_table(tmp_path):
    (tmp_path / "run").mkdir()
    report = colabkit.status(tmp_path / "run")
    url = (tmp_path / "run" / "checkpoints").as_uri()
    assert report.text() == f"run    {url}\nstate  not started: no checkpoint yet"
    assert report._repr_html_() == (
        f"<table><tr><th style='text-align:left'>run</th><td style='text-align:left'>{url}</td>"
        "</tr><tr><th style='text-align:left'>state</th><td style='text-align:left'>not started: "
        "no checkpoint yet</td></tr></table>"
    )


def test_a_run_whose_first_session_failed_before_its_first_checkpoint(tmp_path, clock, capsys):
    """Not started, but ``--json`` keeps the session that claimed it and how it ended."""
    run = Run(tmp_path, clock)
    run.end(run.session(), RunState(steps_per_epoch=SPE), "failed: ValueError")
    report = status_json(run.dir, capsys)
    assert report["state"] == "not started"
    assert [(e["session"], e["reason"]) for e in report["session_log"]] == [
        (run.ids[0], "failed: ValueError")
    ]


def test_a_folder_that_does_not_exist_is_said_with_what_to_pass(tmp_path, capsys):
    assert main(["status", str(tmp_path / "typo")]) == 1
    assert capsys.readouterr().err == (
        f"Error: No run at {tmp_path / 'typo'}: the folder does not exist. Pass the run "
        "directory (the folder that holds checkpoints/), or a store URL such as "
        "gdrive://colabkit/run.\n"
    )


def test_a_damaged_checkpoint_is_said_and_the_one_before_speaks(tmp_path, clock, capsys, caplog):
    run = Run(tmp_path, clock)
    run.killed_after(in_progress(step=1, train_seconds=70.0), in_progress())
    damaged = run.store.root / "ckpt-000000000008.ckpt"
    damaged.write_bytes(b"damaged")
    with pytest.raises(CorruptCheckpointError) as reason:
        read_state(damaged)

    with caplog.at_level(logging.WARNING, logger="colabkit"):
        report = status_json(run.dir, capsys)
    assert (report["checkpoint"]["name"], report["global_step"]) == ("ckpt-000000000007.ckpt", 7)
    assert [r.getMessage() for r in caplog.records] == [
        f"Skipping ckpt-000000000008.ckpt in {run.store.url}: {reason.value}"
    ]


@pytest.fixture
def disks(monkeypatch):
    return Disks(monkeypatch)
