"""Credentials for the Drive API store, found once when the store is opened.

Authentication happens in ``DriveApiStore(...)`` (that is, at ``open_store`` time), never lazily
on the first upload: in Colab the sign-in needs a click, and a prompt that appears inside a
training callback hours into a run would block it. Tokens are handed to google-auth and never
formatted into a message or a log line.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from colabkit.errors import ColabkitError, DriveError, invalid_argument

logger = logging.getLogger(__name__)

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
DRIVE_SCOPE = "https://www.googleapis.com/auth/drive"
CREDENTIALS_ENV = "COLABKIT_DRIVE_CREDENTIALS"
GOOGLE_ENV = "GOOGLE_APPLICATION_CREDENTIALS"

_KEY_EXPECTED = "a service-account or authorized-user JSON key file"


def running_in_colab(environ: Mapping[str, str] | None = None) -> bool:
    """True in a Colab VM (Kaggle shares Colab's image, so it is told apart)."""
    environ = os.environ if environ is None else environ
    return os.path.exists("/var/colab/hostname") and "KAGGLE_KERNEL_RUN_TYPE" not in environ


def find_credentials(
    credentials: Any = None,
    *,
    environ: Mapping[str, str] | None = None,
    in_colab: Callable[[], bool] | None = None,
) -> Any:
    """Returns google-auth credentials for Drive, from the first source that has them.

    Order: explicit ``credentials``; a JSON key named by ``COLABKIT_DRIVE_CREDENTIALS`` (a path,
    or the JSON itself, e.g. a Kaggle secret); a JSON key named by
    ``GOOGLE_APPLICATION_CREDENTIALS``; in Colab, the notebook user's sign-in
    (``google.colab.auth.authenticate_user()`` then ``google.auth.default()``).

    Raises:
        ConfigError: A named key file is missing or is not a usable key.
        DriveError: No source has credentials.
    """
    if credentials is not None:
        return credentials
    environ = os.environ if environ is None else environ
    for variable in (CREDENTIALS_ENV, GOOGLE_ENV):
        value = environ.get(variable, "").strip()
        if value:
            logger.info("Drive credentials from $%s", variable)
            if value.startswith("{"):
                return credentials_from_info(_parse_key(value, variable), variable)
            return credentials_from_file(value, variable)
    if (in_colab or running_in_colab)():
        return _colab_user_credentials()
    raise DriveError(
        f"No Google credentials for the Drive API: neither ${CREDENTIALS_ENV} nor ${GOOGLE_ENV} "
        f"is set, outside Colab. Set ${CREDENTIALS_ENV} to {_KEY_EXPECTED}, pass credentials= "
        "(Python), or use the Drive mount."
    )


def credentials_from_file(path: str | os.PathLike[str], name: str = "path") -> Any:
    """Loads a service-account or authorized-user JSON key with the Drive scope."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        raise invalid_argument(
            name, os.fspath(path), f"a readable path to {_KEY_EXPECTED}"
        ) from None
    return credentials_from_info(_parse_key(text, name, shown=os.fspath(path)), name)


def credentials_from_info(info: Mapping[str, Any], name: str = "info") -> Any:
    """Builds credentials from a parsed key (``"type"``: service_account or authorized_user)."""
    kind = info.get("type")
    if kind == "service_account":
        from google.oauth2 import service_account

        return service_account.Credentials.from_service_account_info(info, scopes=[DRIVE_SCOPE])
    if kind == "authorized_user":
        from google.oauth2.credentials import Credentials

        return Credentials.from_authorized_user_info(info, scopes=[DRIVE_SCOPE])
    raise invalid_argument(
        f"{name}[type]", kind, f"'service_account' or 'authorized_user' in {_KEY_EXPECTED}"
    )


def _parse_key(text: str, name: str, shown: str = "<JSON text>") -> dict[str, Any]:
    """Parses a JSON key; the message shows the path, never the (secret) content."""
    try:
        info = json.loads(text)
    except ValueError:
        info = None
    if not isinstance(info, dict):
        raise invalid_argument(name, shown, _KEY_EXPECTED)
    return info


def _colab_user_credentials() -> Any:
    """The notebook user's sign-in (asks for a click on a fresh VM, so only ever at open time)."""
    import google.auth
    from google.colab import auth  # type: ignore[import-not-found]

    try:
        auth.authenticate_user()
        credentials, _project = google.auth.default(scopes=[DRIVE_SCOPE])
    except Exception as e:  # noqa: BLE001 - every way the sign-in fails: one line, its fix
        raise DriveError(_sign_in_failed(e)) from e
    logger.info("Drive credentials from the Colab sign-in")
    return credentials


def _sign_in_failed(error: Exception) -> str:
    """What went wrong with Colab's sign-in, and what to do (colabtools' own exceptions:
    ``MessageError`` when the dialog is declined, ``AttributeError`` on ``get_ipython().kernel``
    outside the notebook's kernel, ``NotImplementedError`` where the runtime has no sign-in,
    ``AuthorizationError`` and google-auth's ``DefaultCredentialsError``)."""
    said = (str(error).splitlines() or [""])[0] or type(error).__name__
    elsewhere = f"or set ${CREDENTIALS_ENV} to {_KEY_EXPECTED}"
    if isinstance(error, AttributeError) and "kernel" in said:
        why = (
            "Colab asks for the sign-in in the notebook, and this runs outside it (a "
            "`!colabkit ...` command or another process)"
        )
        fix = (
            "sign in first in a cell (from google.colab import auth; auth.authenticate_user()) "
            f"and run it again, {elsewhere}"
        )
    elif type(error).__name__ == "MessageError":
        why = f"the sign-in was declined or did not finish ({said})"
        fix = f"run the cell again and allow access to Google Drive, {elsewhere}"
    elif isinstance(error, NotImplementedError):
        why = "this runtime does not offer Colab's sign-in"
        fix = f"pass credentials=..., {elsewhere}"
    else:
        why = f"Colab's sign-in failed ({type(error).__name__}: {said})"
        fix = (
            "run `from google.colab import auth; auth.authenticate_user()` in a cell and try "
            f"again, {elsewhere}"
        )
    return f"Could not sign in to Google Drive: {why}. Fix: {fix}."


def from_pydrive2(gauth: Any) -> Any:
    """Converts a PyDrive2 ``GoogleAuth`` (oauth2client) into google-auth credentials.

    For people who already sign in with PyDrive2; colabkit talks to Drive v3 itself (PyDrive2
    uses v2 and 100 MiB chunks without retries), so only the credentials are taken.

    Raises:
        ColabkitError: PyDrive2 is not installed.
        ConfigError: ``gauth`` is not a signed-in ``GoogleAuth``.
    """
    try:
        pydrive_auth = importlib.import_module("pydrive2.auth")
    except ImportError:
        raise ColabkitError(
            "from_pydrive2() needs PyDrive2, which is not installed. Install it with "
            "`pip install 'colabkit-keras[pydrive2]'`, or pass google-auth credentials instead."
        ) from None
    source = getattr(gauth, "credentials", None)
    if not isinstance(gauth, pydrive_auth.GoogleAuth) or source is None:
        raise invalid_argument(
            "gauth", type(gauth).__name__, "a pydrive2.auth.GoogleAuth that has signed in"
        )
    serialized = getattr(source, "serialization_data", None)
    if isinstance(serialized, dict) and serialized.get("type") == "service_account":
        # oauth2client leaves the token endpoint out of its serialization; google-auth needs it
        token_uri = getattr(source, "token_uri", None) or GOOGLE_TOKEN_URI
        return credentials_from_info({"token_uri": token_uri, **serialized}, "gauth.credentials")
    from google.oauth2.credentials import Credentials

    scopes = getattr(source, "scopes", None)
    return Credentials(
        token=source.access_token,
        refresh_token=source.refresh_token,
        client_id=source.client_id,
        client_secret=source.client_secret,
        token_uri=source.token_uri,
        scopes=sorted(scopes) if scopes else None,
    )
