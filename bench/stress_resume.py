"""Exact resume under many kills: SIGKILL at seeded random moments, compare bitwise, repeat.

    python bench/stress_resume.py --cases mirrored --tries 10
    python bench/stress_resume.py --minutes 30                    # every case, until time is up
    python bench/stress_resume.py --cases default,tfdata --kill-mode step --tries 20
    python bench/stress_resume.py --cases mirrored --images 4000 --epochs 10   # issue 28's job

Cases: ``default`` (no strategy, arrays), ``mirrored`` (MirroredStrategy over two logical CPU
devices), ``jax`` (KERAS_BACKEND=jax, keras.distribution.DataParallel over two CPU devices:
XLA_FLAGS=--xla_force_host_platform_device_count=2), ``tfdata`` (a seeded, shuffled
``tf.data.Dataset`` and a validation dataset; no strategy).

The job: the tutorial's convnet (``colabkit.mnist.build_model``) on the first --images of the
real MNIST-5k sample, batch 128, validation split 0.1, --epochs, ``deterministic=True``, a seed,
``save_every=--save-every``. Each case runs once uninterrupted (its reference). A try runs the
job in a child process and SIGKILLs it up to --kills times, each at a moment drawn from a seeded
RNG: uniformly over the reference's training time, counted from the child's first training
batch (--kill-mode time: mid-step, mid-save, mid-validation alike), or right after a uniformly
drawn global step, from inside the loop (--kill-mode step); a child that finishes first ends the
kills. A last child resumes the run to its end; its per-epoch history (every float) and its
weights and optimizer variables must equal the reference's bitwise. Tries go round the cases in
turn, so that a --minutes bound shares the time between them.

Not a test (the suite never runs it): one line per try, a summary per case; exits 1 when any
try differs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CASES = ("default", "mirrored", "jax", "tfdata")
BATCH = 128
MARKER = "colabkit-stress: training"


# ------------------------------------------------------------------------------ the child job


def child(args: argparse.Namespace) -> None:
    """One run of the job in this process (a fresh run, or a resume of ``args.run``)."""
    case = args.child
    if case == "mirrored":  # two logical CPU devices, before anything initialises TensorFlow
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        logical = [tf.config.LogicalDeviceConfiguration()] * 2
        tf.config.set_logical_device_configuration(cpu, logical)
    import keras
    import numpy as np

    import colabkit

    strategy, model = _model(case)
    history = colabkit.fit(
        model, **_inputs(case, args.images), epochs=args.epochs, run_dir=args.run,
        cache_dir=args.run + "-cache", seed=3, save_every=args.save_every,
        deterministic=True, session_limit=False, verbose=0, strategy=strategy,
        callbacks=[mark_and_kill(args.kill_after_step, _steps_per_epoch(args.images))],
    )  # fmt: skip
    arrays = {f"w{i}": np.asarray(w) for i, w in enumerate(model.get_weights())}
    slots = model.optimizer.variables
    arrays |= {f"o{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(slots)}
    resumes = json.dumps(history.resumes, default=str)
    np.savez(args.out, history=json.dumps(history.history), resumes=resumes, **arrays)


def _model(case: str) -> tuple[Any, Any]:
    """The case's strategy (None: Keras' default) and the convnet built in its scope."""
    import contextlib

    import keras

    import colabkit
    from colabkit.mnist import build_model

    strategy, scope = None, contextlib.nullcontext()
    if case == "mirrored":
        strategy = colabkit.distribute.strategy("mirrored")
        assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
        scope = strategy.scope()
    elif case == "jax":
        strategy = colabkit.distribute.strategy("auto")
        assert isinstance(strategy, keras.distribution.DataParallel), strategy
        keras.distribution.set_distribution(strategy)
    keras.utils.set_random_seed(1)
    with scope:
        return strategy, build_model()


def _inputs(case: str, images: int) -> dict[str, Any]:
    """``colabkit.fit``'s data arguments: arrays, or for ``tfdata`` two datasets (same split)."""
    from colabkit.mnist_data import load_data

    data = load_data("mnist-5k")
    x, y = data.x_train[:images], data.y_train[:images]
    if case != "tfdata":
        return {"x": x, "y": y, "validation_split": 0.1, "batch_size": BATCH}
    import tensorflow as tf

    split = _train_images(images)
    train = tf.data.Dataset.from_tensor_slices((x[:split], y[:split]))
    validation = tf.data.Dataset.from_tensor_slices((x[split:], y[split:])).batch(BATCH)
    return {"x": train.shuffle(split, seed=0).batch(BATCH), "validation_data": validation}


