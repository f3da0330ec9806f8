"""Progress of a staging copy: tqdm in a notebook where it is installed, else a plain line."""

from __future__ import annotations

import sys
import threading
from typing import Any

from colabkit.clock import Clock
from colabkit.duration import format_duration, format_size


class Progress:
    """Progress of a copy: tqdm in a notebook where it is installed, else a line every 10 s;
    nothing for copies done within a few seconds."""

    QUIET_S, EVERY_S = 3.0, 10.0

    def __init__(self, what: str, total: int, clock: Clock, *, enabled: bool) -> None:
        self.what, self.total, self.clock, self.enabled = what, total, clock, enabled
        self.done = 0
        self.started = self._last = clock.monotonic()
        self._bar: Any = None
        self._printed = False
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        if not self.enabled or not n:
            return
        with self._lock:
            self.done += n
            now = self.clock.monotonic()
            if now - self.started < self.QUIET_S:
                return
            if self._bar is None and "ipykernel" in sys.modules:
                self._bar = _tqdm(self.total, self.what)
                if self._bar is not None:
                    self._bar.update(self.done)
                    return
            if self._bar:
                self._bar.update(n)
            elif now - self._last >= self.EVERY_S or not self._printed:
                self._last, self._printed = now, True
                print(f"colabkit: staging {self.what}: {self._line(now)}", file=sys.stderr)

    def _line(self, now: float) -> str:
        seconds = max(now - self.started, 1e-9)
        rate = self.done / seconds
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta = f"about {format_duration(left)} left" if left != float("inf") else "waiting"
        share = f"{100 * self.done / self.total:.0f}%" if self.total else "100%"
        done, total = format_size(self.done), format_size(self.total)
        return f"{done} of {total} ({share}), {format_size(rate)}/s, {eta}"

    def close(self) -> None:
        if self._bar:
            self._bar.close()
        elif self._printed:
            print(
                f"colabkit: staged {self.what}: {self._line(self.clock.monotonic())}",
                file=sys.stderr,
            )


def _tqdm(total: int, what: str) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=f"staging {what}", unit="B", unit_scale=True)
