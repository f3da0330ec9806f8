"""What ``colabkit.fit`` shows where the user looks: the resume, the true step, the plan.

Keras' own progress bar knows only the ``model.fit`` call it is in: a resumed epoch is a call of
its remaining steps, so the bar would count them from 1. ``RunProgbar`` is that bar with the
run's numbering (the epoch of the total, the step of the whole epoch, an ETA from this
segment's own pace), and after each epoch one line of plan (see ``colabkit.forecast``).
"""

from __future__ import annotations

import logging
from typing import Any

import keras
from keras.utils import Progbar

from colabkit.clock import Clock
from colabkit.duration import format_duration
from colabkit.forecast import Forecast
from colabkit.training.deadline import SessionDeadline

log = logging.getLogger(__name__)


def say(line: str, verbose: Any) -> None:
    """Prints a colabkit line under the cell (or on the terminal) unless ``verbose=0``; a log
    record at INFO either way is what the CLI and logging setups already show."""
    if verbose == 0:
        log.info(line)
    else:
        print(f"colabkit: {line}", flush=True)


def forecast(
    progress: Any,
    epochs: int,
    deadline: SessionDeadline,
    clock: Clock,
    seconds_per_step: float | None,
    measured: str,
) -> Forecast:
    """The plan for ``progress`` (a ``RunState``) at this moment."""
    return Forecast(
        global_step=progress.global_step,
        steps_per_epoch=progress.steps_per_epoch,
        epochs=epochs,
        seconds_per_step=seconds_per_step,
        measured=measured,
        session_left=deadline.seconds_left(),
        session_length=deadline.session_length,
        now=clock.time(),
    )


def announce_start(
    progress: Any,
    restored: Any,
    store_url: str,
    epochs: int,
    deadline: SessionDeadline,
    clock: Clock,
    verbose: Any,
) -> None:
    """The first lines of a call: a new run, or where a resume continues and the plan."""
    if restored is None:
        say(
            f"new run, checkpoints in {store_url}: {epochs} epoch{'s' if epochs != 1 else ''} "
            f"of {progress.steps_per_epoch} steps; the plan follows the first epoch.",
            verbose,
        )
        return
    plan = forecast(progress, epochs, deadline, clock, earlier_pace(progress), "earlier sessions")
    say(
        f"resuming from {restored.name} (step {progress.global_step}) in {store_url}: "
        f"{plan.where()}; "
        f"session {len(progress.resumes) + 1} of this run, "  # resumes: this one included
        f"{format_duration(progress.train_seconds)} trained so far.",
        verbose,
    )
    if plan.seconds_per_step is not None:
        say(plan.line(), verbose)


def earlier_pace(progress: Any) -> float | None:
    """Seconds per step over the sessions before this one (None: nothing measured)."""
    if progress.global_step <= 0 or progress.train_seconds <= 0:
        return None
    return progress.train_seconds / progress.global_step


class RunProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar numbered for the whole run, with the plan after each epoch.

    One instance serves every ``model.fit`` segment of a ``colabkit.fit`` call; set
    ``start_step`` before each (the steps of the epoch trained before it).

    Args:
        progress: The run's ``RunState`` (read: where the run is).
        epochs: The run's total epochs.
        deadline: The session deadline (how long this session trains).
        clock: Time (tests inject one).
    """

    def __init__(self, progress: Any, epochs: int, deadline: SessionDeadline, clock: Clock):
        super().__init__()
        self.run, self.run_epochs, self.deadline, self.clock = progress, epochs, deadline, clock
        self.start_step = 0
        self.line_open = False
        self._since: tuple[float, int] | None = None  # (monotonic, global step) at the start

    def set_params(self, params: dict) -> None:
        super().set_params(params)
        self.target = self.run.steps_per_epoch

    def on_train_begin(self, logs: Any = None) -> None:
        super().on_train_begin(logs)
        if self._since is None:
            self._since = (self.clock.monotonic(), self.run.global_step)

    def _maybe_init_progbar(self) -> None:
        fresh = self.progbar is None
        super()._maybe_init_progbar()  # Keras builds it as its version does
        if fresh and isinstance(self.progbar, Progbar):
            self.progbar.__class__ = _ResumedBar  # the same bar, its pace from its own steps
            self.progbar.offset = self.start_step

    def _update_progbar(self, batch: int, logs: Any = None) -> None:
        super()._update_progbar(self.start_step + batch, logs)
        self.line_open = self.verbose == 1  # the bar's line ends at the epoch's end

    def end_line(self) -> None:
        """Ends the bar's line, so that a line printed mid-epoch starts on its own."""
        if self.line_open:
            print(flush=True)
            self.line_open = False

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        super().on_epoch_end(epoch, logs)
        self.line_open = False
        if epoch + 1 >= self.run_epochs or self.model.stop_training or not self.verbose:
            return
        plan = forecast(self.run, self.run_epochs, self.deadline, self.clock, self.pace(), "here")
        say(plan.line(), self.verbose)

    def pace(self) -> float | None:
        """Seconds per step in this session so far (None: no step yet)."""
        if self._since is None:
            return None
        started, step = self._since
        steps = self.run.global_step - step
        return (self.clock.monotonic() - started) / steps if steps > 0 else None


class _ResumedBar(Progbar):
    """A Keras ``Progbar`` whose count starts at ``offset``: its time per step counts only the
    steps it saw, not those of the earlier session."""

    offset = 0

    def _estimate_step_duration(self, current: int, now: float) -> float:
        return super()._estimate_step_duration(max(0, current - self.offset), now)
