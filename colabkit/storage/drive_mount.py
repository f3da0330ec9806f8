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

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from colabkit.clock import SYSTEM_CLOCK, Clock
from colabkit.errors import ColabkitError, StoreError
from colabkit.storage.base import ObjectInfo, md5_file
from colabkit.storage.local import LocalStore

log = logging.getLogger(__name__)

#: Seconds between asking Drive whether an upload landed (about 4 minutes in all); then the
#: put fails like any other and the checkpoint pipeline retries it later, without rewriting it.
CONFIRM_DELAYS = (2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 60.0, 60.0)


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

    @property
    def upload_pending(self) -> bool:
        """True when a committed put only means "in this VM's Drive cache"."""
        return self.confirms is False

    def put(self, local_path: str | os.PathLike[str], name: str) -> ObjectInfo:
        self._check_mounted()
        info = self._already_there(local_path, name) or super().put(local_path, name)
        if self.confirms is None:
            self._decide()
        if self.confirms:
            self._confirm(name, info)
        return info

    def _already_there(self, local_path, name: str) -> ObjectInfo | None:
        """The object, when the mount already holds these bytes (a retried put): writing them
        again would restart Drive's upload of the file."""
        path = self.path(name)
        try:
            if path.stat().st_size != os.path.getsize(local_path):
                return None
            md5 = md5_file(path)
        except FileNotFoundError:
            return None
        if md5 != md5_file(local_path):
            return None
        return ObjectInfo(name=name, size=path.stat().st_size, md5=md5, modified=0.0)

    def _decide(self) -> None:
        if self._credentials == "auto":
            self._credentials = _signed_in_credentials()
        self.confirms = self._credentials is not None
        if not self.confirms:
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
        raise StoreError(
            f"{name} is on the Drive mount, but Drive does not hold it yet after {waited:.0f} s "
            "(its upload is pending; a VM that dies now loses it). Retried at the next save."
        )

    def _drive(self) -> Any:
        if self._api is None:
            from colabkit.storage.drive_api import DriveApiStore

            self._api = DriveApiStore(
                self.folder, credentials=self._credentials, clock=self._clock, create=False
            )
        return self._api

    def _stop_confirming(self, error: Exception) -> None:
        self.confirms = False
        log.warning(
            "Cannot confirm uploads through the Drive API (%s): checkpoints in %s now count "
            "once they are on the Drive mount (upload pending).",
            error,
            self.root,
        )


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
