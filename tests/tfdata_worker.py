"""A colabkit.fit job on tf.data input, run as a real subprocess by tests/test_tfdata.py.

Usage: python tfdata_worker.py RUN_DIR OUT.npz INPUT [--kill-after-step K] [--images DIR]

INPUT: "slices" (from_tensor_slices + shuffle(seed) + map + batch + prefetch), "fn" (a
dataset_fn(epoch) with a per-epoch seed), "images" (image_dataset_from_directory over DIR with
a seed), "unseeded" (shuffle without a seed), "repeat" ("slices" repeated forever, with
steps_per_epoch=9: epochs are 9-batch slices of one stream that straddle passes). Every
element carries its id; a non-trainable counter in the model adds up, per id, how often it was
trained (saved in every checkpoint), so the test can check that each element was trained
exactly once per epoch across kills.
Writes OUT.npz (weights, counts, history) when training returns.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

import numpy as np

N = 96  # elements (ids fit one PNG pixel)
EPOCHS = 3
BATCH = 8  # 12 steps per epoch
REPEAT_STEPS = 9  # steps per epoch of "repeat"


class KillAfterStep:
    """SIGKILLs the process after global step ``k``, once a checkpoint of a step inside the
    current epoch is in the run directory: checkpoints are written in the background, and on a
    loaded machine the newest complete one could otherwise still be the epoch's start, so the
    test would not exercise a mid-epoch resume."""

    def __new__(cls, k: int, steps_per_epoch: int, run_dir: str):
        import time
        from pathlib import Path

        import keras

        from colabkit.checkpoint.format import step_of

        def newest_step() -> int:
            steps = [step_of(p.name) for p in Path(run_dir, "checkpoints").glob("*")]
            return max((s for s in steps if s is not None), default=-1)

        class Kill(keras.callbacks.Callback):
            epoch = 0

            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch

            def on_train_batch_end(self, batch, logs=None):
                if steps_per_epoch * self.epoch + batch + 1 == k:
                    waited = time.monotonic()  # waits for an event (a file), bounded
                    while newest_step() <= steps_per_epoch * self.epoch:
                        if time.monotonic() - waited > 120:
                            raise SystemExit("no mid-epoch checkpoint appeared")
                        time.sleep(0.01)
                    os.kill(os.getpid(), signal.SIGKILL)

        return Kill()


def build_model(image: bool):
    import keras
    from keras import layers, ops

    class CountIds(layers.Layer):
        """Adds one to ids[i] for each element trained; ids are pixel (0, 0) or feature 0."""

        def build(self, input_shape):
            self.counts = self.add_weight(shape=(N,), initializer="zeros", trainable=False)

        def call(self, x, training=False):
            ids = x[:, 0, 0, 0] if image else x[:, 0]
            if training:
                hits = ops.one_hot(ops.cast(ops.round(ids), "int32"), N)
                self.counts.assign_add(ops.sum(hits, axis=0))
            return x

    keras.utils.set_random_seed(3)
    shape = (8, 8, 1) if image else (9,)
    model = keras.Sequential(
        [
            keras.Input(shape),
            CountIds(),
            layers.Flatten(),
            layers.Dense(16, activation="relu"),
            layers.Dropout(0.25),
            layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    return model


def arrays():
    rng = np.random.default_rng(5)
    features = rng.normal(size=(N, 8)).astype("float32")
    x = np.concatenate([np.arange(N, dtype="float32")[:, None], features], axis=1)
    y = (features[:, 0] > 0).astype("int32")
    return x, y


def dataset(kind: str, images: str | None):
    import tensorflow as tf

    if kind == "images":
        import keras

        return keras.utils.image_dataset_from_directory(
            images, image_size=(8, 8), color_mode="grayscale", batch_size=BATCH, seed=11,
            interpolation="nearest",
        )  # fmt: skip
    x, y = arrays()

    def pipeline(seed):
        ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(N, seed=seed)
        return ds.map(lambda a, b: (a * 1.0, b)).batch(BATCH).prefetch(tf.data.AUTOTUNE)

    if kind == "fn":
        return lambda epoch: pipeline(100 + epoch)
    if kind == "repeat":
        return pipeline(7).repeat()
    return pipeline(None if kind == "unseeded" else 7)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("out")
    p.add_argument("input", choices=["slices", "fn", "images", "unseeded", "repeat"])
    p.add_argument("--kill-after-step", type=int)
    p.add_argument("--images")
    args = p.parse_args()

    import colabkit

    # Made before build_model seeds TensorFlow: "unseeded" must not take a seed from it.
    data = dataset(args.input, args.images)
    model = build_model(args.input == "images")
    steps = REPEAT_STEPS if args.input == "repeat" else None
    callbacks = []
    if args.kill_after_step:
        callbacks.append(KillAfterStep(args.kill_after_step, steps or N // BATCH, args.run_dir))
    history = colabkit.fit(
        model, data, run_dir=args.run_dir, epochs=EPOCHS, steps_per_epoch=steps,
        callbacks=callbacks, verbose=0, session_limit=False, save_every="1step",
    )  # fmt: skip
    counts = model.layers[0].counts
    np.savez(
        args.out,
        counts=np.asarray(counts),
        history=json.dumps(history.history),
        resumes=json.dumps(history.resumes),
        **{f"w{i}": np.asarray(w) for i, w in enumerate(model.get_weights())},
        **{f"o{i}": np.asarray(v) for i, v in enumerate(model.optimizer.variables)},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
