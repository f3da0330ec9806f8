"""Checkpoint bytes, memory and blocking time for big models: frozen (LoRA) and fully trainable.

    python bench/bench_big.py                               # 1 GiB models, 3 pairs each
    python bench/bench_big.py --gib 0.05 --pairs 1          # a quick check of the script
    python bench/bench_big.py --models lora --pairs 5 --json big.json --backend jax
    python bench/bench_big.py --tables big.json             # the tables of a saved run again

Two models of at least ``--gib`` GiB of float32 weights: ``--layers`` Dense layers of ``width``
units (width = sqrt(gib * 2**30 / 4 / layers), rounded up to a multiple of 64: 4096 for 1 GiB and
16 layers) on a ``width``-feature input, then a Dense(16) head; MSE, Adam.

  lora  ``layer.enable_lora(4)`` on every Dense: the kernels are frozen (non-trainable), the
        LoRA factors and the biases train
  full  the same model, every variable trainable

Each model runs in two arms, each a separate process (one at a time: a 1 GiB model with Adam is
~3 GiB of state plus gradients), alternated pair by pair (the order reversed every other pair):

  plain     ``model.fit`` with a callback that calls ``model.save_weights`` every ``--every``
            steps into a local folder (the newest ``--keep`` files kept), each call timed
  colabkit  ``colabkit.fit(save_every="<every>steps", keep=<keep>, run_dir=...)``; the
            blocking part of each save (``ResumableLoop.save`` on the training thread) is timed
            by wrapping it; ``fit`` returns once its background writes are durable

Tiny synthetic data, batch 2, one epoch of ``--steps`` steps (16: saves at steps 4, 8, 12, 16).
Per process: the resident set after the model and optimizer are built (baseline), its peak during
the fit call (VmRSS sampled every 50 ms in a thread) and ``ru_maxrss``; the size of every
checkpoint file written (colabkit: each ``ckpt-*.ckpt`` and any ``frozen-*.ckpt`` under
``RUN_DIR/checkpoints``, seen while the run goes and listed after it; plain: each
``.weights.h5``); the blocking time of each save; the wall time of the fit call. Also the bytes
of the model (every model variable) and of what changes in training: trainable, optimizer and
metric variables and the non-trainable ones that are not frozen kernels (seed states); frozen =
the kernels of LoRA-enabled layers.

The table gives, per model, medians (range over the pairs): colabkit's bytes per checkpoint
(after the first) / the bytes that change; what its store holds at the end / (frozen once +
keep x changed), 1.0 when frozen variables are stored once; peak RSS above the baseline; median
blocking time per save; and the ratios colabkit / plain within each pair. MB = 10**6 bytes.
``--json FILE`` keeps every raw number (with each run's VmRSS every 50 ms). The commit measured
is printed ("+dirty" when a tracked or untracked file other than this script differs).

Run time on the 2-core development VM at 21c2bb5 (before frozen variables were stored once),
other tests running on the same cores, one pair of each model: 7.5 min (processes: lora 36 and
75 s, full 105 and 236 s; colabkit's blocking copy of 3.2 GB took 27-38 s a save there). Disk: up
to ~4 checkpoints of the full model (13 GB) in ``--dir`` at once, plus its cache copies. Not a
test: it prints tables and never fails on a number.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARMS = ("plain", "colabkit")
MODELS = ("lora", "full")
MB = 1_000_000
GIB = 1 << 30
CKPT_NAME = re.compile(r"ckpt-(\d+)\.ckpt$")


# -- the worker (one process per run) -----------------------------------------------------------


def read_status() -> dict[str, int]:
    """VmRSS and RssAnon of this process, in bytes."""
    found = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon"):
                found[key] = int(value.split()[0]) * 1024
    return found


def maxrss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def list_checkpoints(folder: Path) -> dict[str, int]:
    """Every ``*.ckpt`` under ``folder`` (hidden temporary names left out): path -> bytes."""
    found = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.endswith(".ckpt") and not name.startswith("."):
                path = Path(root, name)
                with contextlib.suppress(FileNotFoundError):  # pruned since the listing
                    found[str(path.relative_to(folder))] = path.stat().st_size
    return found


class Sampler(threading.Thread):
    """Samples the resident set every ``interval`` s; notes every checkpoint file it sees."""

    def __init__(self, started: float, checkpoints: Path | None, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.started, self.checkpoints, self.interval = started, checkpoints, interval
        self.stop = threading.Event()
        self.peak = {"VmRSS": 0, "RssAnon": 0}
        self.timeline: list[tuple[float, int]] = []  # (seconds, VmRSS MB)
        self.seen: dict[str, int] = {}

    def sample(self) -> None:
        status = read_status()
        for key, value in status.items():
            self.peak[key] = max(self.peak[key], value)
        self.timeline.append(
            (round(time.perf_counter() - self.started, 3), round(status["VmRSS"] / MB))
        )
        if self.checkpoints is not None and self.checkpoints.is_dir():
            self.seen.update(list_checkpoints(self.checkpoints))

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.interval)
        self.sample()


def build_model(kind: str, width: int, layers: int):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((width,))
    hidden = inputs
    for _ in range(layers):
        hidden = keras.layers.Dense(width, activation="relu")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(16)(hidden))
    frozen = []
    if kind == "lora":
        for layer in model.layers:
            if isinstance(layer, keras.layers.Dense):
                layer.enable_lora(4)
                frozen.append(layer._kernel)  # the kernel enable_lora made non-trainable
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model, frozen


def nbytes(variables) -> int:
    import numpy as np

    return sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in variables)


def variable_bytes(model, frozen) -> dict[str, int]:
    """Bytes of the model, of the frozen kernels and of what changes in training."""
    frozen_ids = {id(v) for v in frozen}
    other = [v for v in model.non_trainable_variables if id(v) not in frozen_ids]
    sizes = {
        "model": nbytes(model.variables),
        "frozen": nbytes(frozen),
        "trainable": nbytes(model.trainable_variables),
        "optimizer": nbytes(model.optimizer.variables),
        "metrics": nbytes(model.metrics_variables),
        "other_non_trainable": nbytes(other),
    }
    sizes["changed"] = sum(
        sizes[k] for k in ("trainable", "optimizer", "metrics", "other_non_trainable")
    )
    return sizes


def plain_fit(model, x, y, args, folder: Path, saves: list) -> None:
    import keras

    folder.mkdir()

    class SaveEvery(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            step = batch + 1
            if step % args.every:
                return
            path = folder / f"step-{step:06d}.weights.h5"
            start = time.perf_counter()
            self.model.save_weights(path)
            seconds = time.perf_counter() - start
            saves.append({"step": step, "seconds": seconds, "bytes": path.stat().st_size})
            for old in sorted(folder.glob("*.weights.h5"))[: -args.keep]:
                old.unlink()

    model.fit(
        x, y, batch_size=args.batch, epochs=1, shuffle=True, callbacks=[SaveEvery()], verbose=0
    )


def colabkit_fit(model, x, y, args, run_dir: Path, saves: list) -> None:
    import colabkit
    from colabkit.training import loop

    original = loop.ResumableLoop.save

    def timed_save(self, *a, **kw):
        start = time.perf_counter()
        try:
            return original(self, *a, **kw)
        finally:
            saves.append(
                {"step": self.progress.global_step, "seconds": time.perf_counter() - start}
            )

    loop.ResumableLoop.save = timed_save
    try:
        colabkit.fit(
            model,
            x,
            y,
            run_dir=run_dir,
            cache_dir=run_dir.parent / "cache",
            epochs=1,
            batch_size=args.batch,
            seed=0,
            save_every=f"{args.every}steps",
            keep=args.keep,
            verbose=0,
            session_limit=False,
        )
    finally:
        loop.ResumableLoop.save = original


def worker(args: argparse.Namespace) -> None:
    """One run in this process; prints one JSON line."""
    import gc

    import keras
    import numpy as np

    import colabkit  # both arms: the same imports before the baseline

    width, layers = shape_of(args)
    model, frozen = build_model(args.model, width, layers)
    rng = np.random.default_rng(0)
    samples = args.steps * args.batch
    x = rng.standard_normal((samples, width), dtype=np.float32)
    y = rng.standard_normal((samples, 16), dtype=np.float32)
    sizes = variable_bytes(model, frozen)
    gc.collect()
    baseline, maxrss_before = read_status(), maxrss_bytes()
    saves: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="colabkit-bench-big-", dir=args.dir) as tmp:
        run_dir = Path(tmp, "run")
        checkpoints = run_dir / "checkpoints"
        started = time.perf_counter()
        sampler = Sampler(started, checkpoints if args.worker == "colabkit" else None)
        sampler.start()
        if args.worker == "plain":
            plain_fit(model, x, y, args, Path(tmp, "plain"), saves)
        else:
            colabkit_fit(model, x, y, args, run_dir, saves)
        wall = time.perf_counter() - started
        sampler.stop.set()
        sampler.join()
        if args.worker == "colabkit":
            files_after = list_checkpoints(checkpoints)
        else:
            files_after = {p.name: p.stat().st_size for p in Path(tmp, "plain").glob("*.h5")}
    backend = keras.backend.backend()
    versions = {
        "python": platform.python_version(),
        "keras": keras.version(),
        "backend": backend,
        "numpy": np.__version__,
    }
    versions["colabkit from"] = str(Path(colabkit.__file__).parent)
    framework = sys.modules.get("tensorflow" if backend == "tensorflow" else backend)
    if framework is not None:
        versions[backend] = framework.__version__
    print(
        json.dumps(
            {
                "arm": args.worker,
                "model": args.model,
                "width": width,
                "layers": layers,
                "steps": args.steps,
                "batch": args.batch,
                "every": args.every,
                "keep": args.keep,
                "bytes": sizes,
                "baseline_rss": baseline["VmRSS"],
                "baseline_rss_anon": baseline["RssAnon"],
                "peak_rss": sampler.peak["VmRSS"],
                "peak_rss_anon": sampler.peak["RssAnon"],
                "maxrss_before_fit": maxrss_before,
                "maxrss": maxrss_bytes(),
                "wall": wall,
                "saves": saves,
                "files_seen": sampler.seen,
                "files_after": files_after,
                "rss_timeline": sampler.timeline,
                "versions": versions,
            }
        )
    )


def shape_of(args: argparse.Namespace) -> tuple[int, int]:
    """(width, layers): ``layers`` Dense(width) of at least ``args.gib`` GiB of float32."""
    width = math.ceil(math.sqrt(args.gib * GIB / 4 / args.layers) / 64) * 64
    return width, args.layers


# -- the parent --------------------------------------------------------------------------------


def commit() -> str:
    """``git rev-parse --short HEAD``, "+dirty" when anything but this script differs."""

    def git(*command: str) -> str:
        done = subprocess.run(["git", *command], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip()

    mine = str(Path(__file__).resolve().relative_to(REPO))
    changed = [line[3:] for line in git("status", "--porcelain").splitlines()]
    return git("rev-parse", "--short", "HEAD") + ("+dirty" if set(changed) - {mine} else "")


def run_worker(arm: str, model: str, args: argparse.Namespace) -> dict:
    command = [
        sys.executable, __file__, "--worker", arm, "--model", model, "--gib", str(args.gib),
        "--layers", str(args.layers), "--steps", str(args.steps), "--batch", str(args.batch),
        "--every", str(args.every), "--keep", str(args.keep), "--dir", args.dir,
    ]  # fmt: skip
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": str(REPO),
        "KERAS_BACKEND": args.backend,
    }
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{arm} {model} run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - started
    return result


def derived(r: dict) -> dict:
    """The figures the tables show, from one worker's raw numbers."""
    sizes, keep = r["bytes"], r["keep"]
    d = {
        "peak_above_mb": (r["peak_rss"] - r["baseline_rss"]) / MB,
        "maxrss_above_mb": (r["maxrss"] - r["baseline_rss"]) / MB,
        "save_s": statistics.median(s["seconds"] for s in r["saves"]),
        "saves": len(r["saves"]),
        "wall": r["wall"],
    }
    if r["arm"] == "plain":
        d["file_mb"] = statistics.median(s["bytes"] for s in r["saves"]) / MB
        return d
    files = {**r["files_seen"], **r["files_after"]}
    steps = sorted(
        (int(m.group(1)), size)
        for name, size in files.items()
        if (m := CKPT_NAME.search(Path(name).name))
    )
    per_save = [size for _, size in steps[1:]] or [size for _, size in steps]
    d["ckpt_written"] = len(steps)  # seen under RUN_DIR/checkpoints during or after the run
    d["ckpt_in_store"] = sum(1 for n in r["files_after"] if CKPT_NAME.search(Path(n).name))
    d["per_save_mb"] = statistics.median(per_save) / MB
    d["per_save_over_changed"] = statistics.median(per_save) / sizes["changed"]
    store = sum(r["files_after"].values())
    d["frozen_files"] = sum(1 for n in r["files_after"] if Path(n).name.startswith("frozen-"))
    d["store_mb"] = store / MB
    d["store_over_ideal"] = store / (sizes["frozen"] + keep * sizes["changed"])
    return d


