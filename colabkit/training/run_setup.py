"""What a ``colabkit.fit`` call settles before training: arguments, data, store, run identity.

Everything here runs before anything is written, so a bad argument or a checkpoint made by
another model, batch size, dataset or seed fails with one line and leaves the run untouched.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras

from colabkit.checkpoint.format import CheckpointContents
from colabkit.clock import Clock
from colabkit.errors import ConfigError, ResumeMismatchError, invalid_argument
from colabkit.storage import Store, open_store
from colabkit.training.callbacks import SessionDeadline
from colabkit.training.data import (
    ArrayBatches,
    DatasetBatches,
    ResumableBatches,
    num_samples,
    train_validation_split,
)
from colabkit.training.loop import RunProgress

log = logging.getLogger(__name__)


def check_arguments(model: Any, *, epochs: Any, batch_size: Any, fresh: Any) -> None:
    if not isinstance(model, keras.Model):
        raise invalid_argument("model", type(model).__name__, "a keras.Model")
    if not getattr(model, "compiled", False):
        raise ConfigError(
            "The model is not compiled. Call model.compile(optimizer=..., loss=...) before "
            "colabkit.fit()."
        )
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise invalid_argument(name, value, "an integer >= 1")
    if not isinstance(fresh, bool):
        raise invalid_argument("fresh", fresh, "True or False")


def session_deadline(callbacks: Sequence[Any], session_limit: Any, clock: Clock) -> SessionDeadline:
    for callback in callbacks:
        if isinstance(callback, SessionDeadline):
            return callback
    if session_limit is False:
        return SessionDeadline.never()
    if session_limit is None or session_limit is True:
        from colabkit import env

        if env.detect(session_limit=None).kind != "colab":
            return SessionDeadline.never()
        session_limit = env.DEFAULT_SESSION_LIMIT
    return SessionDeadline(session_limit=session_limit, clock=clock)


def prepare_data(x: Any, y: Any, sample_weight: Any, split: Any, validation_data: Any):
    if x is None:
        raise invalid_argument("x", x, "training data: arrays or a keras.utils.PyDataset")
    if isinstance(x, keras.utils.PyDataset):
        if y is not None or sample_weight is not None:
            raise invalid_argument("y", type(y).__name__, "None when x is a PyDataset")
        if split:
            raise invalid_argument(
                "validation_split", split, "0 when x is a PyDataset (pass validation_data)"
            )
        return (x, None, None), validation_data
    if isinstance(split, bool) or not isinstance(split, (int, float)):
        raise invalid_argument("validation_split", split, "a float in [0, 1)")
    if split and validation_data is None:
        train, validation = train_validation_split(x, y, sample_weight, float(split))
        return train, validation
    return (x, y, sample_weight), validation_data


def resolve_store(run_dir: Any, store: Any) -> Store:
    if store is not None:
        return open_store(store) if isinstance(store, (str, Path)) else store
    if run_dir is None:
        raise ConfigError(
            "No place for checkpoints. Received: run_dir=None, store=None. Pass "
            "run_dir='runs/my-run' (or a Drive folder), or store='gdrive://colabkit/my-run'."
        )
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise invalid_argument("run_dir", str(run_dir), "a directory (this path is a file)")
    return open_store(path / "checkpoints")


def default_staging(store: Store) -> Path:
    from colabkit import env

    tag = hashlib.sha256(store.url.encode()).hexdigest()[:10]
    name = Path(store.url.rstrip("/")).parent.name or "run"
    return env.detect(session_limit=None).staging_root / f"{name}-{tag}"


def run_config(
    train: tuple, validation: Any, batch_size: int, seed: Any, restored: Any
) -> dict[str, Any]:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise invalid_argument("seed", seed, "a non-negative integer or None")
    config = {
        "batch_size": batch_size,
        "train_samples": num_samples(train[0]),
        "validation_samples": None if validation is None else _validation_size(validation),
        "seed": seed,
    }
    if restored is None:
        if seed is None:
            config["seed"] = secrets.randbelow(2**31)
        return config
    saved = restored.state.get("run", {})
    if seed is None:
        config["seed"] = saved.get("seed")
    for key, value in config.items():
        if key in saved and saved[key] != value:
            raise ResumeMismatchError(
                f"Cannot resume from {restored.name}: it was made with {key}={saved[key]!r}, "
                f"this call has {key}={value!r}. Pass the same value to continue, or fresh=True "
                "to archive the old checkpoints and start over."
            )
    return {**saved, **config}


def _validation_size(validation: Any) -> int:
    if isinstance(validation, keras.utils.PyDataset):
        return len(validation)
    return num_samples(validation[0])


def training_batches(train: tuple, batch_size: int, seed: int) -> ResumableBatches:
    x, y, sample_weight = train
    if isinstance(x, keras.utils.PyDataset):
        return DatasetBatches(x, seed=seed)
    return ArrayBatches(x, y, sample_weight, batch_size=batch_size, seed=seed)


def run_progress(
    restored: CheckpointContents | None, config: dict, steps_per_epoch: int, clock: Clock
) -> RunProgress:
    if restored is None:
        return RunProgress(config=config, steps_per_epoch=steps_per_epoch)
    progress = RunProgress.from_state(restored.state)
    progress.config = config
    if progress.steps_per_epoch != steps_per_epoch:
        raise ResumeMismatchError(
            f"Cannot resume from {restored.name}: it has {progress.steps_per_epoch} steps per "
            f"epoch, this data has {steps_per_epoch}. Use the same data and batch size, or "
            "fresh=True to archive the old checkpoints and start over."
        )
    return progress


def set_aside_stale_staging(store: Store, staging: Path) -> None:
    """Keeps a deleted run directory from coming back out of the local staging cache.

    Staging may hold a checkpoint newer than the store (it was not uploaded yet), so it is
    trusted next to the store. But when the run's folder does not exist at all, the user
    deleted it (or this is a new run under an old name): the staged checkpoints belong to a
    run that is gone. They are moved aside, not deleted.
    """
    from colabkit.storage.local import LocalStore

    if not isinstance(store, LocalStore) or store.root.exists():
        return
    if not staging.is_dir() or not any(staging.glob("*.ckpt")):
        return
    aside = staging.with_name(f"{staging.name}.stale-{time.strftime('%Y%m%dT%H%M%S')}")
    staging.rename(aside)
    log.warning(
        "%s does not exist: not resuming from the checkpoints left in local staging by an "
        "earlier run with the same path (moved to %s).",
        store.root,
        aside,
    )
