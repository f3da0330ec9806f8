"""A fine-tune with frozen variables that do change, for the SIGKILL tests of tests/test_frozen.py.

Usage: python frozen_worker.py RUN_DIR OUT.npz [--kill-after-step K] [--kill-in-phase P]

Two phases, as the transfer-learning tutorial does them, each a ``colabkit.fit`` call:
  1. a frozen base (two big Dense kernels, one with LoRA on top) under ``mixed_float16`` (a
     LossScaleOptimizer whose scale and step counter are state), with a frozen block holding a
     Dropout (its seed state advances) and a layer that assigns to its own big non-trainable
     variable while training: ``trainable=False`` does not mean "unchanged";
  2. the base unfrozen, the model recompiled, trained on in ``RUN_DIR/phase2``.
--kill-after-step K with --kill-in-phase P: SIGKILL itself right after global step K of phase P.
A run killed and run again resumes each phase where it stopped (phase 1 finished: returned at
once). OUT.npz (every model and optimizer variable's bytes, both histories) is written at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from resume_worker import KillAfterStep

UNITS = 128  # 128 x 128 float32 kernels: 64 KiB, the size frozen objects start at


def build_model():
    import keras

    class Stamp(keras.layers.Layer):
        def build(self, input_shape):
            self.seen = self.add_weight(
                shape=(UNITS, UNITS), initializer="zeros", trainable=False, name="seen"
            )

        def call(self, x, training=False):
            if training:
                self.seen.assign(self.seen * 0.5 + keras.ops.mean(x))
            return x

    keras.config.set_dtype_policy("mixed_float16")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((UNITS,))
    base1 = keras.layers.Dense(UNITS, activation="relu", name="base1")
    base2 = keras.layers.Dense(UNITS, activation="relu", name="base2")
    hidden = base2(base1(inputs))
    for layer in (
        keras.layers.Dropout(0.25, name="frozen_dropout"),
        Stamp(name="stamp", dtype="float32"),
    ):
        layer.trainable = False
        hidden = layer(hidden)
    outputs = keras.layers.Dense(3, dtype="float32", name="head")(hidden)
    model = keras.Model(inputs, outputs)
    base1.enable_lora(4)
    base2.trainable = False
    return model, base2


def compile_model(model, learning_rate: float) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("out")
    p.add_argument("--kill-after-step", type=int)
    p.add_argument("--kill-in-phase", type=int, default=1)
    args = p.parse_args()

    import keras

    import colabkit

    rng = np.random.default_rng(3)
    x = rng.normal(size=(160, UNITS)).astype("float32")
    y = (x[:, 0] > 0).astype("int64") + (x[:, 1] > 1)
    batch_size, steps_per_epoch = 16, 10
    model, base2 = build_model()
    histories = []
    for phase, run_dir in ((1, args.run_dir), (2, os.path.join(args.run_dir, "phase2"))):
        if phase == 2:
            base2.trainable = True  # the fine-tune phase: unfrozen, recompiled
        compile_model(model, 1e-3 if phase == 1 else 1e-4)
        callbacks = []
        if args.kill_after_step and args.kill_in_phase == phase:
            killer = KillAfterStep(args.kill_after_step)
            killer.steps_per_epoch = steps_per_epoch
            callbacks.append(killer.callback)
        history = colabkit.fit(
            model,
            x,
            y,
            run_dir=run_dir,
            epochs=2,
            batch_size=batch_size,
            seed=5,
            save_every="3steps",
            keep=2,
            callbacks=callbacks,
            deterministic=True,
            session_limit=False,
            verbose=0,
        )
        histories.append(history.history)
    arrays = {
        f"v{i}": np.frombuffer(keras.ops.convert_to_numpy(v).tobytes(), np.uint8)
        for i, v in enumerate([*model.variables, *model.optimizer.variables])
    }
    np.savez(args.out, history=json.dumps(histories), **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main())
