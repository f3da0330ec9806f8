"""``SessionDeadline``: stop cleanly, saved and durable, before the Colab session limit.

Used by ``colabkit.fit`` (whose loop saves) and, as a callback, by a plain ``model.fit`` with
colabkit's ``Checkpoint`` callback (exported from ``colabkit.callbacks``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Protocol

import keras

from colabkit.clock import SYSTEM_CLOCK, Clock
from colabkit.duration import parse_duration

log = logging.getLogger(__name__)


class SavesNow(Protocol):
    """What the deadline needs of a checkpoint callback: save now, say whether it is durable."""

    def save_now(self, timeout: float | None = None) -> bool: ...


#: At a session-limit stop, how long before the limit itself colabkit stops waiting for the
#: store and says the checkpoint is not durable (while the VM is still there to show it).
FINAL_WORDS_S = 60.0


class SessionDeadline(keras.callbacks.Callback):
    """Stops training ``margin`` before the session limit, after a durable checkpoint.

    Inside ``colabkit.fit`` the loop saves, waits until the checkpoint is in the store, flushes
    the Drive mount and stops. In a plain ``model.fit``, pass the colabkit ``Checkpoint`` (or
    ``BackupAndRestore``) callback as ``checkpoint`` so that it can save first.

    Args:
        margin: How long before the limit to stop (``"15m"``): enough to save and upload.
        session_limit: The session limit (``"12h"``, ``"24h"``); default: the environment's.
        session_start: Seconds since the epoch when the session started (default: detected).
        checkpoint: In a plain ``model.fit``, the colabkit checkpoint callback to save with.
        clock: Injected clock (tests).
    """

    def __init__(
        self,
        margin: str | float = "15m",
        *,
        session_limit: str | float | None = None,
        session_start: float | None = None,
        checkpoint: SavesNow | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__()
        self.margin = parse_duration(margin, "margin")
        self.clock = clock or SYSTEM_CLOCK
        self.checkpoint = checkpoint
        self.session_length: float | None = None  # how long a whole session trains
        self.deadline = self._deadline(session_limit, session_start)
        self.triggered = False

    def _deadline(self, session_limit: Any, session_start: float | None) -> float:
        if session_limit is math.inf:
            return math.inf
        from colabkit import env

        limit = env.check_session_limit(session_limit or env.DEFAULT_SESSION_LIMIT, self.margin)
        if session_start is None:
            session_start = env.detect(session_limit=None).session_start
        self.session_length = limit - self.margin
        return session_start + self.session_length

    @classmethod
    def never(cls) -> SessionDeadline:
        """A deadline that is never reached (no session limit)."""
        return cls(session_limit=math.inf)

    def reached(self) -> bool:
        return self.clock.time() >= self.deadline

    def seconds_left(self) -> float | None:
        """How long this session trains before the stop (None: no limit)."""
        if self.deadline == math.inf:
            return None
        return max(0.0, self.deadline - self.clock.time())

    def store_wait_budget(self) -> float:
        """How long, after a stop here, to wait for the store: until ``FINAL_WORDS_S`` before
        the session limit itself, so that "not durable" is said while the VM still lives."""
        return max(0.0, self.deadline + self.margin - FINAL_WORDS_S - self.clock.time())

    def after_save(self, *, durable: bool) -> None:
        """Flushes the Drive mount once the checkpoint is saved (it unmounts: the end is near),
        within the time left before the limit's last words; a failure is a warning."""
        self.triggered = True
        if not durable:
            return
        from colabkit import drive

        budget = self.store_wait_budget()
        if budget <= 0:
            log.warning("No time left to flush Google Drive: the newest files may not be on it.")
            return
        try:
            drive.flush_drive(timeout_ms=int(budget * 1000))
        except Exception as e:  # noqa: BLE001 - the checkpoint is saved; say what may be missing
            log.warning(
                "Flushing Google Drive failed (%s): the files written in the last minutes (the "
                "newest checkpoint included) may exist only in this VM's Drive cache. If the "
                "session still lives, mount Drive again and run `colabkit ckpt verify`.",
                e,
            )

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if self.triggered or not self.reached():
            return
        durable = True
        if self.checkpoint is not None:
            durable = self.checkpoint.save_now(timeout=self.store_wait_budget())
        self.after_save(durable=durable)
        self._model.stop_training = True
        print("colabkit: session limit near: checkpoint saved; re-run in a new session to resume.")


def deadline_for(callbacks: Sequence[Any], session_limit: Any, clock: Clock) -> SessionDeadline:
    """The deadline ``colabkit.fit`` obeys: a ``SessionDeadline`` among ``callbacks``, else
    one for ``session_limit`` (None or "auto": the environment's; False: none)."""
    for callback in callbacks:
        if isinstance(callback, SessionDeadline):
            return callback
    if session_limit is False:
        return SessionDeadline.never()
    from colabkit import env

    if session_limit is None or session_limit is True or env.is_auto(session_limit):
        session_limit = env.detect(session_limit=env.AUTO).session_limit_s
        if session_limit is None:
            return SessionDeadline.never()  # no session limit outside Colab and Kaggle
    return SessionDeadline(session_limit=session_limit, clock=clock)
