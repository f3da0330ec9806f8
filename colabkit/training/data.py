"""A batch order that is a pure function of (seed, epoch), so a run can restart mid-epoch.

Keras shuffles with the global random state, so a resumed process cannot replay the epoch it was
killed in. Here epoch ``e``'s order is ``default_rng([seed, e]).permutation(n)``: the position
(epoch, step) alone says which batch comes next, and a resumed run starts the interrupted epoch
at its next step.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from colabkit.errors import invalid_argument


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the ``n`` samples in ``epoch`` (the same in every process and on every run)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def num_samples(data: Any) -> int:
    """Length of an array, or of the first array of a list/tuple/dict of arrays."""
    if isinstance(data, dict):
        data = next(iter(data.values()))
    elif isinstance(data, (list, tuple)):
        data = data[0]
    return int(data.shape[0]) if hasattr(data, "shape") else len(data)


def _take(data: Any, index: np.ndarray) -> Any:
    if data is None:
        return None
    if isinstance(data, dict):
        return {k: _take(v, index) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(_take(v, index) for v in data)
    return data[index]


def train_validation_split(
    x: Any, y: Any, sample_weight: Any, validation_split: float
) -> tuple[tuple[Any, Any, Any], tuple[Any, Any, Any]]:
    """Splits off the *last* ``validation_split`` of the samples, as ``keras.Model.fit`` does."""
    if not 0.0 <= validation_split < 1.0:
        raise invalid_argument("validation_split", validation_split, "a float in [0, 1)")
    n = num_samples(x)
    split_at = int(math.floor(n * (1.0 - validation_split)))
    if split_at == 0 or split_at == n:
        raise invalid_argument(
            "validation_split",
            validation_split,
            f"a fraction that leaves samples on both sides of the split ({n} samples)",
        )
    head, tail = np.arange(split_at), np.arange(split_at, n)
    return (
        (_take(x, head), _take(y, head), _take(sample_weight, head)),
        (_take(x, tail), _take(y, tail), _take(sample_weight, tail)),
    )


class ResumableBatches(keras.utils.PyDataset):
    """Batches in an order fixed by (seed, epoch), resumable at any step.

    ``epoch`` is set by the training loop before each epoch starts; ``start_step`` skips the
    steps of the current epoch that were trained before an interruption. Batches are exactly the
    ones an uninterrupted run would see; ``len()`` counts only the steps still to run.
    """

    steps_per_epoch: int

    def __init__(self, *, seed: int | None, shuffle: bool) -> None:
        super().__init__()
        self.seed = seed
        self.shuffle = shuffle and seed is not None
        self.epoch = 0
        self.start_step = 0
        self._order_key: int | None = None
        self._order: np.ndarray | None = None

    def __len__(self) -> int:
        return self.steps_per_epoch - self.start_step

    def _permutation(self, n: int) -> np.ndarray | None:
        if not self.shuffle:
            return None
        if self._order_key != self.epoch:
            self._order = epoch_permutation(self.seed, self.epoch, n)
            self._order_key = self.epoch
        return self._order

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range for {len(self)} batches")
        return self.batch(self.start_step + index)

    def batch(self, step: int) -> Any:
        """The batch at ``step`` of the current epoch (counted from the start of the epoch)."""
        raise NotImplementedError


class ArrayBatches(ResumableBatches):
    """Batches of in-memory arrays; epoch e visits the samples in ``epoch_permutation(seed, e)``.

    Args:
        x, y, sample_weight: Arrays, or lists/dicts of arrays, with the same first dimension.
        batch_size: Samples per batch; the last batch of an epoch may be smaller.
        seed: Seed of the order; with ``shuffle=False`` (validation data) the natural order.
    """

    def __init__(
        self,
        x: Any,
        y: Any = None,
        sample_weight: Any = None,
        *,
        batch_size: int,
        seed: int | None,
        shuffle: bool = True,
    ) -> None:
        super().__init__(seed=seed, shuffle=shuffle)
        self.x, self.y, self.sample_weight = x, y, sample_weight
        self.batch_size = int(batch_size)
        self.n = num_samples(x)
        self.steps_per_epoch = max(1, math.ceil(self.n / self.batch_size))

    def batch(self, step: int) -> tuple[Any, ...]:
        lo = step * self.batch_size
        hi = min(lo + self.batch_size, self.n)
        order = self._permutation(self.n)
        # Sorted within the batch: the same samples, read with better memory locality.
        idx = np.arange(lo, hi) if order is None else np.sort(order[lo:hi])
        out = (_take(self.x, idx), _take(self.y, idx))
        if self.sample_weight is not None:
            out += (_take(self.sample_weight, idx),)
        return out


class DatasetBatches(ResumableBatches):
    """A user's ``keras.utils.PyDataset`` (or any sequence of batches) in a (seed, epoch) order.

    The wrapped dataset's batches are visited in ``epoch_permutation(seed, epoch, len(dataset))``
    order, so its own ``__getitem__`` must be a pure function of the index.
    """

    def __init__(self, dataset: Any, *, seed: int | None, shuffle: bool = True) -> None:
        super().__init__(seed=seed, shuffle=shuffle)
        self.dataset = dataset
        self.steps_per_epoch = len(dataset)
        self.batch_size = None
        self.n = self.steps_per_epoch

    def batch(self, step: int) -> Any:
        order = self._permutation(self.steps_per_epoch)
        return self.dataset[int(step if order is None else order[step])]
