"""The training inputs of a ``colabkit.fit`` call: the model and callbacks checked, the data
split and put in the run's order, and the run's identity (batch size, sample counts, seed).

Everything here runs before anything is written, so a bad argument or a checkpoint made with
another batch size, dataset or seed fails with one line and leaves the run untouched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sys
from typing import Any

import keras

from colabkit.errors import (
    ConfigError,
    ResumeMismatchError,
    invalid_argument,
)
from colabkit.staging import data_finding
from colabkit.training.data import (
    ArrayBatches,
    DatasetBatches,
    ResumableBatches,
    num_samples,
    train_validation_split,
)
from colabkit.training.tfdata import DatasetEpochs, is_tf_dataset
from colabkit.validate import flag, fraction, natural_int, optional

log = logging.getLogger(__name__)


def check_arguments(model: Any, *, fresh: Any, callbacks: Any) -> None:
    if not isinstance(model, keras.Model):
        raise invalid_argument("model", type(model).__name__, "a keras.Model")
    if not getattr(model, "compiled", False):
        raise ConfigError(
            "The model is not compiled. Call model.compile(optimizer=..., loss=...) before "
            "colabkit.fit()."
        )
    flag("fresh", fresh)
    if not isinstance(callbacks, (list, tuple)) or not all(
        isinstance(c, keras.callbacks.Callback) for c in callbacks
    ):
        raise invalid_argument("callbacks", callbacks, "a list of keras.callbacks.Callback")


def prepare_data(x: Any, y: Any, sample_weight: Any, split: Any, validation_data: Any):
    """Checks the training data and splits off validation data (the last samples, as Keras)."""
    split = fraction("validation_split", split)
    kind = _input_kind(x)
    if kind is not None:
        if y is not None or sample_weight is not None:
            name = "y" if y is not None else "sample_weight"
            value = y if y is not None else sample_weight
            raise invalid_argument(name, type(value).__name__, f"None when x is {kind}")
        if split:
            raise invalid_argument(
                "validation_split", split, f"0 when x is {kind} (pass validation_data)"
            )
        return (x, None, None), validation_data
    _check_arrays(x, y, sample_weight)
    if split and validation_data is None:
        return train_validation_split(x, y, sample_weight, float(split))
    return (x, y, sample_weight), validation_data


_DATA_EXPECTED = (
    "in-memory arrays (numpy, or lists/dicts of arrays), a keras.utils.PyDataset, a "
    "tf.data.Dataset or a dataset_fn(epoch); colabkit must replay a batch order, so wrap a "
    "Python generator in a PyDataset or a tf.data.Dataset"
)


def check_input_strategy(x: Any, strategy: Any) -> None:
    """tf.data input trains under a TensorFlow strategy only if it is the default one.

    colabkit reads a tf.data input through its own iterator; ``tf.distribute`` copies the input
    pipeline per device, where that iterator cannot be read (it ends at once). JAX's
    ``keras.distribution`` splits the batches after they are read, so it works there.
    """
    kind = _input_kind(x)
    if strategy is None or kind not in ("a tf.data.Dataset", "a dataset_fn"):
        return
    if keras.backend.backend() != "tensorflow":
        return
    if type(strategy).__name__ != "_DefaultDistributionStrategy":
        raise ConfigError(
            f"x is {kind} and strategy={type(strategy).__name__}: colabkit cannot yet resume "
            "tf.data input under a tf.distribute strategy. Pass in-memory arrays or a "
            "keras.utils.PyDataset, or train on one device (or with JAX's "
            "keras.distribution)."
        )


def _input_kind(x: Any) -> str | None:
    """What ``x`` is when it is not arrays: it then holds its own targets and batching."""
    if isinstance(x, keras.utils.PyDataset):
        return "a PyDataset"
    if is_tf_dataset(x):
        return "a tf.data.Dataset"
    if callable(x) and not hasattr(x, "shape"):
        return "a dataset_fn"
    return None


def _check_arrays(x: Any, y: Any, sample_weight: Any) -> None:
    """Same first dimension everywhere, and indexable: else one line instead of an IndexError."""
    lengths = {}
    for name, value in (("x", x), ("y", y), ("sample_weight", sample_weight)):
        if value is None and name != "x":
            continue
        parts = list(value.values()) if isinstance(value, dict) else value
        parts = parts if isinstance(parts, (list, tuple)) else [parts]
        if not parts or not all(hasattr(p, "shape") and len(p.shape) > 0 for p in parts):
            raise invalid_argument(name, type(value).__name__, _DATA_EXPECTED)
        sizes = {int(p.shape[0]) for p in parts}
        if len(sizes) != 1:
            raise invalid_argument(name, f"arrays of lengths {sorted(sizes)}", "equal lengths")
        lengths[name] = sizes.pop()
    if len(set(lengths.values())) > 1:
        found = ", ".join(f"{k} has {v}" for k, v in lengths.items())
        raise ConfigError(
            f"The data arrays differ in length: {found} samples. Pass arrays of "
            "equal length (one entry per sample)."
        )
    if lengths["x"] == 0:
        raise invalid_argument("x", "0 samples", "at least one training sample")


def run_config(
    train: tuple, validation: Any, batch_size: int, seed: Any, restored: Any
) -> dict[str, Any]:
    seed = optional(natural_int)("seed", seed)  # numpy integers become ints: saved as JSON
    config = {
        "batch_size": batch_size,
        "train_samples": None if _input_kind(train[0]) else num_samples(train[0]),
        "validation_samples": None if validation is None else _validation_size(validation),
        "seed": seed,
    }
    if restored is None:
        if seed is None:
            config["seed"] = secrets.randbelow(2**31)
        return config
    saved = restored.run.config
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


def _validation_size(validation: Any) -> int | None:
    """Samples (batches, for a PyDataset) of the validation data; None where Keras alone knows
    (a ``tf.data.Dataset`` or another iterable that ``model.fit`` accepts for validation)."""
    if isinstance(validation, keras.utils.PyDataset):
        return len(validation)
    if isinstance(validation, (tuple, list)) and validation:
        return num_samples(validation[0])
    return None


def dataset_epochs(train: tuple, steps_per_epoch: int | None) -> DatasetEpochs | None:
    """The epochs of a ``tf.data`` input (checked before anything is written), else None."""
    kind = _input_kind(train[0])
    if kind in ("a tf.data.Dataset", "a dataset_fn"):
        epochs = DatasetEpochs(train[0], steps_per_epoch=steps_per_epoch)
        warn_if_read_from_drive(train[0])
        return epochs
    if steps_per_epoch is not None:
        raise invalid_argument(
            "steps_per_epoch", steps_per_epoch, "None unless x is a tf.data.Dataset or dataset_fn"
        )
    return None


def warn_if_read_from_drive(dataset: Any) -> None:
    """One line when a dataset reads its files through the Drive mount (Keras'
    ``image_dataset_from_directory`` and its kin record them as ``file_paths``, which a
    ``map`` or ``prefetch`` after it hides one dataset deeper)."""
    for _ in range(64):
        paths = getattr(dataset, "file_paths", None)
        if paths is not None or dataset is None:
            break
        dataset = getattr(dataset, "_input_dataset", None)
    if not paths:
        return
    with contextlib.suppress(ValueError, TypeError):  # mixed or relative paths: say nothing
        finding = data_finding([os.path.commonpath([str(p) for p in paths])])
        if finding is not None:
            print(f"colabkit: {finding.message} Fix: {finding.fix}", file=sys.stderr)


def training_batches(
    train: tuple, batch_size: int, seed: int, model: keras.Model | None = None
) -> ResumableBatches:
    """Arrays or a PyDataset in the run's (seed, epoch) order."""
    x, y, sample_weight = train
    if isinstance(x, keras.utils.PyDataset):
        return DatasetBatches(x, seed=seed)
    return ArrayBatches(
        x, y, sample_weight, batch_size=batch_size, seed=seed, tf_data=takes_tf_data_only(model)
    )


def takes_tf_data_only(model: Any) -> bool:
    """KerasHub's task models (a ``PipelineModel``: preprocessing inside ``fit``) turn their
    input into a ``tf.data.Dataset`` and refuse a PyDataset on JAX (keras-hub 0.32)."""
    return any(cls.__name__ == "PipelineModel" for cls in type(model).__mro__)
