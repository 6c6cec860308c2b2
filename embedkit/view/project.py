"""Views of the embedding: 2-D projections (UMAP, t-SNE, PCA), scatter plots and how well classes group.

:func:`project` maps codes to 2-D with the backend chosen by
:func:`embedkit.device.resolve_backend` (cuML on CUDA machines, else umap-learn /
openTSNE / scikit-learn). Memory is bounded: above ``max_points`` rows UMAP and
t-SNE run on a seeded uniform sample (the fraction is recorded in ``params``)
and PCA is fitted on a sample and applied to every row in chunks. A
:class:`Projection` is saved as ``proj.npy`` + ``proj.json`` so a figure can be
redrawn without recomputing. :func:`plot_views` draws one panel per store
(side by side when comparing), coloured by label, with optional thumbnails;
:func:`code_metrics` gives the silhouette score and leave-one-out kNN accuracy
of the codes themselves (not of the 2-D picture).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from embedkit.device import optional_import, resolve_backend
from embedkit.errors import ConfigError, DataError, StoreError
from embedkit.view.plot import (  # noqa: F401 (public API)
    ViewPanel,
    metrics_line,
    palette,
    plot_views,
    spread_sample,
)

METHODS = ("umap", "tsne", "pca")
BACKENDS = {  # method -> (gpu, cpu, extra cpu); resolved in embedkit.device
    "umap": ("cuml", "umap-learn", ()),
    "tsne": ("cuml", "opentsne", ("sklearn",)),
    "pca": ("cuml", "sklearn", ()),
}
# Rows above which UMAP / t-SNE run on a sample (PCA: fit sample, all rows transformed).
DEFAULT_MAX_POINTS = {"umap": 200_000, "tsne": 50_000, "pca": 200_000}
CHUNK = 65536
MIN_POINTS = 3


@dataclass
class Projection:
    """2-D coordinates ``xy`` (n x 2 float32) of the code rows ``indices``, and how they were made (``params``)."""

    xy: np.ndarray
    indices: np.ndarray
    params: dict = field(default_factory=dict)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``proj.npy`` (xy) and ``proj.json`` (params; indices when subsampled) atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "proj.tmp.npy"
        np.save(tmp, np.asarray(self.xy, np.float32))
        os.replace(tmp, folder / "proj.npy")
        n_in = int(self.params.get("n_input", len(self.indices)))
        full = len(self.indices) == n_in and np.array_equal(self.indices, np.arange(n_in))
        doc = {"params": self.params, "indices": None if full else self.indices.tolist()}
        tmp = folder / "proj.json.tmp"
        tmp.write_text(json.dumps(doc, indent=1, default=str), encoding="utf-8")
        os.replace(tmp, folder / "proj.json")
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "Projection":
        """Read a projection written by :meth:`save`."""
        folder = Path(folder)
        if not (folder / "proj.npy").exists() or not (folder / "proj.json").exists():
            raise StoreError(f"{str(folder)!r} holds no saved projection (proj.npy + proj.json); "
                             "run `embedkit view` without --reuse to compute one")
        xy = np.load(folder / "proj.npy")
        doc = json.loads((folder / "proj.json").read_text(encoding="utf-8"))
        idx = np.arange(len(xy)) if doc.get("indices") is None else np.asarray(doc["indices"], np.int64)
        if len(idx) != len(xy):
            raise StoreError(f"projection in {str(folder)!r} is inconsistent: {len(xy)} points, {len(idx)} indices")
        return cls(xy.astype(np.float32), idx, doc.get("params", {}))


def _sample_indices(n: int, k: int | None, seed: int) -> np.ndarray:
    """Sorted seeded uniform sample of ``k`` of ``n`` rows (all rows when k is None or >= n)."""
    if k is None or n <= k:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=int(k), replace=False)).astype(np.int64)


def _load_rows(codes, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of a (memory-mapped) array as float32, read in chunks; refuses NaN/inf."""
    out = np.empty((len(idx), codes.shape[1]), np.float32)
    contiguous = len(idx) == codes.shape[0]
    for i in range(0, len(idx), CHUNK):
        out[i:i + CHUNK] = codes[i:i + CHUNK] if contiguous else codes[idx[i:i + CHUNK]]
    if not np.isfinite(out).all():
        bad = int((~np.isfinite(out).all(1)).sum())
        raise DataError(f"{bad} code rows hold NaN or inf; re-embed those images or drop them before viewing")
    return out


