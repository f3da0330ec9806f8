"""A fake ``google.colab.runtime``: ``unassign()`` as colabtools' runtime.py has it.

The real one POSTs to the runtime's manager at ``$TBE_RUNTIME_ADDR`` and raises
``RuntimeManagementError`` when that is not set or the request fails; the VM then goes away.
Here ``calls`` records each call (with what ``on_unassign`` returns at that moment, e.g. the
store's files) and ``fail_with`` makes the next call raise.
"""

from __future__ import annotations

calls: list[object] = []
on_unassign = None
fail_with: BaseException | None = None


class RuntimeManagementError(Exception):
    """``google.colab.errors.RuntimeManagementError``."""


def reset() -> None:
    global on_unassign, fail_with
    calls.clear()
    on_unassign = fail_with = None


def unassign() -> None:
    global fail_with
    if fail_with is not None:
        error, fail_with = fail_with, None
        raise error
    calls.append(on_unassign() if on_unassign else None)
