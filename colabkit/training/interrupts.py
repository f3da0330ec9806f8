"""Turn SIGTERM and Ctrl-C into "save at the next step boundary, then stop".

A signal arriving in the middle of a training step must not kill the step (or a checkpoint
write) halfway. While training runs, handlers only record the request; the training loop checks
it after each step, saves, and then stops. A second Ctrl-C interrupts at once, as usual.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)


class StopRequests:
    """Why training should stop at the next step boundary (``None``: keep going)."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.signum: int | None = None

    def request(self, reason: str, signum: int | None = None) -> None:
        if self.reason is None:
            self.reason, self.signum = reason, signum

    @contextmanager
    def handle_signals(self) -> Iterator[StopRequests]:
        """Installs SIGTERM/SIGINT handlers for the duration (main thread only; else a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous: dict[int, Any] = {}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if signum == signal.SIGINT and self.reason is not None:
                raise KeyboardInterrupt  # second Ctrl-C: stop now
            name = signal.Signals(signum).name
            log.warning("%s received: saving a checkpoint at the next step, then stopping.", name)
            self.request(name, signum)

        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                previous[signum] = signal.signal(signum, on_signal)
            except (ValueError, OSError):  # pragma: no cover - unusual embedding
                continue
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def reraise(self) -> None:
        """After saving: Ctrl-C becomes KeyboardInterrupt; SIGTERM goes to the old handler."""
        if self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signum == signal.SIGTERM:
            signal.raise_signal(signal.SIGTERM)
