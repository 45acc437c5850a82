"""Matplotlib figures of runs, each also written to a file (so a notebook run leaves its plots behind).

matplotlib is a development dependency (``pip install -e ".[dev]"``), imported only when a plot is made,
so reading runs with `neobert_tasks.analysis.runs` works without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from neobert_tasks.analysis.runs import metric_curve

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _pyplot():
    import matplotlib.pyplot as pyplot

    return pyplot


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` to ``path`` (format from its suffix), creating the folder; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _laid_out_and_saved(figure: Figure, path: str | Path) -> Figure:
    """``figure`` after a tight layout and `save_figure`, to return from a plot."""
    figure.tight_layout()
    save_figure(figure, path)
    return figure


def plot_learning_curves(
    logged_by_run: Mapping[str, pd.DataFrame], metric_names: Sequence[str], path: str | Path
) -> Figure:
    """One panel per metric, one line per run, against the optimiser step.

    Args:
        logged_by_run: Run label → that run's `logged_metrics` frame.
        metric_names: Logged names to draw (``train/loss``, ``val/accuracy``, ...); a run that did not
            log one is left out of its panel.
        path: Image file to write.
    """
    figure, axes = _pyplot().subplots(
        1, len(metric_names), figsize=(4.5 * len(metric_names), 3.4), squeeze=False
    )
    for axis, name in zip(axes[0], metric_names, strict=True):
        for label, logged in logged_by_run.items():
            if name in logged.columns:
                curve = metric_curve(logged, name)
                axis.plot(curve["step"], curve["value"], marker="o" if len(curve) < 20 else None, label=label)
        axis.set(title=name, xlabel="step")
        axis.grid(alpha=0.3)
    axes[0][0].legend()
    return _laid_out_and_saved(figure, path)


def plot_against_paper(table: pd.DataFrame, path: str | Path) -> Figure:
    """Bars per row of a GLUE results table: its score beside the NeoBERT paper's.

    ``table`` has the columns of ``neobert_tasks.suite.results_dataframe``: ``name`` (the task, or the
    GLUE average), ``metric`` (the main metric), ``mean`` (this suite's score in percent) and ``paper``.
    """
    figure, axis = _pyplot().subplots(figsize=(1.3 * len(table) + 3, 3.8))
    positions = np.arange(len(table))
    width = 0.38
    axis.bar(positions - width / 2, table["mean"].astype(float), width, label="this suite")
    axis.bar(positions + width / 2, table["paper"].astype(float), width, label="NeoBERT paper (dev)")
    labels = [f"{name}\n({metric})" for name, metric in zip(table["name"], table["metric"], strict=True)]
    axis.set_xticks(positions, labels)
    axis.set(ylabel="score (%)", ylim=(0, 100), title="GLUE dev, main metric per task")
    axis.legend(loc="lower right")
    return _laid_out_and_saved(figure, path)


def plot_confusion_matrix(
    matrix: np.ndarray, label_names: Sequence[str], path: str | Path, title: str = "Confusion matrix"
) -> Figure:
    """Counts per (gold, predicted) class with the number written in each cell; gold classes are rows."""
    figure, axis = _pyplot().subplots(figsize=(1.1 * len(label_names) + 2.5, 1.1 * len(label_names) + 1.8))
    image = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axis)
    ticks = np.arange(len(label_names))
    axis.set_xticks(ticks, label_names, rotation=30, ha="right")
    axis.set_yticks(ticks, label_names)
    axis.set(xlabel="predicted", ylabel="gold", title=title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for row, column in np.ndindex(matrix.shape):
        color = "white" if matrix[row, column] > threshold else "black"
        axis.text(column, row, str(matrix[row, column]), ha="center", va="center", color=color)
    return _laid_out_and_saved(figure, path)


def plot_versus(
    frame: pd.DataFrame,
    x: str,
    y_columns: Sequence[str],
    path: str | Path,
    group: str | None = None,
    log_scale: bool = False,
) -> Figure:
    """One panel per ``y_columns`` entry against ``x``, one line per value of ``group`` (if given).

    ``log_scale`` draws both axes on log scales (costs that grow with powers of the length), in the
    panels whose values are all positive.
    """
    figure, axes = _pyplot().subplots(1, len(y_columns), figsize=(4.5 * len(y_columns), 3.4), squeeze=False)
    groups = frame.groupby(group, sort=False) if group else [(None, frame)]
    for name, rows in groups:
        rows = rows.sort_values(x)
        for axis, column in zip(axes[0], y_columns, strict=True):
            axis.plot(rows[x], rows[column], marker="o", label=name)
    for axis, column in zip(axes[0], y_columns, strict=True):
        axis.set(xlabel=x, title=column)
        if log_scale and (frame[x] > 0).all() and (frame[column] > 0).all():  # log of 0 or NaN: linear
            axis.set(xscale="log", yscale="log")
        # Ticks at the measured x values (lengths), written plainly rather than as powers of ten.
        values = sorted(frame[x].unique())
        axis.set_xticks(values, [f"{value:g}" for value in values])
        axis.xaxis.set_minor_locator(_pyplot().NullLocator())
        axis.grid(alpha=0.3)
        if group:
            axis.legend(title=group)
    return _laid_out_and_saved(figure, path)
