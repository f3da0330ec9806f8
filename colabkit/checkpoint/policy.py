"""When to save and what to keep: small pure objects; time arrives as data.

Only :class:`~colabkit.checkpoint.manager.CheckpointManager` reads a clock; it asks a
:class:`SavePolicy` "save now?" with the step, whether an epoch just ended and the time, and a
:class:`KeepPolicy` "which of these to keep?" with the checkpoints and the time. Both combine with
``|`` (any of / union), so ``"epoch|10m"`` and ``KeepLast(3) | KeepBest(1, "val_loss")`` read as
they sound.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from colabkit.duration import parse_duration
from colabkit.errors import ConfigError, invalid_argument
from colabkit.validate import positive_int

_SAVE_EXPECTED = (
    "'epoch', a number of steps such as '500steps', or a duration such as '10m' or '2h'"
)
_KEEP_EXPECTED = (
    "an integer >= 1 (keep the last N), None (keep all), or a KeepPolicy such as "
    "KeepLast(3) | KeepBest(1, 'val_loss')"
)
_STEPS = re.compile(r"(\d+)\s*(?:steps?)?")


Lineage = tuple[tuple[str | None, int | None], ...]
"""Where a session resumed from, newest first: ``((session, step), (its parent's point), ...)``.

The first pair is the checkpoint the session resumed from; the pairs after it are where that
checkpoint's session had resumed from, as long as that session never claimed the run (a
claimed session's own claim says where it resumed). ``((None, None),)``: a fresh start."""

MAX_LINEAGE = 64  # sessions in a row that died before claiming, recorded in one checkpoint


def as_lineage(value: object) -> Lineage | None:
    """A lineage read from JSON: ``[[session, step], ...]``, or a single pair
    (``[session, step]``, an earlier form). None where it is neither."""
    if not isinstance(value, (list, tuple)) or not value:
        return None
    pairs = [value] if not isinstance(value[0], (list, tuple)) else list(value)
    lineage = []
    for pair in pairs:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            return None
        session, step = pair
        if not (session is None or isinstance(session, str)):
            return None
        if not (step is None or (isinstance(step, int) and not isinstance(step, bool))):
            return None
        lineage.append((session, step))
    return tuple(lineage)


@dataclass(frozen=True)
class CheckpointRecord:
    """What the keep policies and the CLI know about one checkpoint.

    Attributes:
        name: File name (``ckpt-<step>.ckpt``).
        step: Global step it was taken at.
        created: When it was written (seconds since the epoch, from its own state).
        metrics: Metrics given to ``save()`` (e.g. ``val_loss``), for ``KeepBest``.
        epoch: The epoch recorded in its state, if any.
        size: Size in bytes, if known.
        session: The session that wrote it (see ``colabkit.checkpoint.sessions``), if known.
        lineage: Where that session had resumed from (``((session, step), ...)``, see ``Lineage``),
            if known.
    """

    name: str
    step: int
    created: float
    metrics: dict = field(default_factory=dict)
    epoch: int | None = None
    size: int | None = None
    session: str | None = None
    lineage: Lineage | None = None


class SavePolicy:
    """Decides whether to save now. Subclasses implement :meth:`should_save`."""

    def should_save(
        self,
        *,
        step: int,
        epoch_end: bool,
        now: float,
        last_save_step: int | None,
        last_save_time: float | None,
    ) -> bool:
        """True if a checkpoint should be taken after global step ``step``.

        ``now`` and ``last_save_time`` are on the same clock; ``last_save_time`` is the time of
        the last save, or when training started (the manager passes that before any save).
        """
        raise NotImplementedError

    def __or__(self, other: SavePolicy) -> SavePolicy:
        return SaveAny((self, other))


@dataclass(frozen=True)
class SaveEveryEpoch(SavePolicy):
    """Save at the end of every epoch."""

    def should_save(self, *, step, epoch_end, now, last_save_step, last_save_time) -> bool:
        return epoch_end


@dataclass(frozen=True)
class SaveEverySteps(SavePolicy):
    """Save once ``steps`` steps have passed since the last save (or since step 0)."""

    steps: int

    def should_save(self, *, step, epoch_end, now, last_save_step, last_save_time) -> bool:
        return step - (last_save_step or 0) >= self.steps


@dataclass(frozen=True)
class SaveEverySeconds(SavePolicy):
    """Save once ``seconds`` have passed since the last save (or since training started)."""

    seconds: float

    def should_save(self, *, step, epoch_end, now, last_save_step, last_save_time) -> bool:
        return last_save_time is not None and now - last_save_time >= self.seconds


@dataclass(frozen=True)
class SaveAny(SavePolicy):
    """Save when any of ``policies`` says so."""

    policies: tuple[SavePolicy, ...]

    def should_save(self, **when) -> bool:
        return any(policy.should_save(**when) for policy in self.policies)


def parse_save_every(value: object, argname: str = "save_every") -> SavePolicy:
    """A :class:`SavePolicy` from what a user writes.

    Accepts ``"epoch"``, ``"500steps"`` (or ``"500"``, or the int ``500``: steps, as Keras'
    ``save_freq``), a duration (``"30s"``, ``"10m"``, ``"2h"``), a SavePolicy, or several of
    these as an iterable or joined by ``|`` (``"epoch|10m"``: whichever comes first).

    Raises:
        ConfigError: naming ``argname`` and echoing ``value``.
    """
    if isinstance(value, SavePolicy):
        return value
    if isinstance(value, str) and "|" in value:
        parts: list[object] = value.split("|")
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = [value]
    try:
        policies = tuple(_parse_save_part(part) for part in parts)
    except ConfigError:
        raise invalid_argument(argname, value, _SAVE_EXPECTED) from None
    return policies[0] if len(policies) == 1 else SaveAny(policies)


def _parse_save_part(part: object) -> SavePolicy:
    if isinstance(part, SavePolicy):
        return part
    if isinstance(part, int) and not isinstance(part, bool):
        if part < 1:
            raise ConfigError(part)
        return SaveEverySteps(part)
    if not isinstance(part, str) or not part.strip():
        raise ConfigError(part)
    text = part.strip().lower()
    if text == "epoch":
        return SaveEveryEpoch()
    match = _STEPS.fullmatch(text)
    if match:
        if int(match.group(1)) < 1:
            raise ConfigError(part)
        return SaveEverySteps(int(match.group(1)))
    return SaveEverySeconds(parse_duration(text, "save_every"))


class KeepPolicy:
    """Decides which checkpoints to keep. Subclasses implement :meth:`select`."""

    reads_metadata = True
    """Whether :meth:`select` looks beyond ``name`` and ``step`` (``created``, ``metrics``).
    When it does not, the manager need not read (on Drive: download) old checkpoints to prune."""

    def select(self, checkpoints: Sequence[CheckpointRecord], now: float) -> set[str]:
        """The names, among ``checkpoints``, to keep (the manager deletes only the others)."""
        raise NotImplementedError

    def __or__(self, other: KeepPolicy) -> KeepPolicy:
        return KeepAny((self, other))


@dataclass(frozen=True)
class KeepAll(KeepPolicy):
    """Never delete anything."""

    reads_metadata = False

    def select(self, checkpoints, now) -> set[str]:
        return {record.name for record in checkpoints}


@dataclass(frozen=True)
class KeepLast(KeepPolicy):
    """Keep the ``k`` highest steps."""

    k: int
    reads_metadata = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "k", positive_int("k", self.k))

    def select(self, checkpoints, now) -> set[str]:
        newest = sorted(checkpoints, key=lambda r: r.step, reverse=True)[: self.k]
        return {record.name for record in newest}


@dataclass(frozen=True)
class KeepEvery(KeepPolicy):
    """Keep one checkpoint per ``hours``: the oldest, then each first one ``hours`` later.

    The choice is stable: adding newer checkpoints, or deleting unkept ones, never changes
    which older ones are kept, so a kept checkpoint stays kept.
    """

    hours: float

    def __post_init__(self) -> None:
        if not (isinstance(self.hours, (int, float)) and math.isfinite(self.hours)) or (
            isinstance(self.hours, bool) or self.hours <= 0
        ):
            raise invalid_argument("hours", self.hours, "a positive number of hours")

    def select(self, checkpoints, now) -> set[str]:
        kept: set[str] = set()
        next_time = -math.inf
        for record in sorted(checkpoints, key=lambda r: (r.created, r.step)):
            if record.created >= next_time:
                kept.add(record.name)
                next_time = record.created + self.hours * 3600
        return kept


@dataclass(frozen=True)
class KeepBest(KeepPolicy):
    """Keep the ``k`` best by ``monitor`` (lowest for mode "min", highest for "max").

    Checkpoints saved without that metric (or with NaN) are not candidates; ties go to the newer.
    """

    k: int
    monitor: str
    mode: str = "min"

    def __post_init__(self) -> None:
        object.__setattr__(self, "k", positive_int("k", self.k))
        if not isinstance(self.monitor, str) or not self.monitor:
            raise invalid_argument("monitor", self.monitor, "a metric name such as 'val_loss'")
        if self.mode not in ("min", "max"):
            raise invalid_argument("mode", self.mode, "'min' or 'max'")

    def select(self, checkpoints, now) -> set[str]:
        sign = 1.0 if self.mode == "min" else -1.0
        scored = [
            (sign * float(r.metrics[self.monitor]), -r.step, r.name)
            for r in checkpoints
            if _is_number(r.metrics.get(self.monitor))
        ]
        return {name for _, _, name in sorted(scored)[: self.k]}


@dataclass(frozen=True)
class KeepAny(KeepPolicy):
    """Keep what any of ``policies`` keeps (a union)."""

    policies: tuple[KeepPolicy, ...]

    @property
    def reads_metadata(self) -> bool:
        return any(policy.reads_metadata for policy in self.policies)

    def select(self, checkpoints, now) -> set[str]:
        kept: set[str] = set()
        for policy in self.policies:
            kept |= policy.select(checkpoints, now)
        return kept


def parse_keep(value: object, argname: str = "keep") -> KeepPolicy:
    """A :class:`KeepPolicy`: an int K keeps the last K; None keeps all; a KeepPolicy passes.

    Raises:
        ConfigError: naming ``argname`` and echoing ``value``.
    """
    if isinstance(value, KeepPolicy):
        return value
    if value is None:
        return KeepAll()
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        items = list(value)
        if items and all(isinstance(item, KeepPolicy) for item in items):
            return KeepAny(tuple(items))
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1:
        return KeepLast(int(value))
    raise invalid_argument(argname, value, _KEEP_EXPECTED)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
