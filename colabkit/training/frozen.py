"""Variables a run does not change, stored once per run instead of in every checkpoint.

A fine-tune of a big pretrained model changes little of it: a frozen base, LoRA-frozen kernels,
frozen embeddings. Copying them into every checkpoint costs host memory, local disk, Drive
quota and Drive's daily upload limit (the Gemma LoRA tutorial: 9.75 GB a save for 11 MB that
changed). Here the model's big non-trainable variables are written once, into a *frozen object*
beside the checkpoints (``frozen-<digest>.ckpt``, the checkpoint format), and each checkpoint
names the variables it leaves to it with their digests.

Leaving a variable out is proven at every save, never assumed from ``trainable``: a custom layer
may assign to a non-trainable variable, Dropout in a frozen block advances its seed state, a
layer may be unfrozen between two ``fit`` calls. Each candidate's bytes are checked against the
value stored once: on a host device by the sha256 of the variable's own buffer (no copy), on an
accelerator by exact, position-weighted integer sums of its bits computed on the device (four
numbers come back, not the variable). On TensorFlow in host memory the hashing waits for the
writer thread: the save keeps a view of each buffer, which TensorFlow leaves untouched (it copies
a buffer before writing it while another reference holds it), and the writer leaves out the
variables whose digest matches and writes the others from their views. A variable that differs,
or that became trainable, is saved in full from then on. Small variables (seed states, a
LossScaleOptimizer's scale, most BatchNormalization statistics) are always saved: checking them
would cost more than they weigh.

At resume the rebuilt model's frozen variables are compared with the digests the checkpoint
names; where they differ (another preset version, another seed), the run's own values are read
from the frozen object and assigned, with one warning naming the first differing variable:
a resume continues on the run's weights, never on others.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from colabkit.checkpoint import (
    FROZEN_KEY,
    array_digest,
    frozen_object_name,
    read_arrays,
    write_checkpoint,
)
from colabkit.errors import ResumeMismatchError
from colabkit.training.host import host_copy, host_view, on_host
from colabkit.training.state import assign, check_shape, numpy_dtype

log = logging.getLogger(__name__)

#: Non-trainable variables smaller than this are saved in every checkpoint, unchecked.
MIN_BYTES = 64 * 1024

#: Returns a verified local path of a frozen object, fetching it from the store if needed.
OpenObject = Callable[[str], Path]


@dataclass
class _Candidate:
    index: int  # position in model.variables
    path: str  # the variable's path, for the log line when it is found changed
    digest: str  # the .npy digest of the value stored once (the frozen object's member)
    check: object  # the per-save check of that value (the digest, or device sums)


class FrozenVariables:
    """Which model variables a trainer's checkpoints leave to the run's frozen object.

    Args:
        cache: Local folder where a new frozen object is written before it is uploaded (the
            checkpoint pipeline uploads it before the first checkpoint that names it).
        open_object: Fetches a frozen object named by a checkpoint (only when a variable of
            the rebuilt model differs from it).
    """

    def __init__(
        self, cache: Path, open_object: OpenObject, has_object: Callable[[str], bool]
    ) -> None:
        self._cache = Path(cache)
        self._open, self._has = open_object, has_object
        self.name: str | None = None
        self._candidates: dict[str, _Candidate] = {}
        self._lock = threading.Lock()  # the writer thread drops candidates it finds changed
        self._started = False

    # -------------------------------------------------------------------------------- saving

    def left_out(self, model: keras.Model) -> tuple[dict[str, str], dict[str, np.ndarray]]:
        """The ``model/NNNN`` keys this save may leave out, with their digests, and the views
        of those whose check is left to the writer thread (see :meth:`finisher`).

        The first call of a run that has no frozen object yet writes one (once, one variable
        in memory at a time) if the model has big non-trainable variables.
        """
        variables = model.variables
        if not self._started:
            self._started = True
            self._write_object(variables, [i for i, v in enumerate(variables) if stored_once(v)])
        unchanged: dict[str, str] = {}
        deferred: dict[str, np.ndarray] = {}
        with self._lock:
            candidates = list(self._candidates.items())
        for key, candidate in candidates:
            variable = variables[candidate.index]
            if variable.trainable:
                self._drop(key, "became trainable")
            elif _deferrable(variable):
                deferred[key] = host_view(variable)
                unchanged[key] = candidate.digest
            elif _check(variable) == candidate.check:
                unchanged[key] = candidate.digest
            else:
                self._drop(key, "changed")
        return unchanged, deferred

    def finisher(self, deferred: Mapping[str, np.ndarray]) -> Callable[[dict, dict], None] | None:
        """The check of ``deferred`` views, for the writer thread: a view whose digest differs
        is written into the checkpoint (it holds the value at the save: TensorFlow copies a
        variable before writing it while a view of it is held) instead of being left out."""
        if not deferred:
            return None

        def finish(arrays: dict, state: dict) -> None:
            record = state[FROZEN_KEY]
            for key, view in deferred.items():
                if array_digest(view) != record["arrays"][key]:
                    arrays[key] = view
                    del record["arrays"][key]
                    self._drop(key, "changed")
            if not record["arrays"]:
                del state[FROZEN_KEY]

        return finish

    def _drop(self, key: str, why: str) -> None:
        with self._lock:
            candidate = self._candidates.pop(key, None)
        if candidate is not None:
            log.info(
                "%s %s since it was stored once: saved in every checkpoint from now on",
                candidate.path,
                why,
            )

    def state(self, unchanged: Mapping[str, str]) -> dict | None:
        """The checkpoint's record of what it leaves out (None: it leaves nothing out)."""
        if not unchanged or self.name is None:
            return None
        return {"name": self.name, "arrays": dict(unchanged)}

    def _write_object(self, variables: Sequence[Any], chosen: list[int]) -> None:
        if not chosen:
            return
        self._cache.mkdir(parents=True, exist_ok=True)
        pending = self._cache / "frozen-pending.ckpt"
        pairs = ((_key(i), host_copy(variables[i])) for i in chosen)
        digests = write_checkpoint(pending, pairs, {"kind": "frozen"})
        self.name = frozen_object_name(digests)
        os.replace(pending, self._cache / self.name)
        for i in chosen:
            digest = digests[_key(i)]
            baseline = _baseline(variables[i], digest)
            self._candidates[_key(i)] = _Candidate(i, variables[i].path, digest, baseline)
        size = (self._cache / self.name).stat().st_size
        log.info(
            "Stored %d frozen variables (%.1f MB) once in %s; checkpoints leave them out while "
            "they stay unchanged",
            len(chosen),
            size / 1e6,
            self.name,
        )

    # ------------------------------------------------------------------------------ restoring

    def restore(self, model: keras.Model, state: Mapping[str, Any]) -> None:
        """Brings the variables a checkpoint left out back to the run's values.

        Each is compared with its digest (on the host, one variable at a time); those that
        differ are read from the frozen object and assigned, one at a time, with one warning.

        Raises:
            ResumeMismatchError: a variable differs and the frozen object cannot be read
                (nothing was assigned then).
        """
        record = state.get(FROZEN_KEY)
        if not record:  # the run stored nothing once (yet): the next save decides afresh
            return
        self._started = True
        name, left = str(record["name"]), dict(record["arrays"])
        variables = model.variables
        differing = [
            key
            for key, digest in left.items()
            if _index(key, variables) is None
            or host_digest(variables[_index(key, variables)]) != digest
        ]
        self._assign_differing(name, differing, variables)
        self.name = name
        for key, digest in left.items():
            index = _index(key, variables)
            if index is not None:
                self._candidates[key] = _Candidate(index, variables[index].path, digest, None)

    def settle(self, model: keras.Model) -> None:
        """After the restored values are assigned: the checks each later save compares with."""
        variables = model.variables
        for candidate in self._candidates.values():
            if candidate.check is None:
                candidate.check = _baseline(variables[candidate.index], candidate.digest)
        if self.name is not None and self._candidates and not self._has(self.name):
            lost = self.name
            indices = sorted(c.index for c in self._candidates.values())
            self._candidates.clear()
            self._write_object(variables, indices)
            log.warning(
                "The run's frozen object %s was missing; stored again from this model, which "
                "matches it, as %s",
                lost,
                self.name,
            )

    def _assign_differing(self, name: str, keys: list[str], variables: Sequence[Any]) -> None:
        if not keys:
            return
        index = _index(keys[0], variables)
        first = variables[index].path if index is not None else keys[0]
        try:
            path = self._open(name)  # verified whole before anything is assigned
        except Exception as e:  # noqa: BLE001 -- said in one line; the resume must not go on
            raise ResumeMismatchError(
                f"Cannot resume: the model's frozen variable {first} differs from the run's "
                f"({len(keys)} differ), and the run's own copy {name} cannot be read "
                f"({type(e).__name__}: {e}). Rebuild the model as the run did (same preset, "
                "dtype and seed), or pass fresh=True to archive the old checkpoints and start "
                "over."
            ) from None
        for key, value in read_arrays(path, keys):
            variable = variables[_index(key, variables)]
            check_shape(variable, value, f"{name}:{key}")
            assign(variable, value)
            del value  # one variable of the frozen model in memory at a time
        log.warning(
            "This model's frozen weights differ from the run's (first: %s; %d variable(s)): "
            "restored the run's own from %s, so training continues on the run's weights",
            first,
            len(keys),
            name,
        )


