"""One summary, two renderings: plain text for a terminal, an HTML table for a notebook.

``setup()`` and ``colabkit doctor`` show the same facts the same way, so both build rows here.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from colabkit.duration import format_duration
from colabkit.env import Environment
from colabkit.findings import Finding
from colabkit.frameworks import FrameworkView
from colabkit.gpu import AcceleratorReport, GpuInfo

_KIND_NAMES = {"colab": "Google Colab", "kaggle": "Kaggle", "local": "local machine"}


def summary_rows(
    env: Environment, accelerator: AcceleratorReport, now: float
) -> list[tuple[str, str]]:
    """The (label, value) rows shared by the setup summary and the doctor report."""
    rows = [
        ("Environment", f"{_KIND_NAMES[env.kind]} ({'; '.join(env.evidence)})"),
        ("Session", _session_text(env, now)),
        ("GPU", "; ".join(_gpu_text(g) for g in accelerator.gpus) or "none"),
    ]
    if accelerator.tpu.present:
        rows.append(("TPU", f"{accelerator.tpu.runtime} ({', '.join(accelerator.tpu.evidence)})"))
    if accelerator.frameworks:
        rows.append(("Frameworks", "; ".join(_framework_text(v) for v in accelerator.frameworks)))
    return rows


def _session_text(env: Environment, now: float) -> str:
    elapsed = f"started {format_duration(env.elapsed(now))} ago ({env.session_start_source})"
    left = env.time_left(now)
    if left is None or env.session_limit_s is None:
        return f"{elapsed}; no session limit"
    limit = format_duration(env.session_limit_s)
    return f"{elapsed}; about {format_duration(left)} left of {limit}"


def _gpu_text(gpu: GpuInfo) -> str:
    memory = ""
    if gpu.memory_free_mib is not None and gpu.memory_total_mib is not None:
        memory = f", {gpu.memory_free_mib}/{gpu.memory_total_mib} MiB free"
    return f"{gpu.index}: {gpu.name}{memory}, driver {gpu.driver_version}"


def _framework_text(view: FrameworkView) -> str:
    if not view.installed:
        return f"{view.name} not installed"
    if view.error is not None:
        return f"{view.name}: check failed"
    return f"{view.name} {view.version}: {view.gpu_count} GPU"


def render_text(rows: Sequence[tuple[str, str]], findings: Sequence[Finding]) -> str:
    """Aligned ``label: value`` lines, then each finding with its fix."""
    width = max((len(label) for label, _ in rows), default=0)
    lines = [f"{label + ':':<{width + 1}} {value}" for label, value in rows]
    if findings:
        lines.append("")
        for finding in findings:
            lines.append(f"[{finding.severity}] {finding.message}")
            lines.append(f"    Fix: {finding.fix}")
    else:
        lines.append("No problems found.")
    return "\n".join(lines)


def render_html(rows: Sequence[tuple[str, str]], findings: Sequence[Finding]) -> str:
    """A small HTML table (escaped), then the findings as a list."""
    esc = html.escape
    cells = "".join(
        f"<tr><th style='text-align:left'>{esc(label)}</th><td style='text-align:left'>"
        f"{esc(value)}</td></tr>"
        for label, value in rows
    )
    items = "".join(
        f"<li><b>{esc(f.severity)}</b>: {esc(f.message)}<br>Fix: {esc(f.fix)}</li>"
        for f in findings
    )
    problems = f"<ul>{items}</ul>" if items else "<p>No problems found.</p>"
    return f"<table>{cells}</table>{problems}"
