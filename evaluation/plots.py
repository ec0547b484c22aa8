"""Report plots as PNG files: PR curves, confusion matrix heatmaps, per-class bar charts.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no GUI backend, no
global state), so plotting works on headless machines and from any thread.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from detseg.core.atomic_files import write_file_atomic

PR_COLUMNS = 4
MAX_ANNOTATED_CELLS = 30  # confusion matrices up to 30 x 30 get their counts written in
DPI = 90


def _save(figure: Figure, path: str | os.PathLike) -> Path:
    """Write `figure` as a PNG at `path`, atomically."""
    FigureCanvasAgg(figure)
    return write_file_atomic(path, lambda temporary: figure.savefig(temporary, dpi=DPI, bbox_inches="tight"))


def plot_pr_curves(pr_curves: dict[str, Any], path: str | os.PathLike, title: str) -> Path | None:
    """One panel per class with ground truth: precision vs recall at IoU 0.5 and 0.75.

    `pr_curves` is `evaluate_coco(...)["pr_curves"]`. Returns None when no class has a curve.
    """
    recall = np.asarray(pr_curves["recall"])
    classes = [c for c in pr_curves["classes"] if c["precision_iou50"] is not None]
    if not classes:
        return None
    rows = math.ceil(len(classes) / PR_COLUMNS)
    columns = min(PR_COLUMNS, len(classes))
    figure = Figure(figsize=(3.2 * columns, 2.8 * rows + 0.6))
    figure.suptitle(title)
    for i, curve in enumerate(classes):
        axes = figure.add_subplot(rows, columns, i + 1)
        axes.plot(recall, curve["precision_iou50"], label="IoU 0.50")
        axes.plot(recall, curve["precision_iou75"], label="IoU 0.75", linestyle="--")
        axes.set(title=f"{curve['name']} (id {curve['coco_id']})", xlim=(0, 1), ylim=(0, 1.02),
                 xlabel="recall", ylabel="precision")
        axes.grid(alpha=0.3)
        if i == 0:
            axes.legend(loc="lower left", fontsize="small")
    figure.tight_layout()
    return _save(figure, path)


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: str | os.PathLike,
                          title: str, true_axis: str = "true", predicted_axis: str = "predicted") -> Path:
    """Heatmap of `matrix[true, predicted]`, colour by row share (so rare classes show too)."""
    counts = np.asarray(matrix, np.int64)
    row_totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, row_totals, out=np.zeros(counts.shape), where=row_totals > 0)
    side = max(4.0, 0.5 * len(labels) + 2)
    figure = Figure(figsize=(side + 1, side))
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of row")
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set(title=title, xlabel=predicted_axis, ylabel=true_axis)
    if len(labels) <= MAX_ANNOTATED_CELLS:
        for (row, column), count in np.ndenumerate(counts):
            axes.text(column, row, str(count), ha="center", va="center", fontsize="small",
                      color="white" if shares[row, column] > 0.5 else "black")
    figure.tight_layout()
    return _save(figure, path)


def plot_per_class_bars(names: Sequence[str], values: Sequence[float | None], path: str | os.PathLike,
                        title: str, ylabel: str) -> Path:
    """Bar per class; a None value (nothing to measure) is drawn as an "n/a" label, no bar."""
    width = max(4.0, 0.45 * len(names) + 1.5)
    figure = Figure(figsize=(width, 3.6))
    axes = figure.add_subplot(1, 1, 1)
    heights = [0.0 if v is None else v for v in values]
    axes.bar(range(len(names)), heights, color=["#bbbbbb" if v is None else "#3c78b4" for v in values])
    for i, value in enumerate(values):
        axes.text(i, (value or 0) + 0.02, "n/a" if value is None else f"{value:.2f}",
                  ha="center", va="bottom", fontsize="small")
    axes.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes.set(title=title, ylabel=ylabel, ylim=(0, 1.1))
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)
