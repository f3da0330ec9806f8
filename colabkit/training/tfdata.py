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

Keras creates its own iterators of whatever it is given (two an epoch, and one more to build
the model), which would move a seeded shuffle on. So colabkit makes one iterator of the dataset,
repeated, for the whole call (its stream), and gives ``model.fit`` a small dataset whose every
pass reads the next epoch's batches from that stream; the model is built from the dataset's
``element_spec`` before ``fit``. One iterator, alive until the call ends: an iterator TensorFlow
frees later, during a garbage collection in the middle of a step, can stall that step for
seconds (BENCHMARKS.md, run D), and so did the iterator per epoch colabkit used to make.
Keras' own iterators of the small dataset (new every epoch) run without tf.data's autotuning,
whose thread made freeing each of them wait (run F); the stream keeps the user's options.
A ``dataset_fn`` has a new dataset every epoch: one iterator and one ``model.fit`` call an epoch.
"""

from __future__ import annotations

import logging
import sys
import weakref
from typing import Any

import numpy as np

from colabkit.errors import ConfigError
from colabkit.training.data import ResumableBatches, without_autotune_thread

log = logging.getLogger(__name__)

#: Passes made over each dataset object in this process (a re-run of the same notebook cell
#: reuses the object, whose seeded shuffles have moved on): a CPU variable, which colabkit's
#: reads count up inside TensorFlow too.
_PASSES: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

#: Prefix of the fingerprints below; older colabkit versions hashed batches another way.
_FINGERPRINT_SCHEME = "tf1:"


def is_tf_dataset(x: Any) -> bool:
    """Whether ``x`` is a ``tf.data.Dataset`` (without importing TensorFlow when it is not)."""
    return any(
        cls.__module__.startswith("tensorflow.") and cls.__name__ == "DatasetV2"
        for cls in type(x).__mro__
    )


def _fingerprint_tensor(batch: Any) -> Any:
    """8 bytes hashing a batch's values, dtypes and shapes (all its tensors), as a uint8 tensor:
    computed inside a ``tf.data`` function and eagerly alike."""
    import tensorflow as tf

    parts = [tf.io.serialize_tensor(t) for t in tf.nest.flatten(batch, expand_composites=True)]
    return tf.reshape(tf.fingerprint(tf.reshape(tf.strings.join(parts), [1])), [8])


def _fingerprint_text(value: Any) -> str | None:
    raw = bytes(np.asarray(value, dtype=np.uint8))
    return _FINGERPRINT_SCHEME + raw.hex() if any(raw) else None


def fingerprint(batch: Any) -> str:
    """A short hash of a batch's values (all its tensors), to tell whether two batches match."""
    text = _fingerprint_text(_fingerprint_tensor(batch))
    return text or _FINGERPRINT_SCHEME + "0" * 16


def _shapes_known(spec: Any) -> bool:
    """Whether every part of an element spec is a dense tensor of known shape but the batch."""
    import tensorflow as tf

    return all(
        isinstance(part, tf.TensorSpec) and part.shape[1:].is_fully_defined()
        for part in tf.nest.flatten(spec)
    )


def _cpu_variable(value: Any, dtype: Any) -> Any:
    import tensorflow as tf

    with tf.device("/cpu:0"):  # read inside tf.data functions, which run on the CPU
        return tf.Variable(value, dtype=dtype, trainable=False)


def _passes(dataset: Any) -> Any:
    """The variable counting the passes made over ``dataset`` in this process."""
    import tensorflow as tf

    if dataset not in _PASSES:
        _PASSES[dataset] = _cpu_variable(0, tf.int64)
    return _PASSES[dataset]


