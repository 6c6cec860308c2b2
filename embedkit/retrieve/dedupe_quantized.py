"""Near-duplicates of a large store in bounded memory and linear time: a projected, quantised IVF index, then exact re-checks.

An IVF-Flat index over the codes themselves would hold every code in RAM (2 GiB at 1M x 512 float32) and
compare each row with its cells' rows in all D dimensions, so for large stores
:func:`quantized_duplicate_groups` indexes a *projection* of the codes:

- the codes are projected on their top ``dim`` principal directions (PCA on a sample; 64 by default). An
  orthonormal projection never lengthens a difference (``|P(x - y)| <= |x - y|``), so every pair under the
  threshold is still under it after projection: the projection only adds candidates, which the exact
  re-check removes;
- the projected rows go into an IVF index with 8-bit scalar-quantised residuals (``IndexIVFScalarQuantizer``,
  QT_8bit: ``dim`` bytes a row), with a constant number of rows per cell (``ROWS_PER_CELL``), so scanning a
  row's ``nprobe`` cells costs the same at any N. Its centroids come from a two-level k-means on a sample
  (``sqrt(nlist)`` coarse clusters, each split in proportion to its rows), whose cost grows with N, not N^2.

Then one pass over the store, chunk by chunk:

1. the chunk is projected, assigned to its IVF cells (``nprobe`` nearest) and added to the index;
2. it is range-searched against the index, which now holds every row up to the chunk's end, so each pair of
   rows is met once, when its later row's chunk is searched;
3. the candidate pairs are re-checked with exact distances on the full codes (the chunk in memory, the other
   rows read from the store with ``take``) before they are joined by union-find.

Quantisation cannot lose a pair either: the search radius is widened by the largest reconstruction error of
the rows indexed so far (``|q - y'| <= |q - y| + |y - y'|``). The search stays approximate in one way only,
as IVF is: a pair whose rows fall in cells not among each other's ``nprobe`` nearest is not seen (rare for
near-duplicates, which sit next to each other). Memory: the index (``dim`` bytes plus an 8-byte id a row),
the PCA sample, one chunk of codes and one block's candidates. The coarse assignment is a flat search over
the centroids: its cost per row grows with N / ROWS_PER_CELL, a small share of the time at a million rows.
"""

from __future__ import annotations

import logging

import numpy as np

from embedkit.defaults import CHUNK_ROWS
from embedkit.device import optional_import
from embedkit.errors import ConfigError
from embedkit.estimators import check_positive_int
from embedkit.retrieve.common import prep
from embedkit.retrieve.dedupe import DuplicateGroup, UnionFind, collect_groups
from embedkit.retrieve.source import CodeSource
from embedkit.store.postprocess import fit_whitening

log = logging.getLogger(__name__)

#: rows per IVF cell: constant, so the scan of a row's cells does not grow with N
ROWS_PER_CELL = 256
#: dimensions of the projection the index holds (a 512-d code costs 8 times less to scan at 64)
PROJECT_DIM = 64
#: rows of the sample the PCA is fitted on (a D x D covariance: the sample is read in blocks)
PCA_ROWS = 65536
#: FAISS' advice is 39-256 training points per IVF cell
TRAIN_POINTS_PER_CELL = 40
#: at most this many (projected) rows train the k-means, whatever N
TRAIN_ROWS_MAX = 262144
#: queries per range search: bounds one search's result buffers
SEARCH_BLOCK = 8192
#: candidate pairs re-checked at once (their two rows of codes are in memory together)
CHECK_BLOCK = 65536


