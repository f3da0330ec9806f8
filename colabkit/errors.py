"""The colabkit exception hierarchy.

Every error a user can act on is a :class:`ColabkitError` whose message is one line: what is wrong,
the value received, and what to do. Some subclasses also derive from a built-in exception so that
callers who already catch ``ValueError`` or ``OSError`` keep working.
"""

from __future__ import annotations


class ColabkitError(Exception):
    """Base class of every error colabkit raises on purpose."""


class ConfigError(ColabkitError, ValueError):
    """An argument or option has a value colabkit cannot use."""


class AcceleratorError(ColabkitError, RuntimeError):
    """The accelerator the user asked for is missing or unusable."""


class DriveError(ColabkitError, OSError):
    """Google Drive could not be mounted, reached or written."""


class StoreError(ColabkitError, OSError):
    """A checkpoint store could not complete an operation (not the same as "absent")."""


class StoreFullError(StoreError):
    """The store has no room: Drive's storage quota (which its trash counts toward) is used up,
    or the disk under a folder store is full. Retrying does not help until space is freed."""


class UploadLimitError(StoreError):
    """Drive refuses uploads for now: the account's upload limit (750 GB a day) is reached.
    It lifts by itself within 24 hours; nothing on Drive needs deleting."""


class StageError(ColabkitError, OSError):
    """Staging training data failed; what was copied is kept, and the same call continues it."""


class CheckpointError(ColabkitError):
    """A checkpoint cannot be written, read or used."""


class CorruptCheckpointError(CheckpointError, ValueError):
    """A checkpoint file is truncated, garbled or fails its checksums."""


class UnsupportedCheckpointError(CheckpointError):
    """A checkpoint is in a newer format than this colabkit reads: upgrade, never skip it.

    Not a :class:`CorruptCheckpointError`: skipping it would resume from an older checkpoint and
    lose the newer one's work, so resume stops here and the file is left untouched.
    """


class ResumeMismatchError(CheckpointError, ValueError):
    """The checkpoint to resume from was made by a different model, optimizer, data or seed."""


class RunSupersededError(ColabkitError):
    """Another session (another VM, a second tab) took this run over: this one stops.

    Not a :class:`CheckpointError`: nothing failed. The run goes on in the newer session, and
    this one commits nothing more to it.
    """


def invalid_argument(name: str, value: object, expected: str) -> ConfigError:
    """Builds the keras-style one-line error for a bad argument value.

    Example: ``Invalid value for argument `keep`. Received: keep=0. Expected an integer >= 1.``
    """
    error = ConfigError(
        f"Invalid value for argument `{name}`. Received: {name}={value!r}. Expected {expected}."
    )
    error.expected = expected  # for a caller that names the argument differently
    return error
