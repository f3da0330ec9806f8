"""Every dtype a Keras variable can hold, trained through colabkit.fit, interrupted and resumed.

Each case builds a small model (a Dense stack with an EinsumDense and a Dropout, so that the
seed generator's state matters) whose variables hold one kind of dtype, then:

1. trains it uninterrupted for 2 epochs in one run directory;
2. in another run directory trains 1 epoch, builds a fresh model the same way and calls
   ``colabkit.fit(epochs=2)`` there, so that it resumes from the checkpoint;
3. builds a fresh model again and calls ``colabkit.fit(epochs=2)`` on the finished run of (1),
   which returns at once with its final weights loaded.

The resumed and the reloaded model must equal the uninterrupted one bitwise (raw bytes, so NaN
and bfloat16 compare exactly) in every model variable (by position in ``model.variables``) and
optimizer variable, each with the original's dtype, and the resumed run's history must equal
the uninterrupted one's.

tests/test_dtypes.py imports this module to run the cases of its own backend in-process. Run as
a script it runs every case in one process on the backend KERAS_BACKEND names, and writes a JSON
result per case:

    KERAS_BACKEND=jax python dtype_worker.py OUT.json WORKDIR

On JAX the cases marked ``x64`` run last, after switching ``jax_enable_x64`` on: without it JAX
holds float64 and int64 variables as float32 and int32 (keras still reports the wide dtype). The
script also keeps JAX's compilation cache in WORKDIR: every fit of a rebuilt model compiles the
same train step again.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import keras
import numpy as np
from keras import layers, ops

import colabkit

N, FEATURES, CLASSES, BATCH = 64, 8, 3, 16  # 4 steps per epoch
SEED = 11


class Unsupported(Exception):
    """This backend (or this Keras) cannot run the case; the message says why."""


@dataclass(frozen=True)
class Case:
    """How a case's model differs from the float32 one.

    Attributes:
        policy: The global dtype policy the model is built under.
        layer_dtype: The first Dense layer's own ``dtype``.
        quantize: ``model.quantize`` mode, applied once the model is built.
        lora: Rank for ``enable_lora`` on every Dense/EinsumDense, after ``quantize``.
        state: dtypes of non-trainable variables a custom layer updates at every step.
        loss_scale: Wrap Adam in a LossScaleOptimizer whose scale grows every 3 steps.
        moved: Variable names (``variable.name``) whose value must change during the first
            epoch, so that restoring them matters.
        x64: On JAX, needs ``jax_enable_x64`` (its float64/int64/uint64/complex128 are real).
    """

    policy: str = "float32"
    layer_dtype: str | None = None
    quantize: str | None = None
    lora: int | None = None
    state: tuple[str, ...] = ()
    loss_scale: bool = False
    moved: tuple[str, ...] = ()
    x64: bool = False


INTEGERS = ("int32", "int64", "uint8", "bool")
OTHER_INTEGERS = ("int8", "int16", "uint16", "uint32", "uint64", "complex64", "complex128")
FLOAT8 = ("float8_e4m3fn", "float8_e5m2")

CASES: dict[str, Case] = {
    "float32": Case(),
    "float16": Case(policy="float16"),
    "float64": Case(policy="float64", x64=True),
    "bfloat16": Case(policy="bfloat16"),
    "bfloat16_layer": Case(layer_dtype="bfloat16"),
    "mixed_float16": Case(
        policy="mixed_float16", loss_scale=True, moved=("dynamic_scale", "step_counter")
    ),
    "float8_quantized": Case(quantize="float8", moved=("kernel_amax_history",)),
    "int8_quantized": Case(quantize="int8"),
    "int8_quantized_lora": Case(quantize="int8", lora=2, moved=("lora_kernel_b",)),
    "int4_quantized": Case(quantize="int4"),
    "int4_quantized_lora": Case(quantize="int4", lora=2, moved=("lora_kernel_b",)),
    "integers": Case(state=INTEGERS, moved=INTEGERS, x64=True),
    "other_integers_complex": Case(state=OTHER_INTEGERS, moved=OTHER_INTEGERS, x64=True),
    "float8_variables": Case(state=FLOAT8, moved=FLOAT8),
}


class StateLayer(layers.Layer):
    """Non-trainable variables of the given dtypes, each updated at every training step.

    Integers multiply and add (they wrap around, using every bit), booleans flip where the
    batch's feature mean is positive, complex and float8 values mix in the batch mean.
    """

    def __init__(self, dtypes=(), **kwargs):
        super().__init__(**kwargs)
        self.state_dtypes = tuple(dtypes)

    def build(self, input_shape):
        self.state = [
            self.add_weight(
                shape=(input_shape[-1],),
                dtype=dtype,
                initializer="zeros",
                trainable=False,
                name=dtype,
            )
            for dtype in self.state_dtypes
        ]

    def call(self, x, training=False):
        if training:
            mean = ops.mean(ops.cast(x, "float32"), axis=0)
            positive = ops.sum(ops.cast(x > 0, "int32"), axis=0)
            for variable in self.state:
                variable.assign(self._next(variable, mean, positive))
        return x

    @staticmethod
    def _next(variable, mean, positive):
        dtype = variable.dtype
        if dtype == "bool":
            return ops.logical_xor(variable, mean > 0)
        if dtype.startswith("float8"):
            return ops.cast(ops.cast(variable, "float32") * 0.5 + mean, dtype)
        if dtype.startswith("complex"):
            factor = ops.convert_to_tensor(np.array(0.5 + 0.75j, dtype=dtype))
            # cast back: keras' TensorFlow multiply turns complex64 into complex128
            return ops.cast(ops.cast(variable * factor, dtype) + ops.cast(mean, dtype), dtype)
        # uint64 in int64 arithmetic: keras' TensorFlow multiply turns uint64 into uint32.
        work = "int64" if dtype == "uint64" else dtype
        factor = ops.convert_to_tensor(np.array(1_000_003).astype(work))
        mixed = ops.cast(variable, work) * factor + ops.cast(positive, work)
        return ops.cast(mixed, dtype)


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, FEATURES)).astype("float32")
    labels = (x[:, 0] > 0).astype(int) + (x[:, 1] > 1).astype(int)
    return x, np.eye(CLASSES, dtype="float32")[labels]


def check_supported(name: str) -> None:
    """Raises Unsupported when this backend or Keras cannot run the case."""
    case = CASES[name]
    backend = keras.backend.backend()
    if backend == "jax" and case.x64:
        import jax

        if not jax.config.jax_enable_x64:
            raise Unsupported(
                "JAX without jax_enable_x64 holds float64/int64/uint64/complex128 variables as "
                "32-bit values; the JAX worker runs this case with it switched on"
            )
    if case.quantize:
        from keras.src import dtype_policies

        modes = getattr(dtype_policies, "QUANTIZATION_MODES", ())
        if case.quantize not in modes:
            raise Unsupported(f"keras {keras.version()} has no {case.quantize!r} quantization")
    for dtype in case.state:
        try:
            keras.Variable(initializer="zeros", shape=(2,), dtype=dtype, trainable=False)
        except Exception as e:  # noqa: BLE001 -- whatever the backend raises means "cannot"
            first_line = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise Unsupported(
                f"{backend} cannot create a {dtype} keras.Variable on this device "
                f"({type(e).__name__}: {first_line})"
            ) from None


def build_model(name: str) -> keras.Model:
    """The case's model, compiled; the same weights every time it is built."""
    case = CASES[name]
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(case.policy)
    try:
        keras.utils.set_random_seed(SEED)
        stack = [keras.Input((FEATURES,))]
        if case.state:
            stack.append(StateLayer(case.state))
        stack += [
            layers.Dense(16, activation="relu", dtype=case.layer_dtype),
            layers.EinsumDense("ab,bc->ac", output_shape=12, bias_axes="c", activation="relu"),
            layers.Dropout(0.25),
            layers.Dense(CLASSES, activation="softmax"),
        ]
        model = keras.Sequential(stack)
        if case.quantize:
            # Keras runs gc.collect() for every variable quantize deletes (0.4 s each, more in
            # a big test process): skipped here, it only frees device memory sooner.
            with warnings.catch_warnings(), mock.patch("gc.collect", lambda *args: 0):
                warnings.simplefilter("ignore", UserWarning)  # "InputLayer ... no `quantize`"
                model.quantize(case.quantize)
        if case.lora:  # QLoRA: LoRA weights trained on top of the frozen quantized kernel
            for layer in model.layers:
                if isinstance(layer, (layers.Dense, layers.EinsumDense)):
                    layer.enable_lora(case.lora)
        optimizer = keras.optimizers.Adam(1e-2)
        if case.loss_scale:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer, dynamic_growth_steps=3)
        model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    finally:
        keras.config.set_dtype_policy(previous)
    return model