def default_dedupe_nlist(n: int) -> int:
    """IVF cells of the dedupe index: ``N / ROWS_PER_CELL`` (a row's scan then costs the same at any N)."""
    return max(1, n // ROWS_PER_CELL)


def describe(n: int, d: int, metric: str, nlist: int, nprobe: int, dim: int | None = None) -> str:
    """One line naming the index the quantised dedupe builds (what the CLI prints)."""
    proj = f"PCA to {dim} dims, " if dim and dim < d else ""
    return (f"ivf-sq8 {metric} index on faiss ({n} x {d}, {proj}nlist={nlist}, nprobe={nprobe}, 8-bit codes; "
            "candidates re-checked with exact distances)")


def _exact(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """Distances of row pairs ``a[i], b[i]`` (already ``prep``-ed) in the metric's convention."""
    diff = a - b
    sq = np.einsum("ij,ij->i", diff, diff)
    return sq / 2 if metric == "cosine" else sq  # unit vectors: |a - b|^2 = 2 (1 - cos)


def _sample(n: int, m: int, rng) -> np.ndarray:
    """``m`` sorted random rows of ``n`` (all rows when m >= n): the store is read in order."""
    return np.sort(rng.choice(n, m, replace=False)) if m < n else np.arange(n)


class _SampleRows:
    """Rows ``rows`` of a code source, ``prep``-ed, sliced like an array: what ``fit_whitening`` streams over."""

    def __init__(self, source: CodeSource, rows: np.ndarray, metric: str):
        self.source, self.rows, self.metric = source, rows, metric
        self.shape = (len(rows), source.shape[1])

    def __getitem__(self, sl: slice) -> np.ndarray:
        return prep(self.source.take(self.rows[sl]), self.metric)


def fit_projection(source: CodeSource, metric: str, dim: int, rng, block: int = 8192):
    """``(mean, P)``: the top ``dim`` principal directions (``D x dim``, orthonormal columns) of a sample.

    ``None`` for ``P`` when ``dim >= D`` (the codes are indexed as they are). The PCA is the store's own
    (:func:`~embedkit.store.postprocess.fit_whitening`, without its scaling: a whitened projection could
    lengthen distances), streamed over the sample ``block`` rows at a time.
    """
    n, d = source.shape
    if dim >= d:
        return np.zeros(d, np.float32), None
    sample = _SampleRows(source, _sample(n, min(n, PCA_ROWS), rng), metric)
    mean, components, _scale = fit_whitening(sample, dim, chunk=block)
    return mean, np.ascontiguousarray(components.T)


def project(x: np.ndarray, mean: np.ndarray, P) -> np.ndarray:
    """Rows of ``x`` (``prep``-ed) in the projection's coordinates (``x`` itself when there is none)."""
    return x if P is None else np.ascontiguousarray((x - mean) @ P)


def two_level_centroids(faiss, xt: np.ndarray, nlist: int, seed: int = 0) -> np.ndarray:
    """About ``nlist`` k-means centroids of ``xt``: ``sqrt(nlist)`` coarse clusters, each split in proportion to its rows.

    The idea of ``faiss.contrib.clustering.two_level_clustering`` (one k-means over all ``nlist`` centroids
    costs ``len(xt) * nlist`` distances an iteration: N^2 when both grow with N), written out because the
    contrib version gives a coarse cluster smaller than ``len(xt) / nlist`` rows no centroid and then fails.
    Every non-empty coarse cluster gets at least one centroid and at most one per row.
    """
    d = xt.shape[1]
    quiet = {"seed": seed, "min_points_per_centroid": 1, "max_points_per_centroid": 2000}  # no FAISS warnings
    nc1 = int(np.sqrt(nlist))
    if nc1 < 4:  # few cells: one k-means is as cheap
        km = faiss.Kmeans(d, nlist, niter=20, **quiet)
        km.train(xt)
        return km.centroids
    km = faiss.Kmeans(d, nc1, niter=20, **quiet)
    km.train(xt)
    _, assign = km.index.search(xt, 1)
    assign = assign.ravel()
    sizes = np.bincount(assign, minlength=nc1)
    parts = np.minimum(sizes, np.maximum(sizes > 0, np.rint(sizes * nlist / len(xt)))).astype(int)
    out = []
    for c in np.flatnonzero(parts):
        sub = np.ascontiguousarray(xt[assign == c])
        if parts[c] == 1:
            out.append(sub.mean(0, keepdims=True))
            continue
        km = faiss.Kmeans(d, int(parts[c]), niter=20, **quiet)
        km.train(sub)
        out.append(km.centroids)
    return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)


def _empty_index(faiss, source: CodeSource, metric: str, mean, P, nlist: int, seed: int, rng):
    """``(centroids, quantizer, index)``: an IVF index with 8-bit codes of the projected rows, trained on a
    sample (two-level k-means centroids, then the 8-bit ranges), still empty."""
    n = source.shape[0]
    train_rows = _sample(n, min(n, TRAIN_POINTS_PER_CELL * nlist, TRAIN_ROWS_MAX), rng)
    xt = np.concatenate([project(prep(source.take(train_rows[b:b + SEARCH_BLOCK]), metric), mean, P)
                         for b in range(0, len(train_rows), SEARCH_BLOCK)])
    centroids = two_level_centroids(faiss, xt, nlist, seed)
    dp = xt.shape[1]
    quantizer = faiss.IndexFlatL2(dp)
    quantizer.add(centroids)
    index = faiss.IndexIVFScalarQuantizer(quantizer, dp, len(centroids), faiss.ScalarQuantizer.QT_8bit,
                                          faiss.METRIC_L2, True)
    index.train(xt)  # the quantizer holds nlist centroids already: this trains the 8-bit ranges only
    return centroids, quantizer, index


def _join_close_pairs(uf: UnionFind, edges_d: np.ndarray, x: np.ndarray, start: int, q: np.ndarray,
                      found: np.ndarray, source: CodeSource, metric: str, threshold: float) -> int:
    """Re-check the candidate pairs ``(q, found)`` exactly (``x`` holds rows ``start...``, prepped) and join
    those within ``threshold``; returns how many were."""
    pairs = 0
    for c0 in range(0, len(q), CHECK_BLOCK):
        qa, fb = q[c0:c0 + CHECK_BLOCK], found[c0:c0 + CHECK_BLOCK]
        dist = _exact(x[qa - start], prep(source.take(fb), metric), metric)
        ok = dist <= threshold
        pairs += int(ok.sum())
        for a, b, dd in zip(qa[ok].tolist(), fb[ok].tolist(), dist[ok].tolist()):
            uf.union(a, b)
            edges_d[a] = max(edges_d[a], dd)
            edges_d[b] = max(edges_d[b], dd)
    return pairs


def quantized_duplicate_groups(codes, threshold: float, metric: str = "cosine", *, nlist: int | None = None,
                               nprobe: int = 8, dim: int = PROJECT_DIM, chunk_rows: int = CHUNK_ROWS // 4,
                               seed: int = 0, progress: bool = False, stats: dict | None = None) -> list[DuplicateGroup]:
    """Groups of rows of ``codes`` (array, memmap or code store) linked by distances ``<= threshold``.

    Same result as :func:`~embedkit.retrieve.dedupe.near_duplicate_groups` (groups largest first, rows
    ascending, singletons left out; every joined pair's distance is exact), found through a projected,
    quantised IVF index: see the module docstring for what is exact and what is approximate. ``metric`` is
    ``"l2"`` (squared) or ``"cosine"``; ``dim`` the projection's dimensions (``>= D``: none). ``stats``, when
    given, receives ``nlist``, ``nprobe``, ``dim``, ``candidates`` (pairs re-checked), ``pairs`` (pairs under
    the threshold) and ``max_quantisation_error``.
    """
    from tqdm.auto import tqdm

    faiss = optional_import("faiss", "near-duplicate search")
    from faiss.contrib import ivf_tools
    if metric not in ("l2", "cosine"):
        raise ConfigError(f"metric={metric!r} is not valid for near-duplicates; use 'cosine' or 'l2' (a distance)")
    if not np.isfinite(threshold) or threshold < 0:
        raise ConfigError(f"threshold={threshold!r} is not valid; give a distance >= 0 in the {metric} metric")
    check_positive_int("nprobe", nprobe)
    check_positive_int("dim", dim)
    check_positive_int("chunk_rows", chunk_rows)
    source = CodeSource.of(codes)
    n, d = source.shape
    nlist = int(nlist) if nlist else default_dedupe_nlist(n)
    if not 1 <= nlist <= n:
        raise ConfigError(f"nlist={nlist} is not valid for {n} rows; use 1 <= nlist <= {n}")
    # cosine runs as L2 on unit vectors; the index's radius is in squared L2
    radius = 2 * float(threshold) if metric == "cosine" else float(threshold)
    rng = np.random.default_rng(seed)

    mean, P = fit_projection(source, metric, int(dim), rng)
    dp = d if P is None else P.shape[1]
    centroids, quantizer, index = _empty_index(faiss, source, metric, mean, P, nlist, seed, rng)
    nlist = len(centroids)  # the two-level split may round the count
    nprobe = min(int(nprobe), nlist)
    index.nprobe = nprobe

    uf = UnionFind(n)
    edges_d = np.zeros(n, dtype=np.float64)
    max_err, candidates, pairs = 0.0, 0, 0
    total = -(-n // int(chunk_rows))
    for start, x in tqdm(source.iter_chunks(rows=int(chunk_rows)), total=total, disable=not progress,
                         desc="near-duplicates (ivf-sq8)", unit="chunk"):
        x = prep(x, metric)
        z = project(x, mean, P)
        _, assign = quantizer.search(z, nprobe)
        for b0 in range(0, len(z), SEARCH_BLOCK):  # blocks: the residual temporaries stay a few MB
            zb, lists = z[b0:b0 + SEARCH_BLOCK], np.ascontiguousarray(assign[b0:b0 + SEARCH_BLOCK, 0])
            # what the index will hold of each row: its largest error bounds how far the radius must widen
            resid = zb - centroids[lists]
            resid -= index.sq.decode(index.sq.compute_codes(resid))
            max_err = max(max_err, float(np.einsum("ij,ij->i", resid, resid).max()))
            # named arrays, not temporaries: add_preassigned keeps only a raw pointer to the ids while it adds
            ids = np.arange(start + b0, start + b0 + len(zb), dtype=np.int64)
            ivf_tools.add_preassigned(index, zb, lists, ids)
        wide = (np.sqrt(radius) + np.sqrt(max_err)) ** 2 * (1 + 1e-5) + 1e-6  # float rounding of both sides
        for b0 in range(0, len(z), SEARCH_BLOCK):
            zb = z[b0:b0 + SEARCH_BLOCK]
            lims, _, found = ivf_tools.range_search_preassigned(
                index, zb, wide, np.ascontiguousarray(assign[b0:b0 + SEARCH_BLOCK]))
            q = np.repeat(np.arange(start + b0, start + b0 + len(zb), dtype=np.int64), np.diff(lims).astype(np.int64))
            keep = found < q  # each pair once (the other row was indexed first); drops the row itself
            q, found = q[keep], found[keep]
            candidates += len(q)
            pairs += _join_close_pairs(uf, edges_d, x, start, q, found, source, metric, threshold)
    if stats is not None:
        stats.update(nlist=nlist, nprobe=nprobe, dim=dp, candidates=candidates, pairs=pairs,
                     max_quantisation_error=max_err)
    log.debug("ivf-sq8 dedupe: %d candidate pairs re-checked, %d under the threshold", candidates, pairs)
    return collect_groups(uf, edges_d)
