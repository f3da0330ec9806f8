"""Staging training data: ``colabkit.stage`` against ``cp``, and an epoch before and after.

    python bench/bench_stage.py                       # both parts, 5 pairs each
    python bench/bench_stage.py --part copy --size-mb 1024 --pairs 5
    python bench/bench_stage.py --part epoch --images 5000 --latency-ms 30

copy: one file of --size-mb random bytes on local disk, copied to another folder by ``cp``
and by ``colabkit.stage`` (which also computes its md5 and fsyncs), and by ``colabkit.stage``
reading it as if it were on the Drive mount (then it reads the source a second time to verify).
Every run is a separate process; the runners take turns, their order rotating every pair; the
destination is emptied between runs. The source stays in the page cache (this machine cannot
drop it), as a file just read through Drive's cache would be.

epoch: the MNIST-5k images as PNG files, one epoch of the tutorial's convnet over a tf.data
pipeline that reads them one file at a time (``from_tensor_slices(paths).map(read, parallel)
.batch(128)``): from a throttled "mount" (each file read waits --latency-ms first, a model of
Drive's per-file round trip; the figure is an assumption, not a measurement of Drive) against
the staged local copy. Separate processes, alternated pairs; the time to stage the folder once
is reported beside it.

Not a test: it prints a table and never fails on a number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def run(command: list[str]) -> float:
    """Wall seconds of a child; a colabkit child prints its own (start-up excluded)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{command[:4]} failed:\n{done.stderr[-3000:]}")
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1])["seconds"] if lines and lines[-1].startswith("{") else wall


# -- copy ------------------------------------------------------------------------------------


def stage_child(source: str, dest: str, as_mount: bool) -> None:
    from colabkit import staging
    from colabkit.staging import sources

    if as_mount:
        sources.MOUNTPOINTS = (Path(source).parent,)
    started = time.perf_counter()
    staging.stage(source, dest, progress=False)
    print(json.dumps({"seconds": time.perf_counter() - started}))


def copy_part(args: argparse.Namespace, work: Path) -> str:
    source = work / "source" / "data.bin"
    source.parent.mkdir()
    with open(source, "wb") as f:
        for _ in range(args.size_mb):
            f.write(os.urandom(1 << 20))
    dest = work / "dest"
    runners = {
        "cp": lambda: run(["cp", str(source), str(dest / "data.bin")]),
        "stage": lambda: run(
            [sys.executable, __file__, "--child", "stage", str(source), str(dest)]
        ),
        "stage, as mount": lambda: run(
            [sys.executable, __file__, "--child", "mount", str(source), str(dest)]
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for pair in range(args.pairs):
        order = names[pair % len(names) :] + names[: pair % len(names)]
        for name in order:
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            times[name].append(runners[name]())
        print(f"  round {pair + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f} s" for n in names))
    shutil.rmtree(dest, ignore_errors=True)
    rate = {n: [args.size_mb / t for t in times[n]] for n in names}
    rows = [
        f"| {n} | {spread(times[n])} | {spread(rate[n])} | "
        f"{spread([a / b for a, b in zip(times[n], times['cp'], strict=True)])} |"
        for n in names
    ]
    return "\n".join(
        [
            f"copy of {args.size_mb} MiB ({args.pairs} rounds; median (range)):\n",
            "| runner | seconds | MiB/s | time / cp's |",
            "|---|---|---|---|",
            *rows,
        ]
    )


# -- epoch -----------------------------------------------------------------------------------


def epoch_child(folder: str, latency_ms: float) -> None:
    import keras
    import tensorflow as tf

    from colabkit.mnist import build_model

    paths = sorted(str(p) for p in Path(folder).rglob("*.png"))
    labels = [int(Path(p).parent.name) for p in paths]

    def slow_read(path: bytes) -> bytes:
        time.sleep(latency_ms / 1000)  # the round trip of one file through the "mount"
        with open(path, "rb") as f:
            return f.read()

    def load(path, label):
        if latency_ms:
            data = tf.numpy_function(slow_read, [path], tf.string, stateful=True)
        else:
            data = tf.io.read_file(path)
        image = tf.cast(tf.io.decode_png(data, channels=1), "float32") / 255.0
        return tf.ensure_shape(image, (28, 28, 1)), tf.one_hot(label, 10)

    dataset = (
        tf.data.Dataset.from_tensor_slices((paths, labels))
        .shuffle(len(paths), seed=0)
        .map(load, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(128)
        .prefetch(tf.data.AUTOTUNE)
    )
    keras.utils.set_random_seed(0)
    model = build_model()
    started = time.perf_counter()
    model.fit(dataset, epochs=1, verbose=0, shuffle=False)
    print(json.dumps({"seconds": time.perf_counter() - started}))


def epoch_part(args: argparse.Namespace, work: Path) -> str:
    import numpy as np
    import tensorflow as tf

    from colabkit import staging
    from colabkit.mnist_data import load_data
    from colabkit.staging import job, sources

    data = load_data("mnist-5k")
    mount = work / "drive" / "images"
    for i, (image, label) in enumerate(zip(data.x_train, data.y_train, strict=False)):
        if i >= args.images:
            break
        label = int(np.argmax(label)) if np.ndim(label) else int(label)
        folder = mount / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.round(np.asarray(image) * 255).astype(np.uint8).reshape(28, 28, 1)
        (folder / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    sources.MOUNTPOINTS = (work / "drive",)
    real_open = sources._open_file

    def slow_open(path):  # the same round trip per file as the epoch's reads
        time.sleep(args.latency_ms / 1000)
        return real_open(path)

    sources._open_file = slow_open
    started = time.perf_counter()
    staged = staging.stage(mount, work / "local", progress=False)
    stage_s = time.perf_counter() - started
    runners = {
        "through the mount": [sys.executable, __file__, "--child", "epoch", str(mount),
                              str(args.latency_ms)],
        "staged copy": [sys.executable, __file__, "--child", "epoch", str(staged), "0"],
    }  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for pair in range(args.pairs):
        for name in names if pair % 2 == 0 else names[::-1]:
            times[name].append(run(runners[name]))
        print(f"  pair {pair + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f} s" for n in names))
    ratio = [a / b for a, b in zip(times[names[0]], times[names[1]], strict=True)]
    return "\n".join(
        [
            f"epoch over {args.images} PNG files, {args.latency_ms:g} ms per file through the "
            f"throttled mount ({args.pairs} pairs; median (range)); staging them once took "
            f"{stage_s:.2f} s through the same throttled mount ({job.WORKERS} files at once, "
            "each read twice: copy and verification):\n",
            "| reading | epoch seconds |",
            "|---|---|",
            *(f"| {n} | {spread(times[n])} |" for n in names),
            f"\nmount / staged: {spread(ratio)}",
        ]
    )


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        kind, *rest = sys.argv[2:]
        if kind == "epoch":
            epoch_child(rest[0], float(rest[1]))
        else:
            stage_child(rest[0], rest[1], as_mount=kind == "mount")
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["copy", "epoch", "all"], default="all")
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--size-mb", type=int, default=1024)
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--latency-ms", type=float, default=30.0)
    args = p.parse_args()
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.platform()}\n")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        tables = []
        if args.part in ("copy", "all"):
            (Path(tmp) / "copy").mkdir()
            tables.append(copy_part(args, Path(tmp) / "copy"))
        if args.part in ("epoch", "all"):
            (Path(tmp) / "epoch").mkdir()
            tables.append(epoch_part(args, Path(tmp) / "epoch"))
    print("\n" + "\n\n".join(tables))


if __name__ == "__main__":
    main()
