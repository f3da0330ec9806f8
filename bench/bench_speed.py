"""Wall time of ``colabkit.fit`` against plain ``model.fit``: the whole call and a steady epoch.

    python bench/bench_speed.py                                   # 5 pairs, arrays and tf.data
    python bench/bench_speed.py --pairs 7 --input arrays --samples 13500 --epochs 4

The tutorial's convnet on MNIST-5k images resampled to --samples, batch 128, validation split
0.1 (for tf.data: the same split, as two datasets), the same seed and initial weights. Every run
is a separate process; each pair runs plain and colabkit one after the other, the order reversed
every other pair. colabkit saves a checkpoint every epoch (the default) to a local run
directory; plain saves nothing, so the ratio includes colabkit's whole cost.

  plain     model.fit(x, y, shuffle=True)      or model.fit(dataset)
  colabkit  colabkit.fit(model, x, y, seed=0)  or colabkit.fit(model, dataset, seed=0)

Reported per pair: the wall time of the whole call (process start-up, imports and data loading
excluded; colabkit's own setup, final save and wait until it is in the run directory included),
and of a steady epoch (the mean of epochs 2..E, from one on_epoch_end to the next: training,
validation and colabkit's save). The ratio is colabkit / plain within each pair; the table gives
its median and range over the pairs. Goal (issue 14): median ratio <= 1.02 for both inputs. The
process CPU time is printed too, as a supplement (it can hide lost parallelism).

Not a test: it prints a table and never fails on a number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNNERS = ("plain", "colabkit")
INPUTS = ("arrays", "tfdata")


def child(args: argparse.Namespace) -> None:
    """One timed run in this process; prints one JSON line."""
    import keras
    import numpy as np

    from colabkit.mnist import build_model
    from colabkit.mnist_data import load_data

    data = load_data("mnist-5k")
    pick = np.random.default_rng(0).integers(0, len(data.x_train), args.samples)
    x, y = data.x_train[pick], data.y_train[pick]
    keras.utils.set_random_seed(0)
    model = build_model()
    ends: list[float] = []
    timer = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: ends.append(time.time()))
    inputs: dict = {"x": x, "y": y, "validation_split": 0.1, "batch_size": 128}
    if args.input == "tfdata":
        import tensorflow as tf

        split = int(len(x) * 0.9)
        train = (
            tf.data.Dataset.from_tensor_slices((x[:split], y[:split]))
            .shuffle(split, seed=0)
            .batch(128)
            .prefetch(tf.data.AUTOTUNE)
        )
        validation = tf.data.Dataset.from_tensor_slices((x[split:], y[split:])).batch(128)
        inputs = {"x": train, "validation_data": validation}
    import colabkit

    fit = colabkit.fit  # imported here, outside the timed call (as plain's Keras is)
    with tempfile.TemporaryDirectory() as run_dir:
        cpu0, started = time.process_time(), time.time()
        if args.child == "plain":
            model.fit(**inputs, epochs=args.epochs, callbacks=[timer], verbose=0)
        else:
            fit(
                model, **inputs, epochs=args.epochs, seed=0, run_dir=run_dir,
                cache_dir=Path(run_dir) / "cache", callbacks=[timer], verbose=0,
                session_limit=False,
            )  # fmt: skip
        total, cpu = time.time() - started, time.process_time() - cpu0
    steady = [b - a for a, b in zip(ends, ends[1:], strict=False)]
    print(json.dumps({"total": total, "epoch": statistics.mean(steady), "cpu": cpu}))


def run_child(runner: str, args: argparse.Namespace) -> dict:
    command = [
        sys.executable, __file__, "--child", runner, "--input", args.input,
        "--samples", str(args.samples), "--epochs", str(args.epochs),
    ]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{runner} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def compare(args: argparse.Namespace) -> str:
    """Runs the pairs for ``args.input``; returns its table row."""
    rows = []
    for pair in range(args.pairs):
        order = RUNNERS if pair % 2 == 0 else RUNNERS[::-1]
        result = {runner: run_child(runner, args) for runner in order}
        rows.append(result)
        plain, ck = result["plain"], result["colabkit"]
        print(
            f"  pair {pair + 1} ({' then '.join(order)}): whole call {plain['total']:.2f} s vs "
            f"{ck['total']:.2f} s, steady epoch {plain['epoch']:.2f} s vs {ck['epoch']:.2f} s",
            flush=True,
        )
    ratios = {
        key: [r["colabkit"][key] / r["plain"][key] for r in rows] for key in ("total", "epoch")
    }
    cpu = [r["colabkit"]["cpu"] / r["plain"]["cpu"] for r in rows]
    return f"| {args.input} | {args.pairs} | " + " | ".join(
        spread([r[runner][key] for r in rows]) for key in ("total", "epoch") for runner in RUNNERS
    ) + f" | {spread(ratios['total'])} | {spread(ratios['epoch'])} | {spread(cpu)} |"  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--samples", type=int, default=13500)
    p.add_argument("--input", choices=[*INPUTS, "all"], default="all")
    p.add_argument("--child", choices=RUNNERS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    import keras
    import tensorflow as tf

    print(
        f"Python {platform.python_version()}, tensorflow {tf.__version__}, keras "
        f"{keras.__version__}, {os.cpu_count()} CPUs; {args.samples} images, {args.epochs} "
        f"epochs, {args.pairs} pairs; seconds, median (range)\n"
    )
    header = (
        "| input | pairs | plain call | colabkit call | plain epoch | colabkit epoch | "
        "ratio call | ratio epoch | ratio CPU-s |"
    )
    table = [header, "|---" * 9 + "|"]
    for kind in INPUTS if args.input == "all" else (args.input,):
        args.input = kind
        print(f"{kind}:", flush=True)
        table.append(compare(args))
    print("\n" + "\n".join(table))


if __name__ == "__main__":
    main()
