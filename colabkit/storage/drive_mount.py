"""``DriveMountStore``: a folder on Colab's Drive mount, and what "durable" means there.

A file written under ``/content/drive`` lands in the VM's Drive cache; Drive's client uploads it
later, and reading it back from the mount reads that cache. A VM that dies (an idle disconnect)
loses what is still waiting. So a checkpoint on the mount counts as durable only once Drive
itself reports its md5, which needs the Drive API. Where the user has signed in for the API
(``google.colab.auth.authenticate_user()``, or a key in ``$COLABKIT_DRIVE_CREDENTIALS``), each
``put`` waits for that confirmation; where not, nothing asks for a sign-in (a dialog would
stop a training loop) and each checkpoint is reported as on the mount, upload pending, until
the flush at the session limit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from colabkit.clock import SYSTEM_CLOCK, Clock
from colabkit.duration import format_size
from colabkit.errors import ColabkitError, StoreError, StoreFullError
from colabkit.storage.base import ObjectInfo, Space, disk_space, md5_file
from colabkit.storage.local import LocalStore

log = logging.getLogger(__name__)

#: Seconds between asking Drive whether an upload landed (about 4 minutes in all); then the
#: put fails like any other and the checkpoint pipeline retries it later, without rewriting it.
CONFIRM_DELAYS = (2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 60.0, 60.0)

#: Seconds between emptying a pruned checkpoint on the mount and deleting it (no API sign-in):
#: time for Drive's client to upload the empty version, so that the trash gets 0 bytes.
EMPTIED_GRACE = 300.0

SIGN_IN = "from google.colab import auth; auth.authenticate_user()"


class DriveMountStore(LocalStore):
    """A :class:`LocalStore` on the Drive mount whose ``put`` returns once Drive has the bytes.

    Args:
        root: The folder, under ``my_drive``.
        my_drive: Where My Drive is mounted (``/content/drive/MyDrive``).
        credentials: ``"auto"``: the API sign-in if there is one (never asking for it);
            google-auth credentials; or None: never confirm.
        clock: Waits between confirmations.
        confirm_delays: Seconds between them.

    Attributes:
        confirms: Whether puts are confirmed on Drive (None until the first put decides).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        my_drive: str | os.PathLike[str],
        credentials: Any = "auto",
        clock: Clock = SYSTEM_CLOCK,
        confirm_delays: Sequence[float] = CONFIRM_DELAYS,
    ) -> None:
        super().__init__(root)
        self.folder = self.root.relative_to(Path(my_drive).absolute()).as_posix()
        self._credentials = credentials
        self._clock = clock
        self._delays = tuple(confirm_delays)
        self._api: Any = None
        self.confirms: bool | None = None if credentials is not None else False
        self._emptied: list[tuple[Path, float]] = []  # pruned, emptied, to delete later
        self._warned_trash = False
        self._told_unconfirmed = False
        self._api_failure: str | None = None  # why confirming stopped, if the API failed

    @property
    def signed_in(self) -> bool:
        """Whether the Drive API can be used here (decided once, never asking for a sign-in)."""
        if self.confirms is None:
            self._decide()
        return bool(self.confirms)

    def space(self) -> Space:
        """Drive's quota through the API when signed in (the trash included); else the mount's
        filesystem figures, which Drive's client fills with the account's quota (what
        ``df /content/drive`` shows) but which do not tell the trash apart."""
        self._check_mounted()
        if self.signed_in:
            try:
                try:
                    return self._drive().space()
                except FileNotFoundError:  # a new run: its folder is not on Drive yet
                    from colabkit.storage.drive_api import account_space

                    return account_space(self._credentials, clock=self._clock)
            except (OSError, ColabkitError) as e:
                log.debug("Drive quota not readable through the API (%s): the mount's figures", e)
        return self._mount_space()

    def _mount_space(self) -> Space:
        """What ``df /content/drive`` shows: the quota as Drive's client reports it."""
        return disk_space(self.root, "the Drive mount's figures")

    def delete(self, name: str) -> None:
        """Deletes ``name`` so that it frees its space on Drive.

        Signed in, through the Drive API, for good (the mount's copy goes too). Not signed in,
        a delete on the mount moves the file to Drive's trash, which counts against the quota
        for 30 days: the file is emptied in place first (``list`` no longer shows it) and
        deleted at a later prune (``EMPTIED_GRACE`` seconds on), once Drive's client has
        uploaded the empty version; Drive counts a file's current version (and versions kept
        forever), not the older ones, so the trash then holds an empty file.
        """
        self._check_mounted()
        path = self.path(name)
        size = path.stat().st_size  # FileNotFoundError when absent, as the contract says
        if self.signed_in:
            try:
                self._drive().delete(name)
            except FileNotFoundError:
                pass  # never reached Drive: the mount's delete below is all there is
            except (StoreError, ColabkitError) as e:
                self._stop_confirming(e)
                return self._empty_and_delete_later(path, size)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return None
        return self._empty_and_delete_later(path, size)

    def _empty_and_delete_later(self, path: Path, size: int) -> None:
        if not self._warned_trash:
            self._warned_trash = True
            log.warning(
                "Old checkpoints deleted on the Drive mount go to Drive's trash, which counts "
                "against the quota for 30 days (%s each here): not signed in for the Drive API, "
                "colabkit empties each one and deletes it %.0f minutes later, so that the trash "
                "gets an empty file, but cannot confirm what Drive keeps. To delete them for "
                "good, sign in before training (%s), or run `colabkit ckpt purge %s` later.",
                format_size(size),
                EMPTIED_GRACE / 60,
                SIGN_IN,
                self.root.parent if self.root.name == "checkpoints" else self.root,
            )
        # Emptied in place, under its own name: Drive's client uploads the empty version of
        # the same Drive file. Renamed away first, it would see a file deleted and trash it
        # with the bytes Drive holds (the whole checkpoint).
        os.truncate(path, 0)
        self._emptied.append((path, self._clock.monotonic()))
        self.delete_emptied()

    def delete_emptied(self, *, grace: float = EMPTIED_GRACE) -> None:
        """Deletes the pruned checkpoints emptied at least ``grace`` seconds ago."""
        now, waiting = self._clock.monotonic(), []
        for emptied, when in self._emptied:
            if now - when < grace:
                waiting.append((emptied, when))
                continue
            with contextlib.suppress(FileNotFoundError):
                if emptied.stat().st_size == 0:  # not written again since
                    os.unlink(emptied)
        self._emptied = waiting

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """The objects, less the pruned checkpoints emptied and not yet deleted (by this
        process, or one that died before deleting them): a checkpoint is never empty."""
        return [info for info in super().list(prefix) if not _emptied(info)]

    def remove_leftovers(self, older_than: float = 3600.0) -> list[str]:
        """Also deletes the emptied checkpoints a process left (it died within the grace)."""
        removed = super().remove_leftovers(older_than)
        cutoff = time.time() - older_than
        for info in super().list():
            if _emptied(info) and info.modified < cutoff:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path(info.name))
                    removed.append(info.name)
        return removed

    @property
    def upload_pending(self) -> bool:
        """True when a committed put only means "in this VM's Drive cache"."""
        return self.confirms is False

    @property
    def unconfirmed_because(self) -> str:
        """Why puts are not confirmed on Drive (where ``upload_pending``), in a few words."""
        if self._api_failure is not None:
            return f"the Drive API failed while confirming ({self._api_failure})"
        return "no Drive API sign-in"

    def put(self, local_path: str | os.PathLike[str], name: str) -> ObjectInfo:
        self._check_mounted()
        info = self._already_there(local_path, name) or super().put(local_path, name)
        if self.signed_in:
            self._confirm(name, info)
        else:
            self._say_unconfirmed()
            self._check_room(name)
        return info

    def _check_room(self, name: str) -> None:
        """Not signed in, the mount's figures are all there is: a Drive they show full cannot
        take the checkpoint just written to the VM's Drive cache (room they show is no proof
        that it was uploaded, nor is anything else without the API)."""
        try:
            space = self._mount_space()
        except OSError:
            return
        if space.total and space.free == 0:
            raise StoreFullError(
                f"Drive is full (the mount shows 0 bytes free of {format_size(space.total)}): "
                f"{name} is in this VM's Drive cache and cannot be uploaded. Free space on Drive "
                "(its trash counts too: empty it)"
            )

    def _already_there(self, local_path, name: str) -> ObjectInfo | None:
        """The object, when the mount already holds these bytes (a retried put): writing them
        again would restart Drive's upload of the file."""
        path = self.path(name)
        try:
            held = path.stat()
            if held.st_size != os.path.getsize(local_path):
                return None
            md5 = md5_file(path)
        except FileNotFoundError:
            return None
        if md5 != md5_file(local_path):
            return None
        return ObjectInfo(name=name, size=held.st_size, md5=md5, modified=held.st_mtime)

    def _decide(self) -> None:
        if self._credentials == "auto":
            self._credentials = _signed_in_credentials()
        self.confirms = self._credentials is not None

    def _say_unconfirmed(self) -> None:
        """Once: what "on the mount" means without a sign-in (at the first put, not before)."""
        if not self._told_unconfirmed:
            self._told_unconfirmed = True
            log.warning(
                "Checkpoints in %s count once they are on the Drive mount: Drive uploads them "
                "in the background, and a VM that dies first (an idle disconnect) loses what is "
                "still waiting. To have each one confirmed on Drive, sign in for the Drive API "
                "first: from google.colab import auth; auth.authenticate_user().",
                self.root,
            )

    def _confirm(self, name: str, info: ObjectInfo) -> None:
        waited = 0.0
        for delay in (*self._delays, None):
            try:
                remote = self._drive().stat(name)
                if remote.md5 == info.md5 and remote.size == info.size:
                    log.debug("%s confirmed on Drive after %.0f s", name, waited)
                    return
            except FileNotFoundError:
                pass
            except (StoreError, ColabkitError) as e:
                self._stop_confirming(e)
                return
            if delay is None:
                break
            self._clock.sleep(delay)
            waited += delay
        full = self._full_for(info.size)
        if full:
            raise StoreFullError(
                f"Drive is full ({full}): {name} is in this VM's Drive cache and cannot be "
                "uploaded (a VM that dies now loses it). Free space on Drive (its trash counts "
                "too: empty it); it is retried at the next save"
            )
        raise StoreError(
            f"{name} is on the Drive mount, but Drive does not hold it yet after {waited:.0f} s "
            "(its upload is pending; a VM that dies now loses it). Retried at the next save."
        )

    def _full_for(self, size: int) -> str | None:
        """Drive's figures, said, when they leave no room for ``size`` bytes (else None)."""
        try:
            space = self._drive().space()
        except (OSError, ColabkitError):
            return None
        if space.free is None or space.free >= size or space.total is None:
            return None
        trash = f", {format_size(space.trash)} of it in the trash" if space.trash else ""
        return f"{format_size(space.free)} free of {format_size(space.total)}{trash}"

    def drive_api(self) -> Any:
        """The ``DriveApiStore`` on this folder (signed in only; see ``signed_in``)."""
        return self._drive()

    def _drive(self) -> Any:
        if self._api is None:
            from colabkit.storage.drive_api import DriveApiStore

            self._api = DriveApiStore(
                self.folder, credentials=self._credentials, clock=self._clock, create=False
            )
        return self._api

    def _stop_confirming(self, error: Exception) -> None:
        self.confirms = False
        self._api_failure = str(error)
        self._told_unconfirmed = True  # said just below, with the reason
        log.warning(
            "Cannot confirm uploads through the Drive API (%s): checkpoints in %s now count "
            "once they are on the Drive mount (upload pending).",
            error,
            self.root,
        )


def _emptied(info: ObjectInfo) -> bool:
    """A pruned checkpoint emptied before its delete (a checkpoint file is never 0 bytes)."""
    return info.size == 0 and info.name.endswith(".ckpt")


def _signed_in_credentials() -> Any:
    """Credentials for the Drive API where the user already has them; never asks (no dialog).

    A key named by ``$COLABKIT_DRIVE_CREDENTIALS`` or ``$GOOGLE_APPLICATION_CREDENTIALS`` (which
    Colab's ``auth.authenticate_user()`` sets), else google-auth's application default.
    """
    try:
        from colabkit.storage.drive_auth import DRIVE_SCOPE, find_credentials

        return find_credentials(in_colab=lambda: False)
    except ColabkitError:
        pass
    except ImportError:  # the Drive API libraries are not installed
        return None
    try:
        import google.auth

        credentials, _project = google.auth.default(scopes=[DRIVE_SCOPE])
    except Exception:  # noqa: BLE001 - DefaultCredentialsError and its kin: not signed in
        return None
    return credentials
