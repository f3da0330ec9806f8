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
    """Formats seconds as ``"11h 58m"`` / ``"4m 10s"`` / ``"-3m 0s"`` for reports."""
    sign = "-" if seconds < 0 else ""
    total = int(round(abs(seconds)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{sign}{hours}h {minutes:02d}m"
    return f"{sign}{minutes}m {secs:02d}s"


def format_size(size: float) -> str:
    """Formats bytes as ``"512 B"`` / ``"1.2 MB"`` / ``"3.4 GB"`` (powers of 1000) for reports."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")  # pragma: no cover