def _pca_fit(x: np.ndarray, k: int, seed: int, backend: str):
    """Mean and top-``k`` components (numpy) of ``x``, on the GPU with cuML when asked."""
    if backend == "cuml":
        cuml = optional_import("cuml", "PCA with backend='cuml'")
        p = cuml.PCA(n_components=k, output_type="numpy").fit(x)
    else:
        from sklearn.decomposition import PCA

        solver = "randomized" if k < 0.8 * min(x.shape) else "full"
        p = PCA(n_components=k, svd_solver=solver, random_state=seed).fit(x)
    return np.asarray(p.mean_, np.float32), np.asarray(p.components_, np.float32)


def project(codes, method: str = "umap", backend: str | None = "auto", seed: int = 0, max_points: int | None = None,
            pca_dims: int = 50, n_neighbors: int = 15, min_dist: float = 0.1, perplexity: float = 30.0) -> Projection:
    """Project N x D ``codes`` (array or memmap) to 2-D.

    ``method``: umap | tsne | pca. ``backend``: auto | cuml | umap-learn (umap) |
    opentsne, sklearn (tsne) | sklearn (pca). ``max_points`` bounds memory and time
    (default per method, see ``DEFAULT_MAX_POINTS``). Codes wider than ``pca_dims``
    are first reduced by PCA (UMAP/t-SNE only). Same seed, same backend, same
    input: same coordinates (cuML t-SNE/UMAP are not bit-reproducible on GPU).
    """
    if method not in METHODS:
        raise ConfigError(f"method {method!r} is not valid; use one of {', '.join(METHODS)}")
    codes = codes if hasattr(codes, "shape") else np.asarray(codes)
    if codes.ndim != 2:
        raise DataError(f"codes must be a 2-D array (N x D), got shape {tuple(codes.shape)}")
    n, d = codes.shape
    if n < MIN_POINTS:
        raise DataError(f"a 2-D view needs at least {MIN_POINTS} codes, got {n}; embed more images first")
    gpu, cpu, extra = BACKENDS[method]
    be = resolve_backend(backend, gpu=gpu, cpu=cpu, extra_cpu=extra, purpose=f"{method} projection")
    limit = DEFAULT_MAX_POINTS[method] if max_points is None else int(max_points)
    if limit < MIN_POINTS:
        raise ConfigError(f"max_points={max_points} is not valid; use at least {MIN_POINTS}")
    t0 = time.perf_counter()
    fit_idx = _sample_indices(n, limit, seed)
    x = _load_rows(codes, fit_idx)
    params = {"method": method, "backend": be, "seed": int(seed), "max_points": limit, "n_input": int(n),
              "dim_input": int(d), "n_fit": int(len(fit_idx)), "fraction": round(len(fit_idx) / n, 6)}

    if method == "pca":
        mean, comps = _pca_fit(x, 2, seed, be)
        idx = np.arange(n, dtype=np.int64)  # fitted on the sample, applied to every row in chunks
        if len(fit_idx) == n:  # every row is already in memory
            xy = (x - mean) @ comps.T
        else:
            xy = np.empty((n, 2), np.float32)
            for i in range(0, n, CHUNK):
                xy[i:i + CHUNK] = (_load_rows(codes[i:i + CHUNK], np.arange(min(CHUNK, n - i))) - mean) @ comps.T
    else:
        idx = fit_idx
        if d > pca_dims:
            mean, comps = _pca_fit(x, min(pca_dims, len(x)), seed, be)
            x = (x - mean) @ comps.T
        params["pca_dims"] = int(x.shape[1])
        if method == "umap":
            k = int(min(n_neighbors, len(x) - 1))
            params.update(n_neighbors=k, min_dist=float(min_dist))
            xy = _umap(x, be, k, min_dist, seed)
        else:
            p = float(min(perplexity, max(1.0, (len(x) - 1) / 3.0)))
            params["perplexity"] = p
            xy = _tsne(x, be, p, seed)
    params["seconds"] = round(time.perf_counter() - t0, 3)
    return Projection(np.ascontiguousarray(xy, np.float32), idx, params)


def _umap(x, backend, k, min_dist, seed):
    if backend == "cuml":
        from cuml.manifold import UMAP

        return UMAP(n_components=2, n_neighbors=k, min_dist=min_dist, random_state=seed, output_type="numpy").fit_transform(x)
    umap = optional_import("umap", "UMAP projection")
    # A fixed random_state makes umap-learn single-threaded, which is what makes it reproducible.
    import warnings

    init = "spectral" if len(x) > k + 1 else "random"
    with warnings.catch_warnings():  # the seed is the point; umap-learn warns it costs parallelism
        warnings.filterwarnings("ignore", message=".*overridden to 1 by setting random_state.*")
        return umap.UMAP(n_components=2, n_neighbors=k, min_dist=min_dist, random_state=seed,
                         init=init).fit_transform(x)


