"""``from_pydrive2`` with the real PyDrive2 (1.21.1 is preinstalled in Colab, and many notebooks
already sign in through it), two ways: Colab's own snippet (``auth.authenticate_user()``, then
``gauth.credentials = GoogleCredentials.get_application_default()``), and a service-account key
the test generates, with a token endpoint on loopback that verifies every signed assertion. In
both, a run is interrupted and resumed on the fake Drive through the credentials colabkit takes.

PyDrive2's own refresh of a service account cannot run on Colab's pins: oauth2client signs with
``OpenSSL.crypto.sign``, which pyOpenSSL 26 (Colab 2026-08) no longer has. colabkit converts the
sign-in to google-auth, which signs with ``cryptography``, so the test never asks PyDrive2 to.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import keras
import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import colabkit
from colabkit.clock import FakeClock
from colabkit.storage.drive_api import DriveApiStore
from colabkit.storage.drive_auth import DRIVE_SCOPE, GOOGLE_TOKEN_URI, from_pydrive2

pydrive2_auth = pytest.importorskip("pydrive2.auth")

EMAIL = "trainer@project.iam.gserviceaccount.com"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class TokenEndpoint:
    """Google's OAuth token endpoint for service accounts, on loopback: it verifies each signed
    assertion (signature, issuer, audience, scope) before it issues an access token, and hands
    the token to the fake Drive, which accepts nothing else."""

    def __init__(self, public_pem: str, drive) -> None:
        self.public_pem, self.drive = public_pem, drive
        self.issued: list[str] = []
        self.refused: list[str] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
                status, body = endpoint.answer(form)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, form: dict) -> tuple[int, dict]:
        from google.auth import jwt

        try:
            assert form["grant_type"] == [JWT_GRANT], form.get("grant_type")
            # Google takes its own token URL as the audience (google-auth always signs that
            # one) or the URL the assertion was sent to (oauth2client signs its token_uri)
            audiences = [GOOGLE_TOKEN_URI, "https://accounts.google.com/o/oauth2/token", self.url]
            claims = jwt.decode(form["assertion"][0], certs=self.public_pem, audience=audiences)
            assert claims["iss"] == EMAIL, claims
            assert DRIVE_SCOPE in claims["scope"].split(), claims
        except Exception as e:  # noqa: BLE001 - any bad assertion is refused, as Google does
            self.refused.append(repr(e))
            return 400, {"error": "invalid_grant", "error_description": str(e)}
        token = f"loopback-{len(self.issued) + 1}"
        self.issued.append(token)
        self.drive.tokens.add(token)
        return 200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}


def _service_account(drive, tmp_path):
    """PyDrive2's ``ServiceAuth`` with a fresh key; its token endpoint on loopback."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    drive.tokens.clear()  # only what the loopback endpoint issues opens the fake Drive
    endpoint = TokenEndpoint(public, drive)
    drive._mock.add_passthru(endpoint.url)  # google-auth's refresh goes over the real socket
    info = {
        "type": "service_account",
        "project_id": "project",
        "private_key_id": "key-1",
        "private_key": private,
        "client_email": EMAIL,
        "client_id": "1234",
        "token_uri": endpoint.url,
    }
    key_file = tmp_path / "service-account.json"
    key_file.write_text(json.dumps(info))
    settings = {
        "client_config_backend": "service",
        "service_config": {"client_json_file_path": str(key_file)},
        "oauth_scope": [DRIVE_SCOPE],
    }
    gauth = pydrive2_auth.GoogleAuth(settings=settings)
    gauth.ServiceAuth()
    return gauth, endpoint


def _colab_snippet(drive, tmp_path, monkeypatch):
    """What Colab's PyDrive2 snippet leaves: oauth2client's application-default credentials
    (after ``auth.authenticate_user()``, an authorized-user file) on a ``GoogleAuth``."""
    from oauth2client.client import GoogleCredentials

    user = {"type": "authorized_user", "client_id": "colab-client", "client_secret": "s3cret",
            "refresh_token": "refresh-1"}  # fmt: skip
    adc = tmp_path / "adc.json"
    adc.write_text(json.dumps(user))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    drive.tokens.clear()  # the first call must refresh at the (fake) Google token endpoint
    gauth = pydrive2_auth.GoogleAuth()
    gauth.credentials = GoogleCredentials.get_application_default()
    return gauth, None


@pytest.fixture(params=["colab-snippet", "service-account"])
def signed_in(request, drive, tmp_path, monkeypatch):
    if request.param == "service-account":
        gauth, endpoint = _service_account(drive, tmp_path)
    else:
        gauth, endpoint = _colab_snippet(drive, tmp_path, monkeypatch)
    yield gauth, endpoint
    if endpoint is not None:
        endpoint.server.shutdown()


def model():
    keras.utils.set_random_seed(3)
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                          keras.layers.Dropout(0.2), keras.layers.Dense(1)])  # fmt: skip
    m.compile(optimizer="adam", loss="mse")
    return m


class Disconnect(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if self.params and batch == 3 and not getattr(self, "done", False):
            self.done = True
            raise RuntimeError("the VM went away")


def test_a_run_resumes_through_a_real_pydrive2_sign_in(signed_in, drive, tmp_path):
    gauth, endpoint = signed_in
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(96, 4)).astype("float32"), rng.normal(size=(96, 1)).astype("float32")
    train = dict(epochs=2, batch_size=8, seed=5, deterministic=True, save_every="2steps",
                 session_limit=False, verbose=0, clock=FakeClock())  # fmt: skip

    def store():  # every notebook session converts its own sign-in
        return DriveApiStore("colabkit/pydrive2-run", credentials=from_pydrive2(gauth),
                             chunk_size=1024 * 1024, clock=FakeClock())  # fmt: skip

    with pytest.raises(RuntimeError, match="the VM went away"):
        colabkit.fit(model(), x, y, store=store(), cache_dir=tmp_path / "vm1",
                     callbacks=[Disconnect()], **train)  # fmt: skip
    resumed = model()
    history = colabkit.fit(resumed, x, y, store=store(), cache_dir=tmp_path / "vm2", **train)
    assert history.completed and history.resumes and history.resumes[0]["step"] > 0
    reference = model()
    colabkit.fit(reference, x, y, run_dir=tmp_path / "reference", **train)
    for got, want in zip(resumed.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    names = [f.name for f in drive.files.values() if f.name.startswith("ckpt-") and not f.trashed]
    assert names, "no checkpoint reached the fake Drive"
    if endpoint is not None:  # each store signed its own assertions with the key PyDrive2 holds
        assert len(endpoint.issued) >= 2 and endpoint.refused == []
    else:  # each store refreshed with the refresh token PyDrive2 holds
        assert drive.kinds().count("token") >= 2


def test_the_real_service_account_credentials_convert(drive, tmp_path):
    """oauth2client leaves token_uri out of its serialization: the conversion must add it."""
    gauth, endpoint = _service_account(drive, tmp_path)
    try:
        credentials = from_pydrive2(gauth)
        assert credentials.service_account_email == EMAIL
        assert credentials._token_uri == endpoint.url
    finally:
        endpoint.server.shutdown()
