"""Test-wide setup: keep colabkit's local checkpoint cache out of the user's home folder."""

from __future__ import annotations

import json
import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _checkpoint_cache_in_tmp(tmp_path_factory):
    """colabkit.fit's default cache folder is $XDG_CACHE_HOME/colabkit/<run>: point it (for this
    process and the subprocesses tests start) at a temporary folder."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture
def drive():
    """A fake Drive v3 behind `responses`: the real client library, no network."""
    import responses
    from fake_drive import FakeDrive

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield FakeDrive(mock)


@pytest.fixture
def mount(tmp_path, monkeypatch):
    """Colab's Drive mount: ``.../drive`` in a fake mount table, ``MyDrive`` below it (returned)."""
    from fakes import mount_table

    import colabkit.env

    mountpoint = tmp_path / "drive"
    (mountpoint / "MyDrive").mkdir(parents=True)
    monkeypatch.setattr(colabkit.env, "COLAB_DRIVE_MOUNTPOINT", mountpoint)
    mount_table(monkeypatch, tmp_path, mountpoint)
    return mountpoint / "MyDrive"


@pytest.fixture
def signed_in(tmp_path, monkeypatch):
    """Signed in for the Drive API as a command finds it: an authorized-user key named by
    ``$COLABKIT_DRIVE_CREDENTIALS``, whose token comes from the fake Drive's token endpoint."""
    key = tmp_path / "user-key.json"
    key.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "client-id",
                "client_secret": "client-secret-5678",
                "refresh_token": "refresh-secret-1234",
            }
        )
    )
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("COLABKIT_DRIVE_CREDENTIALS", str(key))


@pytest.fixture
def not_signed_in(monkeypatch):
    """No Drive API sign-in anywhere: no key in the environment, no application default."""
    import google.auth

    def no_credentials(*args, **kwargs):
        raise google.auth.exceptions.DefaultCredentialsError("no credentials")

    for variable in ("COLABKIT_DRIVE_CREDENTIALS", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(google.auth, "default", no_credentials)


@pytest.fixture
def staging_mydrive(tmp_path, monkeypatch):
    """A folder that ``colabkit.stage`` reads as the Drive mount's ``MyDrive`` (md5 checks, a
    second read, retries)."""
    from colabkit.staging import sources

    folder = tmp_path / "drive" / "MyDrive"
    folder.mkdir(parents=True)
    monkeypatch.setattr(sources, "MOUNTPOINTS", (tmp_path / "drive",))
    return folder