def _tsne(x, backend, perplexity, seed):
    if backend == "cuml":
        from cuml.manifold import TSNE

        return TSNE(n_components=2, perplexity=perplexity, random_state=seed, output_type="numpy").fit_transform(x)
    if backend == "sklearn":
        from sklearn.manifold import TSNE

        return TSNE(n_components=2, perplexity=min(perplexity, len(x) - 1.0), init="pca", learning_rate="auto",
                    random_state=seed).fit_transform(x)
    openTSNE = optional_import("openTSNE", "t-SNE projection")
    # FFT-interpolated gradients pay a fixed grid cost that dominates below ~10k points, and so do threads:
    # Barnes-Hut on one thread is several times faster there. openTSNE is reproducible either way.
    small = len(x) < 10_000
    return np.asarray(openTSNE.TSNE(n_components=2, perplexity=perplexity, random_state=seed,
                                    n_jobs=1 if small else -1, initialization="pca",
                                    negative_gradient_method="bh" if small else "fft", verbose=False).fit(x))


def code_metrics(codes, labels: Sequence, k: int = 5, max_points: int = 5000, seed: int = 0,
                 metric: str = "cosine") -> dict:
    """How well labels group in the codes: silhouette score and leave-one-out ``k``-NN accuracy.

    Both are computed on the codes (not on the 2-D view), on a seeded sample of at
    most ``max_points`` labelled rows so memory stays bounded. Unlabelled rows
    (empty label) are left out. Needs at least two classes.
    """
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import NearestNeighbors

    labels = np.asarray(labels, dtype=object)
    if len(labels) != codes.shape[0]:
        raise DataError(f"{len(labels)} labels for {codes.shape[0]} codes; they must be in step")
    rows = np.flatnonzero(labels != "")
    classes = np.unique(labels[rows].astype(str))
    if len(classes) < 2 or len(rows) < 3:
        raise DataError(f"silhouette and kNN accuracy need labelled codes of at least 2 classes; got "
                        f"{len(rows)} labelled rows in {len(classes)} class(es)")
    take = rows[_sample_indices(len(rows), max_points, seed)]
    x = _load_rows(codes, take)
    y = np.searchsorted(classes, labels[take].astype(str))
    sil = float(silhouette_score(x, y, metric=metric)) if len(np.unique(y)) < len(y) else float("nan")
    kk = int(min(k, len(x) - 1))
    # kneighbors on the fitted set returns each row itself first (barring exact duplicates): ask for k+1, drop self.
    nbr = NearestNeighbors(n_neighbors=kk + 1, metric=metric).fit(x).kneighbors(x, return_distance=False)
    pred = np.empty(len(x), np.int64)
    for i, row in enumerate(nbr):
        others = row[row != i][:kk]
        votes = np.bincount(y[others], minlength=len(classes))
        best = np.flatnonzero(votes == votes.max())
        pred[i] = next(y[j] for j in others if y[j] in best)  # ties go to the nearer neighbour
    return {"silhouette": sil, "knn_acc": float((pred == y).mean()), "k": kk, "metric": metric,
            "n": int(len(x)), "classes": int(len(classes))}


COLOR_BY = ("label", "design", "none")
_MATCH_KEYS = ("method", "seed", "n_input", "dim_input", "max_points", "store_created")


@dataclass
class ViewResult:
    """What :func:`view` did: the figure/page written, the projection folders, metrics per store, time."""

    out: Path
    panels: list
    proj_dirs: list
    params: list
    reused: list
    seconds: float

    def summary(self) -> str:
        lines = []
        for p, d, prm, r in zip(self.panels, self.proj_dirs, self.params, self.reused):
            frac = f", {prm['fraction']:.1%} sample" if prm["fraction"] < 1 and prm["method"] != "pca" else ""
            how = "reused" if r else f"{prm['method']}/{prm['backend']} {prm['seconds']:.1f}s"
            m = metrics_line(p.metrics) or "no labels: silhouette/kNN n/a"
            lines.append(f"  {p.title}: {len(p.xy)} points{frac} ({how}); {m}; projection -> {d}")
        return f"wrote {self.out} in {self.seconds:.1f}s\n" + "\n".join(lines)