def _train_images(images: int) -> int:
    return images - int(images * 0.1)  # Keras' validation_split takes the last 10 %


def _steps_per_epoch(images: int) -> int:
    return math.ceil(_train_images(images) / BATCH)


def mark_and_kill(kill_after_step: int | None, steps_per_epoch: int) -> Any:
    """A callback that says when training starts (the parent's kill clock starts there) and,
    given a step, dies by SIGKILL right after that global step, inside colabkit's loop.

    Without a step it has no batch-end hook: Keras syncs with the device after every step, and
    colabkit forwards batch ends, only when some callback has one (a user's run usually not).
    """
    import keras

    class Mark(keras.callbacks.Callback):
        epoch, marked = 0, False

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.epoch = epoch

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            if not self.marked:
                self.marked = True
                print(MARKER, flush=True)

    class MarkAndKill(Mark):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if self.epoch * steps_per_epoch + batch + 1 == kill_after_step:
                os.kill(os.getpid(), signal.SIGKILL)

    return Mark() if kill_after_step is None else MarkAndKill()


# ------------------------------------------------------------------------------ the parent


def case_env(case: str) -> dict[str, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    if case == "jax":
        env |= {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    else:
        env["KERAS_BACKEND"] = "tensorflow"
    return env


@dataclass
class Child:
    """How one child process ended: its exit code and seconds from its first batch to its end."""

    returncode: int
    train_seconds: float


def run_child(
    case: str, run: Path, out: Path, args: argparse.Namespace, *,
    kill_after_seconds: float | None = None, kill_after_step: int | None = None,
) -> Child:  # fmt: skip
    """Runs the job once; SIGKILLs it ``kill_after_seconds`` after its first training batch."""
    command = [
        sys.executable, __file__, "--child", case, "--run", str(run), "--out", str(out),
        "--images", str(args.images), "--epochs", str(args.epochs),
        "--save-every", args.save_every,
        *(["--kill-after-step", str(kill_after_step)] if kill_after_step else []),
    ]  # fmt: skip
    with open(f"{run}.log", "a") as log:
        proc = subprocess.Popen(
            command, env=case_env(case), stdout=subprocess.PIPE, stderr=log, text=True
        )
        training = threading.Event()
        reader = threading.Thread(target=_watch, args=(proc, training), daemon=True)
        reader.start()
        training.wait()  # its first batch, or its end
        started = time.monotonic()
        try:
            proc.wait(timeout=kill_after_seconds)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        reader.join()
    if proc.returncode not in (0, -signal.SIGKILL):
        raise RuntimeError(f"{case} child failed ({proc.returncode}); see {run}.log")
    return Child(proc.returncode, time.monotonic() - started)


def _watch(proc: subprocess.Popen, training: threading.Event) -> None:
    """Reads the child's output to its end (a full pipe would stall it); sets ``training`` at
    the marker or at the end."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == MARKER:
            training.set()
    training.set()


def load(out: Path) -> tuple[dict, list, dict]:
    import numpy as np

    with np.load(out) as f:
        arrays = {k: f[k] for k in f.files if k not in ("history", "resumes")}
        return json.loads(str(f["history"])), json.loads(str(f["resumes"])), arrays


def differences(reference: Path, out: Path) -> list[str]:
    """What differs between two runs' outputs: history floats (repr) and arrays (bitwise)."""
    ref_history, _, ref = load(reference)
    history, _, got = load(out)
    found = [
        f"{key}[{epoch}] {b!r} resumed, {a!r} uninterrupted"
        for key in sorted(set(ref_history) | set(history))
        for epoch, (a, b) in enumerate(
            zip(ref_history.get(key, []), history.get(key, []), strict=False)
        )
        if a != b
    ]
    if {k: len(v) for k, v in ref_history.items()} != {k: len(v) for k, v in history.items()}:
        found.append("history lengths differ")
    bits = [k for k in ref if k not in got or got[k].tobytes() != ref[k].tobytes()]
    if bits:
        found.append(f"{len(bits)} of {len(ref)} arrays differ ({', '.join(bits[:4])})")
    return found + [f"{k} is extra" for k in got if k not in ref]


@dataclass
class CaseTally:
    """One case's tries so far."""

    tries: int = 0
    equal: int = 0
    kills: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    def add(self, n: int, equal: bool, kills: int, seconds: float) -> None:
        self.tries, self.equal, self.kills = self.tries + 1, self.equal + equal, self.kills + kills
        self.seconds += seconds
        if not equal:
            self.failures.append(f"try {n}")

    def summary(self) -> str:
        differ = f"; differ: {', '.join(self.failures)}" if self.failures else ""
        return (
            f"{self.equal}/{self.tries} tries bitwise equal, {self.kills} kills, "
            f"{self.seconds / 60:.1f} min{differ}"
        )


def one_try(case: str, n: int, folder: Path, rng: Any, reference: Path, ref_seconds: float,
            args: argparse.Namespace) -> tuple[bool, str, int]:  # fmt: skip
    """Kills and resumes one run of ``case``; returns (equal, its line, kills landed)."""
    run, out = folder / f"{case}-try{n}", folder / f"{case}-try{n}.npz"
    total_steps = _steps_per_epoch(args.images) * args.epochs
    steps = sorted(rng.choice(total_steps, size=min(args.kills, total_steps), replace=False) + 1)
    moments: list[str] = []
    for step in steps:  # in step mode a later kill's step comes after the earlier's resume point
        if args.kill_mode == "time":
            seconds = float(rng.uniform(0, ref_seconds))
            ended = run_child(case, run, out, args, kill_after_seconds=seconds)
            moment = f"{seconds:.1f}s"
        else:
            ended = run_child(case, run, out, args, kill_after_step=int(step))
            moment = f"step {step}"
        if ended.returncode == 0:
            break
        moments.append(moment)
    else:
        run_child(case, run, out, args)
    found = differences(reference, out)
    resumed = [r["global_step"] for r in load(out)[1]]
    line = (
        f"killed at {', '.join(moments) or 'no moment (it finished first)'}; resumed from "
        f"{resumed or 'nothing'}: " + ("EQUAL" if not found else "DIFFERS: " + "; ".join(found))
    )
    return not found, line, len(moments)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    p.add_argument("--tries", type=int, default=10, help="tries per case")
    p.add_argument("--minutes", type=float, default=None, help="start no try after this long")
    p.add_argument("--kills", type=int, default=2, help="kills per try (at most)")
    p.add_argument("--kill-mode", choices=("time", "step"), default="time")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--save-every", default="5steps")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    p.add_argument("--keep", help="keep the runs in this folder (default: a temporary one)")
    p.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    p.add_argument("--run", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--kill-after-step", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return 0
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if unknown := [c for c in cases if c not in CASES]:
        p.error(f"unknown case(s) {unknown}; expected some of {', '.join(CASES)}")
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        return stress(cases, Path(args.keep), args)
    with tempfile.TemporaryDirectory(prefix="colabkit-stress-") as folder:
        return stress(cases, Path(folder), args)


def stress(cases: list[str], folder: Path, args: argparse.Namespace) -> int:
    import numpy as np

    began = time.monotonic()
    deadline = began + args.minutes * 60 if args.minutes else math.inf
    print(
        f"job: convnet, {args.images} MNIST-5k images, {args.epochs} epochs, batch {BATCH}, "
        f"save every {args.save_every}; kills: up to {args.kills} per try by {args.kill_mode}, "
        f"seed {args.seed}",
        flush=True,
    )
    references, tallies = {}, {case: CaseTally() for case in cases}
    for case in cases:
        start = time.monotonic()
        ended = run_child(case, folder / f"{case}-ref", folder / f"{case}-ref.npz", args)
        references[case] = (folder / f"{case}-ref.npz", ended.train_seconds)
        print(f"{case:8} reference: {ended.train_seconds:.1f} s of training, "
              f"{time.monotonic() - start:.1f} s in all", flush=True)  # fmt: skip
    rng = np.random.default_rng(args.seed)
    for n in range(1, args.tries + 1):
        for case in cases:
            if time.monotonic() > deadline:
                break
            start = time.monotonic()
            equal, line, kills = one_try(case, n, folder, rng, *references[case], args)
            seconds = time.monotonic() - start
            tallies[case].add(n, equal, kills, seconds)
            print(f"{case:8} try {n:3}/{args.tries} {seconds:6.1f} s  {line}", flush=True)
    print(f"summary ({(time.monotonic() - began) / 60:.1f} min in all):")
    for case, tally in tallies.items():
        print(f"  {case:8} {tally.summary()}")
    return 0 if all(t.equal == t.tries for t in tallies.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
