"""Which checkpoints are the run's history: the chain of sessions the newest claim continues.

Read from the claims (``colabkit.checkpoint.sessions``) and each checkpoint's own record of where
its session resumed (``Lineage``); see ``Chain``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

from colabkit.checkpoint.policy import CheckpointRecord, Lineage, as_lineage

if TYPE_CHECKING:
    from colabkit.checkpoint.sessions import Claim

T = TypeVar("T")


class Chain:
    """Which checkpoints belong to the trajectory the newest session continues.

    Built from every claim: the newest session's own checkpoints, its parent's up to the step
    it resumed from, that parent's parent's up to where the parent resumed, and so on. With no
    claim at all (runs from before claims existed) every checkpoint belongs.

    A session can write checkpoints into its local cache and die before its claim reached the
    store (the claim goes with the first commit). Each checkpoint records its lineage (the
    session and step its session resumed from, and on back through others that never claimed),
    so such a checkpoint *branches* off the chain at a point of it. It belongs while the chain
    holds nothing newer than that point: then it continues the newest the run has (the newest
    session may have died before any of its own checkpoints survived, and a resume went on from
    an older point). Once a checkpoint of the chain is newer than that point, the chain went on
    without it, and it is another trajectory. ``select()`` applies this over a run's
    checkpoints; ``in`` answers for one checkpoint alone, without that last condition.
    """

    def __init__(self, claims: list[Claim]) -> None:
        self.claimed = {claim.session for claim in claims}
        self.limits: dict[str, int | None] = {}  # session -> its last step in the chain
        self.unclaimed_limit: int | None = None  # checkpoints of no known session: up to here
        self.everything = not claims
        if claims:
            self._follow(claims)

    def _follow(self, claims: list[Claim]) -> None:
        by_session = {claim.session: claim for claim in claims}
        current = max(claims, key=lambda claim: claim.order)
        self.limits[current.session] = None
        points = _points(current)  # where it resumed, then where that session resumed, ...
        step = None
        while points:
            (session, step), *points = points
            if step is None:
                return  # that session started the run afresh
            if session is None or session in self.limits:
                self.unclaimed_limit = step  # from before claims existed
                return
            self.limits[session] = step
            parent = by_session.get(session)
            if parent is not None:
                points = _points(parent)
            # else a session that never claimed: the checkpoint it left recorded the rest
        if step is not None:
            self.unclaimed_limit = step  # the record ends here: accept what came before

    def __contains__(self, checkpoint: tuple) -> bool:
        """Whether a checkpoint is on the chain or branches off it: ``(session, step)`` or
        ``(session, step, lineage)`` (see ``select()`` for a run's checkpoints together)."""
        return self.place(checkpoint) is not None

    def place(self, checkpoint: tuple) -> bool | int | None:
        """Where a checkpoint stands: True (on the chain), the step of the chain at which it
        branches off (a session that never claimed; -1: the run's start), or None (outside)."""
        session, step, lineage = (*checkpoint, None)[:3]
        if self.everything:
            return True
        if session in self.limits:
            return True if self._within(session, step) else None
        if session is not None and session not in self.claimed and lineage:
            return self._branch_point(as_lineage(lineage) or ())
        if session is None or session not in self.claimed:
            return True if self._within(None, step) else None
        return None

    def _within(self, session: str | None, step: int) -> bool:
        """Whether ``session``'s ``step`` is on the chain (None: a checkpoint of no known
        session, from before claims existed)."""
        if session is None:
            return self.unclaimed_limit is not None and step <= self.unclaimed_limit
        limit = self.limits[session]
        return limit is None or step <= limit

    def _branch_point(self, lineage: Lineage) -> int | None:
        """For a session that never claimed: the chain's step it continued, back through
        others that never claimed (None: it continued a trajectory off the chain)."""
        for session, step in lineage:
            if step is None:
                return -1  # a fresh start: it branched at the run's beginning
            if session is None or session in self.limits:
                return step if self._within(session, step) else None
            if session in self.claimed:
                return None  # a claimed session the chain does not pass through
        return None

    def select(
        self,
        items: Iterable[T],
        record: Callable[[T], CheckpointRecord] = lambda item: item,  # type: ignore[misc]
        outside: Callable[[T], None] = lambda item: None,
    ) -> Iterator[T]:
        """The items that belong to the run, in the order a resume tries them.

        Args:
            items: Checkpoints, newest step first (read lazily: a resume stops at the first
                it can use).
            record: An item's ``CheckpointRecord`` (its session, step and lineage); default:
                the item is one.
            outside: Called with each item that does not belong (another trajectory).
        """
        waiting: list[tuple[T, int]] = []  # branches newer than any checkpoint of the chain yet
        chain_seen = False
        for item in items:
            found = record(item)
            place = self.place((found.session, found.step, found.lineage))
            if place is None or (place is not True and chain_seen):
                outside(item)
            elif place is not True:
                waiting.append((item, place))
            else:
                for branch, at in waiting:  # newest first, before the chain's newest
                    if at >= found.step:
                        yield branch
                    else:
                        outside(branch)  # the chain went on past where it branched
                waiting.clear()
                chain_seen = True
                yield item
        for branch, _ in waiting:  # the chain holds nothing: they continue the run
            yield branch


def _points(claim: Claim) -> list[tuple[str | None, int | None]]:
    """Where a claimed session resumed, then (its parent never claimed) where that one had."""
    return [(claim.parent, claim.resumed_step), *(claim.parent_lineage or ())]
