"""What ``colabkit.fit`` returns: Keras' ``History`` of the whole run, and how the call ended."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras


class RunHistory(keras.callbacks.History):
    """What ``colabkit.fit`` returns: Keras' ``History`` of the whole run (every session's
    epochs), and how this call ended.

    Attributes:
        history, epoch, params: As Keras' ``History``, over the whole run.
        resumes: Where each resume started: ``epoch`` and ``step`` (the 0-based data
            position), ``global_step`` (steps trained before it), ``time``.
        completed: The run trained all its epochs (or a callback stopped it): False when a
            signal or the session limit stopped this call.
        already_finished: This call trained nothing: the run had finished before it, and
            its final weights were loaded (a re-run of a finished notebook).
        stop_reason: Why the run (or this call) stopped early, or None.
        durable: The newest checkpoint reached the store.
        train_seconds: Wall time trained, all sessions.
    """

    def __init__(
        self,
        *,
        history: Mapping[str, Sequence[float]] | None = None,
        params: Mapping[str, Any] | None = None,
        resumes: Sequence[Mapping[str, Any]] = (),
        completed: bool = False,
        already_finished: bool = False,
        stop_reason: str | None = None,
        durable: bool = True,
        train_seconds: float = 0.0,
    ) -> None:
        super().__init__()
        self.history = {k: list(v) for k, v in (history or {}).items()}
        self.epoch = list(range(len(next(iter(self.history.values()), []))))
        self.params = dict(params or {})
        self.resumes = [dict(r) for r in resumes]
        self.completed = completed
        self.already_finished = already_finished
        self.stop_reason = stop_reason
        self.durable = durable
        self.train_seconds = train_seconds
