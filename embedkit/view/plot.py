"""Drawing 2-D views as PNG: one panel per store side by side, coloured by label, optional thumbnails.

Colours come from :func:`palette` (shared by the HTML page), so a class has the
same colour in every panel and in both outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from embedkit.errors import ConfigError


def palette(names: Sequence[str]) -> dict:
    """Distinct RGB hex colours for class names: tab10 up to 10 classes, then colorcet's Glasbey palette
    (tab10 followed by colours chosen to be far apart in a perceptual space; 256 of them), then evenly spaced
    hues. tab20/tab20b, used before, pair colours that look alike (light/dark of one hue)."""
    from matplotlib.colors import hsv_to_rgb, to_hex

    names = list(names)
    k = len(names)
    if k <= 256:
        import colorcet

        cols = colorcet.glasbey_category10[:k]
    else:  # golden-ratio hues with alternating lightness keep neighbours apart
        cols = [hsv_to_rgb(((i * 0.618034) % 1.0, 0.75, 0.95 if i % 2 else 0.7)) for i in range(k)]
    return {n: to_hex(c) for n, c in zip(names, cols)}


@dataclass
class ViewPanel:
    """One map to draw: points ``xy`` with their ``labels`` and image ``paths`` (in step), a title and metrics.

    ``sha1``: for points that are rows of a code store, the sha1 recorded for each row at embed time
    ("" where none was), in step with ``paths``: a thumbnail is drawn only from a file that still has
    it, else a placeholder (see :func:`embedkit.render.gallery.checked_thumbnail_data_uri`). Leave it
    None only for files the user named directly; their thumbnails are drawn unchecked.
    """

    title: str
    xy: np.ndarray
    labels: np.ndarray | None = None
    paths: Sequence[str] | None = None
    metrics: dict | None = None
    metrics_test: dict | None = None  # the same figures on a fine-tuning run's test split only
    sha1: Sequence[str] | None = None


def spread_sample(xy: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """``k`` row indices spread over the map (greedy farthest-point from a seeded start), so thumbnails overlap less."""
    n = len(xy)
    k = int(min(k, n))
    if k <= 0:
        return np.zeros(0, np.int64)
    chosen = [int(np.random.default_rng(seed).integers(n))]
    dist = np.full(n, np.inf)
    for _ in range(k - 1):
        dist = np.minimum(dist, ((xy - xy[chosen[-1]]) ** 2).sum(1))
        chosen.append(int(dist.argmax()))
    return np.asarray(chosen, np.int64)


#: colour of the square drawn instead of a thumbnail that may not be inlined (file changed or not the store's)
PLACEHOLDER_FILL = (235, 235, 235)


def _thumb_array(path: str, size: int, sha1=None, checked: bool = False) -> np.ndarray:
    """RGB array of a small thumbnail; a grey square when the file cannot be read (the map still shows where it was).

    ``checked``: the file is a store row's, drawn only if its bytes have ``sha1`` (the one recorded at embed
    time); otherwise a light :data:`PLACEHOLDER_FILL` square is drawn instead of whatever the path names now.
    """
    from embedkit.render.gallery import thumbnail

    if not checked:
        return np.asarray(thumbnail(path, size, fill=(190, 190, 190)))
    import base64
    import io

    from PIL import Image

    from embedkit.render.gallery import checked_thumbnail_data_uri

    uri = checked_thumbnail_data_uri(path, sha1, size, fill=(190, 190, 190))
    if uri is None:
        return np.asarray(Image.new("RGB", (size, size), PLACEHOLDER_FILL))
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as img:
        return np.asarray(img.convert("RGB"))


def metrics_line(m: dict | None) -> str:
    """'silhouette 0.123 · 5-NN acc 0.870' (or empty when no metrics)."""
    if not m:
        return ""
    return f"silhouette {m['silhouette']:.3f} · {m['k']}-NN acc {m['knn_acc']:.3f}"


def plot_views(panels: Sequence[ViewPanel], path, *, thumbnails: int = 0, thumb_px: int = 36, seed: int = 0,
               title: str | None = None, max_legend: int = 40) -> Path:
    """Scatter PNG: one panel per view side by side, coloured by label with one shared legend, optional thumbnails."""
    from embedkit.render.plots import _plt

    plt = _plt()
    if not panels:
        raise ConfigError("plot_views needs at least one panel")
    # Labels, titles and paths are plain text: '$x^$' must not be read as (broken) mathtext.
    with plt.rc_context({"text.parse_math": False, "text.usetex": False}):
        return _plot_views(plt, panels, path, thumbnails, thumb_px, seed, title, max_legend)


def _plot_views(plt, panels, path, thumbnails, thumb_px, seed, title, max_legend):
    from matplotlib.colors import to_rgba
    from matplotlib.lines import Line2D

    from embedkit.render.plots import save_figure

    all_labels = [np.asarray(p.labels, dtype=object).astype(str) for p in panels if p.labels is not None]
    names, counts = (np.unique(np.concatenate(all_labels), return_counts=True) if all_labels else ([], []))
    colours = palette(list(names))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 6.2), squeeze=False)
    for ax, p in zip(axes[0], panels):
        xy = np.asarray(p.xy)
        n = len(xy)
        size = float(np.clip(20000.0 / max(n, 1), 1.0, 36.0))
        if p.labels is None:
            ax.scatter(xy[:, 0], xy[:, 1], s=size, c="#4477aa", alpha=0.8, linewidths=0)
        else:
            lab = np.asarray(p.labels, dtype=object).astype(str)
            order = np.random.default_rng(seed).permutation(n)  # no class painted last over all the others
            table = np.array([to_rgba(colours[v]) for v in names])
            ax.scatter(xy[order, 0], xy[order, 1], s=size, c=table[np.searchsorted(names, lab[order])],
                       alpha=0.9 if n <= 5000 else 0.6, linewidths=0)
        line = metrics_line(p.metrics)
        test = metrics_line(p.metrics_test)
        ax.set_title(p.title + (f"\n{line}" if line else "") + (f"\ntest split: {test}" if test else ""), fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal", adjustable="datalim")
    if len(names):
        top = sorted(range(len(names)), key=lambda i: -counts[i])[:max_legend]
        shown = sorted(names[i] for i in top)
        handles = [Line2D([], [], marker="o", ls="", markersize=7, markerfacecolor=colours[v], markeredgewidth=0,
                          label=v) for v in shown]
        extra = len(names) - len(shown)
        fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
                   ncol=1 if len(shown) <= 20 else 2, fontsize=8,
                   title=f"{len(names)} classes" + (f" ({extra} rarest not listed)" if extra else ""))
    if title:
        fig.suptitle(title)
    fig.tight_layout()  # before the thumbnails: they are placed in the final pixel frame of each axes
    if thumbnails:
        for ax, p in zip(axes[0], panels):
            if p.paths is not None:
                _draw_thumbnails(ax, p, np.asarray(p.xy), thumbnails, thumb_px, seed, colours)
    return save_figure(fig, path)


#: pixels kept free around a thumbnail (its frame and a gap to the next one)
THUMB_GAP = 4


def thumbnail_places(ax, xy: np.ndarray, k: int, px: float, seed: int = 0) -> list:
    """``[(row, (x, y) data position of its box)]`` for at most ``k`` thumbnails of ``px`` display pixels.

    Rows come from :func:`spread_sample` (spread over the map); a box is pulled inside the axes frame when
    its point lies near the edge, and a row whose box would overlap one already placed is passed over, so
    thumbnails never cross the frame or pile up (fewer than ``k`` are drawn when the map is crowded).
    """
    ax.get_xlim()  # settles the deferred autoscaling, then the equal aspect: the limits the figure is drawn with
    ax.apply_aspect()
    to_px = ax.transData
    frame = ax.get_window_extent()
    half = px / 2 + THUMB_GAP
    if frame.width < 2 * half or frame.height < 2 * half:
        return []
    placed, out = [], []
    for i in spread_sample(xy, min(len(xy), 4 * k), seed):
        x, y = to_px.transform(xy[i])
        cx = min(max(x, frame.x0 + half), frame.x1 - half)
        cy = min(max(y, frame.y0 + half), frame.y1 - half)
        if any(abs(cx - qx) < 2 * half and abs(cy - qy) < 2 * half for qx, qy in placed):
            continue
        placed.append((cx, cy))
        out.append((int(i), tuple(to_px.inverted().transform((cx, cy)))))
        if len(out) == k:
            break
    return out


def _draw_thumbnails(ax, p, xy, k, thumb_px, seed, colours):
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    # an OffsetImage is drawn at dpi/72 display pixels per image pixel
    shown_px = thumb_px * ax.figure.dpi / 72.0
    for i, pos in thumbnail_places(ax, xy, k, shown_px, seed):
        edge = colours.get(str(p.labels[i]), "#444444") if p.labels is not None else "#444444"
        img = _thumb_array(p.paths[i], thumb_px, p.sha1[i] if p.sha1 is not None else None,
                           checked=p.sha1 is not None)
        moved = not np.allclose(pos, xy[i])
        box = AnnotationBbox(OffsetImage(img, zoom=1.0), xy[i], xybox=pos, xycoords="data", boxcoords="data",
                             frameon=True, pad=0.1, bboxprops={"edgecolor": edge, "linewidth": 1.5},
                             arrowprops={"arrowstyle": "-", "color": edge, "linewidth": 0.8} if moved else None)
        ax.add_artist(box)
