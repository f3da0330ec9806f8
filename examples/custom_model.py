"""Your own model and data, resumable, in the two ways colabkit offers.

1. ``colabkit.fit`` instead of ``model.fit``: resumes exactly where a killed run stopped, even in
   the middle of an epoch, with callback state (here EarlyStopping's patience) restored too.
2. Your own ``model.fit`` with colabkit's callbacks: ``colabkit.callbacks.Checkpoint`` writes
   verified checkpoints and restores the newest one when ``fit`` starts (exact at epoch
   boundaries); ``SessionDeadline`` saves and stops cleanly before Colab's session limit.

Run it, kill it, run it again: both parts continue instead of starting over.

    python examples/custom_model.py --run-dir runs/custom --epochs 30
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import keras
import numpy as np

import colabkit

FEATURES, CLASSES = 8, 3


def make_data(samples: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three noisy clusters in 8 dimensions: stands in for your own arrays."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 1.5, (CLASSES, FEATURES))
    labels = rng.integers(0, CLASSES, samples)
    features = centers[labels] + rng.normal(0.0, 1.0, (samples, FEATURES))
    return features.astype("float32"), labels


def make_model() -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input(shape=(FEATURES,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(CLASSES, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def with_colabkit_fit(run_dir: Path, x: np.ndarray, y: np.ndarray, epochs: int) -> dict:
    """Way 1: ``colabkit.fit``. Re-running continues; a finished run returns at once."""
    model = make_model()
    history = colabkit.fit(
        model,
        x,
        y,
        run_dir=run_dir,
        epochs=epochs,
        batch_size=64,
        validation_split=0.2,
        seed=0,
        save_every="20steps",  # or "epoch", or "10m"
        callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=5)],
    )
    print(f"colabkit.fit: {len(history.history['loss'])} epochs, resumed at {history.resumes}")
    return history.history


def with_own_model_fit(run_dir: Path, x: np.ndarray, y: np.ndarray, epochs: int) -> dict:
    """Way 2: keep ``model.fit``; the callbacks restore the newest checkpoint at its start."""
    model = make_model()
    checkpoint = colabkit.callbacks.Checkpoint(run_dir, save_every="epoch", keep=3)
    deadline = colabkit.callbacks.SessionDeadline(checkpoint=checkpoint)
    history = model.fit(
        x,
        y,
        epochs=epochs,
        batch_size=64,
        validation_split=0.2,
        callbacks=[checkpoint, deadline],
        verbose=2,
    )
    ran = [epoch + 1 for epoch in history.epoch]
    print(f"model.fit: epochs run this time: {ran or 'none (already finished)'}")
    return history.history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/custom"))
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    x, y = make_data()
    with_colabkit_fit(args.run_dir / "colabkit-fit", x, y, args.epochs)
    with_own_model_fit(args.run_dir / "model-fit", x, y, args.epochs)


if __name__ == "__main__":
    main()
