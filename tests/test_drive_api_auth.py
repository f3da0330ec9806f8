"""Where DriveApiStore's credentials come from, and that sign-in happens when the store opens."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import google.auth
import google.auth.exceptions
import pytest
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fake_drive import FakeDrive, fake_credentials
from google.oauth2 import service_account
from google.oauth2.credentials import Credentials

from colabkit.clock import FakeClock
from colabkit.errors import ColabkitError, ConfigError, DriveError
from colabkit.storage import drive_auth
from colabkit.storage.drive_api import DriveApiStore
from colabkit.storage.drive_auth import (
    DRIVE_SCOPE,
    credentials_from_file,
    find_credentials,
    from_pydrive2,
)


def _user_key() -> dict:
    return {
        "type": "authorized_user",
        "client_id": "client-id",
        "client_secret": "client-secret-5678",
        "refresh_token": "refresh-secret-1234",
    }


def _service_account_key() -> dict:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return {
        "type": "service_account",
        "project_id": "p",
        "private_key_id": "k",
        "private_key": pem.decode(),
        "client_email": "trainer@p.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


def test_explicit_credentials_are_used_as_given():
    creds = fake_credentials()
    assert find_credentials(creds, environ={}, in_colab=lambda: True) is creds


def test_colabkit_variable_names_an_authorized_user_key(tmp_path):
    path = tmp_path / "key.json"
    path.write_text(json.dumps(_user_key()))
    creds = find_credentials(environ={"COLABKIT_DRIVE_CREDENTIALS": str(path)}, in_colab=None)
    assert isinstance(creds, Credentials)
    assert creds.refresh_token == "refresh-secret-1234"
    assert creds.scopes == [DRIVE_SCOPE]


def test_colabkit_variable_may_hold_the_json_itself():
    environ = {"COLABKIT_DRIVE_CREDENTIALS": json.dumps(_user_key())}
    assert isinstance(find_credentials(environ=environ), Credentials)


def test_google_variable_names_a_service_account_key(tmp_path):
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(_service_account_key()))
    creds = find_credentials(environ={"GOOGLE_APPLICATION_CREDENTIALS": str(path)})
    assert isinstance(creds, service_account.Credentials)
    assert creds.service_account_email == "trainer@p.iam.gserviceaccount.com"


def test_colabkit_variable_wins_over_google_variable(tmp_path):
    (tmp_path / "user.json").write_text(json.dumps(_user_key()))
    environ = {
        "COLABKIT_DRIVE_CREDENTIALS": str(tmp_path / "user.json"),
        "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "missing.json"),
    }
    assert isinstance(find_credentials(environ=environ), Credentials)


def test_missing_key_file_names_the_variable_and_path(tmp_path):
    missing = str(tmp_path / "nope.json")
    with pytest.raises(ConfigError, match="COLABKIT_DRIVE_CREDENTIALS.*nope.json"):
        find_credentials(environ={"COLABKIT_DRIVE_CREDENTIALS": missing})


def test_a_bad_key_never_echoes_its_secret_content():
    secret = '{"type": "authorized_user", "refresh_token": "refresh-secret-1234"'  # truncated
    with pytest.raises(ConfigError) as caught:
        find_credentials(environ={"COLABKIT_DRIVE_CREDENTIALS": secret})
    assert "refresh-secret-1234" not in str(caught.value)


def test_a_key_of_another_type_is_rejected(tmp_path):
    path = tmp_path / "k.json"
    path.write_text(json.dumps({"type": "external_account"}))
    with pytest.raises(ConfigError, match="external_account"):
        credentials_from_file(path)


def test_no_source_outside_colab_is_one_clear_error():
    with pytest.raises(DriveError, match="COLABKIT_DRIVE_CREDENTIALS") as caught:
        find_credentials(environ={}, in_colab=lambda: False)
    assert "\n" not in str(caught.value)


@pytest.fixture
def fake_colab(monkeypatch):
    """A google.colab whose sign-in counts its calls, and google.auth.default answering it."""
    signed_in: list[str] = []
    auth = types.SimpleNamespace(authenticate_user=lambda: signed_in.append("click"))
    monkeypatch.setitem(sys.modules, "google.colab", types.SimpleNamespace(auth=auth))
    asked: list[object] = []

    def default(scopes=None):
        asked.append(scopes)
        return fake_credentials(), "project"

    monkeypatch.setattr(google.auth, "default", default)
    monkeypatch.setattr(drive_auth, "running_in_colab", lambda environ=None: True)
    monkeypatch.delenv("COLABKIT_DRIVE_CREDENTIALS", raising=False)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    return signed_in, asked


def test_in_colab_sign_in_happens_when_the_store_opens_not_on_put(fake_colab, tmp_path):
    signed_in, asked = fake_colab
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        drive = FakeDrive(mock)
        store = DriveApiStore("colabkit/run", clock=FakeClock())
        assert signed_in == ["click"]
        assert asked == [[DRIVE_SCOPE]]
        (tmp_path / "a").write_bytes(b"abc")
        store.put(tmp_path / "a", "ckpt")
        store.get("ckpt", tmp_path / "b")
    assert signed_in == ["click"]
    assert drive.path("colabkit/run/ckpt").data == b"abc"


def test_from_pydrive2_without_pydrive2_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydrive2", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "pydrive2.auth", None)
    with pytest.raises(ColabkitError, match=r"pip install .colabkit-keras\[pydrive2\]."):
        from_pydrive2(object())


@pytest.fixture
def fake_pydrive2(monkeypatch):
    class GoogleAuth:
        credentials = None

    module = types.ModuleType("pydrive2.auth")
    module.GoogleAuth = GoogleAuth
    monkeypatch.setitem(sys.modules, "pydrive2", types.ModuleType("pydrive2"))
    monkeypatch.setitem(sys.modules, "pydrive2.auth", module)
    return GoogleAuth


def test_from_pydrive2_converts_oauth2client_user_credentials(fake_pydrive2):
    gauth = fake_pydrive2()
    gauth.credentials = types.SimpleNamespace(
        access_token="token-0",
        refresh_token="refresh-secret-1234",
        client_id="client-id",
        client_secret="client-secret-5678",
        token_uri="https://oauth2.googleapis.com/token",
        scopes={DRIVE_SCOPE},
    )
    creds = from_pydrive2(gauth)
    assert isinstance(creds, Credentials)
    assert (creds.token, creds.refresh_token, creds.scopes) == (
        "token-0",
        "refresh-secret-1234",
        [DRIVE_SCOPE],
    )


def test_from_pydrive2_converts_service_account_credentials(fake_pydrive2):
    gauth = fake_pydrive2()
    gauth.credentials = types.SimpleNamespace(serialization_data=_service_account_key())
    assert isinstance(from_pydrive2(gauth), service_account.Credentials)


def test_from_pydrive2_rejects_an_unsigned_gauth(fake_pydrive2):
    with pytest.raises(ConfigError, match="gauth"):
        from_pydrive2(fake_pydrive2())


def test_importing_the_store_stays_light():
    code = (
        "import sys, colabkit.storage.drive_api, colabkit.storage.drive_verify\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras', 'googleapiclient', 'httplib2') or m.startswith('google.colab')]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_open_store_gdrive_url_finds_credentials_from_the_environment(monkeypatch, tmp_path):
    from colabkit.storage import open_store

    key = tmp_path / "user.json"
    key.write_text(json.dumps(_user_key()))  # no access token yet: the first call refreshes
    monkeypatch.setenv("COLABKIT_DRIVE_CREDENTIALS", str(key))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        drive = FakeDrive(mock)
        store = open_store("gdrive://colabkit/run")
        (tmp_path / "a").write_bytes(b"abc")
        store.put(tmp_path / "a", "ckpt")
    assert store.url == "gdrive://colabkit/run"
    assert drive.kinds()[0] == "token"
    assert drive.path("colabkit/run/ckpt").data == b"abc"


class MessageError(Exception):
    """As google.colab._message.MessageError (matched by its name, as colabkit does)."""


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (MessageError("Error: credential propagation was unsuccessful"), "declined or did not"),
        (AttributeError("'NoneType' object has no attribute 'kernel'"), "sign in first in a cell"),
        (NotImplementedError(), "does not offer Colab's sign-in"),
        (google.auth.exceptions.DefaultCredentialsError("no ADC"), "DefaultCredentialsError"),
    ],
    ids=["declined", "outside-the-kernel", "no-sign-in-here", "no-credentials"],
)
def test_a_failed_colab_sign_in_is_one_line_with_its_fix(fake_colab, monkeypatch, error, said):
    """colabtools' own exceptions (declined dialog, a `!colabkit` command outside the kernel, a
    runtime without sign-in, no credentials after it) reach the user as one DriveError line."""

    def fail():
        raise error

    monkeypatch.setattr(sys.modules["google.colab"].auth, "authenticate_user", fail)
    with pytest.raises(DriveError) as caught:
        find_credentials()
    message = str(caught.value)
    assert message.startswith("Could not sign in to Google Drive: ") and said in message
    assert "\n" not in message and "COLABKIT_DRIVE_CREDENTIALS" in message
