"""The MNIST convnet on a folder of PNG files, staged from Drive to local disk first.

Most notebooks keep their images on Drive and read them with
``keras.utils.image_dataset_from_directory``. Read through the Drive mount, every file is a trip
to Drive; ``colabkit.stage`` copies the folder (or a zip of it) to local disk once per VM,
verified, and returns the local path. Run it again and the copy is reused; the training resumes.

    python examples/mnist_images.py --images /content/drive/MyDrive/mnist-png --run-dir runs/png
    python examples/mnist_images.py --images ./mnist-png --epochs 2 --limit 1000   # anywhere

When the ``--images`` folder does not exist yet, the MNIST-5k sample is written there as PNG
files, one folder per digit (what your own data on Drive would look like).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import colabkit
from colabkit.mnist import build_model, load_data


def write_pngs(folder: Path, limit: int | None) -> None:
    """The MNIST-5k training images as ``folder/<digit>/<i>.png``."""
    import numpy as np
    import tensorflow as tf

    data = load_data("mnist-5k", limit=limit)
    for i, (image, label) in enumerate(zip(data.x_train, data.y_train, strict=True)):
        digit = folder / str(int(np.argmax(label)))
        digit.mkdir(parents=True, exist_ok=True)
        pixels = np.round(image * 255).astype(np.uint8)
        (digit / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())


def main() -> None:
    import keras

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True, help="a folder of <class>/<image>.png")
    parser.add_argument("--run-dir", default="runs/mnist-images", help="checkpoints")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--limit", type=int, help="write only N images (a quick try)")
    parser.add_argument("--dest", help="where to stage (default: colabkit's data folder)")
    args = parser.parse_args()

    images = Path(args.images)
    if not images.exists():
        write_pngs(images, args.limit)
    local = colabkit.stage(images, args.dest)  # once per VM: later calls return at once
    print(f"Training on {local}")

    def dataset(subset: str):
        return keras.utils.image_dataset_from_directory(
            local, image_size=(28, 28), color_mode="grayscale", batch_size=128,
            label_mode="categorical", validation_split=0.1, subset=subset, seed=1,
        ).map(lambda x, y: (x / 255.0, y))  # fmt: skip

    history = colabkit.fit(
        build_model(),
        dataset("training"),  # seeded shuffle: a resume continues the same order, mid-epoch
        validation_data=dataset("validation"),
        run_dir=args.run_dir,
        epochs=args.epochs,
    )
    print(f"Validation accuracy: {history.history['val_accuracy'][-1]:.4f}")


if __name__ == "__main__":
    main()
