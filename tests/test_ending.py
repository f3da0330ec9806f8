"""The end of a run: ``notify=URL`` against a webhook on loopback, and ``release_runtime`` with
the fake ``google.colab.runtime``: once durability is known, never the URL in any output, and a
failed notification never fails the run."""

from __future__ import annotations

import importlib
import io
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from fakes import FAKES

import colabkit
from colabkit import ending
from colabkit.clock import FakeClock
from colabkit.errors import ConfigError, DriveError, RunSupersededError
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


# -- the parts, with plain values ----------------------------------------------------------------

HOST = "127.0.0.1"


def ending_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "colabkit.ending"]


def test_a_notify_url_is_http_or_https_and_what_is_refused_is_never_echoed():
    for url in (f"https://hooks.slack.com/services/{SECRET}", "http://127.0.0.1:8080/hook"):
        assert ending.check_notify(url) == url
    assert ending.check_notify(None) is None
    refused = [
        (f"ftp://hooks.example/{SECRET}", "ftp://…"),
        (f"https:///{SECRET}", "https://…"),  # no host
        (f"hooks.example/{SECRET}", "str"),  # no scheme: nothing of it is shown
        (12345, "int"),
    ]
    for bad, shown in refused:
        with pytest.raises(ConfigError) as e:
            ending.check_notify(bad)
        assert str(e.value) == (
            f"Invalid value for argument `notify`. Received: notify={shown!r}. Expected an "
            "http:// or https:// URL (a webhook)."
        )


@pytest.mark.parametrize(
    ("event", "epoch", "durable", "said"),
    [
        ("finished", 3, True, "finished: epoch 3 of 3, saved"),
        ("finished", None, None, "finished: before its first checkpoint, not saved"),
        ("stopped", 2, True, "stopped: epoch 2 of 3, saved; run it again to resume"),
        ("deadline", 1, False, "stopped at the session limit: epoch 1 of 3, NOT durable (see "
         "the log); run it again to resume"),
        ("failed", 1, True, "failed at epoch 1 of 3 (checkpoint saved); see the notebook"),
    ],
)  # fmt: skip
def test_the_message_says_in_one_line_what_happened(event, epoch, durable, said):
    run = "gdrive://runs/mnist"
    assert ending.message(event, run, epoch, 3, durable) == {
        "event": event,
        "run": run,
        "epoch": epoch,
        "epochs": 3,
        "durable": durable,
        "text": f"colabkit run {run} {said}.",
    }


def test_notify_says_whether_the_webhook_took_it_and_never_logs_its_path(webhook, caplog):
    body = ending.message("finished", "run", 3, 3, True)
    caplog.set_level("DEBUG", logger="urllib3")  # which logs each request's path at DEBUG
    with caplog.at_level("DEBUG", logger="colabkit"):
        assert ending.notify(webhook.url, body) is True
        webhook.status = 204  # Discord's answer
        assert ending.notify(webhook.url, body) is True
    assert ending_lines(caplog) == [f"Notified {HOST}: finished"] * 2
    assert SECRET not in caplog.text
    for status in (300, 404, 500):
        webhook.status = status
        caplog.clear()
        assert ending.notify(webhook.url, body) is False
        assert ending_lines(caplog) == [f"The notification to {HOST} was refused (HTTP {status})."]
    down = Webhook()
    down.server.shutdown()
    down.server.server_close()
    caplog.clear()
    assert ending.notify(down.url, body) is False
    assert ending_lines(caplog) == [f"Could not send the notification to {HOST} (ConnectionError)."]
    assert SECRET not in caplog.text


class Console(io.StringIO):
    """Standard output that remembers what had been flushed (what the user saw) when."""

    flushed = ""

    def flush(self) -> None:
        self.flushed = self.getvalue()


