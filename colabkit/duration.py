"""Durations written the way people write them: ``"12h"``, ``"90m"``, ``"1h30m"``, ``"30s"``
(and, for the same reports, sizes in bytes).

Session limits and time-based save policies both take a duration; parsing it in one place keeps
``--session-limit 12h`` and ``save_every="10m"`` in agreement about what is accepted.
"""

from __future__ import annotations

import math
import re

from colabkit.errors import invalid_argument

_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?[dhms])+")
_EXPECTED = "a positive duration such as '12h', '90m', '1h30m', '30s', or a number of seconds"


def parse_duration(value: object, argname: str = "duration") -> float:
    """Returns ``value`` as a positive number of seconds.

    Accepts a number of seconds (int, float, or a numeric string such as ``"45"``) or a string of
    ``<number><unit>`` parts with units d, h, m, s (``"1h30m"``, ``"2.5h"``), case and surrounding
    space ignored. Zero, negative, NaN and infinite values are rejected: every caller uses a
    duration as an interval or a deadline, and none of those make sense there.

    Args:
        value: What the user gave.
        argname: The argument name to show in the error, e.g. ``"session_limit"``.

    Raises:
        ConfigError: ``value`` is not a positive, finite duration.
    """
    seconds = _to_seconds(value)
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise invalid_argument(argname, value, _EXPECTED)
    return seconds


def _to_seconds(value: object) -> float | None:
    if isinstance(value, bool):  # bool is an int; True seconds is a mistake, not a duration
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str):
        return None
    text = value.strip().lower().replace(" ", "")
    try:
        return float(text)
    except ValueError:
        pass
    if not _WHOLE.fullmatch(text):
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(text))


def format_duration(seconds: float) -> str:
    """A duration as a person says it, at the precision it deserves: ``"< 1 s"``, ``"45 s"``,
    ``"3 min"``, ``"2 h 10 min"``, ``"2 h"`` (``"-3 min"`` past a limit).

    The one wording of every duration colabkit shows: the plan line, ``colabkit status``, the
    notebook, ``doctor``. Seconds count under a minute, minutes under an hour (rounded), then
    hours and minutes; a day is 24 h, not a unit of its own (sessions are counted in hours).
    """
    if not math.isfinite(seconds):
        return "unknown"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 1:
        return "< 1 s"
    if _round(seconds) < 60:
        return f"{sign}{_round(seconds)} s"
    minutes = _round(seconds / 60)
    if minutes < 60:
        return f"{sign}{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{sign}{hours} h" + (f" {minutes} min" if minutes else "")


def _round(value: float) -> int:
    """Half up, as people round (``round`` sends 2.5 to 2)."""
    return int(value + 0.5)


def format_size(size: float) -> str:
    """Formats bytes as ``"512 B"`` / ``"1.2 MB"`` / ``"3.4 GB"`` (powers of 1000) for reports."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")  # pragma: no cover
