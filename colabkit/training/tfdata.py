"""A ``tf.data.Dataset`` (or a ``dataset_fn(epoch)``) as resumable training input.

A dataset has no random access, so colabkit cannot pick batch ``step`` of epoch ``e`` the way it
does for arrays. It owns the iteration instead: one iterator per epoch, created by colabkit in a
known sequence, and a resume replays (reads without training) the steps already trained.

- ``dataset_fn(epoch)``: epoch ``e`` is the first pass over ``dataset_fn(e)``. Exact at epoch
  boundaries, and mid-epoch after the replay, when ``dataset_fn`` builds the same pipeline for
  the same epoch (seeded shuffles, deterministic maps).
- A ``tf.data.Dataset``: epoch ``e`` is its ``e + 1``-th pass in this process. TensorFlow derives
  each pass's order of a seeded shuffle (``shuffle(n, seed=...)``,
  ``image_dataset_from_directory(seed=...)``) from the seed and the number of passes made, so
  colabkit first makes (and drops) ``e`` passes: each epoch has the uninterrupted run's order.
- With ``steps_per_epoch`` other than the dataset's size (a ``repeat()``-ed dataset): epoch
  ``e`` is batches ``e * N`` to ``(e + 1) * N`` of one stream, the dataset repeated, as
  ``model.fit`` reads it; a resume reads the stream again up to there.
- Anything else (an unseeded shuffle): the resumed epoch trains exactly its remaining steps, in
  an order that may differ; one warning line says so. colabkit tells the cases apart by a
  fingerprint of each epoch's first batch, saved in the checkpoint and compared at a resume.

Keras creates its own iterator of whatever it is given at every epoch (and one more to build the
model), which would move a seeded shuffle on. So each epoch is its own ``model.fit`` call over a
small dataset that reads colabkit's iterator, and the model is built before that call.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import weakref
from typing import Any

import numpy as np

from colabkit.errors import ConfigError
from colabkit.training.data import ResumableBatches

log = logging.getLogger(__name__)

#: Passes colabkit has made over each dataset object in this process (a re-run of the same
#: notebook cell reuses the object, whose seeded shuffles have moved on).
_PASSES: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def is_tf_dataset(x: Any) -> bool:
    """Whether ``x`` is a ``tf.data.Dataset`` (without importing TensorFlow when it is not)."""
    return any(
        cls.__module__.startswith("tensorflow.") and cls.__name__ == "DatasetV2"
        for cls in type(x).__mro__
    )


def fingerprint(batch: Any) -> str:
    """A short hash of a batch's values (all its tensors), to tell whether two batches match."""
    import tensorflow as tf

    digest = hashlib.blake2b(digest_size=8)
    for tensor in tf.nest.flatten(batch):
        array = np.ascontiguousarray(np.asarray(tensor))
        digest.update(str((array.dtype, array.shape)).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class DatasetEpochs(ResumableBatches):
    """Epochs of a ``tf.data.Dataset`` or of a ``dataset_fn(epoch)``; see the module docstring.

    Args:
        source: The dataset, or a function from the epoch (0-based) to that epoch's dataset.
        steps_per_epoch: Batches per epoch; required when the dataset repeats forever or its
            size is unknown to TensorFlow, else at most its number of batches.
    """

    epochs_per_fit = 1  # each epoch's iterator is created before its model.fit call

    def __init__(self, source: Any, *, steps_per_epoch: int | None = None) -> None:
        super().__init__(seed=None, shuffle=False)
        self.source = source
        self.is_function = callable(source) and not is_tf_dataset(source)
        self.batch_size = None
        self.steps_per_epoch = self._steps(steps_per_epoch)
        self.n = self.steps_per_epoch
        # steps_per_epoch other than the dataset's size: the epochs are consecutive slices of
        # one stream (the dataset, repeated), as model.fit takes them; else one pass an epoch.
        self.stream = (
            not self.is_function
            and steps_per_epoch is not None
            and steps_per_epoch != int(source.cardinality())
        )
        self._stream: Any = None
        self._stream_epoch: int | None = None  # the epoch whose first batch the stream holds next
        self._iterator: Any = None
        self._first: Any = None
        self.first_fingerprint: str | None = None
        self.order_changed = False

    def _dataset(self, epoch: int) -> Any:
        if not self.is_function:
            return self.source
        dataset = self.source(epoch)
        if not is_tf_dataset(dataset):
            raise ConfigError(
                f"dataset_fn({epoch}) returned {type(dataset).__name__}, not a tf.data.Dataset. "
                "Return the epoch's dataset (for example ds.shuffle(n, seed=epoch).batch(32))."
            )
        return dataset

    def _steps(self, steps_per_epoch: int | None) -> int:
        import tensorflow as tf

        cardinality = int(self._dataset(0).cardinality())
        what = "dataset_fn(0)" if self.is_function else "the dataset"
        if cardinality == 0:
            raise ConfigError(f"{what} is empty (0 batches). Pass a dataset with training data.")
        if steps_per_epoch is not None:
            if 0 < cardinality < steps_per_epoch:
                raise ConfigError(
                    f"steps_per_epoch={steps_per_epoch}, but {what} has only {cardinality} "
                    "batches. Pass at most that many, or leave steps_per_epoch out."
                )
            return steps_per_epoch
        if cardinality == tf.data.INFINITE_CARDINALITY:
            raise ConfigError(
                f"{what} repeats forever, so an epoch has no end. Pass steps_per_epoch=N "
                "(batches per epoch), or drop .repeat(): colabkit makes the epochs."
            )
        if cardinality < 0:
            raise ConfigError(
                f"TensorFlow cannot tell how many batches {what} has (after filter(), for "
                "example). Pass steps_per_epoch=N, or state it with "
                "ds.apply(tf.data.experimental.assert_cardinality(N))."
            )
        return cardinality

    # -- one epoch ----------------------------------------------------------------------------

    def start_epoch(
        self, epoch: int, *, resuming: bool = False, expected_fingerprint: str | None = None
    ) -> None:
        """Creates the iterator of ``epoch`` and reads up to ``start_step`` (replayed, not
        trained). ``resuming``: a checkpoint was restored, whose order should continue.
        ``expected_fingerprint``: that of the epoch's first batch in the interrupted session;
        a different one means the order differs, said in one line."""
        if self.stream:
            iterator = self._stream_at(epoch, resuming)
        else:
            iterator = iter(self._pass(epoch, resuming))
        self._iterator = iterator
        self._first = next(iterator)
        self.first_fingerprint = fingerprint(self._first)
        if (
            self.start_step
            and not self.order_changed
            and expected_fingerprint not in (None, self.first_fingerprint)
        ):
            self._warn(epoch, "its first batch differs from the interrupted session's")
        for _ in range(self.start_step - 1 if self.start_step else 0):
            next(iterator)
        if self.start_step:  # the first batch was replayed too: the epoch resumes after it
            self._first = next(iterator)

    def _pass(self, epoch: int, resuming: bool) -> Any:
        """The dataset of ``epoch``'s pass, after the passes of the epochs before it."""
        dataset = self._dataset(epoch)
        if not self.is_function:
            done = _PASSES.get(dataset, 0)
            if resuming and done > epoch and not self.order_changed:  # once: the rest follow
                self._warn(epoch, f"this dataset object already made {done} passes in this process")
            for _ in range(done, epoch):  # the passes of the epochs trained before
                iter(dataset)
            _PASSES[dataset] = max(done, epoch) + 1
        if self.steps_per_epoch != int(dataset.cardinality()):
            dataset = dataset.take(self.steps_per_epoch)
        return dataset

    def _stream_at(self, epoch: int, resuming: bool) -> Any:
        """The stream's iterator at the first batch of ``epoch``: the one the previous epoch
        left there, or a new one (this process's first pass) that replays the epochs before."""
        if self._stream is None or self._stream_epoch != epoch:
            done = _PASSES.get(self.source, 0)
            if resuming and done and not self.order_changed:
                self._warn(epoch, f"this dataset object already made {done} passes in this process")
            _PASSES[self.source] = done + 1
            self._stream = iter(self.source.repeat())
            for _ in range(epoch * self.steps_per_epoch):  # read again, not trained
                next(self._stream)
        self._stream_epoch = epoch + 1  # for_fit reads exactly this epoch's steps
        return self._stream

    def _warn(self, epoch: int, why: str) -> None:
        self.order_changed = True
        line = (
            f"colabkit: epoch {epoch + 1} (from step {self.start_step} of "
            f"{self.steps_per_epoch}) may come in another order than the interrupted session's "
            f"({why}). Every remaining step trains once; for the same order, seed the dataset's "
            "shuffle and create the dataset anew before colabkit.fit, or pass a "
            "dataset_fn(epoch)."
        )
        log.debug("%s", line)
        print(line, file=sys.stderr)  # where the user looks, without configuring logging

    def batch(self, step: int) -> Any:
        """A batch of the current epoch as ``(x, ...)``, for building the model (its shapes and
        types); a dataset of ``x`` alone gives ``(x,)``, as Keras unpacks it."""
        if self._first is None:
            self.start_epoch(self.epoch)
        return self._first if isinstance(self._first, tuple) else (self._first,)

    def for_fit(self, epoch: int) -> Any:
        """The steps of ``epoch`` from ``start_step`` on, as a dataset that reads colabkit's
        iterator: its first element is the batch already read, so building the model from it
        takes nothing from the iterator."""
        import tensorflow as tf

        if self._iterator is None:
            self.start_epoch(epoch)
        iterator, first = self._iterator, self._first
        self._iterator = None
        rest = tf.data.Dataset.range(len(self) - 1).map(lambda _: iterator.get_next())
        dataset = tf.data.Dataset.from_tensors(first).concatenate(rest)
        # Read ahead, as the user's pipeline does: safe, since the model is built before fit,
        # so Keras makes exactly one iterator of this dataset and trains all it reads.
        dataset = dataset.prefetch(tf.data.AUTOTUNE)
        return dataset.apply(tf.data.experimental.assert_cardinality(len(self)))
