"""Training overhead of colabkit.fit against plain model.fit, resume latency, work lost per kill.

    python bench/bench_fit.py                      # all three parts with their defaults
    python bench/bench_fit.py --part overhead --pairs 3 --samples 30000 --epochs 3
    python bench/bench_fit.py --part resume --pairs 3
    python bench/bench_fit.py --part kill --kills 10

Part 1 (overhead): the tutorial's convnet on MNIST-5k images resampled to --samples, batch 128,
validation split 0.1, the same seed and initial weights, run alternately (the order reversed
every other round) as
  plain         model.fit(x, y, shuffle=True)
  keras-bar     model.fit with keras.callbacks.BackupAndRestore (save every epoch)
  ck-epoch      colabkit.fit(..., save_every="epoch")
  ck-50steps    colabkit.fit(..., save_every="50steps")
  ck-30s        colabkit.fit(..., save_every="30s")
Each run's throughput is training images per second from the end of epoch 1 (tracing done) to
the end of the last epoch: it includes validation and every checkpoint taken in between (for
colabkit the epoch-end save runs after the user's on_epoch_end, so the interval between two
on_epoch_end calls holds exactly one save). Ratios are reported round by round, kind / plain.
Goal (issue 7): ck-epoch / plain >= 0.98 and above keras-bar / plain.

Part 2 (resume latency): a fresh process to its first training step, against a fresh process
that resumes a run killed mid-epoch, to its first resumed step (same script, same imports).

Part 3 (work lost per kill): a child process runs colabkit.fit with --kill-every (default
"20steps") and prints each finished global step; the parent SIGKILLs it at a random moment,
then reads the newest checkpoint that verifies (in the store, and in the store or local
cache) and reports the steps that must be redone. The next child resumes the same run.

Not a test: it prints tables and never fails on a number.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def mnist(samples: int):
    import numpy as np

    from colabkit.mnist_data import load_data

    data = load_data("mnist-5k")
    idx = np.random.default_rng(0).integers(0, len(data.x_train), samples)
    return data.x_train[idx], data.y_train[idx]


KINDS = {
    "plain": None,
    "keras-bar": None,
    "ck-epoch": "epoch",
    "ck-50steps": "50steps",
    "ck-30s": "30s",
}


class EpochEnds:
    """Records the wall and process CPU time of every ``on_epoch_end``.

    Process CPU time counts every thread of the process (Keras' and colabkit's background
    writers alike) and is far less disturbed than wall time by other work on a shared machine.
    """

    def __init__(self):
        import keras

        outer = self
        self.ends: list[tuple[float, float]] = []

        class _Cb(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                outer.ends.append((time.perf_counter(), time.process_time()))

        self.callback = _Cb()


COMMON = dict(batch_size=128, validation_split=0.1, verbose=0)


def train(kind: str, model, x, y, *, epochs: int, run: Path, callbacks, save_every=None):
    """One training call of ``kind``: ``plain`` model.fit, ``keras-bar`` (with Keras'
    BackupAndRestore in ``run``) or ``colabkit.fit`` saving by ``save_every`` into ``run``."""
    import keras

    import colabkit

    if kind == "plain":
        model.fit(x, y, epochs=epochs, callbacks=callbacks, **COMMON)
    elif kind == "keras-bar":
        backup = keras.callbacks.BackupAndRestore(str(run))
        model.fit(x, y, epochs=epochs, callbacks=[backup, *callbacks], **COMMON)
    else:
        colabkit.fit(
            model,
            x,
            y,
            run_dir=run,
            cache_dir=str(run) + "-cache",
            epochs=epochs,
            seed=0,
            save_every=save_every,
            session_limit=False,
            callbacks=callbacks,
            **COMMON,
        )


def one_run(kind: str, x, y, epochs: int, tmp: Path) -> dict[str, float]:
    """Steady images per wall second and per CPU second (from the end of epoch 1 to the end of
    the last epoch), and the whole call's wall seconds."""
    import keras

    from colabkit.mnist import build_model

    keras.utils.set_random_seed(0)
    model = build_model()
    timer = EpochEnds()
    run = tmp / f"{kind}-{time.monotonic_ns()}"
    start = time.perf_counter()
    kind_of_call = kind if kind in ("plain", "keras-bar") else "colabkit"
    train(
        kind_of_call, model, x, y, epochs=epochs, run=run, callbacks=[timer.callback],
        save_every=KINDS[kind],
    )  # fmt: skip
    wall = time.perf_counter() - start
    n_train = int(len(x) * 0.9)
    images = (len(timer.ends) - 1) * n_train
    (wall0, cpu0), (wall1, cpu1) = timer.ends[0], timer.ends[-1]
    return {"img/s": images / (wall1 - wall0), "img/cpu-s": images / (cpu1 - cpu0), "wall": wall}