def spread(values: list[float], digits: int = 3) -> str:
    return (
        f"{statistics.median(values):.{digits}f} "
        f"({min(values):.{digits}f}-{max(values):.{digits}f})"
    )


def tables(results: dict[str, list[dict]]) -> str:
    first = (
        "| model | model MB | frozen MB | changed MB | colabkit ckpt MB (after 1st) | "
        "ckpt / changed | colabkit store MB (ckpt + frozen files) | store / (frozen + keep x "
        "changed) | plain .weights.h5 MB |"
    )
    second = (
        "| model | pairs | peak RSS above baseline, plain MB | colabkit MB | ratio | "
        "ru_maxrss above baseline, plain MB | colabkit MB | ratio | blocking per save, plain s | "
        "colabkit s | ratio | fit call, plain s | colabkit s | ratio |"
    )
    rows1, rows2 = [first, "|---" * 9 + "|"], [second, "|---" * 14 + "|"]
    for model, pairs in results.items():
        sizes = pairs[0]["colabkit"]["bytes"]
        p = [derived(pair["plain"]) for pair in pairs]
        c = [derived(pair["colabkit"]) for pair in pairs]
        files = ", ".join(
            f"{d['ckpt_in_store']} ckpt + {d['frozen_files']} frozen; {d['ckpt_written']} ckpt seen"
            for d in c
        )
        rows1.append(
            f"| {model} | {sizes['model'] / MB:.1f} | {sizes['frozen'] / MB:.1f} | "
            f"{sizes['changed'] / MB:.1f} | {spread([d['per_save_mb'] for d in c], 1)} | "
            f"{spread([d['per_save_over_changed'] for d in c])} | "
            f"{spread([d['store_mb'] for d in c], 1)} ({files}) | "
            f"{spread([d['store_over_ideal'] for d in c])} | "
            f"{spread([d['file_mb'] for d in p], 1)} |"
        )
        cells = [f"| {model} | {len(pairs)} "]
        for key, digits in (
            ("peak_above_mb", 0),
            ("maxrss_above_mb", 0),
            ("save_s", 3),
            ("wall", 1),
        ):
            cells.append(f"| {spread([d[key] for d in p], digits)} ")
            cells.append(f"| {spread([d[key] for d in c], digits)} ")
            ratios = [
                b[key] / a[key] if a[key] > 0 else float("nan") for a, b in zip(p, c, strict=True)
            ]
            cells.append(f"| {spread(ratios)} ")
        rows2.append("".join(cells) + "|")
    return "\n".join(rows1) + "\n\n" + "\n".join(rows2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--models", default="lora,full", help="lora and/or full")
    parser.add_argument("--gib", type=float, default=1.0, help="GiB of float32 weights (at least)")
    parser.add_argument("--layers", type=int, default=16, help="Dense(width) layers")
    parser.add_argument("--steps", type=int, default=16, help="training steps (one epoch)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--every", type=int, default=4, help="save every this many steps")
    parser.add_argument("--keep", type=int, default=3, help="checkpoints kept")
    parser.add_argument("--backend", choices=("tensorflow", "jax"), default="tensorflow")
    parser.add_argument(
        "--dir",
        default=os.environ.get("BENCH_TMP", tempfile.gettempdir()),
        help="folder for the run directories (default $BENCH_TMP or /tmp)",
    )
    parser.add_argument("--json", help="write every raw number to this file")
    parser.add_argument("--tables", metavar="JSON", help="only print the tables of a --json file")
    parser.add_argument("--worker", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=MODELS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.tables:
        with open(args.tables) as f:
            saved = json.load(f)
        print(f"commit {saved['commit']}; {saved['args']}\n")
        print(tables(saved["results"]))
        return
    models = args.models.split(",")
    width, layers = shape_of(args)
    measured = commit()
    print(
        f"commit {measured}; {args.backend}; {layers} x Dense({width}) + Dense(16) "
        f"(>= {args.gib} GiB float32), batch {args.batch}, {args.steps} steps, a save every "
        f"{args.every} steps, keep {args.keep}; {args.pairs} pairs; {os.cpu_count()} CPUs",
        flush=True,
    )
    results: dict[str, list[dict]] = {}
    started = time.time()
    for model in models:
        results[model] = []
        for pair in range(args.pairs):
            order = ARMS if pair % 2 == 0 else ARMS[::-1]
            result = {arm: run_worker(arm, model, args) for arm in order}
            results[model].append(result)
            p, c = derived(result["plain"]), derived(result["colabkit"])
            print(
                f"  {model} pair {pair + 1} ({' then '.join(order)}): peak RSS above baseline "
                f"{p['peak_above_mb']:.0f} vs {c['peak_above_mb']:.0f} MB, blocking per save "
                f"{p['save_s']:.3f} vs {c['save_s']:.3f} s, fit call {p['wall']:.1f} vs "
                f"{c['wall']:.1f} s (processes {result['plain']['process_seconds']:.0f} and "
                f"{result['colabkit']['process_seconds']:.0f} s)",
                flush=True,
            )
    versions = next(iter(results.values()))[0]["plain"]["versions"]
    print(
        f"\n{', '.join(f'{k} {v}' for k, v in versions.items())}; commit {measured}; "
        f"{time.time() - started:.0f} s in all; MB = 10**6 bytes; median (range) over the pairs\n"
    )
    print(tables(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"commit": measured, "args": vars(args), "results": results}, f)
        print(f"\nraw numbers: {args.json}")


if __name__ == "__main__":
    main()
