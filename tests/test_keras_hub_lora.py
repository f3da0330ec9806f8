"""LoRA fine-tuning of a real KerasHub model: a killed run resumes bitwise equal, and the
checkpoints hold what training changes, not the frozen model.

The job (tests/lora_worker.py) is the Gemma LoRA tutorial on a small Gemma of random weights
(no download): ``backbone.enable_lora(rank=4)``, AdamW, weighted accuracy, padded sequences.
LoRA is where checkpoint size matters most: the frozen base model (5 GB for Gemma 2 2B in
bfloat16) never changes, while the LoRA factors, their Adam slots and the dropout seed states
(megabytes) change every step. A checkpoint that holds the whole model every few minutes fills a
Colab user's Drive and spends the session uploading it. Here the frozen part is ~100 times the
changing part, as in a real LoRA run.

The data: in-memory arrays (x a dict of token ids and padding mask), as the tutorial passes
them, on TensorFlow and on JAX (where a KerasHub task's ``fit`` takes no PyDataset: colabkit hands
it a ``tf.data.Dataset`` in the same order), and a ``tf.data.Dataset`` of the same samples.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from worker_process import run_script, worker_env

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
WORKER = TESTS / "lora_worker.py"
EXAMPLE = TESTS.parent / "examples" / "gemma_lora.py"
MB = 1 << 20
SAVE_STEPS, KEEP = 4, 3  # lora_worker's save_every="4steps", keep=3


@dataclass(frozen=True)
class Case:
    backend: str
    data: str  # lora_worker's --input
    kill_after: int  # a global step that is not a save boundary

    def __str__(self) -> str:
        return f"{self.backend}-{self.data}"


# Killed in the second epoch (resumes from step 16 mid-epoch) and in the first (from step 8).
CASES = [Case("tensorflow", "arrays", 18), Case("jax", "arrays", 10), Case("jax", "tfdata", 10)]


@dataclass(frozen=True, repr=False)
class Outcome:
    """What a finished worker left: its npz and its run directory."""

    run_dir: Path
    history: dict
    resumes: list[dict]
    counts: dict[str, int]
    sizes: dict[str, int]  # every ckpt-*.ckpt the worker saw in the store, by name
    arrays: dict[str, np.ndarray]

    def __repr__(self) -> str:  # short, in a failure's report
        return f"Outcome({self.run_dir}, resumes={self.resumes}, counts={self.counts})"


def run_worker(case: Case, run_dir: Path, out: Path, *extra: str) -> int:
    return run_script(WORKER, case.backend, str(run_dir), str(out), "--input", case.data, *extra)


def load(out: Path, run_dir: Path) -> Outcome:
    with np.load(out) as f:
        texts = {"history", "resumes", "counts", "checkpoint_sizes"}
        arrays = {k: f[k] for k in f.files if k not in texts}
        decoded = {k: json.loads(str(f[k])) for k in texts}
    return Outcome(
        run_dir,
        decoded["history"],
        decoded["resumes"],
        decoded["counts"],
        decoded["checkpoint_sizes"],
        arrays,
    )


def step_of(name: str) -> int:
    return int(name.removeprefix("ckpt-").removesuffix(".ckpt"))


@pytest.fixture(scope="module")
def keras_hub_installed() -> None:
    pytest.importorskip("keras_hub", reason="keras-hub is not installed (pip install keras-hub)")


@pytest.fixture(scope="module", params=CASES, ids=str)
def case(request, keras_hub_installed) -> Case:
    pytest.importorskip(request.param.backend)
    pytest.importorskip("tensorflow")  # keras-hub's preprocessing, and the tf.data input
    return request.param


@pytest.fixture(scope="module")
def reference(case, tmp_path_factory) -> Outcome:
    tmp = tmp_path_factory.mktemp(f"lora-ref-{case}")
    assert run_worker(case, tmp / "run", tmp / "out.npz") == 0
    return load(tmp / "out.npz", tmp / "run")


@pytest.fixture(scope="module")
def resumed(case, tmp_path_factory) -> Outcome:
    """The same run, SIGKILLed after step ``case.kill_after``, then run again to the end."""
    tmp = tmp_path_factory.mktemp(f"lora-killed-{case}")
    run_dir, out = tmp / "run", tmp / "out.npz"
    assert run_worker(case, run_dir, out, "--kill-after-step", str(case.kill_after)) == -9
    assert not out.exists()
    assert run_worker(case, run_dir, out) == 0
    return load(out, run_dir)


def test_killed_lora_run_resumes_bitwise_equal(case, reference, resumed):
    (resume,) = resumed.resumes
    # It continued from a checkpoint the killed process saved, not from the start.
    assert 0 < resume["global_step"] <= case.kill_after, resume
    assert resume["global_step"] % SAVE_STEPS == 0, resume
    assert resumed.history == reference.history
    assert len(reference.history["loss"]) == 2
    assert resumed.arrays.keys() == reference.arrays.keys()
    for key in reference.arrays:  # every model variable (LoRA factors, seed states), optimizer
        np.testing.assert_array_equal(resumed.arrays[key], reference.arrays[key], err_msg=key)


def test_checkpoints_hold_what_training_changes_and_the_frozen_model_once(case, reference, resumed):
    """Each checkpoint after the first holds the LoRA factors, the optimizer variables and the
    changed seed states (plus 20% and 1 MB for the format and training state); the folder holds
    the frozen model once besides, also after a kill and a resume."""
    counts = reference.counts
    assert counts["trainable_bytes"] > 0 and counts["changed_non_trainable_bytes"] > 0
    assert counts["frozen_bytes"] > 50 * counts["changing_bytes"], counts  # the LoRA shape
    bound = 1.2 * counts["changing_bytes"] + MB
    for outcome in (reference, resumed):
        later = {n: s for n, s in outcome.sizes.items() if step_of(n) > SAVE_STEPS}
        assert later, outcome.sizes  # it saw checkpoints
        too_big = {n: s for n, s in sorted(later.items()) if s > bound}
        assert not too_big, (
            f"checkpoints over {bound:.0f} bytes (1.2 x {counts['changing_bytes']} bytes that "
            f"training changes + 1 MB): {too_big}; the frozen part is {counts['frozen_bytes']} "
            "bytes"
        )
        limit = counts["frozen_bytes"] + KEEP * bound + MB
        folder = outcome.run_dir / "checkpoints"
        total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        assert total <= limit, (
            f"{folder} holds {total} bytes, over {limit:.0f} (the frozen "
            f"{counts['frozen_bytes']} bytes once + keep={KEEP} checkpoints of at most "
            f"{bound:.0f} + 1 MB): {sorted(p.name for p in folder.iterdir())}"
        )


def test_gemma_lora_example_tiny_path_trains_and_checkpoints(tmp_path, keras_hub_installed):
    """examples/gemma_lora.py --tiny: the tutorial's code path (setup, LoRA, compile, tf.data,
    colabkit.fit) on a small random Gemma, on JAX as the tutorial, with no download."""
    pytest.importorskip("jax")
    env = worker_env("jax")
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # fit's cache stays in tmp
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--tiny", "--runs", str(tmp_path / "runs")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "loss per epoch: [" in done.stdout, done.stdout[-3000:]
    checkpoints = tmp_path / "runs" / "gemma-lora-tiny" / "checkpoints"
    names = sorted(p.name for p in checkpoints.glob("ckpt-*.ckpt"))
    assert names[-1] == "ckpt-000000000016.ckpt", names  # 32 samples, batches of 2, 1 epoch
