"""The end of a run: ``notify=URL`` against a webhook on loopback, and ``release_runtime`` with
the fake ``google.colab.runtime``: once durability is known, never the URL in any output, and a
failed notification never fails the run."""

from __future__ import annotations

import importlib
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import keras
import numpy as np
import pytest
from fakes import FAKES

import colabkit
from colabkit import ending
from colabkit.clock import FakeClock
from colabkit.errors import ConfigError
from colabkit.storage import LocalStore
from colabkit.storage.faults import FaultyStore
from colabkit.training.deadline import SessionDeadline

SECRET = "T000/B000/XXXXsecretXXXX"  # a webhook's token, in its path as Slack's are


class Webhook:
    """A chat webhook on loopback: records each POST's JSON and answers ``status`` (200; 204
    without a body, as Discord's do); ``hold`` keeps it from answering."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.status = 200
        self.hold = threading.Event()
        self.hold.set()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.received.append(json.loads(body))
                hook.hold.wait(30)
                answer = b"" if hook.status == 204 else b"ok"
                try:
                    self.send_response(hook.status)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (the slow-server test)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/{SECRET}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.hold.set()
    hook.server.shutdown()


def model():
    keras.utils.set_random_seed(1)
    m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    m.compile(optimizer="sgd", loss="mse")
    return m


X = np.arange(96, dtype="float32").reshape(32, 3) / 96
Y = X[:, :1]


def train(tmp_path, **kwargs):
    kwargs.setdefault("run_dir", tmp_path / "run")
    options = dict(epochs=3, batch_size=8, session_limit=False, verbose=0,
                   cache_dir=tmp_path / "cache")  # fmt: skip
    return colabkit.fit(model(), X, Y, **{**options, **kwargs})


def everything_said(caplog, capsys) -> str:
    out = capsys.readouterr()
    return caplog.text + out.out + out.err


def test_a_finished_run_notifies_once_and_never_shows_the_url(webhook, tmp_path, caplog, capsys):
    with caplog.at_level("DEBUG", logger="colabkit"):
        history = train(tmp_path, notify=webhook.url)
    assert history.completed
    (body,) = webhook.received
    assert body["event"] == "finished" and body["durable"] is True
    assert (body["epoch"], body["epochs"]) == (3, 3) and str(tmp_path / "run") in body["run"]
    assert (
        body["text"].startswith("colabkit run ") and "finished: epoch 3 of 3, saved" in body["text"]
    )
    assert SECRET not in everything_said(caplog, capsys)
    train(tmp_path, notify=webhook.url)  # re-running a finished run trains nothing: no message
    assert len(webhook.received) == 1


def test_a_stop_at_the_session_limit_notifies_after_the_checkpoint_is_durable(webhook, tmp_path):
    clock = FakeClock(start=1_000.0)

    class Tick(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            clock.advance(4 * 60.0)

    deadline = SessionDeadline("15m", session_limit="30m", session_start=1_000.0, clock=clock)
    store = LocalStore(tmp_path / "run" / "checkpoints")
    history = train(tmp_path, notify=webhook.url, callbacks=[Tick(), deadline], clock=clock)
    assert history.stop_reason == "deadline"
    (body,) = webhook.received
    assert body["event"] == "deadline" and body["durable"] is True and body["epoch"] < 3
    assert "run it again to resume" in body["text"]
    assert any(i.name.startswith("ckpt-") for i in store.list())


def test_a_failed_run_notifies_failed_and_the_error_still_reaches_the_user(webhook, tmp_path):
    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        train(tmp_path, notify=webhook.url, callbacks=[Crash()], save_every="1steps")
    (body,) = webhook.received
    assert body["event"] == "failed" and body["durable"] is True and body["epoch"] == 1


def test_a_server_that_is_down_or_slow_costs_one_warning(webhook, tmp_path, caplog, monkeypatch):
    down = Webhook()
    down.server.shutdown()
    down.server.server_close()  # nothing listens there any more
    with caplog.at_level("WARNING", logger="colabkit"):
        assert train(tmp_path, notify=down.url).completed
    assert "Could not send the notification to 127.0.0.1 (ConnectionError)" in caplog.text
    caplog.clear()
    monkeypatch.setattr(ending, "NOTIFY_TIMEOUT_S", 0.5)
    webhook.hold.clear()  # it takes the request and never answers in time
    with caplog.at_level("WARNING", logger="colabkit"):
        assert train(tmp_path / "slow", notify=webhook.url).completed
    assert "Could not send the notification to 127.0.0.1 (ReadTimeout)" in caplog.text
    assert caplog.text.count("notification") == 1 and SECRET not in caplog.text


def test_a_bad_notify_value_is_one_line_that_does_not_echo_it(tmp_path):
    expected = r"`notify`\. Received: notify='ftp://…'\. Expected an http"
    with pytest.raises(ConfigError, match=expected) as e:
        train(tmp_path, notify=f"ftp://hooks.example/{SECRET}")
    assert SECRET not in str(e.value) and not (tmp_path / "run").exists()


@pytest.fixture
def colab_runtime(monkeypatch):
    """Colab (by its release tag) with the fake google.colab.runtime."""
    monkeypatch.syspath_prepend(str(FAKES))
    for name in ("google.colab", "google.colab.runtime", "google.colab.drive"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    runtime = importlib.import_module("google.colab.runtime")
    runtime.reset()
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab-20260819-060049-RC00")
    yield runtime
    runtime.reset()
    for name in ("google.colab", "google.colab.runtime", "google.colab.drive"):
        sys.modules.pop(name, None)


def test_release_comes_only_after_the_final_checkpoint_is_durable(colab_runtime, tmp_path):
    store = LocalStore(tmp_path / "run" / "checkpoints")
    colab_runtime.on_unassign = lambda: sorted(i.name for i in store.list() if "ckpt" in i.name)
    history = train(tmp_path, release_runtime=True)
    assert history.completed and history.durable
    (in_store,) = colab_runtime.calls
    assert in_store[-1] == "ckpt-000000000012.ckpt"  # the final checkpoint was in the store


def test_no_release_when_the_checkpoint_is_not_durable_or_outside_colab(
    colab_runtime, tmp_path, caplog, capsys, monkeypatch
):
    store = FaultyStore(LocalStore(tmp_path / "drive"))
    store.fail(5, ops=("put",))
    with caplog.at_level("WARNING", logger="colabkit"):
        history = train(tmp_path, store=store, run_dir=None, release_runtime=True,
                        clock=FakeClock())  # fmt: skip
    assert history.completed and not history.durable
    assert colab_runtime.calls == [] and "Not releasing the runtime" in caplog.text
    monkeypatch.delenv("COLAB_RELEASE_TAG")
    assert train(tmp_path / "local", release_runtime=True).durable
    assert colab_runtime.calls == []
    assert "release_runtime: not in Colab, nothing to release" in capsys.readouterr().err


def test_the_cli_notifies_too_and_refuses_a_bad_url_in_one_line(webhook, tmp_path, capsys):
    from colabkit.cli import main

    run = ["train", "mnist", "--run-dir", str(tmp_path / "run"), "--dataset", "mnist-5k",
           "--limit", "256", "--epochs", "1"]  # fmt: skip
    assert main([*run, "--notify", f"ftp://hooks.example/{SECRET}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--notify. Received: 'ftp://…'" in err[0]
    assert SECRET not in err[0] and not (tmp_path / "run").exists()
    assert main([*run, "--notify", webhook.url]) == 0
    (body,) = webhook.received
    assert body["event"] == "finished" and body["epochs"] == 1
    assert SECRET not in "".join(capsys.readouterr())
