"""Argument validators: one check per kind of value, shared by ``fit``, the callbacks, the
policies, ``MnistConfig`` and the command line.

Each validator takes the argument's name and its value, and returns the value in the type the
caller works with (a numpy integer becomes an ``int``: ``model.fit`` takes them, JSON does not)
or raises a :class:`~colabkit.errors.ConfigError` whose ``argument``, ``value`` and ``expected``
let each caller word it: Python says ``Received: epochs=0``, the command line ``--epochs``
(``colabkit.cli`` turns these same functions into argparse ``type=`` functions).

A bool is never an integer here, although Python says it is: ``epochs=True`` is a mistake.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from colabkit.errors import invalid_argument

__all__ = [
    "Validator",
    "flag",
    "fraction",
    "natural_int",
    "one_of",
    "optional",
    "positive_int",
    "renamed",
    "renamed_attribute",
]

T = TypeVar("T")

#: ``validator(name, value) -> value`` (converted), raising ConfigError.
Validator = Callable[[str, Any], Any]

POSITIVE_INT = "an integer >= 1"
NATURAL_INT = "an integer >= 0"


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(name: str, value: Any) -> int:
    """An integer >= 1 (any integer type, numpy's too; not a bool)."""
    if not _is_integer(value) or value < 1:
        raise invalid_argument(name, value, POSITIVE_INT)
    return int(value)


def natural_int(name: str, value: Any) -> int:
    """An integer >= 0 (a seed, a step)."""
    if not _is_integer(value) or value < 0:
        raise invalid_argument(name, value, NATURAL_INT)
    return int(value)


def fraction(name: str, value: Any) -> float:
    """A number in [0, 1) (``validation_split``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise invalid_argument(name, value, "a float in [0, 1)")
    return float(value)


def flag(name: str, value: Any) -> bool:
    """True or False (not 0, 1 or "yes": a truthy mistake must not switch a behaviour on)."""
    if not isinstance(value, bool):
        raise invalid_argument(name, value, "True or False")
    return value


def one_of(choices: Sequence[str]) -> Validator:
    """A validator for one of ``choices`` (strings)."""

    def check(name: str, value: Any) -> str:
        if value not in choices:
            raise invalid_argument(name, value, f"one of {', '.join(choices)}")
        return value

    return check


def optional(validator: Callable[[str, Any], T]) -> Callable[[str, Any], T | None]:
    """``validator`` that lets None through (an argument whose default is "choose for me")."""

    def check(name: str, value: Any) -> T | None:
        return None if value is None else validator(name, value)

    return check


def renamed(old: str, new: str, old_value: Any, new_value: Any) -> Any:
    """The value of an argument renamed in 0.2 (``staging_dir`` is ``cache_dir``): the old
    name still works for a release, with a DeprecationWarning; both at once is refused."""
    if old_value is None:
        return new_value
    if new_value is not None:
        raise invalid_argument(old, old_value, f"None: it is the old name of `{new}`, given too")
    _warn_renamed(old, new, stacklevel=4)  # the line that called fit(staging_dir=...)
    return old_value


def renamed_attribute(old: str, new: str) -> property:
    """A read-only attribute ``old`` that warns and reads ``new`` (renamed in 0.2)."""

    def read(self: Any) -> Any:
        _warn_renamed(old, new, stacklevel=3)  # the line that reads it
        return getattr(self, new)

    return property(read, doc=f"Deprecated: the old name of ``{new}`` (gone in colabkit 0.3).")


def _warn_renamed(old: str, new: str, *, stacklevel: int) -> None:
    warnings.warn(
        f"`{old}` is now called `{new}`; `{old}` stops working in colabkit 0.3.",
        DeprecationWarning,
        stacklevel=stacklevel,
    )
