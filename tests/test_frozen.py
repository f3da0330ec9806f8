"""Frozen variables are stored once per run, and leaving one out of a checkpoint is proven.

A fine-tune changes little of a big model (a frozen base, LoRA-frozen kernels). Each test trains
a real Keras model through ``colabkit.fit`` in two sessions (the second resumes the first's run
directory, as "Run all" after a disconnect would) and compares it with an uninterrupted run,
bitwise, while checking what the checkpoints hold.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from worker_process import run_script

import colabkit
from colabkit.checkpoint.format import read_checkpoint
from colabkit.errors import ResumeMismatchError
from colabkit.training import frozen as frozen_module
from colabkit.training.host import host_view

BASE_UNITS = 256  # two frozen Dense(256) kernels: 2 x 256 KiB, above frozen.MIN_BYTES


class Stamp(keras.layers.Layer):
    """A custom layer with a big non-trainable variable that it assigns while training, inside
    a frozen block: ``trainable=False`` does not mean "does not change"."""

    def build(self, input_shape):
        self.seen = self.add_weight(
            shape=(BASE_UNITS, BASE_UNITS), initializer="zeros", trainable=False, name="seen"
        )

    def call(self, x, training=False):
        if training:
            self.seen.assign(self.seen * 0.5 + keras.ops.mean(x))
        return x


def make_model(*, lora: bool = True, stamp: bool = False, base_seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(base_seed)  # the "pretrained" base
    inputs = keras.Input((32,))
    base1 = keras.layers.Dense(BASE_UNITS, activation="relu", name="base1")
    base2 = keras.layers.Dense(BASE_UNITS, activation="relu", name="base2")
    hidden = base2(base1(inputs))
    block = [keras.layers.Dropout(0.3, name="frozen_dropout")]
    if stamp:
        block.append(Stamp(name="stamp"))
    for layer in block:
        layer.trainable = False
        hidden = layer(hidden)
    outputs = keras.layers.Dense(4, name="head")(hidden)
    model = keras.Model(inputs, outputs)
    if lora:
        base1.enable_lora(4)
    base2.trainable = False
    keras.utils.set_random_seed(1)  # the fine-tune's own randomness
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(192, 32)).astype("float32")
    return x, (x[:, 0] > 0).astype("int64") + 2 * (x[:, 1] > 0)


def fit(model: keras.Model, run: Path | None, epochs: int, **kwargs) -> keras.callbacks.History:
    x, y = data()
    options = dict(batch_size=32, seed=0, save_every="4steps", keep=2, verbose=0)
    return colabkit.fit(model, x, y, run_dir=run, epochs=epochs, **{**options, **kwargs})


def weights(model: keras.Model) -> list[bytes]:
    variables = [*model.variables, *model.optimizer.variables]
    return [np.asarray(keras.ops.convert_to_numpy(v)).tobytes() for v in variables]


def checkpoints(run: Path) -> dict[str, int]:
    folder = run / "checkpoints"
    return {p.name: p.stat().st_size for p in folder.iterdir() if p.name.endswith(".ckpt")}


def newest_checkpoint(run: Path) -> str:
    return max(name for name in checkpoints(run) if name.startswith("ckpt-"))


def big_frozen(model: keras.Model) -> dict[str, int]:
    """The ``model/NNNN`` keys (and bytes) of the non-trainable variables worth storing once."""
    return {
        f"model/{i:04d}": nbytes
        for i, v in enumerate(model.variables)
        if not v.trainable
        and "seed_generator" not in v.path
        and (nbytes := np.asarray(keras.ops.convert_to_numpy(v)).nbytes) >= frozen_module.MIN_BYTES
    }


def changed_bytes(model: keras.Model) -> int:
    """What a fine-tune changes: trainable and optimizer variables, and the small state."""
    every = [*model.variables, *model.optimizer.variables]
    total = sum(np.asarray(keras.ops.convert_to_numpy(v)).nbytes for v in every)
    return total - sum(big_frozen(model).values())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("whole") / "run"
    model = make_model()
    history = fit(model, run, epochs=3)
    return weights(model), history.history


def test_a_lora_run_resumed_is_bitwise_equal_and_its_checkpoints_hold_what_changed(
    tmp_path, uninterrupted
):
    run = tmp_path / "run"
    fit(make_model(), run, epochs=2)  # the first session (a whole call: it ends durable)
    model = make_model()
    history = fit(model, run, epochs=3)  # Run all after a disconnect

    assert weights(model) == uninterrupted[0]
    assert history.history == uninterrupted[1]

    sizes = checkpoints(run)
    (frozen,) = [name for name in sizes if name.startswith("frozen-")]
    saves = {name: size for name, size in sizes.items() if name.startswith("ckpt-")}
    bound = 1.2 * changed_bytes(model) + 1_000_000
    assert saves and all(size <= bound for size in saves.values()), (saves, bound)
    frozen_bytes = sum(big_frozen(model).values())
    assert (
        frozen_bytes >= 2**18 and sizes[frozen] >= frozen_bytes
    )  # the frozen kernels are there, once
    assert sum(sizes.values()) <= frozen_bytes + 1e5 + 2 * bound  # keep=2
    newest = read_checkpoint(run / "checkpoints" / max(saves))
    assert newest.state["frozen"]["name"] == frozen
    assert set(newest.state["frozen"]["arrays"]) == set(big_frozen(model))


def test_a_variable_a_frozen_layer_assigns_is_found_changed_and_saved_from_then_on(
    tmp_path, caplog
):
    whole = make_model(stamp=True)
    fit(whole, tmp_path / "whole", epochs=2)

    run = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="colabkit.training.frozen"):
        fit(make_model(stamp=True), run, epochs=1)
    assert any("stamp/seen changed since it was stored once" in r.message for r in caplog.records)
    model = make_model(stamp=True)
    fit(model, run, epochs=2)

    assert weights(model) == weights(whole)  # the stamp's value, the dropout seeds, all of it
    newest = read_checkpoint(run / "checkpoints" / newest_checkpoint(run))
    stamp_key = next(
        f"model/{i:04d}" for i, v in enumerate(model.variables) if v.path.endswith("seen")
    )
    assert stamp_key in newest.arrays  # never left to the stale value stored once
    assert stamp_key not in newest.state["frozen"]["arrays"]


def test_the_check_on_an_accelerator_finds_the_same_changes(tmp_path, monkeypatch):
    """On a GPU the check is a checksum computed on the device: forced here on the CPU."""
    for module in ("host", "frozen"):
        monkeypatch.setattr(f"colabkit.training.{module}.on_host", lambda variable: False)
    calls = []
    checksum = frozen_module.device_checksum
    monkeypatch.setattr(frozen_module, "device_checksum", lambda v: calls.append(v) or checksum(v))
    whole = make_model(stamp=True)
    fit(whole, tmp_path / "whole", epochs=2)
    run = tmp_path / "run"
    fit(make_model(stamp=True), run, epochs=1)
    model = make_model(stamp=True)
    fit(model, run, epochs=2)
    assert weights(model) == weights(whole)
    newest = read_checkpoint(run / "checkpoints" / newest_checkpoint(run))
    assert newest.state["frozen"]["arrays"]  # the unchanged kernels are still left out
    assert calls  # the check ran as on an accelerator


@pytest.mark.parametrize("jit_compile", [False, True])
def test_a_view_of_a_tensorflow_variable_keeps_its_value_while_training_assigns_it(jit_compile):
    """The writer thread checks a frozen variable after training has gone on: sound only because
    TensorFlow copies a variable's buffer before writing to it while a view of it is held
    (copy-on-write), in eager and in compiled (XLA) steps alike. Checked on each runtime's own
    TensorFlow, with a training step that assigns the variable."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("copy-on-write of a held view is TensorFlow's; JAX checks before the step")
    model = make_model(stamp=True)
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    x, y = data()
    model.fit(x[:32], y[:32], epochs=1, verbose=0)  # built and traced
    stamp = next(v for v in model.variables if v.path.endswith("seen"))
    view = host_view(stamp)
    before = view.copy()
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert np.array_equal(view, before)  # the value at the save, whatever came after
    assert not np.array_equal(keras.ops.convert_to_numpy(stamp), before)