class DatasetEpochs(ResumableBatches):
    """Epochs of a ``tf.data.Dataset`` or of a ``dataset_fn(epoch)``; see the module docstring.

    Args:
        source: The dataset, or a function from the epoch (0-based) to that epoch's dataset.
        steps_per_epoch: Batches per epoch; required when the dataset repeats forever or its
            size is unknown to TensorFlow, else at most its number of batches.
    """

    def __init__(self, source: Any, *, steps_per_epoch: int | None = None) -> None:
        super().__init__(seed=None, shuffle=False)
        self.source = source
        self.is_function = callable(source) and not is_tf_dataset(source)
        self.batch_size = None
        self.steps_per_epoch = self._steps(steps_per_epoch)
        self.n = self.steps_per_epoch
        # One model.fit call for all epochs, each reading one epoch of the stream, where the
        # model can be built from the element spec; else one call an epoch, whose first batch
        # is read here: a dataset_fn (a dataset an epoch), or a dataset whose batches' shapes
        # TensorFlow does not know (Keras would build the model from a batch).
        self.epochs_per_fit = (
            None if not self.is_function and _shapes_known(source.element_spec) else 1
        )
        # A dataset: epoch e is its (e+1)-th pass, unless steps_per_epoch is not its size: then
        # the epochs are consecutive slices of the dataset repeated, as model.fit takes them.
        self.pass_per_epoch = not self.is_function and self.steps_per_epoch == int(
            source.cardinality()
        )
        self._stream: Any = None  # the dataset's iterator, repeated (not for a dataset_fn)
        self._stream_epoch: int | None = None  # the epoch whose first batch the stream holds next
        self._iterator: Any = None  # what for_fit reads: the stream, or the epoch's own iterator
        self._first: Any = None  # the batch at start_step, read here (a dataset_fn; a resume)
        # The current epoch's first batch's fingerprint: set where that batch is read, in
        # start_epoch or inside fit (see _epoch_reader).
        self._fingerprint = _cpu_variable([0] * 8, "uint8")
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

    # -- where an epoch starts ----------------------------------------------------------------

    def start_epoch(
        self, epoch: int, *, resuming: bool = False, expected_fingerprint: str | None = None
    ) -> None:
        """Puts the input at ``start_step`` of ``epoch``, the first epoch of a ``model.fit``
        call: reads the steps before it (replayed, not trained) and the batch there, unless the
        epoch starts at its first step on the stream (the dataset given to fit reads it).
        ``resuming``: a checkpoint was restored, whose order should continue.
        ``expected_fingerprint``: that of the epoch's first batch in the interrupted session;
        a different one means the order differs, said in one line."""
        self._first = None
        if self.is_function:
            iterator = iter(self._pass(epoch))
        else:
            iterator = self._stream_at(epoch, resuming)
            if not self.start_step and self.epochs_per_fit is None:
                self._iterator = iterator  # each pass of for_fit's dataset reads an epoch
                return
            if self.pass_per_epoch:
                _passes(self.source).assign_add(1)  # this epoch's pass starts here
        self._iterator = iterator
        first = next(iterator)
        digest = _fingerprint_tensor(first)
        self._fingerprint.assign(digest)
        if (
            self.start_step
            and not self.order_changed
            and (expected_fingerprint or "").startswith(_FINGERPRINT_SCHEME)
            and expected_fingerprint != _fingerprint_text(digest)
        ):
            self._warn(epoch, "its first batch differs from the interrupted session's")
        for _ in range(self.start_step - 1 if self.start_step else 0):
            next(iterator)
        # The first batch was replayed too: the epoch resumes after it.
        self._first = next(iterator) if self.start_step else first

    def epoch_fingerprint(self) -> str | None:
        """The fingerprint of the current epoch's first batch, for a checkpoint taken in it."""
        return _fingerprint_text(self._fingerprint.numpy())

    def _pass(self, epoch: int) -> Any:
        """A dataset_fn's dataset of ``epoch``, cut to ``steps_per_epoch``."""
        dataset = self._dataset(epoch)
        if self.steps_per_epoch != int(dataset.cardinality()):
            dataset = dataset.take(self.steps_per_epoch)
        return dataset

    def _stream_at(self, epoch: int, resuming: bool) -> Any:
        """The stream at the first batch of ``epoch``: where the previous ``fit`` call of this
        run left it, or a new one (this call's first) after the epochs before: their passes
        made and dropped, or, when epochs are not passes, their batches read again."""
        import tensorflow as tf

        if self._stream is not None and self._stream_epoch == epoch:
            return self._stream
        passes = _passes(self.source)
        done = int(passes.numpy())
        if self.pass_per_epoch:
            if resuming and done > epoch and not self.order_changed:  # once: the rest follow
                self._warn(epoch, f"this dataset object already made {done} passes in this process")
            for _ in range(done, epoch):  # the passes of the epochs trained before
                iter(self.source)
            passes.assign(max(done, epoch))
        else:
            if resuming and done and not self.order_changed:
                self._warn(epoch, f"this dataset object already made {done} passes in this process")
            passes.assign_add(1)
        repeated = self.source.repeat()
        options = tf.data.Options()
        # Fused, shuffle().repeat() could draw the passes' orders otherwise than separate passes.
        options.experimental_optimization.shuffle_and_repeat_fusion = False
        # A prefetch TensorFlow injects after repeat() reads past the last batch of a pass, and
        # so starts the next pass, whose order it draws, unread and uncounted: a later fit
        # call on this object would skip an order. colabkit's reader prefetches instead.
        options.experimental_optimization.inject_prefetch = False
        self._stream = iter(repeated.with_options(options))
        if not self.pass_per_epoch:
            for _ in range(epoch * self.steps_per_epoch):  # read again, not trained
                next(self._stream)
        self._stream_epoch = epoch
        return self._stream

    def _epoch_changed(self) -> None:
        # The training loop starts epoch e: once it is trained, the stream holds e + 1.
        self._stream_epoch = self.epoch + 1

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
        """For building the model (shapes and types): the batch read at ``start_step``, else
        the dataset's element spec, which reads nothing. ``(x, ...)``; a dataset of ``x`` alone
        gives ``(x,)``, as Keras unpacks it."""
        if self._first is None and self.epochs_per_fit is not None:  # read there
            self.start_epoch(self.epoch)
        first = self.source.element_spec if self._first is None else self._first
        return first if isinstance(first, tuple) else (first,)

    def for_fit(self, epoch: int) -> Any:
        """What ``model.fit`` iterates from ``epoch``, step ``start_step``: a dataset that reads
        colabkit's iterator. Its first element is the batch already read, if one was (so that
        building the model took nothing from the iterator); else each pass over it reads one
        epoch of the stream (the steps of a dataset_fn's epoch are read above)."""
        import tensorflow as tf

        if self._iterator is None:
            self.start_epoch(epoch)
        iterator, first = self._iterator, self._first
        self._iterator = None  # _first stays: what the model is built from, once fit starts
        if first is not None:
            rest = tf.data.Dataset.range(len(self) - 1).map(lambda _: iterator.get_next())
            dataset = tf.data.Dataset.from_tensors(first).concatenate(rest)
        else:
            dataset = tf.data.Dataset.range(len(self)).map(self._epoch_reader(iterator))
        # Read ahead, as the user's pipeline does: safe, since the model is built before fit,
        # so Keras trains all that each of its iterators reads (and starts none it does not
        # read: TensorFlow's iterators read nothing until asked for their first element).
        dataset = dataset.prefetch(tf.data.AUTOTUNE)
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(self)))
        # Keras' iterators of it, not the stream: the user's pipeline keeps its own options.
        return without_autotune_thread(dataset)

    def _epoch_reader(self, stream: Any) -> Any:
        """The function mapping step ``i`` of an epoch to the stream's next batch; at step 0 it
        records the batch's fingerprint and, when epochs are passes, counts the pass."""
        import tensorflow as tf

        passes = _passes(self.source) if self.pass_per_epoch else None
        record = self._fingerprint

        def read(i: Any) -> Any:
            batch = stream.get_next()

            def first_step() -> Any:
                updates = [record.assign(_fingerprint_tensor(batch))]
                if passes is not None:
                    updates.append(passes.assign_add(1))
                with tf.control_dependencies(updates):
                    return tf.constant(True)

            done = tf.cond(tf.equal(i, 0), first_step, lambda: tf.constant(False))
            with tf.control_dependencies([done]):
                return tf.nest.map_structure(tf.identity, batch)

        return read
