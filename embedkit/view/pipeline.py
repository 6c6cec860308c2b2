"""`view`: project one or more code stores, measure how classes group, and draw a PNG or HTML map.

Memory stays bounded at any number of rows: projections read codes through the
store API (see :mod:`embedkit.view.project`), metrics use a bounded sample, and at
most ``max_draw`` points per panel are drawn (a seeded sample of the projected
points; the summary says so). Paths and labels are indexed as NumPy arrays
(``store.paths[idx]``), never row by row.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from embedkit.errors import ConfigError, DataError, invalid
from embedkit.store.codestore import CodeStore
from embedkit.view.metrics import code_metrics
from embedkit.view.plot import ViewPanel, metrics_line, plot_views
from embedkit.view.project import (
    METHOD_NAMES,
    Projection,
    Rows,
    _fmt,
    _sample_indices,
    check_view_backend,
    describe,
    project,
    resolve_method,
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
    split_notes: list | None = None  # where the test-split figures come from, per panel (None: none)

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
            if p.metrics_test:
                mt = p.metrics_test
                m += (f"; test split only: {metrics_line(mt)} (on {_fmt(mt['n'])} of {_fmt(mt['n_labelled'])} "
                      "test codes)")
            lines.append(f"  {p.title}: {what} ({how}); {m}; projection -> {d}")
        notes = sorted({n for n in (self.split_notes or []) if n})
        lines += [f"  {n}" for n in notes]
        return f"wrote {self.out} in {self.seconds:.1f}s\n" + "\n".join(lines)


def find_split_json(store) -> Path | None:
    """The ``split.json`` of the fine-tuning run whose weights made ``store``'s codes (next to them), or None."""
    ident = getattr(store, "identity", None) or {}
    weights = ident.get("weights") if isinstance(ident, dict) else None
    where = weights.get("path") if isinstance(weights, dict) else None
    if where:
        cand = Path(where).parent / "split.json"
        if cand.is_file():
            return cand
    return None


