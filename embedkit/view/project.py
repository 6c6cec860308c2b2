"""Views of the embedding: 2-D projections (UMAP, t-SNE, PCA) and how well classes group.

:func:`project` maps codes (an array, a memmap or a code store) to 2-D with the
backend chosen by :func:`resolve_view_backend` (which honours ``device``, then
asks :func:`embedkit.device.resolve_backend`: cuML on CUDA machines, else
umap-learn / openTSNE / scikit-learn).

Memory is bounded whatever the number of rows N. Codes are read only through a
store's ``take(sorted rows)`` / ``iter_chunks`` (or the same on an array), and the
projection is *fitted* on a seeded uniform sample of at most ``max_points`` rows.
What happens to the other rows is the ``rest`` policy:

* ``transform`` (UMAP and PCA by default): the fitted map is applied to every
  other row, chunk by chunk; the output covers all N rows (N x 2 coordinates).
* ``drop`` (t-SNE by default, as openTSNE's ``transform`` of many points costs
  about as much as a fit): only the sample is projected, and the summary says so.

Wide codes are first reduced to ``pca_dims`` by a PCA fitted on at most
``pca_fit_rows(D)`` rows (about 128 MB of float32) and applied chunk by chunk.
Nothing N x N or N x D is ever built: peak memory is the fit sample after PCA
(``max_points`` x ``pca_dims``), one chunk, and the N x 2 output.

A :class:`Projection` is saved as ``proj.npy`` + ``proj.json`` so a figure can be
redrawn without recomputing. How well classes group in the codes themselves is
:func:`embedkit.view.metrics.code_metrics`; drawing is :mod:`embedkit.view.plot` / :mod:`embedkit.view.html`,
and :func:`embedkit.view.pipeline.view` puts them together.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from embedkit import device as _device
from embedkit.atomic import atomic_path, write_text_atomic
from embedkit.checks import check_codes
from embedkit.defaults import CHUNK_ROWS
from embedkit.errors import ConfigError, DataError, StoreError, invalid
from embedkit.view.backends import _pca_fit, _transform, _tsne, _umap

METHODS = ("umap", "tsne", "pca")
#: how the methods are spelt for people
METHOD_NAMES = {"umap": "UMAP", "tsne": "t-SNE", "pca": "PCA"}
BACKENDS = {  # method -> (gpu, cpu, extra cpu); resolved in embedkit.device
    "umap": ("cuml", "umap-learn", ()),
    "tsne": ("cuml", "opentsne", ("sklearn",)),
    "pca": ("cuml", "sklearn", ()),
}
#: what `view --backend` accepts: auto, or any library of any method (the method's own are checked later)
BACKEND_CHOICES = ("auto", *sorted({b for gpu, cpu, extra in BACKENDS.values() for b in (gpu, cpu, *extra)}))
#: rows the projection is fitted on at most (a seeded sample above it); see REST for the other rows
DEFAULT_MAX_POINTS = {"umap": 200_000, "tsne": 50_000, "pca": 200_000}
#: what happens to rows outside the fit sample: "transform" (mapped by the fitted projection) or "drop"
REST_CHOICES = ("transform", "drop")
DEFAULT_REST = {"umap": "transform", "tsne": "drop", "pca": "transform"}
#: float32 elements of codes held at once to fit the PCA (pre-reduction, or the PCA view itself): 128 MB
PCA_FIT_ELEMENTS = 1 << 25
#: float32 elements of codes held at once when streaming rows (one chunk): 64 MB
CHUNK_ELEMENTS = 1 << 24
#: UMAP: above this many rows to transform, fit with umap-learn's approximate index (fast to query) even on < 4096 rows
UMAP_APPROX_REST = 20_000
MIN_POINTS = 3


def pca_fit_rows(dim: int) -> int:
    """How many rows a PCA is fitted on at most for ``dim``-wide codes (bounded memory, at least 5000)."""
    return int(max(5000, PCA_FIT_ELEMENTS // max(int(dim), 1)))


def chunk_rows(dim: int) -> int:
    """Rows per streamed chunk for ``dim``-wide codes (at most CHUNK_ROWS, about 64 MB)."""
    return int(max(1024, min(CHUNK_ROWS, CHUNK_ELEMENTS // max(int(dim), 1))))


@dataclass
class Projection:
    """2-D coordinates ``xy`` (n x 2 float32) of the code rows ``indices``, and how they were made (``params``)."""

    xy: np.ndarray
    indices: np.ndarray
    params: dict = field(default_factory=dict)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``proj.npy`` (xy), ``proj.json`` (params) and, when not every row, ``indices.npy`` atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        n_in = int(self.params.get("n_input", len(self.indices)))
        full = len(self.indices) == n_in and np.array_equal(self.indices, np.arange(n_in))
        for name, arr in (("proj", np.asarray(self.xy, np.float32)),
                          ("indices", None if full else np.asarray(self.indices, np.int64))):
            if arr is None:
                (folder / f"{name}.npy").unlink(missing_ok=True)
                continue
            with atomic_path(folder / f"{name}.npy", suffix=".npy") as tmp:  # np.save wants the .npy ending
                np.save(tmp, arr)
        doc = {"params": self.params, "indices": None if full else "indices.npy"}
        write_text_atomic(folder / "proj.json", json.dumps(doc, indent=1, default=str))
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "Projection":
        """Read a projection written by :meth:`save` (indices as ``indices.npy`` or, older, a JSON list)."""
        folder = Path(folder)
        if not (folder / "proj.npy").exists() or not (folder / "proj.json").exists():
            raise StoreError(f"{str(folder)!r} holds no saved projection (proj.npy + proj.json); "
                             "run `embedkit view` without --reuse to compute one")
        xy = np.load(folder / "proj.npy")
        doc = json.loads((folder / "proj.json").read_text(encoding="utf-8"))
        ref = doc.get("indices")
        if ref is None:
            idx = np.arange(len(xy), dtype=np.int64)
        elif isinstance(ref, str):
            idx = np.load(folder / ref).astype(np.int64)
        else:
            idx = np.asarray(ref, np.int64)
        if len(idx) != len(xy):
            raise StoreError(f"projection in {str(folder)!r} is inconsistent: {len(xy)} points, {len(idx)} indices")
        return cls(xy.astype(np.float32), idx, doc.get("params", {}))


class Rows:
    """Read access to N x D codes through the store API only: ``take(sorted rows)`` and ``iter_chunks``.

    Wraps a code store (anything with ``take``, ``iter_chunks``, ``dim`` and ``len``)
    or an array / memmap. Every block read is checked by :func:`embedkit.checks.check_codes`.
    """

    def __init__(self, codes, what: str = "codes"):
        self.what = what
        if hasattr(codes, "take") and hasattr(codes, "iter_chunks") and hasattr(codes, "dim"):
            self.src, self.arr = codes, None
            self.n, self.d = len(codes), int(codes.dim)
        else:
            arr = codes if hasattr(codes, "shape") and hasattr(codes, "dtype") else np.asarray(codes)
            check_codes(arr[:0], what, allow_empty=True, copy=False)  # numeric, 2-D: clear messages
            self.src, self.arr = None, arr
            self.n, self.d = int(arr.shape[0]), int(arr.shape[1])

    def __len__(self) -> int:
        return self.n

    def take(self, idx: np.ndarray) -> np.ndarray:
        """float32 rows ``idx`` (sorted ascending for sequential reads), checked finite."""
        idx = np.asarray(idx, np.int64)
        if self.arr is None:
            block = self.src.take(idx)
        elif len(idx) and idx[-1] - idx[0] + 1 == len(idx) and np.all(np.diff(idx) == 1):
            block = self.arr[int(idx[0]):int(idx[-1]) + 1]  # a contiguous run: one slice
        else:
            block = self.arr[idx]
        return check_codes(np.asarray(block, np.float32), self.what, allow_empty=True, copy=False)

    def chunks(self, rows: int | None = None):
        """``(first_row, float32 block)`` in row order, checked finite."""
        rows = chunk_rows(self.d) if rows is None else int(rows)
        it = (self.src.iter_chunks(rows) if self.arr is None else
              ((i, self.arr[i:i + rows]) for i in range(0, self.n, rows)))
        for i, block in it:
            yield i, check_codes(np.asarray(block, np.float32), self.what, allow_empty=True, copy=False)


def _sample_indices(n: int, k: int | None, seed: int) -> np.ndarray:
    """Sorted seeded uniform sample of ``k`` of ``n`` rows (all rows when k is None or >= n)."""
    if k is None or n <= k:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=int(k), replace=False)).astype(np.int64)


def resolve_view_backend(method: str, backend: str | None = "auto", device: str | None = "auto") -> str:
    """The library that computes a ``method`` projection, honouring ``device``.

    ``device="cpu"`` forces the CPU library even on a CUDA machine with cuML (and
    refuses ``backend="cuml"``); ``device="cuda"`` asks for cuML (and refuses a CPU
    library); ``auto`` leaves the choice to :func:`embedkit.device.resolve_backend`.
    """
    if method not in METHODS:
        raise invalid("method", method, METHODS)
    gpu, cpu, extra = BACKENDS[method]
    name = _device.requested_device(device)
    dev = name.split(":")[0]
    if dev not in _device.DEVICE_CHOICES:
        raise invalid("device", name, _device.DEVICE_CHOICES, "or cuda:N")
    req = "auto" if backend in (None, "auto") else str(backend)
    asked_auto = req == "auto"
    if dev == "cpu":
        if req == gpu:
            raise ConfigError(f"backend {gpu!r} runs on the GPU but device 'cpu' was asked; use backend auto or {cpu}")
        req = cpu if req == "auto" else req
    elif dev == "cuda":
        if req not in ("auto", gpu):
            raise ConfigError(f"device {name!r} was asked but backend {req!r} runs on the CPU; use backend auto or {gpu}")
        req = gpu
    elif req == "auto" and isinstance(device, _device.Compute):  # the entry point's choice
        req = gpu if device.projection == "cuml" else cpu
    chosen = _device.resolve_backend(req, gpu=gpu, cpu=cpu, extra_cpu=extra, purpose=f"{method} projection")
    if asked_auto and chosen == "opentsne" and not _device.has_module("openTSNE"):
        # openTSNE comes with the `view` extra; scikit-learn's TSNE (always installed) does the same, slower
        logging.getLogger(__name__).info("openTSNE is not installed (pip install \"embedkit[view]\"): t-SNE by "
                                         "scikit-learn, which is slower")
        chosen = "sklearn"
    return chosen


#: the library each CPU backend imports (checked before any work, so a missing one fails at once)
_BACKEND_MODULES = {"umap-learn": "umap", "opentsne": "openTSNE"}


def _installed(module: str) -> bool:
    """True when ``module`` can be imported, without importing it (umap-learn takes seconds to import)."""
    if module in sys.modules:
        return sys.modules[module] is not None
    return importlib.util.find_spec(module) is not None


def resolve_method(method: str | None, backend: str | None = "auto", device: str | None = "auto") -> str:
    """``method``, or for None the default: UMAP, or PCA (with a one-line note) where no UMAP library is
    installed (the base install has no umap-learn), so the default map always draws."""
    if method is not None:
        return method
    if backend not in (None, "auto"):
        return "umap"
    be = resolve_view_backend("umap", backend, device)
    if be in _BACKEND_MODULES and not _installed(_BACKEND_MODULES[be]):
        logging.getLogger(__name__).warning(
            'umap-learn is not installed: drawing a PCA map (pip install "embedkit[view]" for UMAP, or --method tsne)')
        return "pca"
    return "umap"


def check_view_backend(method: str, backend: str | None = "auto", device: str | None = "auto") -> str:
    """:func:`resolve_view_backend`, and its library installed: called before any work, so a missing
    umap-learn fails at once instead of after the PCA reduction."""
    be = resolve_view_backend(method, backend, device)
    if be in _BACKEND_MODULES and not _installed(_BACKEND_MODULES[be]):
        _device.optional_import(_BACKEND_MODULES[be], f"{method} projection with backend {be!r}")
    return be


def _fmt(n: int) -> str:
    return f"{int(n):,}"


def describe(params: dict) -> str:
    """One phrase saying what was projected: 'UMAP fitted on 20,000 of 1,000,000 points, the rest transformed'."""
    name = METHOD_NAMES.get(params.get("method"), str(params.get("method")))
    n, fit = int(params.get("n_input", 0)), int(params.get("n_fit", 0))
    policy = params.get("policy", "all" if fit >= n else "sample")
    if policy == "all":
        return f"{name} of all {_fmt(n)} points"
    if policy == "transform":
        return f"{name} fitted on {_fmt(fit)} of {_fmt(n)} points, the rest transformed"
    return f"{name} of a sample of {_fmt(fit)} of {_fmt(n)} points (the rest not projected)"


def project(codes, method: str = "umap", backend: str | None = "auto", seed: int = 0, max_points: int | None = None,
            pca_dims: int = 50, n_neighbors: int = 15, min_dist: float = 0.1, perplexity: float = 30.0, *,
            rest: str | None = None, device: str | None = "auto", log: Callable[[str], None] | None = None,
            progress: bool = False) -> Projection:
    """Project N x D ``codes`` (array, memmap or code store) to 2-D with bounded memory.

    ``method``: umap | tsne | pca. ``backend``: auto | cuml | umap-learn (umap) |
    opentsne, sklearn (tsne) | sklearn (pca); ``device`` (auto | cpu | cuda) is
    honoured first (see :func:`resolve_view_backend`). The map is fitted on a seeded
    sample of at most ``max_points`` rows (default per method, ``DEFAULT_MAX_POINTS``);
    ``rest`` says what happens to the others: ``transform`` (default for UMAP and
    PCA; for t-SNE openTSNE only) or ``drop`` (default for t-SNE: the sample only).
    Codes wider than ``pca_dims`` are first reduced by PCA (UMAP/t-SNE only).
    ``log`` receives start/end lines with timings. Same seed, same backend, same
    input: same coordinates (cuML t-SNE/UMAP are not bit-reproducible on GPU).
    """
    be = check_view_backend(method, backend, device)
    src = codes if isinstance(codes, Rows) else Rows(codes)
    n, d = src.n, src.d
    if n < MIN_POINTS:
        raise DataError(f"a 2-D view needs at least {MIN_POINTS} codes, got {n}; embed more images first")
    limit = DEFAULT_MAX_POINTS[method] if max_points is None else int(max_points)
    if limit < MIN_POINTS:
        raise invalid("max_points", max_points, f"at least {MIN_POINTS}")
    rest = DEFAULT_REST[method] if rest is None else str(rest)
    if rest not in REST_CHOICES:
        raise invalid("rest", rest, REST_CHOICES)
    if method == "pca":
        rest = "transform"  # a linear map: applying it to every row is as cheap as reading them
    if rest == "transform" and method == "tsne" and be != "opentsne" and n > limit:
        raise ConfigError(f"t-SNE backend {be!r} cannot place new points; use --rest drop (project the sample "
                          f"only) or backend opentsne")
    say = log or logging.getLogger(__name__).info  # progress lines: the module's logger by default
    t0 = time.perf_counter()
    fit_idx = _sample_indices(n, limit, seed)
    policy = "all" if len(fit_idx) == n else ("transform" if rest == "transform" else "sample")
    params = {"method": method, "backend": be, "seed": int(seed), "max_points": limit, "n_input": int(n),
              "dim_input": int(d), "n_fit": int(len(fit_idx)), "fraction": round(len(fit_idx) / n, 6),
              "rest": rest, "policy": policy}

    # PCA (the view itself, or the reduction before UMAP/t-SNE) is fitted on at most pca_fit_rows(d) rows.
    k_pca = 2 if method == "pca" else (min(pca_dims, d) if d > pca_dims else None)
    reduce = None if k_pca is None else _pca_reduction(src, fit_idx, k_pca, method, be, seed, params, say)
    policy = params["policy"]

    def reduced(block: np.ndarray) -> np.ndarray:
        return block if reduce is None else (block - reduce[0]) @ reduce[1].T

    if method == "pca":
        xy = np.empty((n, 2), np.float32)
        for i, block in _chunks_bar(src, progress, "pca: transform"):
            xy[i:i + len(block)] = reduced(block)
        idx = np.arange(n, dtype=np.int64)
    else:
        step = chunk_rows(d)
        x = np.empty((len(fit_idx), reduce[1].shape[0] if reduce else d), np.float32)
        for i in range(0, len(fit_idx), step):
            x[i:i + step] = reduced(src.take(fit_idx[i:i + step]))
        params["pca_dims"] = int(x.shape[1])
        say(f"{method}: fitting {be} on {_fmt(len(x))} of {_fmt(n)} points ({x.shape[1]} dims)...")
        t1 = time.perf_counter()
        fit_xy, model = _fit_map(x, method, be, n, seed, n_neighbors, min_dist, perplexity, params, progress)
        del x
        params["fit_seconds"] = round(time.perf_counter() - t1, 3)
        say(f"{method}: fitted in {params['fit_seconds']:.1f}s")
        if policy == "transform":
            xy = _place_rest(src, model, method, reduced, fit_idx, fit_xy, progress, say, params)
            idx = np.arange(n, dtype=np.int64)
        else:
            xy, idx = fit_xy, fit_idx
    params["seconds"] = round(time.perf_counter() - t0, 3)
    return Projection(np.ascontiguousarray(xy, np.float32), idx, params)


def _pca_reduction(src: Rows, fit_idx: np.ndarray, k: int, method: str, be: str, seed: int, params: dict, say):
    """``(mean, components)`` of a PCA fitted on at most ``pca_fit_rows(D)`` of the fit rows; for the PCA view
    itself, ``params`` then say that those rows are what it was fitted on."""
    n, d = src.n, src.d
    pidx = fit_idx[_sample_indices(len(fit_idx), pca_fit_rows(d), seed + 1)]
    t1 = time.perf_counter()
    reduce = _pca_fit(src.take(pidx), min(k, len(pidx)), seed, be)
    params["pca_fit_rows"] = int(len(pidx))
    if method == "pca":
        params["n_fit"] = int(len(pidx))
        params["fraction"] = round(len(pidx) / n, 6)
        params["policy"] = "all" if len(pidx) == n else "transform"
    say(f"{method}: PCA fitted on {_fmt(len(pidx))} x {d} codes in {time.perf_counter() - t1:.1f}s")
    return reduce


def _fit_map(x: np.ndarray, method: str, be: str, n: int, seed: int, n_neighbors: int, min_dist: float,
             perplexity: float, params: dict, progress: bool = False):
    """``(2-D coordinates of x, fitted model)`` of UMAP or t-SNE, their parameters bounded by the sample size."""
    if method == "umap":
        k = int(min(n_neighbors, len(x) - 1))
        params.update(n_neighbors=k, min_dist=float(min_dist))
        # umap-learn places new points against an exact distance matrix when it was fitted on < 4096 rows
        # (about 4 ms a point); many new points pay for its approximate index instead (compiled once).
        approx = params["policy"] == "transform" and n - len(x) > UMAP_APPROX_REST
        params["umap_approx_index"] = approx
        return _umap(x, be, k, min_dist, seed, approx)
    p = float(min(perplexity, max(1.0, (len(x) - 1) / 3.0)))
    params["perplexity"] = p
    return _tsne(x, be, p, seed, progress=progress)


def _place_rest(src: Rows, model, method: str, reduced, fit_idx: np.ndarray, fit_xy: np.ndarray, progress: bool,
                say, params: dict) -> np.ndarray:
    """N x 2 coordinates: the fitted sample's, and every other row mapped by ``model``, chunk by chunk."""
    n = src.n
    xy = np.empty((n, 2), np.float32)
    in_fit = np.zeros(n, bool)
    in_fit[fit_idx] = True
    xy[fit_idx] = fit_xy
    t1 = time.perf_counter()
    say(f"{method}: transforming the other {_fmt(n - len(fit_idx))} points...")
    for i, block in _chunks_bar(src, progress, f"{method}: transform"):
        keep = np.flatnonzero(~in_fit[i:i + len(block)])
        if len(keep):
            xy[i + keep] = _transform(model, method, reduced(block[keep]))
    params["transform_seconds"] = round(time.perf_counter() - t1, 3)
    say(f"{method}: transformed in {params['transform_seconds']:.1f}s")
    return xy


def _chunks_bar(src: Rows, progress: bool, desc: str):
    from tqdm.auto import tqdm

    with tqdm(total=src.n, unit="row", desc=desc, disable=not progress, leave=False) as bar:
        for i, block in src.chunks():
            yield i, block
            bar.update(len(block))
