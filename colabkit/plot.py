"""Learning curves across resumes: one continuous curve per metric, each resume marked.

A run that was interrupted three times is still one run: ``colabkit.fit`` returns the full
per-epoch history, and this plot draws it as such, with a dashed line where each session resumed,
so a user can see that nothing was lost or repeated.

matplotlib is optional (``pip install 'colabkit-keras[plot]'``); without it the plot is skipped
with one log line, because a missing picture must never fail a training job.
"""

from __future__ import annotations

import importlib.util
import io
import logging
from collections.abc import Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)

_PANELS = (("loss", "Loss"), ("accuracy", "Accuracy"))


def learning_curve_png(
    history: Mapping[str, Sequence[float]],
    resumes: Sequence[Mapping[str, Any]] = (),
    *,
    steps_per_epoch: int | None = None,
    title: str = "Learning curve",
) -> bytes | None:
    """The learning curve as PNG bytes, or None when matplotlib is not installed (logged once).

    Args are those of :func:`learning_curve_figure`.
    """
    figure = learning_curve_figure(history, resumes, steps_per_epoch=steps_per_epoch, title=title)
    if figure is None:
        return None
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def learning_curve_figure(
    history: Mapping[str, Sequence[float]],
    resumes: Sequence[Mapping[str, Any]] = (),
    *,
    steps_per_epoch: int | None = None,
    title: str = "Learning curve",
) -> Any:
    """Draws loss and accuracy per epoch (train and validation), each resume a dotted line.

    Args:
        history: Per-epoch metrics, e.g. ``History.history`` from ``colabkit.fit``
            (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``; others are ignored).
        resumes: Where each resume started: dicts with ``epoch`` (epochs completed before it)
            and ``step`` (batches into that epoch), as in ``History.resumes``.
        steps_per_epoch: Places a mid-epoch resume between two epochs; without it a resume is
            drawn at the start of its epoch.
        title: The figure title.

    Returns:
        A ``matplotlib.figure.Figure`` (not registered with pyplot, so it never leaks into a
        notebook's state), or None when matplotlib is not installed.
    """
    if importlib.util.find_spec("matplotlib") is None:
        logger.info(
            "matplotlib is not installed; skipping the learning-curve plot "
            "(pip install 'colabkit-keras[plot]')."
        )
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)
    positions = resume_positions(resumes, steps_per_epoch)
    for axes, (metric, label) in zip(figure.subplots(1, 2), _PANELS, strict=True):
        _draw_panel(axes, history, metric, label, positions)
    figure.suptitle(title)
    return figure


def resume_positions(
    resumes: Sequence[Mapping[str, Any]], steps_per_epoch: int | None = None
) -> list[float]:
    """X positions (in epochs, epoch N's point at x = N) where each resume started.

    A resume at epoch e, step s continued after e complete epochs and s batches, so it sits at
    ``e + s / steps_per_epoch``: on epoch e's point when it resumed at an epoch boundary.
    """
    positions = []
    for resume in resumes:
        epoch, step = float(resume.get("epoch", 0)), float(resume.get("step", 0))
        fraction = step / steps_per_epoch if steps_per_epoch else 0.0
        positions.append(epoch + min(fraction, 1.0))
    return positions


def _draw_panel(
    axes: Any,
    history: Mapping[str, Sequence[float]],
    metric: str,
    label: str,
    positions: Sequence[float],
) -> None:
    from matplotlib.ticker import MaxNLocator

    for name, style in ((metric, "o-"), (f"val_{metric}", "s--")):
        values = [float(v) for v in history.get(name, ())]
        if values:
            axes.plot(range(1, len(values) + 1), values, style, markersize=3, label=name)
    for index, x in enumerate(positions):
        axes.annotate(
            f"resume {index + 1}",
            (x, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -10),
            textcoords="offset points",
            color="tab:red",
            fontsize="x-small",
        )
        axes.axvline(
            x,
            color="tab:red",
            linestyle=":",
            linewidth=1.2,
            label="resumed" if index == 0 else None,
        )
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel(label)
    axes.grid(alpha=0.3)
    if axes.has_data():
        axes.legend(loc="best", fontsize="small")
