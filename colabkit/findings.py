"""Findings: one problem (or note) each, with the one-line fix a user can act on.

The rules that make them live next to what they judge (``gpu``, ``tpu``, ``doctor``); this
module imports nothing of colabkit, so every module can report findings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Finding:
    """A problem or note found by a check.

    Attributes:
        severity: ``"error"`` (something will not work), ``"warning"`` (it works, worse than it
            should) or ``"info"``.
        code: A stable identifier for scripts, e.g. ``"no-gpu"``.
        message: What was found, with the values measured.
        fix: What to do about it.
        blocks_gpu: Whether this finding means Keras cannot train on a GPU here.
    """

    severity: Severity
    code: str
    message: str
    fix: str
    blocks_gpu: bool = False
