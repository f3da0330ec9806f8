"""Deterministic ops, per backend: what exact resume needs besides saved state.

- TensorFlow: ``tf.config.experimental.enable_op_determinism()`` (ops without a deterministic
  kernel then raise instead of silently differing).
- JAX: on GPU, ``XLA_FLAGS=--xla_gpu_deterministic_ops=true`` must be set *before JAX starts*
  (first cell of the notebook, or the shell); it cannot be switched on afterwards, so colabkit
  only warns when it is missing on a GPU. On CPU, XLA is deterministic already.
- torch: ``torch.use_deterministic_algorithms(True)``.
"""

from __future__ import annotations

import logging
import os

import keras

log = logging.getLogger(__name__)

JAX_FLAG = "--xla_gpu_deterministic_ops=true"


def enable() -> None:
    """Turns on deterministic ops for the current Keras backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif backend == "jax":
        import jax

        if jax.default_backend() != "cpu" and JAX_FLAG not in os.environ.get("XLA_FLAGS", ""):
            log.warning(
                "deterministic=True on JAX needs XLA_FLAGS=%s set before JAX starts; it is "
                "missing, so GPU results may differ between runs. Set it in the first cell "
                "(os.environ['XLA_FLAGS'] = '%s') and restart the runtime.",
                JAX_FLAG,
                JAX_FLAG,
            )
    elif backend == "torch":
        import torch

        torch.use_deterministic_algorithms(True)
