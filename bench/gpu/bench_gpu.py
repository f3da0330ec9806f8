"""GPU benchmark on JAX: plain model.fit vs colabkit.fit step and epoch times, and exact resume.

Run through ``bench/gpu/run.sh`` (sets KERAS_BACKEND=jax and XLA_FLAGS before JAX starts):

    bash bench/gpu/run.sh                                  # device machine: 60,000 images
    PYTHON=.venv/bin/python bash bench/gpu/run.sh --samples 6000 --epochs 2 --pairs 1  # CPU

Part 1: the tutorial's convnet (batch 128, validation split 0.1) on MNIST-5k images resampled to
--samples, run alternately with the same seed and initial weights as:

- ``plain``: ``model.fit(x, y)``;
- ``plain+batch-cb``: the same with a no-op ``on_train_batch_end`` callback (Keras then reads
  every step's logs, a device sync per step);
- ``plain+pydataset``: ``model.fit`` over colabkit's ``ArrayBatches`` (the (seed, epoch) batch
  order colabkit trains on), no colabkit callbacks -- the data path alone;
- ``keras-bar``: ``model.fit`` with Keras' ``BackupAndRestore`` (a backup every epoch);
- ``colabkit``: ``colabkit.fit(save_every="epoch")``;
- ``colabkit-50steps``: ``colabkit.fit(save_every="50steps")``.

``--kinds`` picks some of them (the first is the baseline of the ratios). Reported per kind
(medians over rounds): the first epoch (XLA compilation included), a steady epoch (the interval
between two ``on_epoch_end`` calls: training, validation and, for colabkit, its epoch-end
checkpoint) and a training step (``on_epoch_begin`` to ``on_test_begin``, after waiting for the
last step's result, divided by the steps).

Part 2 (exact resume): ``colabkit.fit(deterministic=True, seed=0)`` saving every min(50, a
quarter epoch) steps, for --resume-epochs epochs, in child processes: run A uninterrupted, run
A again (the baseline: are two uninterrupted runs bitwise equal?), run B SIGKILLed by itself in
the middle of its last epoch and then resumed to the end. Compares every model and optimizer
variable bit for bit.

Not a test: it prints a table and never fails on a number.
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
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
FLAG = "--xla_gpu_deterministic_ops=true"


def _environment() -> None:
    """JAX reads XLA_FLAGS when it starts: set the backend and the flag before importing keras."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    if FLAG not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + FLAG).strip()
    sys.path.insert(0, str(BENCH))


def data(samples: int):
    from bench_fit import mnist

    return mnist(samples)


