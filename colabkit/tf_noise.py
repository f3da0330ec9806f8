"""TensorFlow's start-up lines, kept out of what ``colabkit train`` prints.

TensorFlow's C++ side logs through absl straight to file descriptor 2 ("oneDNN custom operations
are on", "Could not find cuda drivers", "This TensorFlow binary is optimized to use ...", and on
a machine without a GPU "failed call to cuInit"); TensorFlow 2.21 prints them even with
``TF_CPP_MIN_LOG_LEVEL`` set, before its logging is initialised. Around a CLI command, this
module relays descriptor 2 through a pipe and drops those lines; everything else passes through
as it comes, in order. A user who set ``TF_CPP_MIN_LOG_LEVEL`` gets TensorFlow's own behaviour.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator

_ABSL = rb"(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] )"  # I0000 00:00:1796.. 1 port.cc:153]
_OLD = rb"(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] \S+:\d+\] )"  # 2025-07-29 ...: I tf/...]
_NOISE = re.compile(
    rb"^(?:(?=[IW]|\d{4}-\d\d-\d\d \S+: [IW] )(?:" + _ABSL + rb"|" + _OLD + rb")"  # INFO, WARNING
    rb"|(?:" + _ABSL + rb"|" + _OLD + rb").*failed call to cuInit: .*\(303\)"  # no GPU here
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|To enable the following instructions: .*rebuild TensorFlow)"  # cpu_feature_guard's 2nd
)


def is_noise(line: bytes) -> bool:
    """Whether ``line`` is one of TensorFlow's start-up lines."""
    return _NOISE.match(line) is not None


@contextlib.contextmanager
def quiet_tensorflow() -> Iterator[None]:
    """Drops TensorFlow's start-up lines from stderr while the block runs."""
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        yield
        return
    sys.stderr.flush()
    stderr = os.dup(2)
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)
    relay = threading.Thread(target=_relay, args=(read, stderr), name="colabkit-stderr")
    relay.daemon = True
    relay.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(stderr, 2)  # the pipe's last writer is gone: the relay reads to its end
        relay.join(timeout=10)
        os.close(stderr)


def _relay(read: int, stderr: int) -> None:
    with os.fdopen(read, "rb") as pipe:
        for line in pipe:
            if is_noise(line):
                continue
            with contextlib.suppress(OSError):  # nobody reads stderr now: keep draining
                os.write(stderr, line)