def test_release_runtime_says_why_not_and_whether_it_released(
    colab_runtime, caplog, capsys, monkeypatch
):
    from colabkit import drive

    with caplog.at_level("WARNING", logger="colabkit"):
        assert ending.release_runtime(durable=False) is False
        flush = drive.flush_drive

        def flush_fails():
            raise DriveError("gone")

        monkeypatch.setattr(drive, "flush_drive", flush_fails)
        assert ending.release_runtime(durable=True) is False
        monkeypatch.setattr(drive, "flush_drive", flush)
        colab_runtime.fail_with = colab_runtime.RuntimeManagementError("no TBE_RUNTIME_ADDR")
        assert ending.release_runtime(durable=True) is False
    assert ending_lines(caplog) == [
        "Not releasing the runtime: the newest checkpoint is not durable.",
        "Not releasing the runtime: flushing Google Drive failed (gone).",
        "Could not release the Colab runtime (no TBE_RUNTIME_ADDR): release it from the menu.",
    ]
    assert colab_runtime.calls == []
    console = Console()
    monkeypatch.setattr(sys, "stdout", console)
    colab_runtime.on_unassign = lambda: console.flushed  # what was on screen as the VM went
    assert ending.release_runtime(durable=True) is True
    assert colab_runtime.calls == [
        "colabkit: run saved and durable; releasing this Colab runtime.\n"
    ]
    monkeypatch.delenv("COLAB_RELEASE_TAG")
    assert ending.release_runtime(durable=True) is False
    assert capsys.readouterr().err == (
        "colabkit: release_runtime: not in Colab, nothing to release.\n"
    )


class Ended:
    """``end_of_run``'s surroundings: the session log, the webhook's transport and the
    release, each recording what it was given."""

    def __init__(self, monkeypatch) -> None:
        import requests

        self.ends: list[dict] = []
        self.posts: list[tuple[dict, float]] = []
        self.releases: list[bool] = []
        self.budget = 300.0
        answer = type("Answer", (), {"status_code": 200})
        monkeypatch.setattr(
            requests,
            "post",
            lambda url, json, timeout: self.posts.append((json, timeout)) or answer,
        )
        monkeypatch.setattr(
            ending, "release_runtime", lambda durable: self.releases.append(durable)
        )

    def __call__(self, history=None, failure=None, *, closed=True, release=True, url=SECRET):
        ending.end_of_run(
            history, failure, closed, SimpleNamespace(epoch=2, global_step=20), 3, "run",
            notify_url=url and f"https://hooks.example/{url}", release=release,
            deadline=SimpleNamespace(store_wait_budget=lambda: self.budget),
            sessions=SimpleNamespace(end=lambda **fields: self.ends.append(fields)),
        )  # fmt: skip
        return self


def history(completed=True, stop_reason=None, durable=True):
    return SimpleNamespace(completed=completed, stop_reason=stop_reason, durable=durable)


def test_the_end_of_a_run_is_recorded_told_and_released_by_how_it_ended(monkeypatch):
    end = Ended(monkeypatch)
    end(history())
    assert end.ends == [{"reason": "finished", "epoch": 2, "global_step": 20, "durable": True}]
    assert [(body["event"], timeout) for body, timeout in end.posts] == [("finished", 10.0)]
    assert end.releases == [True]

    end = Ended(monkeypatch)(history(completed=False, stop_reason="stopped by a callback"))
    assert (
        end.ends[0]["reason"] == "stopped by a callback" and end.posts[0][0]["event"] == "stopped"
    )
    assert end.releases == []  # only a finished run, or one at the session limit, is released
    end = Ended(monkeypatch)(history(completed=False))
    assert end.ends[0]["reason"] == "stopped" and end.posts[0][0]["event"] == "stopped"

    end = Ended(monkeypatch)(failure=KeyboardInterrupt(), closed=True)
    assert end.ends == [{"reason": "SIGINT", "epoch": 2, "global_step": 20, "durable": True}]
    assert end.posts[0][0]["event"] == "stopped" and end.releases == []
    end = Ended(monkeypatch)(failure=RuntimeError("out of memory"), closed=False)
    assert end.ends == [
        {"reason": "failed: RuntimeError", "epoch": 2, "global_step": 20, "durable": False}
    ]
    assert end.posts[0][0]["event"] == "failed" and end.posts[0][0]["durable"] is False

    end = Ended(monkeypatch)(history(), release=False, url=None)
    assert end.ends and end.posts == [] and end.releases == []
    end = Ended(monkeypatch)(failure=RunSupersededError("taken over"))
    assert (end.ends, end.posts, end.releases) == ([], [], [])  # the new session owns the run


@pytest.mark.parametrize(("budget", "timeout"), [(300.0, 10.0), (3.0, 3.0), (0.0, 1.0)])
def test_at_the_session_limit_the_notification_waits_no_longer_than_the_session_has(
    monkeypatch, budget, timeout
):
    end = Ended(monkeypatch)
    end.budget = budget
    end(history(completed=False, stop_reason="deadline", durable=False))
    assert end.ends[0]["reason"] == "deadline" and end.ends[0]["durable"] is False
    assert [(body["event"], t) for body, t in end.posts] == [("deadline", timeout)]
    assert end.releases == [False]  # release_runtime itself refuses what is not durable