class Timer:
    """Epoch ends, epoch-begin-to-validation-begin intervals; one instance per run."""

    def __init__(self):
        import keras

        outer = self
        self.ends: list[float] = []
        self.train: list[float] = []
        self.started = 0.0
        self.steps = 0

        class _Cb(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                outer.started = time.perf_counter()

            def on_epoch_begin(self, epoch, logs=None):
                outer.begin = time.perf_counter()
                outer.steps = self.params["steps"]

            def on_test_begin(self, logs=None):
                # JAX dispatches steps asynchronously: wait for the last one before reading
                # the clock (``self.model`` syncs the training state into the variables).
                keras.ops.convert_to_numpy(self.model.trainable_variables[-1])
                outer.train.append(time.perf_counter() - outer.begin)

            def on_epoch_end(self, epoch, logs=None):
                outer.ends.append(time.perf_counter())

        self.callback = _Cb()

    def summary(self) -> dict[str, float]:
        steady = [b - a for a, b in zip(self.ends, self.ends[1:], strict=False)]
        return {
            "first epoch s": self.ends[0] - self.started,
            "epoch s": statistics.median(steady) if steady else float("nan"),
            "step ms": 1000 * statistics.median(self.train[1:] or self.train) / self.steps,
        }


def _every_step():
    import keras

    class EveryStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    return EveryStep


KINDS = [
    "plain",
    "plain+batch-cb",
    "plain+pydataset",
    "keras-bar",
    "colabkit",
    "colabkit-50steps",
]


def one_run(kind: str, x, y, epochs: int, tmp: Path) -> dict[str, float]:
    import keras
    from bench_fit import train  # plain, keras-bar and colabkit, as the CPU benchmark runs them

    from colabkit.mnist import build_model

    keras.utils.set_random_seed(0)
    model = build_model()
    timer = Timer()
    EveryStep = _every_step()  # noqa: N806
    run = tmp / f"run-{time.monotonic_ns()}"
    if kind == "plain+batch-cb":
        train("plain", model, x, y, epochs=epochs, run=run, callbacks=[timer.callback, EveryStep()])
    elif kind == "plain+pydataset":
        from colabkit.training.data import ArrayBatches, train_validation_split

        (xt, yt, _), validation = train_validation_split(x, y, None, 0.1)
        batches = ArrayBatches(xt, yt, batch_size=128, seed=0)
        model.fit(
            batches,
            validation_data=validation[:2],
            validation_batch_size=128,
            epochs=epochs,
            verbose=0,
            callbacks=[timer.callback],
        )
    else:
        save_every = "50steps" if kind == "colabkit-50steps" else "epoch"
        kind_of_call = "colabkit" if kind.startswith("colabkit") else kind
        train(
            kind_of_call, model, x, y, epochs=epochs, run=run, callbacks=[timer.callback],
            save_every=save_every,
        )  # fmt: skip
    return timer.summary()


def timings(args) -> None:
    x, y = data(args.samples)
    kinds = args.kinds
    results: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.pairs):
            for kind in kinds if i % 2 == 0 else kinds[::-1]:
                results[kind].append(one_run(kind, x, y, args.epochs, Path(tmp)))
            print(
                f"round {i + 1}: "
                + "; ".join(f"{k} epoch {results[k][-1]['epoch s']:.3f} s" for k in kinds),
                flush=True,
            )
    columns = ["first epoch s", "epoch s", "step ms"]
    print(f"\n{args.samples:,} images, {args.epochs} epochs, {args.pairs} rounds (medians)")
    print("| kind | first epoch (s) | steady epoch (s) | step (ms) |")
    print("|---|---|---|---|")
    med = {k: {c: statistics.median(r[c] for r in results[k]) for c in columns} for k in kinds}
    for k in kinds:
        print(f"| {k} | " + " | ".join(f"{med[k][c]:.3f}" for c in columns) + " |")
    for k in kinds[1:]:
        ratios = [
            c["epoch s"] / p["epoch s"] for c, p in zip(results[k], results[kinds[0]], strict=True)
        ]
        print(
            f"{k} / {kinds[0]} steady epoch time, round by round: "
            f"{[round(r, 3) for r in ratios]}, median {statistics.median(ratios):.3f}"
        )


def child(args) -> None:
    """One exact-resume run (in its own process): train to the end, or kill itself at a step."""
    import keras
    import numpy as np

    import colabkit
    from colabkit.mnist import build_model
    from colabkit.training.state import capture_variables

    x, y = data(args.samples)
    keras.utils.set_random_seed(0)
    model = build_model()

    class KillAt(keras.callbacks.Callback):
        epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch * self.params["steps"] + batch + 1 == args.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    run = Path(args.run)
    history = colabkit.fit(
        model,
        x,
        y,
        run_dir=run,
        cache_dir=str(run) + "-cache",
        epochs=args.resume_epochs,
        batch_size=128,
        validation_split=0.1,
        seed=0,
        deterministic=True,
        save_every=f"{args.save_steps}steps",
        session_limit=False,
        callbacks=[KillAt()] if args.kill_at else [],
        verbose=0,
    )
    arrays = {
        k.replace("/", "_"): v
        for k, v in capture_variables(model).arrays.items()
        if not k.startswith("metrics/")
    }
    np.savez(run / "final.npz", **arrays)
    (run / "history.json").write_text(json.dumps(history.history))
    print(json.dumps({"resumes": history.resumes}, default=str), flush=True)


