"""How long ``CheckpointManager.save()`` holds training up, and how long until a save is durable.

For model states from 1 MB to 1 GB (float32 arrays of up to 64 MiB, like layers), and for the
tutorial's MNIST convnet, measures:

- ``copy+write``: the floor -- copying the arrays in memory and writing them to local disk with
  fsync (what any checkpoint must at least do);
- ``save() blocks``: the time ``save()`` holds the caller (it takes ownership of the arrays);
- ``copy+save()``: the same plus the caller's own copy of the arrays (what a training step pays;
  for the tutorial model, the device-to-host copy of every variable as ``colabkit.fit`` does);
- ``durable``: from ``save()`` until ``wait()`` returns with the checkpoint verified in the store
  (cache write + copy into the store + pruning).

Two stores: a ``LocalStore`` on the same disk, and the same store behind ``ThrottledStore``, which
paces every put and get to ``--bandwidth`` MB/s (default 20, the Drive mount's order of
magnitude), so ``durable`` there should approach size / bandwidth.

Goals: ``copy+save()`` no more than twice ``copy+write``; at most 50 ms for the tutorial model and
1 s per GB; ``durable`` into the throttled store bounded by its bandwidth. Run:

    python bench/bench_checkpoint.py [--sizes 1,10,100,1000] [--repeat 3] [--bandwidth 20]
        [--stores local,throttled] [--dir /tmp]
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
from colabkit.storage.base import ObjectInfo, Store

MB = 1_000_000
LAYER_BYTES = 64 * 1024 * 1024


class ThrottledStore:
    """A store that moves bytes no faster than ``bandwidth`` bytes/s (a Drive mount stand-in).

    Each ``put``/``get`` does the real work in ``inner`` and then sleeps until the call has taken
    at least size / bandwidth: the same end time as a paced upload, with the real file at the end.
    """

    def __init__(self, inner: Store, bandwidth: float) -> None:
        self.inner = inner
        self.url = f"throttled+{inner.url}"
        self.bandwidth = bandwidth

    def _paced(self, started: float, size: int) -> None:
        left = size / self.bandwidth - (time.perf_counter() - started)
        if left > 0:
            time.sleep(left)

    def put(self, local_path: str | os.PathLike[str], name: str) -> ObjectInfo:
        started = time.perf_counter()
        info = self.inner.put(local_path, name)
        self._paced(started, os.path.getsize(local_path))
        return info

    def get(self, name: str, local_path: str | os.PathLike[str]) -> ObjectInfo:
        started = time.perf_counter()
        info = self.inner.get(name, local_path)
        self._paced(started, os.path.getsize(local_path))
        return info

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        return self.inner.list(prefix)

    def stat(self, name: str) -> ObjectInfo:
        return self.inner.stat(name)

    def delete(self, name: str) -> None:
        self.inner.delete(name)


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


def one_save(manager: CheckpointManager, step: int, capture):
    """Returns (save() alone, capture+save(), until durable) in seconds."""
    start = time.perf_counter()
    copies = capture()
    before_save = time.perf_counter()
    manager.save(step, copies, {"epoch": step, "step_in_epoch": 0})
    after_save = time.perf_counter()
    del copies
    manager.wait()
    durable = time.perf_counter()
    return after_save - before_save, after_save - start, durable - before_save


def make_store(kind: str, folder: Path, bandwidth: float) -> Store:
    local = LocalStore(folder)
    return ThrottledStore(local, bandwidth * MB) if kind == "throttled" else local


def bench(capture, floor_arrays, kind: str, repeat: int, folder: Path, bandwidth: float):
    work = Path(tempfile.mkdtemp(prefix="colabkit-bench-", dir=folder))
    try:
        store = make_store(kind, work / "store", bandwidth)
        manager = CheckpointManager(store, cache_dir=work / "cache", keep_policy=1)
        floor = [copy_and_write(floor_arrays, work / "floor.bin") for _ in range(repeat)]
        runs = [one_save(manager, step, capture) for step in range(1, repeat + 1)]
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


def tutorial_capture():
    """The tutorial convnet with Adam, built; returns a capture function like fit's save."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from colabkit.mnist import build_model
    from colabkit.training import state as training_state

    model = build_model()
    training_state.ensure_built(
        model, (np.zeros((128, 28, 28, 1), "float32"), np.zeros((128, 10), "float32"))
    )
    return lambda: training_state.capture_variables(model).arrays


COLUMNS = ["copy+write", "save() blocks", "copy+save()", "durable"]


def print_row(label: str, size_bytes: int, kind: str, result: dict, bandwidth: float) -> None:
    ratio = result["copy+save()"] / result["copy+write"]
    cells = "  ".join(f"{result[c] * 1000:>11.1f} ms" for c in COLUMNS)
    floor = f"{size_bytes / (bandwidth * MB):8.2f} s" if kind == "throttled" else "       -"
    print(f"{label:>16} {kind:>9}  {cells}  {ratio:>6.2f}x  {floor}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,100,1000", help="state sizes in MB")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size (median shown)")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="folder on the disk to test")
    parser.add_argument("--stores", default="local,throttled", help="local and/or throttled")
    parser.add_argument("--bandwidth", type=float, default=20.0, help="throttled store, MB/s")
    parser.add_argument("--no-tutorial", action="store_true", help="skip the tutorial model row")
    args = parser.parse_args()
    stores = args.stores.split(",")
    print(
        f"{'state':>16} {'store':>9}  "
        + "  ".join(f"{c:>14}" for c in COLUMNS)
        + "  c+s/floor  size/bandwidth"
    )
    if not args.no_tutorial:
        capture = tutorial_capture()
        arrays = capture()
        size = sum(a.nbytes for a in arrays.values())
        for kind in stores:
            result = bench(
                capture, arrays, kind, max(args.repeat, 5), Path(args.dir), args.bandwidth
            )
            print_row(f"tutorial {size / MB:.2f} MB", size, kind, result, args.bandwidth)
    for size_mb in (int(s) for s in args.sizes.split(",")):
        arrays = make_state(size_mb * MB)

        def capture(arrays=arrays):
            return {k: v.copy() for k, v in arrays.items()}

        for kind in stores:
            result = bench(capture, arrays, kind, args.repeat, Path(args.dir), args.bandwidth)
            print_row(f"{size_mb} MB", size_mb * MB, kind, result, args.bandwidth)
        del arrays


if __name__ == "__main__":
    main()