def test_device_checksum_sees_any_one_element_change_and_a_swap():
    variable = keras.Variable(np.arange(70_000, dtype="float32").reshape(700, 100))
    before = frozen_module.device_checksum(variable)
    assert frozen_module.device_checksum(variable) == before
    for change in (
        lambda a: a.__setitem__((3, 4), np.nextafter(a[3, 4], np.inf)),  # one ulp
        lambda a: a.__setitem__((0, 0), -0.0),  # +0.0 -> -0.0: equal as floats, not as bits
        lambda a: a.__setitem__(((1, 2), (5, 5)), a[(2, 1), (5, 5)]),  # two values swapped
    ):
        values = np.arange(70_000, dtype="float32").reshape(700, 100)
        change(values)
        variable.assign(values)
        assert frozen_module.device_checksum(variable) != before


def test_a_rebuilt_model_with_other_frozen_weights_continues_on_the_runs_own(
    tmp_path, uninterrupted, caplog
):
    run = tmp_path / "run"
    fit(make_model(), run, epochs=2)
    other = make_model(base_seed=5)  # another "preset version": other frozen kernels
    with caplog.at_level(logging.WARNING):
        fit(other, run, epochs=3)
    assert weights(other) == uninterrupted[0]
    (warning,) = [r.message for r in caplog.records if "frozen weights differ" in r.message]
    assert "base2/kernel" in warning or "base1/kernel" in warning