def overhead(args) -> None:
    x, y = mnist(args.samples)
    kinds = list(KINDS)
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        for pair in range(args.pairs):
            order = kinds if pair % 2 == 0 else kinds[::-1]
            for kind in order:
                runs[kind].append(one_run(kind, x, y, args.epochs, Path(tmp)))
            plain = runs["plain"][-1]
            print(
                f"round {pair + 1}: plain {plain['img/s']:,.0f} img/s, "
                f"{plain['img/cpu-s']:,.0f} img/cpu-s; kind/plain wall (cpu): "
                + "  ".join(
                    f"{k} {runs[k][-1]['img/s'] / plain['img/s']:.3f}"
                    f" ({runs[k][-1]['img/cpu-s'] / plain['img/cpu-s']:.3f})"
                    for k in kinds[1:]
                ),
                flush=True,
            )
    report_overhead(runs, kinds)


def report_overhead(runs: dict[str, list[dict[str, float]]], kinds: list[str]) -> None:
    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[kind])

    print("\nmedians: steady img/s, steady img per CPU-second, whole-call wall time")
    for k in kinds:
        speeds = f"{med(k, 'img/s'):>8,.0f} {med(k, 'img/cpu-s'):>8,.0f}"
        print(f"  {k:<11} {speeds} {med(k, 'wall'):6.1f} s")
    print("ratios kind / plain, round by round, and their median (wall time: > 1 is slower):")
    for key, name in (("img/s", "throughput"), ("img/cpu-s", "per CPU-s"), ("wall", "wall time")):
        for k in kinds[1:]:
            ratios = [a[key] / b[key] for a, b in zip(runs[k], runs["plain"], strict=True)]
            print(
                f"  {name:<10} {k:<11} {[round(r, 3) for r in ratios]}"
                f"  median {statistics.median(ratios):.3f}"
            )
    for key in ("img/s", "img/cpu-s"):
        values = [r[key] for r in runs["plain"]]
        spread = (max(values) - min(values)) / statistics.median(values)
        print(f"noise: plain {key} spread (max-min)/median over rounds = {spread:.1%}")


#: What both subprocess jobs start with: the tutorial model and the resampled data.
JOB_PREAMBLE = r"""
import os, sys, time, json
import keras
import colabkit
from colabkit.mnist import build_model
sys.path.insert(0, {bench!r})
from bench_fit import mnist
x, y = mnist({samples})
keras.utils.set_random_seed(0)
model = build_model()
"""

LATENCY_JOB = (
    JOB_PREAMBLE
    + r"""
class First(keras.callbacks.Callback):
    n = 0
    def on_train_batch_end(self, batch, logs=None):
        self.n += 1
        if self.n == 1:
            print(json.dumps({{"first_step": time.time()}}), flush=True)
        if self.n == {exit_after}:
            os.kill(os.getpid(), 9)
colabkit.fit(model, x, y, run_dir={run!r}, cache_dir={run!r} + "-cache", epochs=2,
             batch_size=128, seed=0, save_every="{save_every}", session_limit=False,
             callbacks=[First()], verbose=0)
"""
)


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


