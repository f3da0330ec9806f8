"""The colabkit exception hierarchy.

Every error a user can act on is a :class:`ColabkitError` whose message is one line: what is wrong,
the value received, and what to do. Some subclasses also derive from a built-in exception so that
callers who already catch ``ValueError`` or ``OSError`` keep working.
"""

from __future__ import annotations

from collections.abc import Mapping


class ColabkitError(Exception):
    """Base class of every error colabkit raises on purpose."""

    def for_command_line(self, options: Mapping[str, str]) -> str:
        """The message as a command says it. ``options`` maps the Python arguments to the
        command's options (``fresh`` -> ``--fresh``): a remedy such as "pass fresh=True"
        becomes "pass --fresh"."""
        text = str(self)
        for name, option in options.items():
            text = text.replace(f"{name}=True", option)
        return text


class ConfigError(ColabkitError, ValueError):
    """An argument or option has a value colabkit cannot use.

    Attributes:
        argument: The argument's Python name (None: not one argument's value).
        value: The value received.
        expected: What would have been accepted, as a phrase ("an integer >= 1").
    """

    def __init__(
        self,
        message: str,
        *,
        argument: str | None = None,
        value: object = None,
        expected: str | None = None,
    ) -> None:
        super().__init__(message)
        self.argument, self.value, self.expected = argument, value, expected

    def for_command_line(self, options: Mapping[str, str]) -> str:
        option = options.get(self.argument or "")
        if option is None or self.expected is None:
            return super().for_command_line(options)
        return f"Invalid value for {option}. Received: {self.value!r}. Expected {self.expected}."


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
    return ConfigError(
        f"Invalid value for argument `{name}`. Received: {name}={value!r}. Expected {expected}.",
        argument=name,
        value=value,
        expected=expected,
    )
