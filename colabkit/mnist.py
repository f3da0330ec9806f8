"""The seed's MNIST trainer: the Keras tutorial's convnet, made resumable by ``colabkit.fit``.

The model and hyperparameters are the Keras "Simple MNIST convnet" tutorial's, unchanged, so a
user can compare colabkit's run with the one they know. What changes is around it: training goes
through :func:`colabkit.fit` (verified checkpoints, exact resume), data loading works offline, and
every output is written atomically so a kill during the last step never leaves a half-written
``results.txt`` or model file behind.

Everything before the call to ``fit`` (arguments, run directory, data) is checked with numpy alone,
so a bad input fails in a fraction of a second, before keras or tensorflow is imported and before
anything is written.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from colabkit import ending
from colabkit.checkpoint import is_url, parse_keep, parse_save_every
from colabkit.distribute import KINDS
from colabkit.env import check_session_limit, unmounted_drive
from colabkit.errors import ColabkitError, ConfigError, invalid_argument
from colabkit.mnist_data import (
    INPUT_SHAPE,
    MNIST_URL,
    NUM_CLASSES,
    MnistData,
    atomic_path,
    check_dataset,
    load_data,
)
from colabkit.storage import fsspec_store, open_store

__all__ = [
    "MnistConfig",
    "MnistData",
    "MnistResult",
    "build_model",
    "default_run_dir",
    "load_data",
    "train",
    "save_outputs",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MnistConfig:
    """One MNIST training job; validated on construction, before anything heavy runs.

    Attributes mirror ``colabkit train mnist``'s options. ``limit`` keeps the first N training
    images (tests use it to train on a few hundred images through the real pipeline).
    """

    run_dir: str
    epochs: int = 15
    batch_size: int = 128
    seed: int | None = None
    dataset: str = "auto"
    save_every: str = "epoch"
    keep: int = 3
    deterministic: bool = False
    session_limit: str | None = None
    fresh: bool = False
    store: str | None = None
    limit: int | None = None
    validation_split: float = 0.1
    strategy: str = "auto"
    notify: str | None = None
    release_runtime: bool = False

    def __post_init__(self) -> None:
        _check_positive_int("epochs", self.epochs)
        _check_positive_int("batch_size", self.batch_size)
        parse_keep(self.keep)
        if self.limit is not None:
            _check_positive_int("limit", self.limit)
        if self.seed is not None and (not _is_int(self.seed) or self.seed < 0):
            raise invalid_argument("seed", self.seed, "an integer >= 0")
        if not 0.0 <= self.validation_split < 1.0:
            raise invalid_argument("validation_split", self.validation_split, "a float in [0, 1)")
        parse_save_every(self.save_every)
        if self.store is not None:
            check_store(self.store)
        if self.session_limit is not None:
            check_session_limit(self.session_limit)
        if self.strategy not in KINDS:
            raise invalid_argument("strategy", self.strategy, f"one of {', '.join(KINDS)}")
        check_dataset(self.dataset)
        check_run_dir(self.run_dir)
        ending.check_notify(self.notify)


@dataclass(frozen=True)
class MnistResult:
    """What one ``train`` call produced.

    Attributes:
        test_loss: Loss on the test set.
        test_accuracy: Accuracy on the test set.
        epochs_done: Epochs in the full history (across resumes).
        resumes: Where each resume started, as reported by ``colabkit.fit``.
        outputs_dir: The folder holding results.txt, predictions.npy, the model and the plots.
        source: Which data was used (one line).
    """

    test_loss: float
    test_accuracy: float
    epochs_done: int
    resumes: tuple[dict[str, Any], ...]
    outputs_dir: Path
    source: str


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_positive_int(name: str, value: object) -> None:
    if not _is_int(value) or value < 1:  # type: ignore[operator]
        raise invalid_argument(name, value, "an integer >= 1")


def check_store(store: object) -> None:
    """Rejects a ``--store`` URL that names no store colabkit knows, before anything is written.

    Local paths, ``file://`` and ``memory://`` URLs are opened (cheap, no I/O); a ``gdrive://``
    URL is only checked for a folder, because its credentials are looked up when training starts.
    """
    expected = (
        "a folder, or a URL such as 'gdrive://colabkit/run', 'gs://bucket/run' or "
        "'file:///path/run'"
    )
    if not isinstance(store, str) or not store.strip():
        raise invalid_argument("store", store, expected)
    parts = urlsplit(store)
    if parts.scheme == "gdrive" and (parts.netloc + parts.path).strip("/"):
        return
    if parts.scheme == "memory":  # gone when the command exits: nothing to resume from
        raise invalid_argument("store", store, "a durable store; " + expected)
    try:
        open_store("" if parts.scheme == "gdrive" else store)
    except ConfigError as e:
        # a bucket's own reason (its driver not installed) says more than the list of URLs
        bucket = fsspec_store.handles(parts.scheme) and (parts.netloc + parts.path).strip("/")
        reason = getattr(e, "expected", None) if bucket else None
        raise invalid_argument("store", store, reason or expected) from None


def check_run_dir(run_dir: str | os.PathLike[str]) -> None:
    """Fails with one line if ``run_dir`` cannot be a writable directory; writes nothing.

    The nearest existing folder is probed with a temporary file that is removed at once, because
    permission bits do not tell the truth everywhere (root, read-only mounts, a dropped Drive).
    """
    if not str(run_dir).strip():
        raise invalid_argument("run_dir", str(run_dir), "a folder path (it is empty)")
    if is_url(run_dir):  # never a local folder named after the scheme
        raise invalid_argument(
            "run_dir",
            str(run_dir),
            "a folder, where the outputs are written (for checkpoints on Drive through its API, "
            "keep a folder here and add --store gdrive://colabkit/mnist)",
        )
    path = Path(run_dir).expanduser()
    mountpoint = unmounted_drive(path)
    if mountpoint is not None:
        raise ConfigError(
            f"--run-dir {str(run_dir)!r} is on Google Drive, which is not mounted at "
            f"{mountpoint}: mount it in the notebook first (colabkit.setup() or "
            f"drive.mount({str(mountpoint)!r}); a `!colabkit` command cannot show the consent "
            "dialog), or pass --store gdrive://FOLDER with credentials."
        )
    if path.exists() and not path.is_dir():
        raise invalid_argument("run_dir", str(run_dir), "a directory, but this path is a file")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise invalid_argument("run_dir", str(run_dir), f"a directory, but {existing} is a file")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise ConfigError(
            f"Cannot write to the run directory {str(run_dir)!r} ({e.strerror or e}). "
            "Choose a writable --run-dir."
        ) from None


def default_run_dir() -> str:
    """Where the run lives by default: on Drive in Colab when mounted, else ``./runs/mnist``."""
    from colabkit.env import default_run_dir as env_default_run_dir

    return str(env_default_run_dir("mnist"))


# --- model and training ---------------------------------------------------------------------


def build_model() -> Any:
    """The tutorial's convnet, compiled with its loss, optimizer and metric."""
    import keras

    model = keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE),
            keras.layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            keras.layers.MaxPooling2D(pool_size=(2, 2)),
            keras.layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            keras.layers.MaxPooling2D(pool_size=(2, 2)),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(NUM_CLASSES, activation="softmax"),
        ]
    )
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


