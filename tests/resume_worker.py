"""A training job for the exact-resume tests, run as a real subprocess.

Usage: python resume_worker.py RUN_DIR OUT.npz [--kill-after-step K] [--kill-at-fsync N]
           [--kill-at-replace N] [--epochs E] [--cache DIR] [--pause-after-step K]

--kill-after-step K: SIGKILL itself right after global training step K.
--kill-at-fsync N / --kill-at-replace N: SIGKILL itself at the Nth os.fsync / os.replace call of
    the process (inside a checkpoint write to cache or inside the store's put).
--cache DIR: its local cache folder (default RUN_DIR-cache); another one plays another VM.
--pause-after-step K: after global step K, prints "paused" and waits for a line on stdin.
--logs DIR: also a TensorBoard (update_freq="batch") into DIR/tensorboard and a CSVLogger
    into DIR/log.csv, as a user would add them.
It writes OUT.npz (weights, optimizer variables, history) only when training returns.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

import numpy as np


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm_os_kill(name: str, n: int) -> None:
    original = getattr(os, name)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            die()
        return original(*args, **kwargs)

    setattr(os, name, wrapper)


def build_model():
    import keras
    from keras import layers

    class BatchCounter(layers.Layer):
        """Keras' own interruption-test device: a non-trainable counter of trained batches."""

        def build(self, input_shape):
            self.batches = self.add_weight(
                shape=(), initializer="zeros", trainable=False, name="batches"
            )

        def call(self, x, training=False):
            if training:
                self.batches.assign_add(1.0)
            return x

    keras.utils.set_random_seed(1234)
    model = keras.Sequential(
        [
            keras.Input((12,)),
            BatchCounter(),
            layers.Dense(32, activation="relu"),
            layers.Dropout(0.3),
            layers.Dense(16, activation="relu"),
            layers.Dropout(0.2),
            layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def data():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(400, 12)).astype("float32")
    labels = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int) + (x[:, 2] > 1).astype(int)
    y = np.eye(3, dtype="float32")[labels]
    return x, y


def record_learning_rate(model):
    def on_epoch_end(epoch, logs):
        logs["lr"] = float(np.asarray(model.optimizer.learning_rate))

    return on_epoch_end


def pause() -> None:
    print("paused", flush=True)
    sys.stdin.readline()


class KillAfterStep:
    def __init__(self, k: int, action=die):
        import keras

        outer = self

        class _Cb(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                outer.epoch = epoch

            def on_train_batch_end(self, batch, logs=None):
                if outer.steps_per_epoch * outer.epoch + batch + 1 == k:
                    action()

        self.k, self.epoch, self.steps_per_epoch = k, 0, 0
        self.callback = _Cb()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("out")
    p.add_argument("--kill-after-step", type=int)
    p.add_argument("--kill-at-fsync", type=int)
    p.add_argument("--kill-at-replace", type=int)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--cache")
    p.add_argument("--pause-after-step", type=int)
    p.add_argument("--logs")
    args = p.parse_args()

    import keras

    import colabkit

    x, y = data()
    model = build_model()
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=1, min_delta=0.1),
        keras.callbacks.ReduceLROnPlateau(monitor="loss", patience=1, min_delta=0.25, factor=0.5),
    ]
    callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=record_learning_rate(model)))
    if args.logs:
        callbacks.append(
            keras.callbacks.TensorBoard(os.path.join(args.logs, "tensorboard"), update_freq="batch")
        )
        callbacks.append(keras.callbacks.CSVLogger(os.path.join(args.logs, "log.csv")))
    batch_size = 32
    for step, action in ((args.kill_after_step, die), (args.pause_after_step, pause)):
        if step:
            killer = KillAfterStep(step, action)
            killer.steps_per_epoch = int(np.ceil(len(x) * 0.9 / batch_size))
            callbacks.append(killer.callback)
    if args.kill_at_fsync:
        arm_os_kill("fsync", args.kill_at_fsync)
    if args.kill_at_replace:
        arm_os_kill("replace", args.kill_at_replace)

    history = colabkit.fit(
        model,
        x,
        y,
        run_dir=args.run_dir,
        cache_dir=args.cache or args.run_dir + "-cache",
        epochs=args.epochs,
        batch_size=batch_size,
        validation_split=0.1,
        seed=99,
        save_every="4steps",
        keep=2,
        callbacks=callbacks,
        deterministic=True,
        session_limit=False,
        verbose=0,
    ).history
    arrays = {f"w{i}": np.asarray(w) for i, w in enumerate(model.get_weights())}
    arrays.update(
        {f"o{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(model.optimizer.variables)}
    )
    np.savez(args.out, history=json.dumps(history), **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main())