def fit(model: keras.Model, run_dir: Path, epochs: int):
    x, y = data()
    return colabkit.fit(
        model, x, y, run_dir=str(run_dir), cache_dir=str(run_dir) + "-cache", epochs=epochs,
        batch_size=BATCH, seed=5, deterministic=True, session_limit=False, verbose=0,
    )  # fmt: skip


def variables(model: keras.Model) -> list:
    return [("model", i, v) for i, v in enumerate(model.variables)] + [
        ("optimizer", i, v) for i, v in enumerate(model.optimizer.variables)
    ]


def host_value(variable) -> np.ndarray:
    return np.array(keras.ops.convert_to_numpy(variable.value), copy=True)


def raw_bytes(array: np.ndarray) -> np.ndarray:
    """The array's bytes: NaN payloads, -0.0 and bfloat16 compare exactly."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def compare(expected: keras.Model, got: keras.Model, what: str) -> list[str]:
    """Every difference between two models' variables, by position, as one line each."""
    ours, theirs = variables(expected), variables(got)
    if [(g, i) for g, i, _ in ours] != [(g, i) for g, i, _ in theirs]:
        return [f"{what}: variable counts differ ({len(ours)} expected, {len(theirs)} got)"]
    problems = []
    for (group, i, a), (_, _, b) in zip(ours, theirs, strict=True):
        where = f"{what}: {group} variable {i} ({a.path})"
        va, vb = host_value(a), host_value(b)
        if str(a.dtype) != str(b.dtype):
            problems.append(f"{where}: keras dtype {b.dtype}, expected {a.dtype}")
        if va.dtype != vb.dtype or va.shape != vb.shape:
            problems.append(f"{where}: holds {vb.dtype}{vb.shape}, expected {va.dtype}{va.shape}")
        elif not np.array_equal(raw_bytes(va), raw_bytes(vb)):
            problems.append(f"{where}: values differ ({vb.ravel()[:4]} vs {va.ravel()[:4]})")
    return problems