def train(config: MnistConfig, *, origin: str = MNIST_URL) -> MnistResult:
    """Trains (or resumes, or just reports) the MNIST job and writes its outputs.

    Re-running with the same config continues from the newest verified checkpoint; a finished run
    returns at once from ``fit`` and its outputs are rewritten from the restored model.
    """
    data = load_data(config.dataset, limit=config.limit, origin=origin)
    from colabkit.training.trainer import fit

    if config.seed is not None:  # the initial weights too, so two runs with one seed agree
        import keras

        keras.utils.set_random_seed(config.seed)
    if config.fresh:
        archive_outputs(config.run_dir)
    strategy = _scaled_out(config.strategy)
    if strategy is None or not hasattr(strategy, "scope"):
        model = build_model()
    else:
        with strategy.scope():  # variables live on every replica
            model = build_model()
    history = fit(
        model,
        data.x_train,
        data.y_train,
        run_dir=config.run_dir,
        store=config.store,
        epochs=config.epochs,
        batch_size=config.batch_size,
        validation_split=config.validation_split,
        seed=config.seed,
        save_every=config.save_every,
        keep=config.keep,
        deterministic=config.deterministic,
        session_limit=config.session_limit,
        fresh=config.fresh,
        strategy=strategy,
        notify=config.notify,
    )
    if not getattr(history, "completed", True):  # stopped before the end: no outputs yet
        if config.release_runtime and history.stop_reason == "deadline":
            ending.release_runtime(durable=history.durable)
        raise TrainingStopped(
            f"Training stopped before the end ({history.stop_reason}); the checkpoint is "
            "saved. Run the same command again (in a new session) to continue."
        )
    steps = _steps_per_epoch(len(data.x_train), config)
    result = save_outputs(config.run_dir, model, data, history, steps_per_epoch=steps)
    if config.release_runtime:  # the outputs are written: nothing is left to do on this VM
        ending.release_runtime(durable=history.durable)
    return result


