"""The Keras MNIST convnet tutorial as a plain script that survives being killed.

Run it; stop it any way you like (Ctrl-C, closing the terminal, a Colab disconnect, ``kill -9``);
run the same command again and it continues from the newest verified checkpoint. Once finished,
running it again just prints the results.

    python examples/train_mnist.py --run-dir runs/mnist-script
    python examples/train_mnist.py --run-dir runs/mnist-script --dataset mnist-5k --epochs 3

``colabkit train mnist`` does the same with more options; this file shows the library calls.
"""

from __future__ import annotations

import argparse
import logging

import colabkit
from colabkit.mnist import build_model, load_data, save_outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/mnist-script", help="checkpoints and outputs")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--dataset", default="auto", help="auto, mnist, mnist-5k or FILE.npz")
    parser.add_argument("--limit", type=int, help="train on the first N images (a quick try)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # checkpoint/resume lines

    data = load_data(args.dataset, limit=args.limit)  # scaled to [0, 1], (28, 28, 1), one-hot
    model = build_model()  # Conv 32 → pool → Conv 64 → pool → dropout → softmax; Adam
    history = colabkit.fit(
        model,
        data.x_train,
        data.y_train,
        run_dir=args.run_dir,
        epochs=args.epochs,
        batch_size=128,
        validation_split=0.1,
    )
    result = save_outputs(args.run_dir, model, data, history)
    print("Test loss:", result.test_loss)
    print("Test accuracy:", result.test_accuracy)
    print("Outputs:", result.outputs_dir)


if __name__ == "__main__":
    main()