def test_without_its_frozen_object_a_differing_model_is_refused_in_one_line(tmp_path):
    run = tmp_path / "run"
    fit(make_model(), run, epochs=1)
    before = checkpoints(run)
    for name in before:
        if name.startswith("frozen-"):
            os.remove(run / "checkpoints" / name)
    with pytest.raises(ResumeMismatchError) as refused:
        fit(make_model(base_seed=5), run, epochs=2)
    message = str(refused.value)
    assert "\n" not in message and "kernel" in message and "fresh=True" in message
    assert {n: s for n, s in checkpoints(run).items()} == {
        n: s for n, s in before.items() if not n.startswith("frozen-")
    }  # nothing written, nothing deleted


def test_a_lost_frozen_object_is_stored_again_from_a_model_that_matches(tmp_path, uninterrupted):
    run = tmp_path / "run"
    fit(make_model(), run, epochs=2)
    (name,) = [n for n in checkpoints(run) if n.startswith("frozen-")]
    os.remove(run / "checkpoints" / name)
    model = make_model()
    fit(model, run, epochs=3)
    assert weights(model) == uninterrupted[0]
    assert name in checkpoints(run)  # the same contents, so the same name
    with zipfile.ZipFile(run / "checkpoints" / name) as zf:
        assert zf.testzip() is None


def test_fresh_archives_the_frozen_object_with_the_checkpoints_that_name_it(tmp_path):
    from colabkit.checkpoint.format import verify

    run = tmp_path / "run"
    fit(make_model(), run, epochs=1)
    (name,) = [n for n in checkpoints(run) if n.startswith("frozen-")]
    fit(make_model(base_seed=5), run, epochs=1, fresh=True)  # another base: a new run

    (archive,) = (run / "checkpoints" / "archive").iterdir()
    archived = {p.name for p in archive.iterdir()}
    assert name in archived and any(n.startswith("ckpt-") for n in archived)
    for checkpoint in archived:
        verify(archive / checkpoint)
    new_objects = [n for n in checkpoints(run) if n.startswith("frozen-")]
    assert len(new_objects) == 1 and new_objects != [name]


