"""PNG figures of the inspection: grids of filters or patches, one panel per network, side by side."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedkit.render.plots import _plt, save_figure


@dataclass
class Panel:
    """One network's grid: ``cells[row][col]`` are HxWx3 float images in [0, 1] (None = empty cell)."""

    title: str
    cells: list
    row_labels: list = field(default_factory=list)


def mosaic(cells: list, cell: int, gap: int = 2, background: float = 1.0) -> np.ndarray:
    """Paste rows of HxWx3 images (resized to ``cell`` px, nearest neighbour) into one RGB array."""
    rows = len(cells)
    cols = max((len(r) for r in cells), default=0)
    out = np.full((rows * (cell + gap) + gap, cols * (cell + gap) + gap, 3), background, np.float32)
    for i, row in enumerate(cells):
        for j, img in enumerate(row):
            if img is None:
                continue
            y, x = gap + i * (cell + gap), gap + j * (cell + gap)
            out[y:y + cell, x:x + cell] = resize_nearest(np.asarray(img, np.float32), cell)
    return out


def resize_nearest(img: np.ndarray, size: int) -> np.ndarray:
    """Square HxWxC image to ``size`` x ``size`` by nearest neighbour (filters stay crisp, no new colours)."""
    h, w = img.shape[:2]
    ys = (np.arange(size) * h // size).clip(0, h - 1)
    xs = (np.arange(size) * w // size).clip(0, w - 1)
    return img[ys][:, xs]


def grid_figure(panels: list[Panel], path: str | os.PathLike, cell: int, title: str = "", dpi: int = 100,
                col_label: str = "") -> Path:
    """Draw the panels side by side (one mosaic each, row labels on the left) and save them as PNG.

    The figure is sized so that one mosaic pixel is about one output pixel at ``dpi``.
    """
    plt = _plt()
    arrays = [mosaic(p.cells, cell) for p in panels]
    h = max(a.shape[0] for a in arrays)
    w = sum(a.shape[1] for a in arrays)
    label_px = 60 if any(p.row_labels for p in panels) else 10
    fig_w = (w + label_px * len(panels) + 40) / dpi
    fig_h = (h + 70 + (20 if title else 0)) / dpi
    fig, axes = plt.subplots(1, len(panels), figsize=(fig_w, fig_h), squeeze=False,
                             gridspec_kw={"width_ratios": [a.shape[1] for a in arrays]})
    for ax, panel, arr in zip(axes[0], panels, arrays):
        ax.imshow(arr, interpolation="nearest")
        ax.set_title(panel.title, fontsize=9)
        ax.set_xticks([])
        if panel.row_labels:
            step = arr.shape[0] / len(panel.row_labels)
            ax.set_yticks([step * (i + 0.5) for i in range(len(panel.row_labels))], panel.row_labels, fontsize=7)
        else:
            ax.set_yticks([])
        if col_label:
            ax.set_xlabel(col_label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=dpi)


__all__ = ["Panel", "grid_figure", "mosaic", "resize_nearest"]
