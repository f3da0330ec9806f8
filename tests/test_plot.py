"""The learning curve draws a resumed run as one continuous run, with each resume marked."""

from __future__ import annotations

import logging
import sys

import pytest

from colabkit.plot import learning_curve_figure, learning_curve_png, resume_positions

HISTORY = {
    "loss": [2.0, 1.5, 1.0, 0.8, 0.6],
    "accuracy": [0.3, 0.5, 0.7, 0.8, 0.9],
    "val_loss": [1.9, 1.4, 1.1, 0.9, 0.7],
    "val_accuracy": [0.35, 0.55, 0.65, 0.75, 0.85],
}
RESUMES = [
    {"epoch": 2, "step": 0, "global_step": 20, "time": 1.0},
    {"epoch": 3, "step": 5, "global_step": 35, "time": 2.0},
]


def _lines_by_label(axes):
    return {line.get_label(): line for line in axes.get_lines()}


def test_each_metric_is_one_continuous_line_over_all_epochs():
    figure = learning_curve_figure(HISTORY, RESUMES, steps_per_epoch=10)

    loss_axes, accuracy_axes = figure.axes
    for axes, metrics in (
        (loss_axes, ("loss", "val_loss")),
        (accuracy_axes, ("accuracy", "val_accuracy")),
    ):
        lines = _lines_by_label(axes)
        for metric in metrics:
            assert list(lines[metric].get_xdata()) == [1, 2, 3, 4, 5]
            assert list(lines[metric].get_ydata()) == HISTORY[metric]


def test_each_resume_is_marked_where_it_continued():
    figure = learning_curve_figure(HISTORY, RESUMES, steps_per_epoch=10)

    for axes in figure.axes:
        markers = [line for line in axes.get_lines() if line.get_linestyle() == ":"]
        assert [line.get_xdata()[0] for line in markers] == [2.0, 3.5]
        assert [text.get_text() for text in axes.texts] == ["resume 1", "resume 2"]


def test_resume_positions_place_mid_epoch_resumes_between_epochs():
    assert resume_positions(RESUMES, steps_per_epoch=10) == [2.0, 3.5]
    assert resume_positions(RESUMES) == [2.0, 3.0]  # no step count: start of the epoch


def test_png_is_a_png_image():
    png = learning_curve_png(HISTORY, RESUMES, steps_per_epoch=10)

    assert png is not None and png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 10_000  # two panels with content, not an empty canvas


def test_without_matplotlib_the_plot_is_skipped_with_one_log_line(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # find_spec now says "not installed"

    with caplog.at_level(logging.INFO, logger="colabkit.plot"):
        assert learning_curve_png(HISTORY, RESUMES) is None

    assert len(caplog.records) == 1
    assert "pip install 'colabkit-keras[plot]'" in caplog.records[0].getMessage()


@pytest.mark.parametrize("history", [{}, {"loss": [1.0]}])
def test_short_or_empty_histories_still_render(history):
    assert learning_curve_png(history).startswith(b"\x89PNG")
