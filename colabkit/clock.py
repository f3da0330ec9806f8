"""Time as an injected dependency.

Everything in colabkit that depends on time (save-every-T policies, session deadlines, retry
backoff) reads it through a :class:`Clock`, so tests advance a :class:`FakeClock` instead of
sleeping.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Wall-clock and monotonic time, and a way to wait."""

    def time(self) -> float:
        """Seconds since the Unix epoch (wall clock; may jump)."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never goes backwards."""
        ...

    def sleep(self, seconds: float) -> None:
        """Waits ``seconds``; a fake clock advances instead."""
        ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class FakeClock:
    """A clock for tests: time moves only when ``advance()`` or ``sleep()`` is called.

    Thread-safe, so a background thread that backs off with ``sleep()`` advances it too.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self._mono = 0.0
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def time(self) -> float:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
            self._mono += seconds

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))


SYSTEM_CLOCK = SystemClock()