def archive_outputs(run_dir: str | os.PathLike[str]) -> Path | None:
    """``--fresh``: moves the previous run's outputs into ``outputs/archive/<UTC stamp>/``
    (never deleted, as its checkpoints are not). Returns that folder (None: nothing there)."""
    outputs = Path(run_dir).expanduser() / "outputs"
    try:
        previous = [p for p in outputs.iterdir() if p.name != "archive"]
    except FileNotFoundError:
        return None
    if not previous:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder = outputs / "archive" / stamp
    n = 1
    while folder.exists():
        n += 1
        folder = outputs / "archive" / f"{stamp}-{n}"
    folder.mkdir(parents=True)
    for path in previous:
        path.rename(folder / path.name)
    logger.info("Archived the previous outputs under %s.", folder)
    return folder


def _scaled_out(kind: str) -> Any:
    """The engine's strategy for ``kind``; on JAX a distribution is made active before building."""
    from colabkit.distribute import strategy as make_strategy

    strategy = make_strategy(kind)
    if strategy is not None and not hasattr(strategy, "scope"):
        import keras

        keras.distribution.set_distribution(strategy)
    return strategy


class TrainingStopped(ColabkitError):
    """The run stopped cleanly before its last epoch (session deadline); resume by re-running."""


def _steps_per_epoch(n_train: int, config: MnistConfig) -> int:
    fit_count = math.ceil(n_train * (1.0 - config.validation_split))
    return max(1, math.ceil(fit_count / config.batch_size))


# --- outputs --------------------------------------------------------------------------------


def results_text(test_loss: float, test_accuracy: float) -> str:
    """``results.txt`` as the tutorial prints it."""
    return f"Test loss: {test_loss}\nTest accuracy: {test_accuracy}\n"


def _write(final: Path, writer: Callable[[Path], object]) -> None:
    with atomic_path(final) as tmp:
        writer(tmp)


def save_outputs(
    run_dir: str | os.PathLike[str],
    model: Any,
    data: MnistData,
    history: Any,
    *,
    steps_per_epoch: int | None = None,
) -> MnistResult:
    """Evaluates the trained model on the test set and writes ``run_dir/outputs``.

    Writes results.txt, predictions.npy, mnist_model.keras, history.json and (with matplotlib)
    learning_curve.png, each atomically: a kill mid-write leaves the previous file, never half a
    file, so re-running after a disconnect always finds consistent outputs.

    Args:
        run_dir: The run directory; outputs go to its ``outputs`` folder.
        model: The trained, compiled model.
        data: The data it was trained on (its test part is evaluated).
        history: What ``colabkit.fit`` returned (``.history`` and ``.resumes``) or a plain
            Keras ``History``.
        steps_per_epoch: Places mid-epoch resumes on the plot.
    """
    test_loss, test_accuracy = model.evaluate(data.x_test, data.y_test, verbose=0)
    metrics = {name: [float(v) for v in values] for name, values in history.history.items()}
    result = MnistResult(
        test_loss=float(test_loss),
        test_accuracy=float(test_accuracy),
        epochs_done=len(next(iter(metrics.values()), [])),
        resumes=tuple(dict(r) for r in getattr(history, "resumes", [])),
        outputs_dir=Path(run_dir).expanduser() / "outputs",
        source=data.source,
    )
    predictions = model.predict(data.x_test, verbose=0)
    _write_outputs(result, model, predictions, metrics, steps_per_epoch)
    logger.info("Outputs written to %s.", result.outputs_dir)
    return result


def _write_outputs(
    result: MnistResult,
    model: Any,
    predictions: np.ndarray,
    metrics: dict[str, list[float]],
    steps_per_epoch: int | None,
) -> None:
    from colabkit.plot import learning_curve_png

    out = result.outputs_dir
    out.mkdir(parents=True, exist_ok=True)
    text = results_text(result.test_loss, result.test_accuracy)
    _write(out / "results.txt", lambda p: p.write_text(text))
    _write(out / "predictions.npy", lambda p: np.save(p, predictions))
    _write(out / "mnist_model.keras", lambda p: model.save(p))
    record = history_record(metrics, result.resumes, steps_per_epoch, result.source)
    _write(out / "history.json", lambda p: p.write_text(json.dumps(record, indent=1) + "\n"))
    title = f"MNIST convnet: {result.epochs_done} epochs, {len(result.resumes)} resume(s)"
    png = learning_curve_png(metrics, result.resumes, steps_per_epoch=steps_per_epoch, title=title)
    if png is not None:
        _write(out / "learning_curve.png", lambda p: p.write_bytes(png))


def history_record(
    history: dict[str, list[float]],
    resumes: tuple[dict[str, Any], ...] | list[dict[str, Any]],
    steps_per_epoch: int | None,
    source: str,
) -> dict[str, Any]:
    """The content of ``history.json``: per-epoch metrics across resumes, and where each resumed."""
    metrics = {name: [float(v) for v in values] for name, values in history.items()}
    count = len(next(iter(metrics.values()), []))
    return {
        "epochs": list(range(1, count + 1)),
        "history": metrics,
        "resumes": [dict(r) for r in resumes],
        "steps_per_epoch": steps_per_epoch,
        "dataset": source,
    }
