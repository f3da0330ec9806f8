"""The end of a run: one notification, and giving a paid Colab runtime back.

``notify=URL``: after the run finishes, stops at the session limit, stops on a signal or fails,
and only once its newest checkpoint is durable (or known not to be), one POST of JSON: the
event, the run, how far it got, whether that is durable, and a ``text`` line that chat webhooks
(Slack, Discord, Google Chat, ntfy) show as it is. The URL is a secret (a webhook's token is in
its path): it is never logged or printed, and errors name only its scheme and host. A
notification that fails is one warning; it never fails or delays the run beyond its timeout.

``release_runtime=True``: in Colab, once the final checkpoint is durable and Drive is flushed,
``google.colab.runtime.unassign()`` gives the VM back, so that a finished run stops spending
compute units. Never before durability, never outside Colab; each refusal says why.
"""

from __future__ import annotations

import logging
import sys
from typing import Any
from urllib.parse import urlsplit

from colabkit.errors import RunSupersededError, invalid_argument

log = logging.getLogger(__name__)

#: Seconds a notification may take (connect and answer); a slow server costs at most this.
NOTIFY_TIMEOUT_S = 10.0


def check_notify(url: Any) -> str | None:
    """``url`` if it is an http(s) URL (or None); a ConfigError that does not echo it."""
    if url is None:
        return None
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        shown = f"{parts.scheme}://…" if parts and parts.scheme else type(url).__name__
        raise invalid_argument("notify", shown, "an http:// or https:// URL (a webhook)")
    return url


def message(event: str, run: str, epoch: int | None, epochs: int, durable: bool | None) -> dict:
    """The notification's JSON body."""
    where = f"epoch {epoch} of {epochs}" if epoch is not None else "before its first checkpoint"
    saved = {True: "saved", False: "NOT durable (see the log)", None: "not saved"}[durable]
    said = {
        "finished": f"finished: {where}, {saved}",
        "deadline": f"stopped at the session limit: {where}, {saved}; run it again to resume",
        "stopped": f"stopped: {where}, {saved}; run it again to resume",
        "failed": f"failed at {where} (checkpoint {saved}); see the notebook",
    }[event]
    return {
        "event": event,
        "run": run,
        "epoch": epoch,
        "epochs": epochs,
        "durable": durable,
        "text": f"colabkit run {run} {said}.",
    }


def notify(url: str, body: dict, timeout: float | None = None) -> bool:
    """POSTs ``body``; a failure is one warning naming the host, never the URL."""
    import requests

    host = urlsplit(url).hostname
    quiet = logging.getLogger("urllib3.connectionpool")  # logs request paths at DEBUG
    level = quiet.level
    quiet.setLevel(max(quiet.getEffectiveLevel(), logging.INFO))
    try:
        answer = requests.post(url, json=body, timeout=timeout or NOTIFY_TIMEOUT_S)
    except requests.RequestException as e:  # its text holds the URL: not shown
        log.warning("Could not send the notification to %s (%s).", host, type(e).__name__)
        return False
    finally:
        quiet.setLevel(level)
    if answer.status_code >= 300:
        log.warning("The notification to %s was refused (HTTP %d).", host, answer.status_code)
        return False
    log.info("Notified %s: %s", host, body["event"])
    return True


def release_runtime(*, durable: bool) -> bool:
    """Gives the Colab runtime back once the run is durable and Drive flushed; says why not."""
    from colabkit import drive, env

    if not durable:
        log.warning("Not releasing the runtime: the newest checkpoint is not durable.")
        return False
    if env.detect(session_limit=None).kind != "colab":
        print("colabkit: release_runtime: not in Colab, nothing to release.", file=sys.stderr)
        return False
    try:
        drive.flush_drive()
    except Exception as e:  # noqa: BLE001 - the files may not all be on Drive: keep the VM
        log.warning("Not releasing the runtime: flushing Google Drive failed (%s).", e)
        return False
    try:
        from google.colab import runtime  # type: ignore[import-not-found]

        print("colabkit: run saved and durable; releasing this Colab runtime.", flush=True)
        runtime.unassign()
    except Exception as e:  # noqa: BLE001 - the run is saved; the VM stays
        log.warning("Could not release the Colab runtime (%s): release it from the menu.", e)
        return False
    return True


def end_of_run(history, failure, closed, progress, epochs, run, *, notify_url, release,
               deadline, sessions):  # fmt: skip
    """After ``colabkit.fit`` (``history``, or the ``failure`` it raised; ``closed``: whether
    its checkpoints reached the store): the session log's end record, the notification and the
    runtime's release, once durability is known."""
    if isinstance(failure, RunSupersededError):
        return  # the session that took over owns the run: nothing more is written, not even this
    if failure is None:
        event = "finished" if history.completed else "stopped"
        event = "deadline" if history.stop_reason == "deadline" else event
        durable = history.durable
        reason = history.stop_reason or event
    else:
        event = "stopped" if isinstance(failure, KeyboardInterrupt) else "failed"
        durable = closed
        reason = "SIGINT" if event == "stopped" else f"failed: {type(failure).__name__}"
    sessions.end(reason=reason, epoch=progress.epoch, global_step=progress.global_step,
                 durable=durable)  # fmt: skip
    if notify_url is not None:
        timeout = None
        if event == "deadline":
            timeout = max(1.0, min(NOTIFY_TIMEOUT_S, deadline.store_wait_budget()))
        notify(notify_url, message(event, run, progress.epoch, epochs, durable), timeout)
    if release and event in ("finished", "deadline"):
        release_runtime(durable=durable)