def _key(index: int) -> str:
    return f"model/{index:04d}"


def _index(key: str, variables: Sequence[Any]) -> int | None:
    try:
        index = int(key.split("/", 1)[1])
    except (IndexError, ValueError):
        return None
    return index if key.startswith("model/") and 0 <= index < len(variables) else None


def stored_once(variable: Any) -> bool:
    """Whether a variable goes to the run's frozen object (if it stays unchanged)."""
    if variable.trainable or _is_seed_state(variable):
        return False
    return _nbytes(variable) >= MIN_BYTES


def checkpoint_bytes(model: keras.Model) -> tuple[int, int]:
    """An estimate, before the first save, of (bytes of one checkpoint, bytes stored once):
    the model's, optimizer's and metrics' variables, less the frozen ones."""
    frozen = sum(_nbytes(v) for v in model.variables if stored_once(v))
    optimizer = getattr(model, "optimizer", None)
    others = [*(optimizer.variables if optimizer is not None else ()), *model.metrics_variables]
    every = sum(_nbytes(v) for v in model.variables) + sum(_nbytes(v) for v in others)
    return every - frozen, frozen


def _nbytes(variable: Any) -> int:
    try:
        itemsize = numpy_dtype(variable.dtype).itemsize
    except TypeError:  # refused with its name by the save itself
        return 0
    return int(np.prod(variable.shape, dtype=np.int64)) * itemsize


