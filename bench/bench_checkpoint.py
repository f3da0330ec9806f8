"""How long ``CheckpointManager.save()`` holds training up, and how long until a save is durable.

For model states of 1 MB, 100 MB and 1 GB (float32 arrays of up to 64 MB, like layers), measures:

- ``copy+write``: the floor -- copying the arrays in memory and writing them to local disk with
  fsync (what any checkpoint must at least do);
- ``save() blocks``: the time ``save()`` holds the caller (it takes ownership of the arrays);
- ``copy+save()``: the same plus the caller's own copy of the arrays (what a training step pays);
- ``durable``: from ``save()`` until ``wait()`` returns with the checkpoint verified in a
  ``LocalStore`` (staging write + copy into the store + pruning).

Goal: ``copy+save()`` no more than twice ``copy+write``. Run:

    python bench/bench_checkpoint.py [--sizes 1,100,1000] [--repeat 3] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from colabkit.checkpoint.manager import CheckpointManager
from colabkit.storage import LocalStore

MB = 1_000_000
LAYER_BYTES = 64 * 1024 * 1024


def make_state(total_bytes: int) -> dict[str, np.ndarray]:
    """Arrays adding up to ``total_bytes``, none bigger than 64 MiB."""
    arrays, left, i = {}, total_bytes, 0
    while left > 0:
        count = min(left, LAYER_BYTES) // 4
        arrays[f"model/{i:04d}"] = np.arange(count, dtype=np.float32) + i
        left -= count * 4
        i += 1
    return arrays


def copy_and_write(arrays: dict[str, np.ndarray], path: Path) -> float:
    start = time.perf_counter()
    copies = {k: v.copy() for k, v in arrays.items()}
    with open(path, "wb") as f:
        for value in copies.values():
            f.write(memoryview(value).cast("B"))
        f.flush()
        os.fsync(f.fileno())
    elapsed = time.perf_counter() - start
    path.unlink()
    return elapsed


def one_save(manager: CheckpointManager, step: int, arrays: dict[str, np.ndarray]):
    """Returns (save() alone, copy+save(), until durable) in seconds."""
    start = time.perf_counter()
    copies = {k: v.copy() for k, v in arrays.items()}
    before_save = time.perf_counter()
    manager.save(step, copies, {"epoch": step, "step_in_epoch": 0})
    after_save = time.perf_counter()
    del copies
    manager.wait()
    durable = time.perf_counter()
    return after_save - before_save, after_save - start, durable - before_save


def bench(size_mb: int, repeat: int, folder: Path) -> dict[str, float]:
    arrays = make_state(size_mb * MB)
    work = Path(tempfile.mkdtemp(prefix="colabkit-bench-", dir=folder))
    try:
        manager = CheckpointManager(
            LocalStore(work / "store"), staging_dir=work / "staging", keep_policy=1
        )
        floor = [copy_and_write(arrays, work / "floor.bin") for _ in range(repeat)]
        runs = [one_save(manager, step, arrays) for step in range(1, repeat + 1)]
        manager.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    blocks, copy_save, durable = zip(*runs, strict=True)
    return {
        "copy+write": statistics.median(floor),
        "save() blocks": statistics.median(blocks),
        "copy+save()": statistics.median(copy_save),
        "durable": statistics.median(durable),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,100,1000", help="state sizes in MB, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size (median shown)")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="folder on the disk to test")
    args = parser.parse_args()
    columns = ["copy+write", "save() blocks", "copy+save()", "durable"]
    print(f"{'state':>8}  " + "  ".join(f"{c:>14}" for c in columns) + "  copy+save()/floor")
    for size in (int(s) for s in args.sizes.split(",")):
        result = bench(size, args.repeat, Path(args.dir))
        ratio = result["copy+save()"] / result["copy+write"]
        cells = "  ".join(f"{result[c] * 1000:>11.1f} ms" for c in columns)
        print(f"{size:>5} MB  {cells}  {ratio:>6.2f}x", flush=True)


if __name__ == "__main__":
    main()
