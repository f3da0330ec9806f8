"""Training overhead of colabkit.fit against plain model.fit, and resume latency.

    python bench/bench_fit.py                      # 3 alternated pairs, 2 epochs, 12,800 images
    python bench/bench_fit.py --pairs 5 --samples 54000 --epochs 2

Part 1 (overhead): the tutorial's convnet on MNIST-5k images resampled to --samples, batch 128,
validation split 0.1, the same seed and initial weights, run alternately as
  plain     model.fit(x, y, shuffle=True)
  keras-bar model.fit with keras.callbacks.BackupAndRestore (save every epoch)
  colabkit  colabkit.fit(..., save_every="epoch")
Each run's training throughput is images/s of the steady epochs (epoch 1 is dropped: tracing);
ratios are reported pair by pair, colabkit / plain. Goal (issue 4): ratio >= 0.98.

Part 2 (resume latency): a fresh process to its first training step, against a fresh process
that resumes a run killed mid-epoch, to its first resumed step (same script, same imports).

Not a test: it prints a table and never fails on a number.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def mnist(samples: int):
    import numpy as np

    from colabkit.mnist_data import load_data

    data = load_data("mnist-5k")
    idx = np.random.default_rng(0).integers(0, len(data.x_train), samples)
    return data.x_train[idx], data.y_train[idx]


class EpochTimes:
    def __init__(self):
        import keras

        outer = self
        self.times: list[float] = []

        class _Cb(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                outer._t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                outer.times.append(time.perf_counter() - outer._t)

        self.callback = _Cb()


def one_run(kind: str, x, y, epochs: int, tmp: Path) -> float:
    import keras

    import colabkit
    from colabkit.mnist import build_model

    keras.utils.set_random_seed(0)
    model = build_model()
    timer = EpochTimes()
    common = dict(epochs=epochs, batch_size=128, validation_split=0.1, verbose=0)
    run = tmp / f"{kind}-{time.monotonic_ns()}"
    if kind == "plain":
        model.fit(x, y, callbacks=[timer.callback], **common)
    elif kind == "keras-bar":
        backup = keras.callbacks.BackupAndRestore(str(run))
        model.fit(x, y, callbacks=[backup, timer.callback], **common)
    else:
        colabkit.fit(
            model,
            x,
            y,
            run_dir=run,
            staging_dir=str(run) + "-staging",
            seed=0,
            save_every="epoch",
            session_limit=False,
            callbacks=[timer.callback],
            **common,
        )
    n_train = int(len(x) * 0.9)
    steady = timer.times[1:] or timer.times
    # An epoch here includes validation (as users feel it), the same work for every kind.
    return n_train / statistics.mean(steady)


def overhead(args) -> None:
    x, y = mnist(args.samples)
    kinds = ["plain", "keras-bar", "colabkit"]
    results: dict[str, list[float]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        for pair in range(args.pairs):
            order = kinds if pair % 2 == 0 else kinds[::-1]
            for kind in order:
                results[kind].append(one_run(kind, x, y, args.epochs, Path(tmp)))
            print(
                f"pair {pair + 1}: "
                + "  ".join(f"{k} {results[k][-1]:,.0f} img/s" for k in kinds)
                + f"  colabkit/plain {results['colabkit'][-1] / results['plain'][-1]:.3f}",
                flush=True,
            )
    ratios = [c / p for c, p in zip(results["colabkit"], results["plain"], strict=True)]
    kb = [c / p for c, p in zip(results["keras-bar"], results["plain"], strict=True)]
    print(
        "\nmedian throughput: "
        + ", ".join(f"{k} {statistics.median(v):,.0f} img/s" for k, v in results.items())
    )
    for name, values in (("colabkit/plain", ratios), ("keras-BackupAndRestore/plain", kb)):
        rounded = [round(r, 3) for r in values]
        print(f"{name} ratios: {rounded}  median {statistics.median(values):.3f}")


LATENCY_JOB = r"""
import os, sys, time, json
t_import = time.time()
import keras, numpy as np
import colabkit
from colabkit.mnist import build_model
sys.path.insert(0, {bench!r})
from bench_fit import mnist
x, y = mnist({samples})
keras.utils.set_random_seed(0)
model = build_model()
class First(keras.callbacks.Callback):
    n = 0
    def on_train_batch_end(self, batch, logs=None):
        self.n += 1
        if self.n == 1:
            print(json.dumps({{"first_step": time.time()}}), flush=True)
        if self.n == {exit_after}:
            os.kill(os.getpid(), 9)
colabkit.fit(model, x, y, run_dir={run!r}, staging_dir={run!r} + "-staging", epochs=2,
             batch_size=128, seed=0, save_every="{save_every}", session_limit=False,
             callbacks=[First()], verbose=0)
"""


def first_step_latency(run: Path, samples: int, *, exit_after: int) -> float:
    """Seconds from process start to the end of its first training step; SIGKILLed after
    ``exit_after`` steps (checkpoints every step, so the next process on ``run`` resumes)."""
    job = LATENCY_JOB.format(
        bench=str(Path(__file__).parent),
        samples=samples,
        run=str(run),
        exit_after=exit_after,
        save_every="1steps",
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    start = time.time()
    proc = subprocess.run([sys.executable, "-c", job], capture_output=True, text=True, env=env)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(proc.stderr[-2000:])
    return lines[0]["first_step"] - start


def resume_latency(args) -> None:
    fresh, resumed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.pairs):
            run = Path(tmp) / f"run{i}"
            fresh.append(first_step_latency(run, args.samples, exit_after=3))
            # The fresh run above saved steps 1-2 and was killed: this one resumes mid-epoch.
            resumed.append(first_step_latency(run, args.samples, exit_after=1))
            print(f"pair {i + 1}: fresh {fresh[-1]:.2f} s, resumed {resumed[-1]:.2f} s", flush=True)
    diff = statistics.median(r - f for r, f in zip(resumed, fresh, strict=True))
    print(
        f"\nprocess start -> first step: fresh median {statistics.median(fresh):.2f} s, "
        f"resumed median {statistics.median(resumed):.2f} s, resumed - fresh {diff:+.2f} s"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--samples", type=int, default=12800)
    p.add_argument("--part", choices=["all", "overhead", "resume"], default="all")
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(REPO))
    import keras

    print(f"keras {keras.version()} backend {keras.backend.backend()}, {os.cpu_count()} CPUs")
    if args.part in ("all", "overhead"):
        overhead(args)
    if args.part in ("all", "resume"):
        resume_latency(args)


if __name__ == "__main__":
    main()