def _is_seed_state(variable: Any) -> bool:
    return "seed_generator_state" in str(getattr(variable, "path", ""))


def _deferrable(variable: Any) -> bool:
    """Whether a variable's check can wait for the writer thread: a view of a TensorFlow
    variable in host memory keeps the value it had (TensorFlow copies a buffer on write while
    another reference holds it). Not so under JAX: a view held on a CPU device stops the next
    step from reusing its buffer, a copy of every frozen variable at each step."""
    return keras.backend.backend() == "tensorflow" and on_host(variable)


def host_digest(variable: Any) -> str:
    """The ``.npy`` digest of a variable's value, read without a copy where it is on the host."""
    return array_digest(host_view(variable))


def _baseline(variable: Any, digest: str) -> object:
    """What ``_check`` returns for the value stored once (the digest itself on the host)."""
    return digest if on_host(variable) else device_checksum(variable)


def _check(variable: Any) -> object:
    return host_digest(variable) if on_host(variable) else device_checksum(variable)


# ---------------------------------------------------------------------------- device checksums
#
# Each element's bits, as 32-bit words split into 16-bit halves, summed plain and weighted by
# two position-dependent weights. The sums are exact (no rounding), so a change in any one
# element always shows, and so does moving values around (the weights differ by position);
# only a change crafted against these sums could pass. Four numbers leave the device.


def device_checksum(variable: Any) -> tuple[int, ...]:
    """Exact integer sums of a variable's bits, computed where the variable lives."""
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            return tuple(int(x) for x in np.asarray(_jax_checksum()(variable.value)))
        if backend == "tensorflow":
            return _tf_checksum(variable.value)
    except Exception as e:  # noqa: BLE001 -- an exotic dtype: the host digest is always right
        log.debug("Device checksum of %s failed (%s); using its host digest", variable.path, e)
    return (host_digest(variable),)


@functools.cache
def _jax_checksum() -> Callable[[Any], Any]:
    import jax
    import jax.numpy as jnp

    def words(x):
        if x.dtype == jnp.bool_:
            x = x.astype(jnp.uint8)
        width = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
        return jax.lax.bitcast_convert_type(x, width).reshape(-1).astype(jnp.uint32)

    @jax.jit
    def checksum(x):
        w = words(x)
        i = jnp.arange(w.shape[0], dtype=jnp.uint32)
        lo, hi = w & 0xFFFF, w >> 16
        a, b = i * 40503 % 65521 + 1, i * 30011 % 65519 + 1
        return jnp.stack([lo.sum(), hi.sum(), (lo * a).sum(), (hi * b).sum()])

    return checksum


_TF_CHUNK = 1 << 22


def _tf_checksum(value: Any) -> tuple[int, ...]:
    import tensorflow as tf

    x = tf.convert_to_tensor(value)
    if x.dtype == tf.bool:
        x = tf.cast(x, tf.uint8)
    width = {1: tf.uint8, 2: tf.uint16, 4: tf.uint32, 8: tf.uint32}[x.dtype.size]
    flat = tf.reshape(tf.bitcast(x, width), [-1])
    n = int(flat.shape[0])
    total = np.zeros(4, dtype=object)
    for start in range(0, n, _TF_CHUNK):
        part = _tf_chunk_sums()(flat[start : start + _TF_CHUNK], tf.constant(start, tf.int64))
        total += np.array([int(v) for v in part.numpy()], dtype=object)
    return tuple(int(v) % (1 << 32) for v in total)


@functools.cache
def _tf_chunk_sums() -> Callable[[Any, Any], Any]:
    import tensorflow as tf

    @tf.function(autograph=False, reduce_retracing=True)
    def sums(words, offset):  # int64 throughout: no sum of a chunk can overflow
        w = tf.cast(words, tf.int64)
        lo, hi = tf.bitwise.bitwise_and(w, 0xFFFF), tf.bitwise.right_shift(w, 16)
        i = (tf.range(tf.size(w, out_type=tf.int64), dtype=tf.int64) + offset) % (1 << 32)
        a = tf.math.floormod(i * 40503 % (1 << 32), 65521) + 1
        b = tf.math.floormod(i * 30011 % (1 << 32), 65519) + 1
        return tf.stack(
            [tf.reduce_sum(lo), tf.reduce_sum(hi), tf.reduce_sum(lo * a), tf.reduce_sum(hi * b)]
        )

    return sums
