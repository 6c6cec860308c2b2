"""PNG figures people would rather look at than read: confusion matrix, per-class bars, learning curves.

Every figure says what it plots: the confusion matrix's colour bar is labelled, per-class bars
name their measure, and a mean line says whether it is the global (micro) or the macro figure.

All functions write atomically (temporary file, then rename) and return the path.
matplotlib runs headless (Agg).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from embedkit.atomic import atomic_path


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plain_text(fig) -> None:
    """Draw every text of ``fig`` as written: class names such as ``$x^$`` are labels, not mathtext."""
    from matplotlib.text import Text

    for t in fig.findobj(Text):
        t.set_parse_math(False)
        t.set_usetex(False)


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG atomically and close it (texts drawn as plain text)."""
    plt = _plt()
    try:
        plain_text(fig)
        with atomic_path(path, suffix=".tmp.png") as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)
    return Path(path)


def confusion_matrix_png(cm: np.ndarray, class_names: Sequence[str], path, title: str = "Confusion matrix") -> Path:
    """Row-normalised confusion matrix (rows = true class) with counts in the cells when small enough.

    The colours are the fraction of each true class (the colour bar says so); the numbers are counts.
    """
    plt = _plt()
    cm = np.asarray(cm, dtype=float)
    k = len(class_names)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = max(5.0, 0.32 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=90, fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if k <= 40:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("fraction of the true class (row-normalised)" + ("; cell numbers are counts" if k <= 40 else ""))
    return save_figure(fig, path)


def per_class_precision_recall_png(per_class: dict, path, title: str = "Per-class precision and recall",
                                   micro: float | None = None, macro: dict | None = None) -> Path:
    """Two bars per class, precision and recall of the top-1 predictions, sorted by recall.

    ``per_class``: ``{class: {"precision": p, "recall": r}}``. ``micro``: the global figure (top-1 over
    all items, which is micro precision = micro recall here), drawn as a dotted line; ``macro``:
    ``{"precision", "recall"}`` unweighted means over classes, drawn as dashed lines. Every line's
    legend entry says which mean it is.
    """
    plt = _plt()
    names = sorted(per_class, key=lambda c: (per_class[c]["recall"], per_class[c]["precision"], c))
    rec = np.array([float(per_class[c]["recall"]) for c in names])
    prec = np.array([float(per_class[c]["precision"]) for c in names])
    pos = np.arange(len(names))
    h = 0.4
    fig, ax = plt.subplots(figsize=(7.5, max(3.0, 0.4 * len(names) + 1.5)))
    ax.barh(pos - h / 2, prec, height=h, color="#4477aa", label="precision (of items predicted as the class)")
    ax.barh(pos + h / 2, rec, height=h, color="#ee7733", label="recall = top-1 (of items of the class)")
    ax.set_yticks(pos, names, fontsize=8)
    ax.set_xlim(0, 1)
    if macro:
        ax.axvline(float(macro["precision"]), color="#224466", ls="--",
                   label=f"macro precision {float(macro['precision']):.3f} (mean over classes)")
        ax.axvline(float(macro["recall"]), color="#aa4400", ls="--",
                   label=f"macro recall {float(macro['recall']):.3f} (mean over classes)")
    if micro is not None:
        ax.axvline(float(micro), color="black", ls=":", label=f"global (micro) top-1 {float(micro):.3f} (over items)")
    ax.set_xlabel("top-1 precision / recall per class")
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
    return save_figure(fig, path)


def learning_curves_png(history: Sequence[dict], path, title: str = "Learning curves",
                        best_epoch: int | None = None) -> Path:
    """Loss and accuracy per epoch from rows with ``epoch`` and any of train_loss, val_loss, train_acc, val_acc.

    Epochs are whole numbers on the x axis; ``best_epoch`` (the checkpoint kept) is marked on both panels.
    """
    from matplotlib.ticker import MaxNLocator

    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [int(r["epoch"]) for r in history] or [1]
    for key, ax in (("loss", a1), ("acc", a2)):
        for part in ("train", "val"):
            col = f"{part}_{key}"
            pts = [(int(r["epoch"]), float(r[col])) for r in history if r.get(col) not in (None, "")]
            if pts:
                ax.plot([e for e, _ in pts], [y for _, y in pts], marker="o", label=part)
                best = [y for e, y in pts if e == best_epoch]
                if part == "val" and best:
                    ax.plot([best_epoch], best, marker="*", markersize=16, color="gold", markeredgecolor="black",
                            linestyle="none", label=f"best (epoch {best_epoch})", zorder=5)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="gray", linestyle=":", linewidth=1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        # half an epoch either side: one epoch alone would get an axis 0.1 wide, ticked in fractions
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return save_figure(fig, path)
