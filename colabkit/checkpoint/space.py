"""Room for a run's checkpoints: what the store and the local cache folder need, and have.

A run keeps ``keep`` checkpoints in its store and uploads one more before the oldest is pruned,
so the store needs ``(keep + 1)`` checkpoints, plus the frozen weights stored once; the local
cache folder holds the newest checkpoint while the next one is written: two. On Google Drive
the room is the account's quota, shared with Gmail and Photos, which the trash counts toward
until it is emptied (or 30 days pass). What is short is said in one line, with both figures and
the fixes; training goes on either way (a full store only stops uploads, see ``pipeline``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from colabkit.checkpoint.catalog import cache_names, store_call
from colabkit.checkpoint.format import is_frozen_object, step_of
from colabkit.checkpoint.policy import KeepAny, KeepBest, KeepLast, KeepPolicy
from colabkit.duration import format_size
from colabkit.storage.base import Space, disk_space
from colabkit.storage.drive_mount import SIGN_IN

log = logging.getLogger(__name__)

TRASH_URL = "https://drive.google.com/drive/trash"


def kept_at_most(policy: KeepPolicy) -> int | None:
    """How many checkpoints ``policy`` keeps at most (None: no bound, e.g. ``keep=None``).

    ``KeepBest`` keeps its ``k`` best and the newest (which pruning never deletes).
    """
    if isinstance(policy, KeepLast):
        return policy.k
    if isinstance(policy, KeepBest):
        return policy.k + 1
    if isinstance(policy, KeepAny):
        counts = [kept_at_most(p) for p in policy.policies]
        return None if None in counts else sum(c for c in counts if c is not None)
    return None


@dataclass(frozen=True)
class Need:
    """The bytes a run needs, from the size of one checkpoint.

    Attributes:
        checkpoint: Bytes of one checkpoint (what changes: the frozen weights left out).
        frozen: Bytes of the frozen weights, stored once per run (0: none).
        kept: Checkpoints the keep policy keeps at most (None: every one; the need then
            counts two, the least any run needs).
    """

    checkpoint: int
    frozen: int
    kept: int | None

    @property
    def in_store(self) -> int:
        return ((self.kept or 1) + 1) * self.checkpoint + self.frozen

    @property
    def in_cache(self) -> int:
        return 2 * self.checkpoint + self.frozen

    def store_parts(self) -> str:
        kept = (
            f"keep={self.kept} checkpoints of {format_size(self.checkpoint)} and one more "
            "while it uploads"
            if self.kept is not None
            else f"every checkpoint kept (keep=None), {format_size(self.checkpoint)} each"
        )
        if self.frozen:
            kept += f", and {format_size(self.frozen)} of frozen weights stored once"
        return kept


def read_space(store: Any) -> Space | None:
    """What ``store.space()`` says, or None where the store cannot tell (never "full")."""
    space = getattr(store, "space", None)
    if space is None:
        return None
    try:
        return space()
    except Exception as e:  # noqa: BLE001 - unknown room is not a reason to stop anything
        log.debug("Could not read the free space of %s: %s", getattr(store, "url", store), e)
        return None


def on_drive(store: Any) -> bool:
    return str(getattr(store, "url", "")).startswith("gdrive://") or hasattr(store, "signed_in")


def describe(space: Space) -> str:
    """``"3.1 GB free of 15.0 GB (1.2 GB of it in the trash; Drive's storage quota)"``."""
    if space.free is None:
        return f"no limit known ({space.source})"
    of = f" of {format_size(space.total)}" if space.total else ""
    trash = f"{format_size(space.trash)} of it in the trash; " if space.trash else ""
    return f"{format_size(space.free)} free{of} ({trash}{space.source})"


def shortfalls(
    need: Need,
    store: Any,
    cache: Path,
    *,
    held_in_store: int = 0,
    held_in_cache: int = 0,
) -> list[str]:
    """One line for each place that lacks the room ``need`` says (none: both have it).

    ``held_in_*``: bytes of this run's checkpoints already there, which the new ones replace.
    """
    lines = []
    space = read_space(store)
    more = need.in_store - held_in_store
    if space is not None and space.free is not None and space.free < more:
        lines.append(
            f"{_where(store)} has {describe(space)}; this run needs {format_size(more)} more "
            f"there ({need.store_parts()}). Training goes on, and checkpoints stay on this "
            f"VM's disk while there is no room. To make room: {_fixes(store, space)}."
        )
    try:
        local = disk_space(cache)
    except OSError:
        return lines
    more = need.in_cache - held_in_cache
    if local.free is not None and local.free < more:
        lines.append(
            f"This VM's disk has {format_size(local.free)} free at {cache}, and the run "
            f"needs {format_size(more)} more there (the newest checkpoint while the next one "
            "is written). Free disk space (datasets copied to /content, old runs in "
            "~/.cache/colabkit), or pass cache_dir= a folder on a bigger disk."
        )
    return lines


def check_run(
    store: Any, cache: Path, checkpoint_bytes: int, frozen_bytes: int | None, kept: int | None
) -> list[str]:
    """``shortfalls`` for a run whose checkpoints are ``checkpoint_bytes`` each, counting what
    of the run the store and ``cache`` hold already; ``frozen_bytes`` None: the frozen
    objects in ``cache``."""
    try:
        frozen = [cache / n for n in os.listdir(cache) if is_frozen_object(n)]
    except FileNotFoundError:
        frozen = []
    need = Need(
        checkpoint=checkpoint_bytes,
        frozen=_bytes_in(frozen) if frozen_bytes is None else frozen_bytes,
        kept=kept,
    )
    try:
        held = [
            info.size
            for info in store_call(store.list)
            if step_of(info.name) is not None or is_frozen_object(info.name)
        ]
    except OSError:
        held = []
    in_cache = [cache / n for n in cache_names(cache)] + frozen
    return shortfalls(
        need,
        store,
        cache,
        held_in_store=sum(held),
        held_in_cache=_bytes_in(in_cache),
    )


def _bytes_in(paths: list[Path]) -> int:
    """The bytes of ``paths``; one pruned since it was listed (the check runs in its own thread,
    beside the run's commits) counts nothing."""
    total = 0
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    return total


def _where(store: Any) -> str:
    return f"Drive ({store.url})" if on_drive(store) else str(store.url)


def _fixes(store: Any, space: Space) -> str:
    fixes = ["a smaller keep"]
    if on_drive(store):
        trash = f" (it holds {format_size(space.trash)})" if space.trash else ""
        fixes.append(f"empty Drive's trash{trash} at {TRASH_URL}")
        if getattr(store, "signed_in", True) is False:
            fixes.append(f"sign in ({SIGN_IN}) so that old checkpoints are deleted for good")
        fixes.append("delete other files on Drive")
    else:
        fixes.append("free space there")
    return ", ".join(fixes[:-1]) + " or " + fixes[-1]