def _open(store):
    from embedkit.store.codestore import CodeStore

    return store if isinstance(store, CodeStore) else CodeStore.open(store)


def view(stores, out, method: str = "umap", backend: str | None = "auto", seed: int = 0,
         max_points: int | None = None, pca_dims: int = 50, thumbnails: int | None = None, color_by: str = "label",
         reuse: bool = False, proj_dir=None, title: str | None = None, metrics: bool = True,
         progress: bool = False) -> ViewResult:
    """Project each code store (one, or several side by side) and write ``out`` (.png figure or .html page).

    Projections go to ``proj_dir`` (default ``<out stem>.proj/`` next to ``out``;
    one sub-folder per store when comparing); ``reuse=True`` redraws from them
    instead of recomputing and refuses one made with other settings.
    Silhouette and kNN accuracy are computed on each store's codes by label.
    """
    t0 = time.perf_counter()
    stores = [_open(s) for s in ([stores] if isinstance(stores, (str, os.PathLike)) or hasattr(stores, "codes") else stores)]
    out = Path(out)
    kind = out.suffix.lower()
    if kind not in (".png", ".html"):
        raise ConfigError(f"output {str(out)!r} must end in .png (figure) or .html (interactive page)")
    if color_by not in COLOR_BY:
        raise ConfigError(f"color_by {color_by!r} is not valid; use one of {', '.join(COLOR_BY)}")
    if not 1 <= len(stores) <= 4:
        raise ConfigError(f"view takes 1 to 4 code stores side by side, got {len(stores)}")
    base = Path(proj_dir) if proj_dir is not None else out.with_name(out.stem + ".proj")
    names = [s.path.name for s in stores]
    if len(set(names)) < len(names):
        names = [str(s.path) for s in stores]
    panels, dirs, params, reused = [], [], [], []
    from tqdm.auto import tqdm

    bar = tqdm(total=len(stores), unit="store", desc=f"view {method}", disable=not progress)
    for k, (store, name) in enumerate(zip(stores, names)):
        bar.set_postfix_str(f"{name}: {len(store)} x {store.dim}")
        labels = store.labels.astype(str)
        if color_by == "label" and not (labels != "").any():
            raise DataError(f"store {str(store.path)!r} has no labels (images were not in class sub-folders or "
                            "the manifest had no label column); use --color-by none (or design)")
        folder = base if len(stores) == 1 else base / f"{k}_{store.path.name}"
        want = {"method": method, "seed": int(seed), "n_input": len(store), "dim_input": store.dim,
                "store_created": store.meta.get("created")}
        if max_points is not None:
            want["max_points"] = int(max_points)
        if reuse and (folder / "proj.json").exists():
            proj = Projection.load(folder)
            diff = [f"{key}: saved {proj.params.get(key)!r}, asked {v!r}" for key, v in want.items()
                    if key in _MATCH_KEYS and proj.params.get(key) != v]
            if diff:
                raise ConfigError(f"the saved projection in {str(folder)!r} was made differently ({'; '.join(diff)}); "
                                  "drop --reuse to recompute it")
            reused.append(True)
        else:
            proj = project(store.codes, method, backend, seed, max_points, pca_dims)
            proj.params.update(store=str(store.path), store_created=store.meta.get("created"))
            proj.save(folder)
            reused.append(False)
        m = None
        if metrics and len(set(labels) - {""}) >= 2:
            m = code_metrics(store.codes, labels, seed=seed)
        lab = None
        if color_by == "label":
            lab = labels[proj.indices]
        elif color_by == "design":
            from embedkit.splits import design_of

            lab = np.array([design_of(store.paths[i]) for i in proj.indices])
        ident = store.identity
        panels.append(ViewPanel(f"{name} ({ident.get('backbone')}/{ident.get('layer')}, {len(store)} codes)",
                                proj.xy, lab, [store.paths[i] for i in proj.indices], m))
        dirs.append(folder)
        params.append(proj.params)
        bar.update(1)
    bar.close()
    n_thumbs = (0 if kind == ".png" else 300) if thumbnails is None else int(thumbnails)
    head = title or f"{method.upper()} of neural codes, coloured by {color_by}"
    if kind == ".png":
        plot_views(panels, out, thumbnails=n_thumbs, seed=seed, title=head)
    else:
        from embedkit.view.html import write_view_html

        write_view_html(out, panels, thumbnails=n_thumbs, seed=seed, title=head)
    return ViewResult(out, panels, dirs, params, reused, time.perf_counter() - t0)
