"""A training stand-in for the SIGKILL tests: saves checkpoints until it is killed.

Run as ``python ckpt_worker.py RUN_DIR MODE N``. It resumes from the newest checkpoint (exit 3 if
what it restored is not exactly what was saved at that step), prints ``ready <step>``, then saves
steps one after another, printing ``durable <step>`` whenever ``wait()`` confirmed one. Modes:

- ``event``: ``wait()`` after each save; SIGKILLs itself at its N-th write/fsync/rename.
- ``burst``: never waits (saves outrun the store, snapshots supersede each other); SIGKILLs itself
  at its N-th write/fsync/rename.
- ``free``: never waits, never stops itself; the parent kills it at a moment of its choosing.

Imports numpy and colabkit only (no keras), so that one start costs a fraction of a second.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys

import numpy as np

from colabkit.checkpoint.manager import CheckpointManager
from colabkit.storage import LocalStore, atomic


def arrays_for(step: int) -> dict[str, np.ndarray]:
    """What a checkpoint of ``step`` holds, so that any reader can tell a wrong one."""
    rng = np.random.default_rng(step)
    return {
        "model/0000": rng.standard_normal((64, 64)).astype(np.float32),
        "model/0001": np.full(1000, step, dtype=np.int64),
        "optimizer/iterations": np.array(step, dtype=np.int64),
    }


def matches(step: int, arrays: dict[str, np.ndarray]) -> bool:
    expected = arrays_for(step)
    return arrays.keys() == expected.keys() and all(
        np.array_equal(arrays[k], expected[k]) and arrays[k].dtype == expected[k].dtype
        for k in expected
    )


def open_manager(run_dir: str) -> CheckpointManager:
    return CheckpointManager(
        LocalStore(os.path.join(run_dir, "store")),
        cache_dir=os.path.join(run_dir, "cache"),
        save_policy=1,
        keep_policy=2,
        retry_delays=(0,),
    )


def kill_at(n: int) -> None:
    count = 0

    def hook(event: str, path: str) -> None:
        nonlocal count
        count += 1
        if count == n:
            os.kill(os.getpid(), signal.SIGKILL)

    atomic.set_io_hook(hook)


def main(run_dir: str, mode: str, n: int) -> int:
    manager = open_manager(run_dir)
    contents = manager.restore()
    start = 0
    if contents is not None:
        start = contents.state["step"]
        if not matches(start, contents.arrays):
            print(f"restored a wrong checkpoint at step {start}", flush=True)
            return 3
    print(f"ready {start}", flush=True)
    if mode != "free":
        kill_at(n)
    for step in itertools.count(start + 1):
        manager.save(step, arrays_for(step), {"epoch": step // 10, "step_in_epoch": step % 10})
        if mode == "event":
            manager.wait()
            print(f"durable {step}", flush=True)
        elif mode == "free":
            print(f"saved {step}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
