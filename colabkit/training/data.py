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
from colabkit.validate import fraction


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
    validation_split = fraction("validation_split", validation_split)
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
        self._epoch = 0
        self.start_step = 0
        self._order_key: int | None = None
        self._order: np.ndarray | None = None

    @property
    def epoch(self) -> int:
        """The epoch being trained; set by the training loop before Keras starts iterating it."""
        return self._epoch

    @epoch.setter
    def epoch(self, epoch: int) -> None:
        self._epoch = int(epoch)
        self._epoch_changed()

    def _epoch_changed(self) -> None:
        pass

    #: How many epochs one ``model.fit`` call may run over ``for_fit``'s result (None: any).
    epochs_per_fit: int | None = None
    #: Whether the order of a resumed epoch may differ from the interrupted session's.
    order_changed = False

    def start_epoch(
        self, epoch: int, *, resuming: bool = False, expected_fingerprint: str | None = None
    ) -> None:
        """Puts the input at ``start_step`` of ``epoch`` before a ``model.fit`` call; nothing
        to do where the position alone picks the batches."""

    def epoch_fingerprint(self) -> str | None:
        """What a checkpoint records of the current epoch's order (None: the position says it)."""
        return None

    def for_fit(self, epoch: int) -> Any:
        """What ``model.fit`` iterates from ``epoch``, step ``start_step``: this PyDataset."""
        return self

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
        tf_data: Hand ``model.fit`` a ``tf.data.Dataset`` on every backend, not only on
            TensorFlow: KerasHub's task models (``GemmaCausalLM``, ...) take no PyDataset on JAX.
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
        tf_data: bool = False,
    ) -> None:
        super().__init__(seed=seed, shuffle=shuffle)
        self.tf_data = tf_data
        self.x, self.y, self.sample_weight = x, y, sample_weight
        self.batch_size = int(batch_size)
        self.n = num_samples(x)
        self.steps_per_epoch = max(1, math.ceil(self.n / self.batch_size))

    def batch(self, step: int) -> tuple[Any, ...]:
        """The batch at ``step`` of the current epoch (NumPy arrays)."""
        lo = step * self.batch_size
        hi = min(lo + self.batch_size, self.n)
        order = self._permutation(self.n)
        # Sorted within the batch: the same samples, read with better memory locality.
        idx = np.arange(lo, hi) if order is None else np.sort(order[lo:hi])
        out = (_take(self.x, idx), _take(self.y, idx))
        if self.sample_weight is not None:
            out += (_take(self.sample_weight, idx),)
        return out

    # -- the TensorFlow backend: the same batches from a tf.data pipeline ----------------------

    def for_fit(self, epoch: int) -> Any:
        """On TensorFlow (or with ``tf_data``), a ``tf.data.Dataset`` of exactly the batches
        ``batch`` gives from ``start_step`` on; elsewhere this PyDataset.

        Keras feeds a PyDataset to TensorFlow through a Python generator, which costs every step
        a trip through the interpreter (on TensorFlow 2.21 it doubles the time of an epoch). The
        pipeline below does what Keras does for arrays (slice a tensor of indices into batches,
        gather), with the indices of ``epoch_permutation``: Keras makes a new iterator at every
        epoch, after ``on_epoch_begin`` has set ``epoch``, and the pipeline reads that epoch's
        order from a variable when the iterator starts.
        """
        if keras.backend.backend() != "tensorflow" and not self.tf_data:
            return self
        import tensorflow as tf

        if self._tf_order is None:
            with tf.init_scope(), tf.device("/cpu:0"):
                self._tf_tensors = _to_tf_tensors(_element(self.x, self.y, self.sample_weight))
                self._tf_order = tf.Variable(self._order_or_range(), trainable=False)
        order, tensors = self._tf_order, self._tf_tensors
        first, size = self.start_step * self.batch_size, self.batch_size

        def epoch_batches(_: Any) -> Any:
            batches = tf.data.Dataset.from_tensor_slices(order.read_value()[first:]).batch(size)
            return batches.map(tf.sort)  # sorted, as in `batch`

        def gather(index: Any, data: Any) -> Any:
            return tf.nest.map_structure(lambda t: tf.gather(t, index), data)

        indices = tf.data.Dataset.range(1).flat_map(epoch_batches)
        dataset = tf.data.Dataset.zip((indices, tf.data.Dataset.from_tensors(tensors).repeat()))
        dataset = dataset.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(self)))
        return without_autotune_thread(dataset.prefetch(tf.data.AUTOTUNE))

    _tf_order: Any = None
    _tf_tensors: Any = None

    def _order_or_range(self) -> np.ndarray:
        order = self._permutation(self.n)
        return np.arange(self.n, dtype=np.int64) if order is None else order.astype(np.int64)

    def _epoch_changed(self) -> None:
        if self._tf_order is not None:
            self._tf_order.assign(self._order_or_range())


def without_autotune_thread(dataset: Any) -> Any:
    """``dataset`` with tf.data's autotuning off, for a pipeline ``model.fit`` iterates.

    Keras makes new iterators of its input every epoch (one read, one dropped unread). With
    autotuning on, each iterator runs a thread that models the pipeline, and freeing the
    iterator waits for that thread: on TensorFlow 2.20 the first step of some epochs took
    2-2.5 s more, in plain ``model.fit`` too (BENCHMARKS.md, run F). Off, ``AUTOTUNE`` still
    means something: a parallel map runs on every core and a prefetch buffer grows while the
    consumer waits, which is all these small pipelines need.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def _element(x: Any, y: Any, sample_weight: Any) -> Any:
    """One dataset element as Keras unpacks it: ``x``, ``(x, y)`` or ``(x, y, sample_weight)``."""
    if sample_weight is not None:
        return (x, y, sample_weight)
    return (x,) if y is None else (x, y)


def _to_tf_tensors(data: Any) -> Any:
    """Tensors of the arrays, floats in Keras' float type (as Keras' own array adapter does)."""
    import tensorflow as tf

    def convert(array: Any) -> Any:
        array = np.asarray(array)
        if np.issubdtype(array.dtype, np.floating):
            array = array.astype(keras.config.floatx(), copy=False)
        return tf.convert_to_tensor(array)

    return tf.nest.map_structure(convert, data)


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
