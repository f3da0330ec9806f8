"""Test-wide setup: keep colabkit's local staging cache out of the user's home folder."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _staging_cache_in_tmp(tmp_path_factory):
    """colabkit.fit's default staging folder is $XDG_CACHE_HOME/colabkit/<run>: point it (for this
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