def test_ckpt_verify_reports_a_checkpoint_whose_frozen_object_is_damaged(tmp_path):
    import subprocess
    import sys

    run = tmp_path / "run"
    fit(make_model(), run, epochs=1)
    (name,) = [n for n in checkpoints(run) if n.startswith("frozen-")]
    path = run / "checkpoints" / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    verify = subprocess.run(
        [sys.executable, "-m", "colabkit", "ckpt", "verify", str(run)],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert verify.returncode == 1
    assert f"frozen variables: Checkpoint {path}" in verify.stdout
    listing = subprocess.run(
        [sys.executable, "-m", "colabkit", "ckpt", "ls", str(run)],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert f"frozen variables: {name}" in listing.stdout and "stored once" in listing.stdout


# -- SIGKILL: what looks frozen but changes comes back exactly ---------------------------------

WORKER = Path(__file__).with_name("frozen_worker.py")


def run_worker(backend: str, run: Path, out: Path, *extra: str) -> int:
    return run_script(WORKER, backend, str(run), str(out), *extra)


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_killed_twice_a_run_with_changing_frozen_state_ends_bitwise_equal(backend, tmp_path):
    """A layer that assigns to its non-trainable variable inside a frozen block, the Dropout
    seed state there, a LossScaleOptimizer's scale (mixed_float16), and the base unfrozen for a
    second ``fit``: killed with SIGKILL mid-epoch in each phase, resumed, equal to no kill."""
    pytest.importorskip(backend)
    assert run_worker(backend, tmp_path / "whole", tmp_path / "whole.npz") == 0
    run = tmp_path / "run"
    out = tmp_path / "out.npz"
    assert run_worker(backend, run, out, "--kill-after-step", "7", "--kill-in-phase", "1") == -9
    assert run_worker(backend, run, out, "--kill-after-step", "14", "--kill-in-phase", "2") == -9
    assert run_worker(backend, run, out) == 0

    with np.load(tmp_path / "whole.npz") as whole, np.load(out) as resumed:
        assert sorted(whole.files) == sorted(resumed.files)
        for name in whole.files:
            assert np.array_equal(whole[name], resumed[name]), name
    first = read_checkpoint(run / "checkpoints" / newest_checkpoint(run))
    left = set(first.state["frozen"]["arrays"])
    assert left.isdisjoint(first.arrays) and len(left) == 2  # the two kernels, not the stamp
    second = read_checkpoint(run / "phase2" / "checkpoints" / newest_checkpoint(run / "phase2"))
    assert len(second.state["frozen"]["arrays"]) == 1  # base2 unfrozen: saved in every one


# -- over the Drive API ---------------------------------------------------------------------------


def test_over_the_drive_api_a_new_vm_resumes_without_downloading_the_frozen_object(
    drive, tmp_path, uninterrupted, caplog
):
    """The frozen object is uploaded once, before the first checkpoint naming it; a new VM whose
    rebuilt model matches it never downloads it (Gemma's would be gigabytes); one whose model
    differs downloads it and continues on the run's weights."""
    from fake_drive import open_store

    def vm(name: str, model: keras.Model, epochs: int) -> keras.Model:
        fit(model, None, epochs, store=open_store(drive), cache_dir=tmp_path / name)
        return model

    vm("vm1", make_model(), 2)
    (frozen,) = [f for f in drive.files.values() if f.name.startswith("frozen-")]
    created = [f.name for f in drive.files.values()]  # in the order Drive created them
    first_checkpoint = min(i for i, name in enumerate(created) if name.startswith("ckpt-"))
    assert created.index(frozen.name) < first_checkpoint  # the object went up first

    drive.seen.clear()
    assert weights(vm("vm2", make_model(), 3)) == uninterrupted[0]
    downloads = [s.path for s in drive.seen if s.kind == "download"]
    assert downloads and not any(frozen.id in path for path in downloads)
    assert [f.name for f in drive.files.values() if f.name.startswith("frozen-")] == [frozen.name]

    drive.seen.clear()
    with caplog.at_level(logging.WARNING):
        other = vm("vm3", make_model(base_seed=5), 3)  # finished: loads the run's weights
    assert any(frozen.id in s.path for s in drive.seen if s.kind == "download")
    assert weights(other) == uninterrupted[0]