def compare_history(expected, got, what: str) -> list[str]:
    a, b = expected.history, got.history
    if sorted(a) != sorted(b):
        return [f"{what}: history keys {sorted(b)}, expected {sorted(a)}"]
    return [
        f"{what}: history[{key!r}] is {b[key]}, expected {a[key]}"
        for key in a
        if not np.array_equal(np.asarray(a[key]), np.asarray(b[key]), equal_nan=True)
    ]


def check_moved(name: str, initial: keras.Model, trained: keras.Model) -> list[str]:
    """The case's ``moved`` variables changed during the first epoch (else the test is moot)."""
    wanted = CASES[name].moved
    if not wanted:
        return []
    initial.optimizer.build(initial.trainable_variables)
    changed = {
        a.name
        for (_, _, a), (_, _, b) in zip(variables(initial), variables(trained), strict=True)
        if a.name in wanted
        and not np.array_equal(raw_bytes(host_value(a)), raw_bytes(host_value(b)))
    }
    return [f"setup: {v} did not change in the first epoch" for v in wanted if v not in changed]


def run_case(name: str, workdir: Path) -> list[str]:
    """Runs one case (see the module docstring); returns the problems found, one line each.

    Raises:
        Unsupported: the backend cannot run this case.
    """
    check_supported(name)
    workdir = Path(workdir)
    reference = build_model(name)
    reference_history = fit(reference, workdir / "uninterrupted", epochs=2)

    first = build_model(name)
    fit(first, workdir / "resumed", epochs=1)
    problems = check_moved(name, build_model(name), first)
    del first
    resumed = build_model(name)
    history = fit(resumed, workdir / "resumed", epochs=2)
    if [r.get("epoch") for r in history.resumes] != [1]:
        problems.append(f"resumed: expected one resume at epoch 1, got {history.resumes}")
    problems += compare(reference, resumed, "resumed")
    problems += compare_history(reference_history, history, "resumed")

    reloaded = build_model(name)
    again = fit(reloaded, workdir / "uninterrupted", epochs=2)
    problems += compare(reference, reloaded, "reloaded")
    problems += compare_history(reference_history, again, "reloaded")
    return problems


def run_all(workdir: Path) -> dict[str, dict]:
    """Every case, in one process; the ``x64`` ones last on JAX (the switch stays on)."""
    results: dict[str, dict] = {}
    for name in sorted(CASES, key=lambda n: CASES[n].x64):
        if CASES[name].x64 and keras.backend.backend() == "jax":
            import jax

            jax.config.update("jax_enable_x64", True)
        start = time.perf_counter()
        try:
            problems = run_case(name, workdir / name)
        except Unsupported as e:
            result = {"status": "skip", "reason": str(e)}
        except Exception as e:  # noqa: BLE001 -- reported to the test, which fails on it
            result = {
                "status": "error",
                "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc()[-4000:],
            }
        else:
            result = {"status": "fail" if problems else "pass", "problems": problems}
        result["seconds"] = round(time.perf_counter() - start, 2)
        results[name] = result
    return results


def _jax_version() -> tuple[int, ...]:
    import jax

    return tuple(int(part) for part in jax.__version__.split(".")[:2] if part.isdigit())


def main(argv: list[str]) -> int:
    out, workdir = Path(argv[1]), Path(argv[2])
    if keras.backend.backend() == "jax" and _jax_version() >= (0, 7):
        # Each case builds the same model four times, and each colabkit.fit call on a new model
        # compiles its train step again: the same program, loaded from this cache instead. Not
        # on JAX 0.5 (Colab 2025.07): a train step loaded from its persistent cache left
        # variables holding freed memory after a few steps (garbage weights, the same on
        # colabkit 21c2bb5; every case passes there without the cache).
        import jax

        jax.config.update("jax_compilation_cache_dir", str(workdir / "jax-cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    results = {
        "backend": keras.backend.backend(),
        "keras": keras.version(),
        "cases": run_all(workdir),
    }
    partial = out.with_name(out.name + ".partial")
    partial.write_text(json.dumps(results, indent=1))
    os.replace(partial, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