def _child(args, run: Path, kill_at: int = 0) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--run",
        str(run),
        "--samples",
        str(args.samples),
        "--resume-epochs",
        str(args.resume_epochs),
        "--kill-at",
        str(kill_at),
        "--save-steps",
        str(args.save_steps),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())


def _compare(a: Path, b: Path) -> str:
    import numpy as np

    with np.load(a / "final.npz") as fa, np.load(b / "final.npz") as fb:
        keys = sorted(fa.files)
        if keys != sorted(fb.files):
            return "different variables"
        unequal = [k for k in keys if fa[k].tobytes() != fb[k].tobytes()]
        worst = max((float(np.max(np.abs(fa[k] - fb[k]))) for k in unequal), default=0.0)
    same_history = (a / "history.json").read_text() == (b / "history.json").read_text()
    verdict = "bitwise equal" if not unequal else f"{len(unequal)} differ (max |diff| {worst:.3g})"
    history = "equal" if same_history else "differs"
    return f"{len(keys)} variables {verdict}; per-epoch history {history}"


def exact_resume(args) -> None:
    steps = int(args.samples * 0.9) // 128 + (int(args.samples * 0.9) % 128 > 0)
    args.save_steps = min(50, max(1, steps // 4))
    kill_at = (args.resume_epochs - 1) * steps + int(steps * 0.6) + 1
    kill_at += kill_at % args.save_steps == 0
    with tempfile.TemporaryDirectory() as tmp:
        a, a2, b = Path(tmp, "a"), Path(tmp, "a2"), Path(tmp, "b")
        started = time.perf_counter()
        for run in (a, a2):
            done = _child(args, run)
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-3000:])
        killed = _child(args, b, kill_at)
        resumed = _child(args, b)
        if resumed.returncode != 0:
            raise RuntimeError(resumed.stderr[-3000:])
        print(
            f"\nexact resume ({args.resume_epochs} epochs, {steps} steps each, deterministic=True,"
            f" XLA_FLAGS={os.environ.get('XLA_FLAGS')!r}), {time.perf_counter() - started:.0f} s:"
        )
        resumes = json.loads(resumed.stdout.strip().splitlines()[-1])["resumes"]
        where = f"resumed at global step {resumes[0]['global_step']}" if resumes else "NOT RESUMED"
        print(
            f"  save every {args.save_steps} steps; killed at step {kill_at} "
            f"(exit {killed.returncode}); {where}"
        )
        print(f"  uninterrupted vs uninterrupted: {_compare(a, a2)}")
        print(f"  uninterrupted vs killed+resumed: {_compare(a, b)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=60000, help="images (resampled from 5k)")
    p.add_argument("--epochs", type=int, default=4, help="epochs per timing run")
    p.add_argument("--pairs", type=int, default=3, help="alternated rounds of the timing part")
    p.add_argument("--resume-epochs", type=int, default=2, help="epochs of the resume check")
    p.add_argument("--part", choices=["all", "timing", "resume"], default="all")
    p.add_argument(
        "--kinds",
        type=lambda text: text.split(","),
        default=KINDS,
        help=f"comma-separated, the first is the baseline (default: {','.join(KINDS)})",
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--run", help=argparse.SUPPRESS)
    p.add_argument("--kill-at", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--save-steps", type=int, default=50, help=argparse.SUPPRESS)
    args = p.parse_args()
    if unknown := set(args.kinds) - set(KINDS):
        p.error(f"unknown --kinds {sorted(unknown)}: choose from {', '.join(KINDS)}")
    _environment()
    if args.child:
        child(args)
        return
    import jax
    import keras

    print(
        f"keras {keras.version()} backend {keras.backend.backend()}, jax {jax.__version__} "
        f"devices {jax.devices()}, XLA_FLAGS={os.environ.get('XLA_FLAGS')!r}",
        flush=True,
    )
    if args.part in ("all", "timing"):
        timings(args)
    if args.part in ("all", "resume"):
        exact_resume(args)
    print(f"tensorflow imported: {'tensorflow' in sys.modules}")


if __name__ == "__main__":
    main()