def split_test_paths(path) -> set:
    """Paths of the test part of a fine-tuning ``split.json`` (``{"test": [{"path": ...}, ...]}``)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        test = doc["test"]
        return {str(t["path"]) if isinstance(t, dict) else str(t) for t in test}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{str(path)!r} is not a fine-tuning split.json (a 'test' list of {{path, label}}): {exc}; "
                        "give the split.json of an `embedkit finetune` run folder") from exc


def split_rows(paths, test: set) -> np.ndarray:
    """Rows of ``paths`` (an object array) listed in ``test``: exact strings, else normalised absolute paths."""
    paths = np.asarray(paths, dtype=object)
    hit = np.fromiter((p in test for p in paths), bool, len(paths))
    if not hit.any() and test:  # split.json written with paths relative to another folder
        norm = {os.path.normpath(os.path.abspath(p)) for p in test}
        hit = np.fromiter((os.path.normpath(os.path.abspath(p)) in norm for p in paths), bool, len(paths))
    return np.flatnonzero(hit)


def weights_label(ident: dict) -> str:
    """The weights codes were made with, in a few words: "ImageNet weights", "weights run/best.pt"..."""
    w = ident.get("weights") or {}
    kind = w.get("kind")
    if kind in ("package", "hub"):
        return "ImageNet weights"
    if kind == "none":
        return "random weights"
    if kind in ("file", "checkpoint"):
        path = Path(str(w.get("path") or w.get("identity", "").removeprefix("file:")))
        return f"weights {path.parent.name + '/' if path.parent.name else ''}{path.name}"
    return ""


def _title(name: str, store) -> str:
    """A panel's title: the store, what made its codes (backbone/layer and weights: compared panels differ
    there) and its size."""
    ident = getattr(store, "identity", None) or {}
    what = ", ".join(x for x in ("/".join(str(ident[k]) for k in ("backbone", "layer") if ident.get(k)),
                                 weights_label(ident)) if x)
    return f"{name} ({what + ', ' if what else ''}{_fmt(len(store))} codes)"


def _splits(stores, split_json) -> list:
    """The split.json of each store: the one given, else the one found next to fine-tuned weights, applied to
    every store (so the same images of a baseline store are compared on it too)."""
    if split_json is not None:
        return [Path(split_json)] * len(stores)
    found = [find_split_json(s) for s in stores]
    first = next((f for f in found if f is not None), None)
    return [f or first for f in found]


def _draw(out: Path, panels: list, thumbnails: int | None, seed: int, title: str) -> None:
    """The PNG figure or the HTML page (by ``out``'s suffix); by default thumbnails on the page only."""
    png = out.suffix.lower() == ".png"
    n_thumbs = (0 if png else 300) if thumbnails is None else int(thumbnails)
    if png:
        plot_views(panels, out, thumbnails=n_thumbs, seed=seed, title=title)
    else:
        from embedkit.view.html import write_view_html

        write_view_html(out, panels, thumbnails=n_thumbs, seed=seed, title=title)


def _effective_options(store, method, backend, device, max_points, rest, pca_dims) -> dict:
    """What a new projection of ``store`` would record for the options that change it (defaults resolved)."""
    from embedkit.view.project import DEFAULT_MAX_POINTS, DEFAULT_REST, resolve_view_backend

    eff = {"store": str(store.path), "backend": resolve_view_backend(method, backend, device),
           "max_points": DEFAULT_MAX_POINTS[method] if max_points is None else int(max_points),
           "rest": "transform" if method == "pca" else (rest or DEFAULT_REST[method])}
    if method != "pca":
        eff["pca_dims"] = min(int(pca_dims), int(store.dim))
    return eff


def _differences(saved: dict, want: dict, keys) -> list:
    return [f"{key}: saved {saved.get(key)!r}, asked {v!r}" for key, v in want.items()
            if key in keys and saved.get(key) != v]


def _same_as_saved(folder: Path, method: str, want: dict) -> bool:
    """True when a projection of the same codes with the same options (``want``, defaults resolved) is saved in
    ``folder`` (the same command run again); one made differently is an error, never replaced silently."""
    if not (folder / "proj.json").exists():
        return False
    diff = _differences(Projection.load(folder).params, want, want)
    if diff:
        raise ConfigError(f"a {method} projection made differently is already saved in {str(folder)!r} "
                          f"({'; '.join(diff)}); use --overwrite to recompute and replace it, --reuse to "
                          "redraw from it as it is, or --proj-dir to keep both")
    return True


def _saved_projection(folder: Path, method: str, want: dict, name: str, say, same: bool) -> Projection:
    """The projection saved in ``folder``, refused when it was made with other settings than ``want``."""
    proj = Projection.load(folder)
    diff = _differences(proj.params, want, _MATCH_KEYS)
    if diff:
        raise ConfigError(f"the saved projection in {str(folder)!r} was made differently ({'; '.join(diff)}); "
                          "drop --reuse to recompute it")
    why = " (same codes and options; --overwrite recomputes it)" if same else ""
    say(f"{name}: reusing the {method} projection saved in {folder}{why}")
    return proj


def _metrics(store, src: Rows, labels: np.ndarray, name: str, split, split_json, seed: int, metrics_points: int,
             say) -> tuple[dict | None, dict | None, str | None]:
    """``(figures on every labelled code, figures on the split's test images, a note on that split)``."""
    m = m_test = note = None
    if len(set(labels.tolist()) - {""}) >= 2:
        t1 = time.perf_counter()
        m = code_metrics(src, labels, seed=seed, max_points=metrics_points)
        say(f"{name}: silhouette / {m['k']}-NN on {_fmt(m['n'])} codes in {time.perf_counter() - t1:.1f}s")
    if split is not None:
        test = split_rows(store.paths, split_test_paths(split))
        how = "given" if split_json is not None else "found next to the weights"
        if not len(test) and split_json is not None:
            raise DataError(f"none of the {len(store)} images of store {str(store.path)!r} is in the test split "
                            f"of {str(split_json)!r}; give the split.json of the run these codes come from")
        if len(set(labels[test].tolist()) - {""}) >= 2:
            m_test = code_metrics(src, labels, seed=seed, max_points=metrics_points, rows=test)
            note = f"test split of {split} ({how}): {_fmt(len(test))} images"
        elif len(test):
            note = f"test split of {split}: {len(test)} images of fewer than 2 classes, no figures"
    return m, m_test, note


def _panel(store, name: str, proj: Projection, labels: np.ndarray, color_by: str, limit_draw: int, seed: int,
           m, m_test) -> ViewPanel:
    """What is drawn of one store: a bounded seeded sample of the projected points; vectorised indexing."""
    show = np.arange(len(proj.indices)) if len(proj.indices) <= limit_draw else \
        _sample_indices(len(proj.indices), limit_draw, seed + 7)
    rows = proj.indices[show]
    lab = None
    if color_by == "label":
        lab = labels[rows]
    elif color_by == "design":
        from embedkit.splits import design_of

        lab = np.array([design_of(p) for p in np.asarray(store.paths, dtype=object)[rows]], dtype=object)
    return ViewPanel(_title(name, store), proj.xy[show], lab, np.asarray(store.paths, dtype=object)[rows],
                     m, m_test, sha1=store.recorded_sha1(rows))  # thumbnails only of unchanged files


def view(stores, out, method: str | None = None, backend: str | None = "auto", seed: int = 0,
         max_points: int | None = None, pca_dims: int = 50, thumbnails: int | None = None, color_by: str = "label",
         reuse: bool = False, proj_dir=None, title: str | None = None, metrics: bool = True,
         progress: bool = False, *, device: str | None = "auto", overwrite: bool = False, rest: str | None = None,
         max_draw: int | None = None, metrics_points: int = METRICS_POINTS,
         split_json=None, log: Callable[[str], None] | None = None) -> ViewResult:
    """Project each code store (one, or several side by side) and write ``out`` (.png figure or .html page).

    Projections go to ``proj_dir`` (default ``<out stem>.proj/``; one sub-folder per
    store when comparing), in ``projection-<method>/``: one per method. A saved one
    is never replaced silently: it is reused when it is of the same codes with the same options (the same
    command run again), ``reuse=True`` redraws from it whatever its fitting options (and refuses one of other
    codes or seed), ``overwrite=True`` recomputes it; a projection made differently is otherwise an error.
    ``device`` (auto | cpu | cuda) decides GPU or CPU libraries; ``max_points`` / ``rest`` bound the projection (see
    :func:`embedkit.view.project.project`); at most ``max_draw`` points per panel are
    drawn. Silhouette and kNN accuracy are computed on each store's codes by label,
    on at most ``metrics_points`` labelled rows; with a fine-tuning run's ``split_json``
    (default: the one next to the weights of any of the stores, applied to all of
    them) they are also given on its test images only (``ViewPanel.metrics_test``),
    which the network was not trained on. ``log`` gets progress lines. ``method`` None: UMAP, or PCA where
    umap-learn is not installed (:func:`~embedkit.view.project.resolve_method`).
    """
    t0 = time.perf_counter()
    single = isinstance(stores, (str, os.PathLike)) or hasattr(stores, "take")
    stores = [CodeStore.of(s) for s in ([stores] if single else stores)]
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
    method = resolve_method(method, backend, device)  # checks CUDA (imports torch): after the paths
    if not reuse:  # the projection library is checked before any projection starts
        check_view_backend(method, backend, device)
    say = log or logging.getLogger(__name__).info  # progress lines: the module's logger by default
    base = Path(proj_dir) if proj_dir is not None else out.with_name(out.stem + ".proj")
    names = [Path(s.path).name for s in stores]
    if len(set(names)) < len(names):
        names = [str(s.path) for s in stores]
    splits = _splits(stores, split_json)
    panels, dirs, params, reused, drawn = [], [], [], [], []
    split_notes = []
    for k, (store, name) in enumerate(zip(stores, names)):
        labels = np.asarray(store.labels, dtype=object)  # computed once by the store; indexed as an array
        has_labels = bool((labels != "").any())
        if color_by == "label" and not has_labels:
            raise DataError(f"store {str(store.path)!r} has no labels (images were not in class sub-folders or "
                            "the manifest had no label column); use --color-by none (or design)")
        # One saved projection per method, so a t-SNE run never replaces the UMAP one --reuse would redraw.
        folder = (base if len(stores) == 1 else base / f"{k}_{Path(store.path).name}") / f"projection-{method}"
        meta = getattr(store, "meta", None) or {}
        want = {"method": method, "seed": int(seed), "n_input": len(store), "dim_input": int(store.dim),
                "store_created": meta.get("created")}
        if max_points is not None:
            want["max_points"] = int(max_points)
        if rest is not None:
            want["rest"] = rest
        src = Rows(store, what=f"codes of {name}")
        # the same command again: the saved projection is reused when it is of the same codes and options
        same = not reuse and not overwrite and _same_as_saved(folder, method, {
            **want, **_effective_options(store, method, backend, device, max_points, rest, pca_dims)})
        if reuse or same:
            proj = _saved_projection(folder, method, want, name, say, same)
        else:
            say(f"{name}: {method} projection of {_fmt(len(store))} x {store.dim} codes")
            proj = project(src, method, backend, seed, max_points, pca_dims, rest=rest, device=device, log=say,
                           progress=progress)
            proj.params.update(store=str(store.path), store_created=meta.get("created"))
            proj.save(folder)
            say(f"{name}: {describe(proj.params)} in {proj.params['seconds']:.1f}s")
        reused.append(reuse or same)
        m = m_test = note = None
        if metrics and has_labels:
            m, m_test, note = _metrics(store, src, labels, name, splits[k], split_json, seed, metrics_points, say)
        split_notes.append(note)
        panels.append(_panel(store, name, proj, labels, color_by, limit_draw, seed, m, m_test))
        dirs.append(folder)
        params.append(proj.params)
        drawn.append((len(panels[-1].xy), len(proj.indices)))
    titles = [p.title for p in panels]
    if len(set(titles)) < len(titles):  # the same store twice: still tell the panels apart
        for i, p in enumerate(panels):
            p.title = f"{chr(ord('A') + i)}: {p.title}"
    t1 = time.perf_counter()
    _draw(out, panels, thumbnails, seed, title or f"{METHOD_NAMES[method]} of neural codes, coloured by {color_by}")
    say(f"drew {out} in {time.perf_counter() - t1:.1f}s")
    return ViewResult(out, panels, dirs, params, reused, time.perf_counter() - t0, drawn, split_notes)
