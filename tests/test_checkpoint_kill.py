"""SIGKILL a process that is saving checkpoints, at many exact points, and resume each time.

Two chains of real worker processes (tests/ckpt_worker.py) run side by side, each in its own run
directory; every worker resumes from what the previous one left, then is killed: at its N-th
write/fsync/rename (inside the zip write, inside the store's put, inside pruning), at a seeded
random point while saves outrun the store, or from outside after a few saves. After every kill,
every checkpoint file visible by name must be complete and hold exactly what was saved at its
step, and latest() must return one at least as new as the last one reported durable.
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from colabkit.checkpoint.format import read_checkpoint, step_of

sys.path.insert(0, str(Path(__file__).parent))
import ckpt_worker  # noqa: E402

WORKER = str(Path(__file__).with_name("ckpt_worker.py"))
EVENTS_PER_SAVE = 47  # writes, fsyncs and renames of one save + upload (measured)


def kill_plan(chain: int) -> list[tuple[str, int]]:
    """Every event of one save cycle, some of the next (pruning), random and outside kills."""
    rng = random.Random(chain)
    event_kills = [("event", n) for n in range(1, EVENTS_PER_SAVE + 1)]
    event_kills += [("event", n) for n in range(EVENTS_PER_SAVE + 1, 2 * EVENTS_PER_SAVE + 5, 6)]
    plan = event_kills[chain::2]
    plan += [("burst", rng.randint(1, 300)) for _ in range(3)]
    plan += [("free", rng.randint(1, 6)) for _ in range(2)]
    rng.shuffle(plan)
    return plan


def start(run_dir: Path, mode: str, n: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, WORKER, str(run_dir), mode, str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen, mode: str, n: int) -> list[str]:
    """Lets the worker die (or kills it after ``n`` saves in free mode); returns its output."""
    lines = []
    if mode == "free":
        while len([x for x in lines if x.startswith("saved")]) < n:
            line = proc.stdout.readline()
            assert line, f"worker ended early: {lines}"
            lines.append(line.strip())
        proc.send_signal(signal.SIGKILL)
    lines = " ".join([*lines, proc.stdout.read()]).split()
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"worker exited {proc.returncode}: {lines}"
    return lines


def check_after_kill(run_dir: Path, durable: int) -> None:
    """Asserts what a resuming process would find."""
    for folder in ("store", "cache"):
        for path in sorted((run_dir / folder).glob("*.ckpt")):
            contents = read_checkpoint(path)  # raises if any visible checkpoint is incomplete
            assert ckpt_worker.matches(step_of(path.name), contents.arrays), path
    record = ckpt_worker.open_manager(str(run_dir)).latest()
    if durable:
        assert record is not None and record.step >= durable
    if record is not None:
        contents = read_checkpoint(run_dir / "cache" / record.name)
        assert ckpt_worker.matches(record.step, contents.arrays)


@pytest.mark.slow
def test_sigkill_at_many_points_never_leaves_a_bad_checkpoint_in_use(tmp_path):
    chains = {c: (tmp_path / f"run{c}", kill_plan(c), {"durable": 0, "kills": 0}) for c in (0, 1)}
    total = sum(len(plan) for _, plan, _ in chains.values())
    assert total >= 50
    for i in range(max(len(plan) for _, plan, _ in chains.values())):
        running = []
        for run_dir, plan, seen in chains.values():
            if i < len(plan):
                mode, n = plan[i]
                if i % 6 == 5:  # the VM died too: only the store is left
                    shutil.rmtree(run_dir / "cache", ignore_errors=True)
                running.append((start(run_dir, mode, n), mode, n, run_dir, seen))
        for proc, mode, n, run_dir, seen in running:
            lines = finish(proc, mode, n)
            assert lines[:2] and lines[0] == "ready", lines
            assert int(lines[1]) >= seen["durable"], f"resumed behind a durable step: {lines}"
            reported = [int(v) for w, v in zip(lines, lines[1:], strict=False) if w == "durable"]
            in_store = [step_of(p.name) for p in (run_dir / "store").glob("*.ckpt")]
            seen["durable"] = max([seen["durable"], *reported, *in_store])
            check_after_kill(run_dir, seen["durable"])
            seen["kills"] += 1
    assert sum(seen["kills"] for _, _, seen in chains.values()) == total
    assert all(seen["durable"] > 5 for _, _, seen in chains.values())  # training made progress
