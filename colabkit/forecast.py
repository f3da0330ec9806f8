"""Will the run finish in this session? The plan that ``colabkit.fit`` prints and that
``colabkit status`` shows.

Pure arithmetic over where the run is, how long a step takes and how long sessions last; time
arrives as data, so every line can be tested with plain numbers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from colabkit.duration import format_duration


@dataclass(frozen=True)
class Forecast:
    """Where a run is and when it ends.

    Attributes:
        global_step: Steps trained so far (all sessions).
        steps_per_epoch: Steps in one epoch.
        epochs: The run's total epochs (None: not known, e.g. a run from an older colabkit).
        seconds_per_step: Wall seconds per step, validation and saving included (None: not
            measured yet).
        measured: Where ``seconds_per_step`` comes from: ``"here"`` (this session) or
            ``"earlier sessions"`` (another GPU may be faster or slower).
        session_left: Seconds this session can still train before colabkit stops it ahead of
            the session limit (None: no limit here).
        session_length: Seconds a new session can train (None: no limit).
        now: Seconds since the epoch.
        limits_known: False where the plan is made away from the session that trains (e.g.
            ``colabkit status``): its session limit is not known there, so ``more_sessions`` and
            ``finish`` are None, never "0" and a date in 1970.
        ended: The run has ended (a callback such as EarlyStopping may end it before
            ``epochs``): nothing is left to train.
    """

    global_step: int
    steps_per_epoch: int
    epochs: int | None
    seconds_per_step: float | None = None
    measured: str = "here"
    session_left: float | None = None
    session_length: float | None = None
    now: float = 0.0
    limits_known: bool = True
    ended: bool = False

    @property
    def epoch(self) -> int:
        """Complete epochs."""
        return self.global_step // self.steps_per_epoch

    @property
    def step(self) -> int:
        """Steps into the epoch in progress."""
        return self.global_step % self.steps_per_epoch

    @property
    def steps_left(self) -> int | None:
        if self.ended:
            return 0
        if self.epochs is None:
            return None
        return max(0, self.epochs * self.steps_per_epoch - self.global_step)

    @property
    def seconds_per_epoch(self) -> float | None:
        if self.seconds_per_step is None:
            return None
        return self.seconds_per_step * self.steps_per_epoch

    @property
    def seconds_left(self) -> float | None:
        """Training time to the end of the run (not counting the gaps between sessions)."""
        if self.steps_left is None or self.seconds_per_step is None:
            return None
        return self.steps_left * self.seconds_per_step

    @property
    def more_sessions(self) -> int | None:
        """Sessions needed after this one (0: it ends in this session; None: unknown)."""
        left = self.seconds_left
        if left is None or not self.limits_known:
            return None
        if self.session_left is None or left <= self.session_left:
            return 0
        if not self.session_length:
            return None
        return math.ceil((left - self.session_left) / self.session_length)

    @property
    def reaches_epoch(self) -> int | None:
        """The epoch this session completes before its limit stops it (None: no limit)."""
        if self.session_left is None or self.seconds_per_step is None or self.epochs is None:
            return None
        steps = self.global_step + int(self.session_left / self.seconds_per_step)
        return min(self.epochs, steps // self.steps_per_epoch)

    @property
    def finish(self) -> float | None:
        """When the run ends if each further session starts as soon as the last one stops."""
        left = self.seconds_left
        if left is None or not self.limits_known:
            return None
        return self.now + left

    def where(self) -> str:
        """``"epoch 3/15 done"`` or ``"epoch 4/15 at step 600/975"``."""
        total = f"/{self.epochs}" if self.epochs is not None else ""
        if self.step == 0:
            return f"epoch {self.epoch}{total} done"
        return f"epoch {self.epoch + 1}{total} at step {self.step}/{self.steps_per_epoch}"

    def line(self) -> str:
        """The plan in one line, e.g. ``epoch 3/15 done; 41 s an epoch here; 12 epochs left,
        about 8 min; ends in this session (5 h left in it)``."""
        outlook = self.outlook()
        if not outlook:
            return f"{self.where()}; the time an epoch takes is known after the first one here"
        if self.seconds_left is not None:
            outlook.append(self._ending())
        return "; ".join([self.where(), *outlook])

    def outlook(self) -> list[str]:
        """``["41 s an epoch here", "12 epochs left, about 8 min"]`` (empty: no pace yet)."""
        if self.seconds_per_epoch is None:
            return []
        parts = [f"{_time(self.seconds_per_epoch)} an epoch {self._measured()}"]
        left = self.seconds_left
        if left is not None:
            epochs_left = self.steps_left / self.steps_per_epoch  # type: ignore[operator]
            parts.append(f"{_epochs(epochs_left)} left, {_about(left)}")
        return parts

    def _measured(self) -> str:
        return "here" if self.measured == "here" else f"in {self.measured}"

    def _ending(self) -> str:
        more = self.more_sessions
        if self.session_left is None:
            return "no session limit here"
        if more == 0:
            return f"ends in this session ({_time(self.session_left)} left in it)"
        reached = self.reaches_epoch
        text = f"this session reaches epoch {reached} before its limit"
        if more is None:
            return text
        plural = "s" if more > 1 else ""
        finish = time.strftime("%b %d %H:%M UTC", time.gmtime(self.finish))
        return (
            f"{text}, then {more} more session{plural}: done about {finish} if each starts at once"
        )

    def to_json(self) -> dict:
        """The fields ``colabkit status --json`` shows under ``forecast``."""
        return {
            "seconds_per_epoch": self.seconds_per_epoch,
            "measured": self.measured,
            "seconds_left": self.seconds_left,
            "more_sessions": self.more_sessions,
            "finish": self.finish,
        }


def _epochs(count: float) -> str:
    if count == int(count):
        return f"{int(count)} epoch{'s' if count != 1 else ''}"
    return f"{count:.1f} epochs"


def _time(seconds: float) -> str:
    return format_duration(seconds)


def _about(seconds: float) -> str:
    """``"about 8 min"``; a time under a second is no estimate: ``"< 1 s"``."""
    text = format_duration(seconds)
    return text if text.startswith("<") else f"about {text}"
