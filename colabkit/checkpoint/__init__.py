"""Checkpoints: the file format, when to save and what to keep, and the manager that runs them.

The public face of the package: everything outside it imports from here (import-linter checks
it, see ``pyproject.toml``); the modules behind it are its own business.

- Saving and resuming: :class:`CheckpointManager` (background writing to local cache,
  mirroring to a store, pruning, resume), :func:`run_store` (a run directory or URL to its
  store, the one route).
- What to save and keep: :func:`parse_save_every`, :func:`parse_keep` and the policies
  (:class:`KeepLast`, :class:`KeepBest`, :class:`KeepEvery`, :class:`KeepAll`).
- The file: :func:`verify`, :func:`read_state`, :func:`checkpoint_name`, :func:`step_of`, and
  what the training side needs to store arrays (``write_checkpoint``, ``read_arrays``, the
  frozen objects' names, the dtype names of ``npy``).
- The saved run state: :class:`RunState`, the one owner of ``state.json``'s keys (written by
  the training loop and the callbacks, read by resume, ``status`` and ``ckpt``).
- Reading a run: the modules ``inventory`` (``colabkit ckpt``), ``space`` (room on the store)
  and the session log (:class:`Sessions`, :class:`Chain`) that ``colabkit status`` reads.

Importing this package never imports keras or tensorflow.
"""

from __future__ import annotations

from colabkit.checkpoint import inventory, space
from colabkit.checkpoint.catalog import (
    describe_failure,
    record_from_state,
    store_call,
    store_checkpoints,
)
from colabkit.checkpoint.chain import Chain
from colabkit.checkpoint.format import (
    FROZEN_KEY,
    CheckpointContents,
    array_digest,
    checkpoint_name,
    frozen_object_name,
    frozen_object_of,
    is_frozen_object,
    read_arrays,
    read_state,
    step_of,
    verify,
    write_checkpoint,
)
from colabkit.checkpoint.inventory import is_colabkit_file
from colabkit.checkpoint.manager import CheckpointManager
from colabkit.checkpoint.npy import dtype_from_name, dtype_name
from colabkit.checkpoint.pipeline import IN_STORE_MARKER
from colabkit.checkpoint.policy import (
    CheckpointRecord,
    KeepAll,
    KeepBest,
    KeepEvery,
    KeepLast,
    KeepPolicy,
    SavePolicy,
    parse_keep,
    parse_save_every,
)
from colabkit.checkpoint.run_state import RunState
from colabkit.checkpoint.runs import (
    CHECKPOINTS_FOLDER,
    default_cache,
    forget_cache,
    is_url,
    open_manager,
    refuse_if_all_corrupt,
    run_store,
    store_for,
)
from colabkit.checkpoint.sessions import PREFIX as SESSIONS_PREFIX
from colabkit.checkpoint.sessions import Claim, Sessions

__all__ = [
    "CHECKPOINTS_FOLDER",
    "FROZEN_KEY",
    "IN_STORE_MARKER",
    "SESSIONS_PREFIX",
    "Chain",
    "CheckpointContents",
    "CheckpointManager",
    "CheckpointRecord",
    "Claim",
    "RunState",
    "KeepAll",
    "KeepBest",
    "KeepEvery",
    "KeepLast",
    "KeepPolicy",
    "SavePolicy",
    "Sessions",
    "array_digest",
    "checkpoint_name",
    "default_cache",
    "describe_failure",
    "dtype_from_name",
    "dtype_name",
    "forget_cache",
    "frozen_object_name",
    "frozen_object_of",
    "inventory",
    "is_colabkit_file",
    "is_frozen_object",
    "is_url",
    "open_manager",
    "parse_keep",
    "parse_save_every",
    "read_arrays",
    "read_state",
    "record_from_state",
    "refuse_if_all_corrupt",
    "run_store",
    "store_for",
    "space",
    "step_of",
    "store_call",
    "store_checkpoints",
    "verify",
    "write_checkpoint",
]