KILL_JOB = (
    JOB_PREAMBLE
    + r"""
class Steps(keras.callbacks.Callback):
    epoch = 0
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
    def on_train_batch_end(self, batch, logs=None):
        print(self.epoch * self.params["steps"] + batch + 1, flush=True)
colabkit.fit(model, x, y, run_dir={run!r}, cache_dir={run!r} + "-cache", epochs=1000,
             batch_size=128, seed=0, save_every={save_every!r}, session_limit=False,
             callbacks=[Steps()], verbose=0)
"""
)


def _read_steps(stream, steps: list[int], first: threading.Event) -> None:
    for line in stream:
        if line.strip().isdigit():
            steps.append(int(line))
            first.set()


def newest_step(run: Path, cache: Path) -> int:
    """Global step of the newest checkpoint that verifies (0 when there is none)."""
    from colabkit.checkpoint.manager import CheckpointManager
    from colabkit.storage import LocalStore

    with CheckpointManager(LocalStore(run / "checkpoints"), cache_dir=cache) as manager:
        record = manager.latest()
    return 0 if record is None else record.step


def one_kill(run: Path, samples: int, save_every: str, window: float, rng) -> tuple[int, int, int]:
    """Starts (or resumes) the run in a child, SIGKILLs it at a random moment after its first
    step; returns (steps done, newest step in the store, newest step in store or cache)."""
    job = KILL_JOB.format(
        bench=str(Path(__file__).parent), samples=samples, run=str(run), save_every=save_every
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-u", "-c", job],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    steps: list[int] = []
    first = threading.Event()
    reader = threading.Thread(target=_read_steps, args=(proc.stdout, steps, first), daemon=True)
    reader.start()
    if not first.wait(300):
        proc.kill()
        raise RuntimeError("the child trained no step in 300 s")
    time.sleep(rng.uniform(0, window))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    reader.join()
    with tempfile.TemporaryDirectory() as empty:
        in_store = newest_step(run, Path(empty))
    return steps[-1], in_store, newest_step(run, Path(str(run) + "-cache"))


def work_lost(args) -> None:
    import random

    rng = random.Random(args.seed)
    lost_store, lost_any = [], []
    print(
        f"save_every={args.kill_every!r}, kill uniformly within {args.kill_window} s of the "
        "child's first step"
    )
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        for i in range(args.kills):
            done, store, anywhere = one_kill(
                run, args.samples, args.kill_every, args.kill_window, rng
            )
            lost_store.append(done - store)
            lost_any.append(done - anywhere)
            print(
                f"kill {i + 1}: {done} steps done, newest checkpoint step {store} in the store, "
                f"{anywhere} in store or cache: {done - store} / {done - anywhere} steps lost",
                flush=True,
            )
    for name, lost in (("store (VM lost)", lost_store), ("store or cache", lost_any)):
        print(
            f"steps lost, {name}: median {statistics.median(lost)}, max {max(lost)} "
            f"(interval {args.kill_every})"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=3, help="rounds of the overhead / resume parts")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--samples", type=int, default=12800)
    p.add_argument("--part", choices=["all", "overhead", "resume", "kill"], default="all")
    p.add_argument("--kills", type=int, default=8, help="kills in the work-lost part")
    p.add_argument("--kill-every", default="20steps", help="save_every of the killed runs")
    p.add_argument("--kill-window", type=float, default=10.0, help="seconds; kill time range")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(REPO))
    import keras

    print(f"keras {keras.version()} backend {keras.backend.backend()}, {os.cpu_count()} CPUs")
    if args.part in ("all", "overhead"):
        overhead(args)
    if args.part in ("all", "resume"):
        resume_latency(args)
    if args.part in ("all", "kill"):
        work_lost(args)


if __name__ == "__main__":
    main()
