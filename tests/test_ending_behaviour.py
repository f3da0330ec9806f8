"""The end of a run as the webhook receives it: ``durable`` is false whenever the store could not
be reached, and a webhook that refuses the message is one warning, never "sent", never retried.

``colabkit.fit(notify=URL)`` with real Keras training (test_ending's tiny model) against a
webhook on loopback (test_ending.Webhook), the store wrapped in a FaultyStore whose puts fail
as an unreachable Drive mount fails (errno 107).
"""

from __future__ import annotations

import keras
import pytest
from test_ending import SECRET, everything_said, train
from test_ending import webhook as webhook  # the fixture

from colabkit.clock import FakeClock
from colabkit.storage import LocalStore
from colabkit.storage.faults import ENOTCONN, FaultyStore
from colabkit.training.deadline import SessionDeadline


@pytest.fixture
def unreachable(tmp_path):
    """The run's store, which no upload reaches (the claim neither)."""
    store = FaultyStore(LocalStore(tmp_path / "drive"))
    store.fail(ENOTCONN, ops=("put",))
    return store


def train_on(store, tmp_path, **kwargs):
    return train(tmp_path, store=store, run_dir=None, clock=FakeClock(start=1_000.0), **kwargs)


def test_a_finished_run_whose_store_could_not_be_reached_is_not_durable(
    webhook, unreachable, tmp_path
):
    history = train_on(unreachable, tmp_path, notify=webhook.url)
    assert history.completed and not history.durable
    (body,) = webhook.received
    assert body["event"] == "finished" and body["durable"] is False
    assert body["text"].endswith("finished: epoch 3 of 3, NOT durable (see the log).")


def test_a_failed_run_whose_store_could_not_be_reached_is_not_durable(
    webhook, unreachable, tmp_path
):
    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        train_on(unreachable, tmp_path, notify=webhook.url, callbacks=[Crash()])
    (body,) = webhook.received
    assert body["event"] == "failed" and body["durable"] is False
    assert "(checkpoint NOT durable (see the log))" in body["text"]


def test_a_stop_at_the_session_limit_whose_store_could_not_be_reached_is_not_durable(
    webhook, unreachable, tmp_path
):
    clock = FakeClock(start=1_000.0)

    class Tick(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            clock.advance(4 * 60.0)

    deadline = SessionDeadline("15m", session_limit="30m", session_start=1_000.0, clock=clock)
    history = train(tmp_path, store=unreachable, run_dir=None, clock=clock,
                    notify=webhook.url, callbacks=[Tick(), deadline])  # fmt: skip
    assert history.stop_reason == "deadline" and not history.durable
    (body,) = webhook.received
    assert body["event"] == "deadline" and body["durable"] is False
    assert "NOT durable (see the log); run it again to resume" in body["text"]


@pytest.mark.parametrize("status", [400, 404, 410, 500])
def test_a_webhook_that_refuses_the_message_is_one_warning_and_one_request(
    webhook, tmp_path, caplog, capsys, status
):
    """Slack answers 404 (no such webhook) or 410 (channel archived): the message is not sent,
    and sending it again would not change that. The run's result is unchanged."""
    webhook.status = status
    with caplog.at_level("DEBUG", logger="colabkit"):
        history = train(tmp_path, notify=webhook.url)
    assert history.completed and history.durable
    assert len(webhook.received) == 1  # one request: not retried
    said = [r for r in caplog.records if "notif" in r.getMessage().lower()]
    assert [(r.levelname, r.getMessage()) for r in said] == [
        ("WARNING", f"The notification to 127.0.0.1 was refused (HTTP {status}).")
    ]
    assert SECRET not in everything_said(caplog, capsys)


def test_a_webhook_that_answers_204_received_the_message(webhook, tmp_path, caplog):
    webhook.status = 204  # Discord's answer to a webhook message
    with caplog.at_level("INFO", logger="colabkit"):
        assert train(tmp_path, notify=webhook.url).completed
    assert len(webhook.received) == 1
    assert "Notified 127.0.0.1: finished" in caplog.text
    assert "refused" not in caplog.text and "Could not send" not in caplog.text
