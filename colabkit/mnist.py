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
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from colabkit import ending
from colabkit.checkpoint import is_url, parse_save_every
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
from colabkit.validate import (
    Validator,
    flag,
    fraction,
    natural_int,
    one_of,
    optional,
    positive_int,
)

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
class Option:
    """How ``colabkit train mnist`` offers a ``MnistConfig`` field: declared once, beside it.

    Attributes:
        flag: The option (``--epochs``).
        help: Its help line; None hides it (``--limit``, for tests).
        metavar: Its placeholder in the help.
        parse: Text to value, before ``check`` (``int``); None: a switch (``--fresh``).
    """

    flag: str
    help: str | None
    metavar: str | None = None
    parse: Callable[[str], Any] | None = str


def command_line_options() -> dict[str, tuple[Option, Any, Validator]]:
    """``MnistConfig``'s options, by field name: the option, its default, its validator."""
    return {
        each.name: (
            each.metadata["option"],
            None if each.default is MISSING else each.default,  # run_dir: chosen by the command
            each.metadata["check"],
        )
        for each in fields(MnistConfig)
        if each.metadata.get("option") is not None
    }


def _field(default: Any, check: Validator, option: Option | None = None) -> Any:
    """A ``MnistConfig`` field: its default, its validator, and its command-line option."""
    return field(default=default, metadata={"check": check, "option": option})


def _returning(check: Callable[[Any], Any]) -> Validator:
    """A validator from a check of one argument that knows its own name: the value, checked."""
    return lambda name, value: (check(value), value)[1]


@dataclass(frozen=True)
class MnistConfig:
    """One MNIST training job; validated on construction, before anything heavy runs.

    Each field declares its validator and its ``colabkit train mnist`` option (see ``Option``);
    the command builds its parser from them. ``limit`` keeps the first N training images
    (tests use it to train on a few hundred images through the real pipeline).
    """

    run_dir: str = field(
        metadata={
            "check": _returning(lambda run_dir: check_run_dir(run_dir)),
            "option": Option(
                "--run-dir",
                "run directory (default: ./runs/mnist; in Colab with Drive mounted: "
                "/content/drive/MyDrive/colabkit/mnist)",
                "DIR",
            ),
        }
    )
    epochs: int = _field(15, positive_int, Option("--epochs", "epochs (default 15)", "N", int))
    batch_size: int = _field(
        128, positive_int, Option("--batch-size", "batch size (default 128)", "N", int)
    )
    seed: int | None = _field(
        None,
        optional(natural_int),
        Option("--seed", "random seed (default: chosen once)", "N", int),
    )
    dataset: str = _field(
        "auto",
        _returning(check_dataset),
        Option(
            "--dataset",
            "auto: full MNIST if cached or downloadable, else the 5,000-image sample "
            "(default auto)",
            "auto|mnist|mnist-5k|FILE.npz",
        ),
    )
    save_every: str = _field(
        "epoch",
        _returning(parse_save_every),
        Option("--save-every", "checkpoint interval (default epoch)", "10m|500steps|epoch"),
    )
    keep: int = _field(3, positive_int, Option("--keep", "checkpoints to keep", "N", int))
    deterministic: bool = _field(
        False,
        flag,
        Option("--deterministic", "deterministic ops: bitwise-exact resume", parse=None),
    )
    session_limit: str | None = _field(
        None,
        optional(_returning(check_session_limit)),
        Option(
            "--session-limit",
            "save and stop cleanly 15 minutes before this session limit (default: 12h in "
            "Colab and Kaggle, none elsewhere)",
            "12h",
        ),
    )
    fresh: bool = _field(
        False, flag, Option("--fresh", "archive old checkpoints and start over", parse=None)
    )
    store: str | None = _field(
        None,
        optional(_returning(lambda store: check_store(store))),
        Option("--store", "where checkpoints go (default: run dir)", "URL"),
    )
    limit: int | None = _field(None, optional(positive_int), Option("--limit", None, parse=int))
    validation_split: float = _field(0.1, fraction)
    strategy: str = _field(
        "auto",
        one_of(KINDS),
        Option(
            "--strategy",
            "tf.distribute strategy: auto (a TPU, several GPUs or TF_CONFIG decide), default, "
            "mirrored, multiworker or tpu (default auto)",
            "KIND",
        ),
    )
    notify: str | None = _field(
        None,
        _returning(ending.check_notify),
        Option(
            "--notify",
            "webhook to POST to when the run finishes, stops or fails (never logged)",
            "URL",
        ),
    )
    release_runtime: bool = _field(
        False,
        flag,
        Option(
            "--release-runtime",
            "in Colab: give the runtime back once the run and its outputs are durable",
            parse=None,
        ),
    )

    def __post_init__(self) -> None:
        for each in fields(self):  # in declaration order: the first bad option is named
            value = each.metadata["check"](each.name, getattr(self, each.name))
            object.__setattr__(self, each.name, value)  # numpy integers become ints


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
        reason = e.expected if bucket else None
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
    if not history.completed:  # stopped before the end: no outputs yet
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
        resumes=tuple(dict(r) for r in history.resumes),
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
