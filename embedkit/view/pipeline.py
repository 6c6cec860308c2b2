"""`view`: project one or more code stores, measure how classes group, and draw a PNG or HTML map.

Memory stays bounded at any number of rows: projections read codes through the
store API (see :mod:`embedkit.view.project`), metrics use a bounded sample, and at
most ``max_draw`` points per panel are drawn (a seeded sample of the projected
points; the summary says so). Paths and labels are indexed as NumPy arrays
(``store.paths[idx]``), never row by row.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from embedkit.errors import ConfigError, DataError, invalid
from embedkit.view.plot import ViewPanel, metrics_line, plot_views
from embedkit.view.project import (
    Projection,
    Rows,
    _fmt,
    _sample_indices,
    code_metrics,
    describe,
    project,
)

COLOR_BY = ("label", "design", "none")
#: points drawn per panel at most (a seeded sample of the projected points above it)
DEFAULT_MAX_DRAW = {".png": 200_000, ".html": 50_000}
#: labelled rows the silhouette / kNN figures are computed on at most
METRICS_POINTS = 5000
_MATCH_KEYS = ("method", "seed", "n_input", "dim_input", "max_points", "store_created", "rest")


@dataclass
class ViewResult:
    """What :func:`view` did: the figure/page written, the projection folders, metrics per store, time."""

    out: Path
    panels: list
    proj_dirs: list
    params: list
    reused: list
    seconds: float
    drawn: list | None = None  # (points drawn, points projected) per panel

    def summary(self) -> str:
        lines = []
        drawn = self.drawn or [(len(p.xy), len(p.xy)) for p in self.panels]
        for p, d, prm, r, (nd, npj) in zip(self.panels, self.proj_dirs, self.params, self.reused, drawn):
            how = "reused" if r else f"{prm['method']}/{prm['backend']} {prm['seconds']:.1f}s"
            what = describe(prm)
            if nd < npj:
                what += f"; {_fmt(nd)} of them drawn"
            m = metrics_line(p.metrics) or "no labels: silhouette/kNN n/a"
            if p.metrics:
                m += f" (on {_fmt(p.metrics['n'])} of {_fmt(p.metrics['n_labelled'])} labelled codes)"
            lines.append(f"  {p.title}: {what} ({how}); {m}; projection -> {d}")
        return f"wrote {self.out} in {self.seconds:.1f}s\n" + "\n".join(lines)


def _open(store):
    if hasattr(store, "take") and hasattr(store, "iter_chunks"):
        return store
    from embedkit.store.codestore import CodeStore

    return CodeStore.open(store)


def _title(name: str, store) -> str:
    ident = getattr(store, "identity", None) or {}
    what = "/".join(str(ident[k]) for k in ("backbone", "layer") if ident.get(k))
    return f"{name} ({what + ', ' if what else ''}{_fmt(len(store))} codes)"


def view(stores, out, method: str = "umap", backend: str | None = "auto", seed: int = 0,
         max_points: int | None = None, pca_dims: int = 50, thumbnails: int | None = None, color_by: str = "label",
         reuse: bool = False, proj_dir=None, title: str | None = None, metrics: bool = True,
         progress: bool = False, *, device: str | None = "auto", rest: str | None = None,
         max_draw: int | None = None, metrics_points: int = METRICS_POINTS,
         log: Callable[[str], None] | None = None) -> ViewResult:
    """Project each code store (one, or several side by side) and write ``out`` (.png figure or .html page).

    Projections go to ``proj_dir`` (default ``<out stem>.proj/``; one sub-folder per
    store when comparing); ``reuse=True`` redraws from them instead of recomputing
    and refuses one made with other settings. ``device`` (auto | cpu | cuda) decides
    GPU or CPU libraries; ``max_points`` / ``rest`` bound the projection (see
    :func:`embedkit.view.project.project`); at most ``max_draw`` points per panel are
    drawn. Silhouette and kNN accuracy are computed on each store's codes by label,
    on at most ``metrics_points`` labelled rows. ``log`` gets progress lines.
    """
    t0 = time.perf_counter()
    single = isinstance(stores, (str, os.PathLike)) or hasattr(stores, "take")
    stores = [_open(s) for s in ([stores] if single else stores)]
    out = Path(out)
    kind = out.suffix.lower()
    if kind not in (".png", ".html"):
        raise ConfigError(f"output {str(out)!r} must end in .png (figure) or .html (interactive page)")
    if color_by not in COLOR_BY:
        raise invalid("color_by", color_by, COLOR_BY)
    if not 1 <= len(stores) <= 4:
        raise ConfigError(f"view takes 1 to 4 code stores side by side, got {len(stores)}")
    limit_draw = DEFAULT_MAX_DRAW[kind] if max_draw is None else int(max_draw)
    if limit_draw < 1:
        raise invalid("max_draw", max_draw, "a positive integer")
    say = log or (lambda _m: None)
    base = Path(proj_dir) if proj_dir is not None else out.with_name(out.stem + ".proj")
    names = [Path(s.path).name for s in stores]
    if len(set(names)) < len(names):
        names = [str(s.path) for s in stores]
    panels, dirs, params, reused, drawn = [], [], [], [], []
    for k, (store, name) in enumerate(zip(stores, names)):
        labels = np.asarray(store.labels, dtype=object)  # computed once by the store; indexed as an array
        has_labels = bool((labels != "").any())
        if color_by == "label" and not has_labels:
            raise DataError(f"store {str(store.path)!r} has no labels (images were not in class sub-folders or "
                            "the manifest had no label column); use --color-by none (or design)")
        folder = base if len(stores) == 1 else base / f"{k}_{Path(store.path).name}"
        meta = getattr(store, "meta", None) or {}
        want = {"method": method, "seed": int(seed), "n_input": len(store), "dim_input": int(store.dim),
                "store_created": meta.get("created")}
        if max_points is not None:
            want["max_points"] = int(max_points)
        if rest is not None:
            want["rest"] = rest
        src = Rows(store, what=f"codes of {name}")
        if reuse and (folder / "proj.json").exists():
            proj = Projection.load(folder)
            diff = [f"{key}: saved {proj.params.get(key)!r}, asked {v!r}" for key, v in want.items()
                    if key in _MATCH_KEYS and proj.params.get(key) != v]
            if diff:
                raise ConfigError(f"the saved projection in {str(folder)!r} was made differently ({'; '.join(diff)}); "
                                  "drop --reuse to recompute it")
            reused.append(True)
            say(f"{name}: reusing the {method} projection in {folder}")
        else:
            say(f"{name}: {method} projection of {_fmt(len(store))} x {store.dim} codes")
            proj = project(src, method, backend, seed, max_points, pca_dims, rest=rest, device=device, log=say,
                           progress=progress)
            proj.params.update(store=str(store.path), store_created=meta.get("created"))
            proj.save(folder)
            reused.append(False)
            say(f"{name}: {describe(proj.params)} in {proj.params['seconds']:.1f}s")
        m = None
        if metrics and has_labels and len(set(labels.tolist()) - {""}) >= 2:
            t1 = time.perf_counter()
            m = code_metrics(src, labels, seed=seed, max_points=metrics_points)
            say(f"{name}: silhouette / {m['k']}-NN on {_fmt(m['n'])} codes in {time.perf_counter() - t1:.1f}s")
        # Draw a bounded seeded sample of the projected points; vectorised indexing of paths and labels.
        show = np.arange(len(proj.indices)) if len(proj.indices) <= limit_draw else \
            _sample_indices(len(proj.indices), limit_draw, seed + 7)
        rows = proj.indices[show]
        lab = None
        if color_by == "label":
            lab = labels[rows]
        elif color_by == "design":
            from embedkit.splits import design_of

            lab = np.array([design_of(p) for p in np.asarray(store.paths, dtype=object)[rows]], dtype=object)
        panels.append(ViewPanel(_title(name, store), proj.xy[show], lab, np.asarray(store.paths, dtype=object)[rows],
                                m))
        dirs.append(folder)
        params.append(proj.params)
        drawn.append((len(rows), len(proj.indices)))
    n_thumbs = (0 if kind == ".png" else 300) if thumbnails is None else int(thumbnails)
    head = title or f"{method.upper()} of neural codes, coloured by {color_by}"
    t1 = time.perf_counter()
    if kind == ".png":
        plot_views(panels, out, thumbnails=n_thumbs, seed=seed, title=head)
    else:
        from embedkit.view.html import write_view_html

        write_view_html(out, panels, thumbnails=n_thumbs, seed=seed, title=head)
    say(f"drew {out} in {time.perf_counter() - t1:.1f}s")
    return ViewResult(out, panels, dirs, params, reused, time.perf_counter() - t0, drawn)
