"""One run, one writer: session claims in the store (the chain they make: ``chain.py``).

Two live trainers can reach one run directory from two VMs ("Run all" in a second tab, a VM that
kept running while the user connected a new one); the local run lock cannot see the other VM.
Each trainer therefore claims the run in the store itself when it resumes: a small object
``sessions/<seq>-<UTC stamp>-<session id>.json`` that is never changed afterwards. The newest
claim (highest ``seq``, then stamp, then id: every reader agrees) owns the run:

- the new session takes over at once; it never waits for the old one;
- a superseded trainer looks for newer claims before each commit, and stops without
  committing anything once it sees one;
- a resume follows the newest session's chain: its own checkpoints, then its parent's up to
  the step it resumed from, and so on back. A checkpoint the superseded trainer committed
  before it saw the claim (on the Drive mount the claim reaches the other VM only after
  Drive's upload and the other VM's change poll) is not part of that chain and is never
  resumed from, so two trajectories never mix (``colabkit.checkpoint.chain``).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from colabkit.checkpoint import catalog
from colabkit.checkpoint.format import step_of
from colabkit.checkpoint.policy import MAX_LINEAGE, CheckpointRecord, Lineage, as_lineage
from colabkit.clock import Clock
from colabkit.errors import RunSupersededError, StoreError
from colabkit.storage.atomic import atomic_output
from colabkit.storage.base import Store

log = logging.getLogger(__name__)

PREFIX = "sessions/"
END_SUFFIX = ".end.json"  # "sessions/<claim>.end.json": how that session ended
_NAME = re.compile(r"sessions/(\d{6,})-(\d{8}T\d{6}Z)-([0-9a-f]{8,})\.json")


@dataclass(frozen=True)
class Claim:
    """One session's claim on the run.

    Attributes:
        name: Its object name in the store (it orders claims: newest last).
        session: The session's id (also written into each of its checkpoints' state).
        started: When the session claimed the run (seconds since the epoch).
        host: The machine it ran on.
        resumed_from: The checkpoint it resumed from (None: it started the run afresh).
        resumed_step: That checkpoint's step.
        parent: The session that wrote that checkpoint (None: unknown or none).
        parent_lineage: Where that session had resumed from, as that checkpoint records it
            (``((session, step), ...)``, see ``Lineage``): it lets the chain go on past
            sessions that never claimed.
        runtime: Where it ran: environment, accelerator, versions (None: not recorded).
    """

    name: str
    session: str
    started: float
    host: str = "?"
    resumed_from: str | None = None
    resumed_step: int | None = None
    parent: str | None = None
    parent_lineage: Lineage | None = None
    runtime: dict | None = None

    @property
    def order(self) -> tuple[int, str, str]:
        """(seq, UTC stamp, session id) from the name: how every reader orders claims."""
        return _order(self.name)

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        start = f"step {self.resumed_step}" if self.resumed_step is not None else "the start"
        return f"session {self.session} on {self.host}, since {when}, resumed from {start}"


class Sessions:
    """This process's session on a run: reading claims, claiming, noticing a takeover.

    Args:
        store: The run's checkpoint store (claims live under ``sessions/`` in it).
        cache: A local folder for copies of claims (they never change once written).
        clock: Time of the claim.
        runtime: Describes where this process runs (environment, accelerator, versions); asked
            once, when claiming, in the background. None: the claim records no runtime.
    """

    def __init__(
        self,
        store: Store,
        cache: Path,
        clock: Clock,
        runtime: Callable[[], dict] | None = None,
    ) -> None:
        self.store, self._cache, self._clock = store, cache, clock
        self.id = secrets.token_hex(4)
        self.mine: Claim | None = None
        self.superseded_by: Claim | None = None
        self._point: tuple[list[Claim], CheckpointRecord | None] | None = None  # from restore
        self._lock = threading.Lock()
        self._claiming: threading.Thread | None = None  # take_over_in_background's thread
        self.runtime = runtime

    def restored(self, claims: list[Claim], found: CheckpointRecord | None) -> None:
        """Notes what ``restore()`` read: the claims, and the checkpoint it resumed from."""
        self._point = (claims, found)

    def lineage(self) -> list | None:
        """Where this session resumed from, as its checkpoints record it (see ``Lineage``;
        None: not known)."""
        if self._point is None:
            return None
        claims, found = self._point
        if found is None:
            return [[None, None]]
        lineage = [[found.session, found.step]]
        if found.session not in {claim.session for claim in claims}:
            lineage += [list(point) for point in found.lineage or ()]  # its claim says nothing
        return lineage[:MAX_LINEAGE]

    def take_over(self) -> None:
        """Claims the run once: from where ``restore()`` resumed, or (never restored) as the
        continuation of whatever the store holds.

        Raises:
            StoreError: the store could not be asked or refused the claim.
        """
        with self._lock:
            if self.mine is not None:
                return
            try:
                if self._point is None:
                    claims = self.read()
                    steps = [step_of(name) for name in catalog.store_checkpoints(self.store)]
                    newest = max(steps, default=None)
                    parent = claims[-1].session if claims and newest is not None else None
                    self.claim(claims, None, newest, parent)
                    return
                claims, found = self._point
                if found is None:
                    self.claim(claims, None, None, None)
                else:
                    self.claim(claims, found.name, found.step, found.session, found.lineage)
            except OSError as e:
                raise StoreError(
                    f"Could not claim the run in {self.store.url}: "
                    f"{catalog.describe_failure(e)}. Nothing was committed; fix it and run again."
                ) from e

    def take_over_in_background(self) -> None:
        self._claiming = threading.Thread(
            target=self._take_over_quietly, name="colabkit-claim", daemon=True
        )
        self._claiming.start()

    def wait_claimed(self, timeout: float | None = None) -> None:
        """Waits for the claim ``take_over_in_background`` is making: a session that ends
        before its claim is in the store lets the next one claim with the same sequence number,
        and the late claim then takes the run over."""
        if self._claiming is not None:
            self._claiming.join(timeout)

    def _take_over_quietly(self) -> None:
        try:
            self.take_over()
        except StoreError as e:
            log.debug("%s (retried before the first commit)", e)

    def read_or_fail(self) -> list[Claim]:
        """``read()``, where a store that cannot be asked is a ``StoreError`` saying so."""
        try:
            return self.read()
        except OSError as e:
            raise StoreError(
                f"Could not read the run's sessions in {self.store.url}: "
                f"{catalog.describe_failure(e)}. Fix it and run again."
            ) from e

    def read(self) -> list[Claim]:
        """Every claim in the store, oldest first.

        Raises:
            OSError: the store could not be asked.
        """
        claims = []
        for info in self.store.list(PREFIX):
            if _NAME.fullmatch(info.name):
                claim = self._load(info.name)
                if claim is not None:
                    claims.append(claim)
        return sorted(claims, key=lambda claim: claim.order)

    def claim(
        self,
        claims: list[Claim],
        resumed_from: str | None,
        step: int | None,
        parent: str | None,
        parent_lineage: Lineage | None = None,
    ) -> Claim:
        """Writes this session's claim, newer than every one in ``claims``.

        Raises:
            OSError: the store refused it (the caller reports it; nothing was trained yet).
        """
        seq = max((claim.order[0] for claim in claims), default=0) + 1
        now = self._clock.time()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        claim = Claim(
            name=f"{PREFIX}{seq:06d}-{stamp}-{self.id}.json",
            session=self.id,
            started=now,
            host=socket.gethostname(),
            resumed_from=resumed_from,
            resumed_step=step,
            parent=parent,
            parent_lineage=parent_lineage,
            runtime=self._runtime(),
        )
        local = self._cached(claim.name)
        with atomic_output(local) as out:
            out.write(json.dumps(claim.__dict__, indent=1).encode())
        self.store.put(local, claim.name)
        self.mine = claim
        log.debug("Claimed the run in %s as %s", self.store.url, claim.name)
        return claim

    def _runtime(self) -> dict | None:
        if self.runtime is None:
            return None
        try:
            return self.runtime()
        except Exception as e:  # noqa: BLE001 - a description must never stop a claim
            log.debug("Could not describe the runtime: %s", e)
            return None

    def end(self, **fields: object) -> None:
        """Records how this session ended (``sessions/<claim>.end.json``, next to its claim):
        the session log ``colabkit status`` shows. Never raises: a store that cannot take it
        leaves the session shown as "no end recorded"."""
        if self.mine is None:
            return
        name = self.mine.name.removesuffix(".json") + END_SUFFIX
        try:
            local = self._cached(name)
            with atomic_output(local) as out:
                out.write(json.dumps({"ended": self._clock.time(), **fields}, indent=1).encode())
            self.store.put(local, name)
        except OSError as e:
            log.warning(
                "Could not record the end of this session in %s: %s",
                self.store.url,
                catalog.describe_failure(e),
            )

    def history(self) -> list[tuple[Claim, dict | None]]:
        """Every session of the run, oldest first, with its end record (None: none written,
        the session was killed or its VM died, or it is still training).

        Raises:
            OSError: the store could not be asked.
        """
        names = {info.name for info in self.store.list(PREFIX)}
        sessions = []
        for claim in self.read():
            end_name = claim.name.removesuffix(".json") + END_SUFFIX
            sessions.append((claim, self._load_end(end_name) if end_name in names else None))
        return sessions

    def _load_end(self, name: str) -> dict | None:
        local = self._cached(name)
        try:
            self.store.get(name, local)
            fields = json.loads(local.read_text())
            return fields if isinstance(fields, dict) else None
        except (OSError, ValueError) as e:
            log.warning("Ignoring unreadable session record %s in %s: %s", name, self.store.url, e)
            return None

    def check(self) -> None:
        """Before a commit: raises if another session has claimed the run since this one.

        Raises:
            RunSupersededError: a newer claim exists (saying which, and since when).
            OSError: the store could not be asked (the commit is retried like a failed put).
        """
        if self.superseded_by is not None:
            raise _superseded(self.superseded_by)
        if self.mine is None:
            return
        newer = [
            info.name
            for info in self.store.list(PREFIX)
            if _NAME.fullmatch(info.name) and _order(info.name) > self.mine.order
        ]
        if not newer:
            return
        name = max(newer, key=_order)
        claim = self._load(name) or Claim(name=name, session=_order(name)[2], started=0.0)
        self.superseded_by = claim
        raise _superseded(claim)

    def _load(self, name: str) -> Claim | None:
        local = self._cached(name)
        if not local.exists():
            try:
                self.store.get(name, local)
            except FileNotFoundError:
                return None
        try:
            fields = json.loads(local.read_text())
            step = fields.get("resumed_step")
            return Claim(
                name=name,
                session=str(fields["session"]),
                started=float(fields["started"]),
                host=str(fields.get("host", "?")),
                resumed_from=fields.get("resumed_from"),
                resumed_step=int(step) if step is not None else None,
                parent=fields.get("parent"),
                parent_lineage=as_lineage(fields.get("parent_lineage")),
                runtime=runtime if isinstance(runtime := fields.get("runtime"), dict) else None,
            )
        except (ValueError, KeyError, TypeError, OSError) as e:
            log.warning("Ignoring unreadable session claim %s in %s: %s", name, self.store.url, e)
            local.unlink(missing_ok=True)
            return None

    def _cached(self, name: str) -> Path:
        self._cache.mkdir(parents=True, exist_ok=True)
        return self._cache / name.removeprefix(PREFIX)


def _order(name: str) -> tuple[int, str, str]:
    seq, stamp, session = _NAME.fullmatch(name).groups()  # type: ignore[union-attr]
    return int(seq), stamp, session


def _superseded(claim: Claim) -> RunSupersededError:
    return RunSupersededError(
        f"This run continued in another session ({claim.describe()}): this session stopped "
        "and committed nothing after the takeover. Nothing to do here; follow the run there."
    )
