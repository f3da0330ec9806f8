"""Exact resume: a run killed with SIGKILL at random moments ends bitwise equal to an
uninterrupted one (weights, optimizer variables, per-epoch history), on TensorFlow and JAX.

The job (tests/resume_worker.py) has Dropout, shuffled data, Adam, a batch-counter layer,
EarlyStopping and ReduceLROnPlateau that fire during the run, a validation split, and saves
every 4 steps, so kills land mid-epoch, at epoch ends and inside checkpoint writes.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from worker_process import run_script

WORKER = Path(__file__).with_name("resume_worker.py")
STEPS_PER_EPOCH = 12  # ceil(360 / 32)


def run_worker(backend: str, run_dir: Path, out: Path, *extra: str) -> int:
    return run_script(WORKER, backend, str(run_dir), str(out), *extra)


def load(out: Path) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(out) as f:
        arrays = {k: f[k] for k in f.files if k != "history"}
        history = json.loads(str(f["history"]))
    return history, arrays


@pytest.fixture(scope="module", params=["tensorflow", "jax"])
def backend(request):
    pytest.importorskip(request.param)
    return request.param


@pytest.fixture(scope="module")
def reference(backend, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"ref-{backend}")
    assert run_worker(backend, tmp / "run", tmp / "out.npz") == 0
    return load(tmp / "out.npz")


def test_uninterrupted_runs_are_reproducible_and_callbacks_fire(backend, reference, tmp_path):
    history, arrays = reference
    # The callbacks act during the run, so their restored state matters after a kill.
    assert len(history["loss"]) < 6, "EarlyStopping should stop before the last epoch"
    assert len(set(history["lr"])) > 1, "ReduceLROnPlateau should reduce"
    assert arrays["w0"] == len(history["loss"]) * STEPS_PER_EPOCH  # the batch counter
    assert run_worker(backend, tmp_path / "run", tmp_path / "out.npz") == 0
    again_history, again = load(tmp_path / "out.npz")
    assert again_history == history
    for key in arrays:
        np.testing.assert_array_equal(again[key], arrays[key])


def kill_plan(backend: str) -> list[tuple[str, str]]:
    """Five or more kills: mid-epoch steps, an epoch end, and inside checkpoint writes."""
    rng = random.Random(f"exact-resume-{backend}")
    mid = sorted(rng.sample([s for s in range(2, 34) if s % STEPS_PER_EPOCH], 3))
    return [
        ("--kill-after-step", str(mid[0])),
        ("--kill-at-fsync", str(rng.randint(1, 4))),
        ("--kill-after-step", str(mid[1])),
        ("--kill-after-step", str(2 * STEPS_PER_EPOCH)),
        ("--kill-at-replace", str(rng.randint(1, 3))),
        ("--kill-after-step", str(mid[2])),
    ]


def test_killed_and_resumed_run_ends_bitwise_equal(backend, reference, tmp_path):
    run_dir, out = tmp_path / "run", tmp_path / "out.npz"
    kills = 0
    for flag, value in kill_plan(backend):
        if run_worker(backend, run_dir, out, flag, value) == -9:
            kills += 1
        if out.exists():
            break  # the kill point came after training had finished
    assert kills >= 5, f"only {kills} kills landed"
    if not out.exists():
        assert run_worker(backend, run_dir, out) == 0
    history, arrays = load(out)
    ref_history, ref_arrays = reference
    assert history == ref_history  # same per-epoch metrics, same stop and LR-reduction epochs
    assert arrays.keys() == ref_arrays.keys()
    for key in ref_arrays:  # model weights (incl. the batch counter) and optimizer slots
        np.testing.assert_array_equal(arrays[key], ref_arrays[key], err_msg=key)


def start_worker(backend: str, run_dir: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(run_dir), str(out), *extra],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def store_contents(run_dir: Path) -> dict[str, bytes]:
    folder = run_dir / "checkpoints"
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_second_vm_takes_the_run_over_and_the_first_stops_by_itself(backend, reference, tmp_path):
    """Two live trainers on one run directory with their own cache (two VMs): the newer one
    takes over at once, the older one stops at its next save and commits nothing after the
    takeover, and the run ends bitwise equal to an uninterrupted one."""
    run_dir = tmp_path / "run"
    first = start_worker(
        backend, run_dir, tmp_path / "first.npz", "--cache", str(tmp_path / "vm1"),
        "--pause-after-step", "10",
    )  # fmt: skip
    try:
        assert first.stdout.readline().strip() == "paused", first.stderr.read()[-3000:]
        # The second VM: "Run all" while the first still trains (it is paused mid-epoch, alive).
        second = tmp_path / "second.npz"
        assert run_worker(backend, run_dir, second, "--cache", str(tmp_path / "vm2")) == 0
        after_takeover = store_contents(run_dir)
        first.stdin.write("go\n")
        first.stdin.flush()
        _, err = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 1, err[-3000:]
    assert "RunSupersededError: This run continued in another session" in err
    assert "committed nothing after the takeover" in err
    assert not (tmp_path / "first.npz").exists()
    assert store_contents(run_dir) == after_takeover  # nothing committed, nothing pruned
    history, arrays = load(second)
    ref_history, ref_arrays = reference
    assert history == ref_history
    for key in ref_arrays:
        np.testing.assert_array_equal(arrays[key], ref_arrays[key], err_msg=key)
    # The run is finished: a third session loads the second one's final weights.
    assert (
        run_worker(backend, run_dir, tmp_path / "third.npz", "--cache", str(tmp_path / "vm1")) == 0
    )
    _, third = load(tmp_path / "third.npz")
    for key in ref_arrays:
        np.testing.assert_array_equal(third[key], ref_arrays[key], err_msg=key)
