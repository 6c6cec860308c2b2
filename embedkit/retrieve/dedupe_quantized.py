"""Near-duplicates of a large store in bounded memory: a quantised IVF index, then exact re-checks.

An IVF-Flat index would hold every code in RAM (2 GiB at 1M x 512 float32), so for
large stores :func:`quantized_duplicate_groups` builds an IVF index with 8-bit
scalar-quantised residuals (``IndexIVFScalarQuantizer``, QT_8bit: a byte per dimension,
a quarter of the codes' size), trained on a sample of rows, and runs one pass over the
store, chunk by chunk:

1. the chunk is assigned to its IVF cells (``nprobe`` nearest) and added to the index;
2. it is range-searched against the index, which now holds every row up to the chunk's
   end, so each pair of rows is met once, when its later row's chunk is searched;
3. the candidate pairs are re-checked with exact distances (the chunk in memory, the
   other rows read from the store with ``take``) before they are joined by union-find.

Quantisation cannot lose a pair: the search radius is widened by the largest
reconstruction error of the rows indexed so far (``|q - y'| <= |q - y| + |y - y'|``), and
the exact re-check removes what the wider radius lets in. The search stays approximate
in one way only, as IVF is: a pair whose rows fall in cells not among each other's
``nprobe`` nearest is not seen (rare for near-duplicates, which sit next to each other).
Memory: the index (N x D bytes plus ids), one chunk of codes and one block's candidates.
"""

from __future__ import annotations

import logging

import numpy as np

from embedkit.defaults import CHUNK_ROWS
from embedkit.device import optional_import
from embedkit.errors import ConfigError
from embedkit.retrieve.common import check_positive_int, prep
from embedkit.retrieve.dedupe import DuplicateGroup, UnionFind, collect_groups
from embedkit.retrieve.source import CodeSource

log = logging.getLogger(__name__)

#: FAISS' advice is 39-256 training points per IVF cell; 40 keeps k-means short at a million rows
TRAIN_POINTS_PER_CELL = 40
#: queries per range search: bounds one search's result buffers
SEARCH_BLOCK = 8192
#: candidate pairs re-checked at once (their two rows of codes are in memory together)
CHECK_BLOCK = 65536


def default_dedupe_nlist(n: int) -> int:
    """IVF cells of the dedupe index: ``2 * sqrt(N)`` (each with at least TRAIN_POINTS_PER_CELL training points).

    Half the search index's ``4 * sqrt(N)``: here every row is a query, and the cost of k-means and of
    assigning N rows (both grow with the cells) balances the cost of scanning N rows' cells (which falls
    with them) near ``2 * sqrt(N)`` at a million rows.
    """
    return max(1, min(int(2 * np.sqrt(n)), n // TRAIN_POINTS_PER_CELL))


def describe(n: int, d: int, metric: str, nlist: int, nprobe: int) -> str:
    """One line naming the index the quantised dedupe builds (what the CLI prints)."""
    return (f"ivf-sq8 {metric} index on faiss ({n} x {d}, nlist={nlist}, nprobe={nprobe}, 8-bit codes; "
            "candidates re-checked with exact distances)")


def _exact(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """Distances of row pairs ``a[i], b[i]`` (already ``prep``-ed) in the metric's convention."""
    diff = a - b
    sq = np.einsum("ij,ij->i", diff, diff)
    return sq / 2 if metric == "cosine" else sq  # unit vectors: |a - b|^2 = 2 (1 - cos)


def quantized_duplicate_groups(codes, threshold: float, metric: str = "cosine", *, nlist: int | None = None,
                               nprobe: int = 8, chunk_rows: int = CHUNK_ROWS // 4, seed: int = 0,
                               progress: bool = False, stats: dict | None = None) -> list[DuplicateGroup]:
    """Groups of rows of ``codes`` (array, memmap or code store) linked by distances ``<= threshold``.

    Same result as :func:`~embedkit.retrieve.dedupe.near_duplicate_groups` (groups largest first, rows
    ascending, singletons left out; every joined pair's distance is exact), found through a quantised IVF
    index: see the module docstring for what is exact and what is approximate. ``metric`` is ``"l2"``
    (squared) or ``"cosine"``. ``stats``, when given, receives ``nlist``, ``nprobe``, ``candidates`` (pairs
    re-checked), ``pairs`` (pairs under the threshold) and ``max_quantisation_error``.
    """
    from tqdm.auto import tqdm

    faiss = optional_import("faiss", "near-duplicate search")
    from faiss.contrib import ivf_tools
    if metric not in ("l2", "cosine"):
        raise ConfigError(f"metric={metric!r} is not valid for near-duplicates; use 'cosine' or 'l2' (a distance)")
    if not np.isfinite(threshold) or threshold < 0:
        raise ConfigError(f"threshold={threshold!r} is not valid; give a distance >= 0 in the {metric} metric")
    check_positive_int("nprobe", nprobe)
    check_positive_int("chunk_rows", chunk_rows)
    source = CodeSource.of(codes)
    n, d = source.shape
    nlist = int(nlist) if nlist else default_dedupe_nlist(n)
    if not 1 <= nlist <= n:
        raise ConfigError(f"nlist={nlist} is not valid for {n} rows; use 1 <= nlist <= {n}")
    nprobe = min(int(nprobe), nlist)
    # cosine runs as L2 on unit vectors; the index's radius is in squared L2
    radius = 2 * float(threshold) if metric == "cosine" else float(threshold)

    quantizer = faiss.IndexFlatL2(d)
    index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_L2, True)
    index.nprobe = nprobe
    m = min(n, TRAIN_POINTS_PER_CELL * nlist)
    # a sorted random sample, not all rows: k-means cost stays bounded and the store is read in order
    rows = np.sort(np.random.default_rng(seed).choice(n, m, replace=False)) if m < n else np.arange(n)
    index.train(prep(source.take(rows), metric))
    centroids = quantizer.reconstruct_n(0, nlist)

    uf = UnionFind(n)
    edges_d = np.zeros(n, dtype=np.float64)
    max_err, candidates, pairs = 0.0, 0, 0
    total = -(-n // int(chunk_rows))
    for start, x in tqdm(source.iter_chunks(rows=int(chunk_rows)), total=total, disable=not progress,
                         desc="near-duplicates (ivf-sq8)", unit="chunk"):
        x = prep(x, metric)
        _, assign = quantizer.search(x, nprobe)
        for b0 in range(0, len(x), SEARCH_BLOCK):  # blocks: the residual temporaries stay a few MB
            xb, lists = x[b0:b0 + SEARCH_BLOCK], np.ascontiguousarray(assign[b0:b0 + SEARCH_BLOCK, 0])
            # what the index will hold of each row: its largest error bounds how far the radius must widen
            resid = xb - centroids[lists]
            resid -= index.sq.decode(index.sq.compute_codes(resid))
            max_err = max(max_err, float(np.einsum("ij,ij->i", resid, resid).max()))
            # named arrays, not temporaries: add_preassigned keeps only a raw pointer to the ids while it adds
            ids = np.arange(start + b0, start + b0 + len(xb), dtype=np.int64)
            ivf_tools.add_preassigned(index, xb, lists, ids)
        wide = (np.sqrt(radius) + np.sqrt(max_err)) ** 2 * (1 + 1e-5) + 1e-6  # float rounding of both sides
        for b0 in range(0, len(x), SEARCH_BLOCK):
            xb = x[b0:b0 + SEARCH_BLOCK]
            lims, _, found = ivf_tools.range_search_preassigned(
                index, xb, wide, np.ascontiguousarray(assign[b0:b0 + SEARCH_BLOCK]))
            q = np.repeat(np.arange(start + b0, start + b0 + len(xb), dtype=np.int64), np.diff(lims).astype(np.int64))
            keep = found < q  # each pair once (the other row was indexed first); drops the row itself
            q, found = q[keep], found[keep]
            candidates += len(q)
            for c0 in range(0, len(q), CHECK_BLOCK):
                qa, fb = q[c0:c0 + CHECK_BLOCK], found[c0:c0 + CHECK_BLOCK]
                dist = _exact(x[qa - start], prep(source.take(fb), metric), metric)
                ok = dist <= threshold
                pairs += int(ok.sum())
                for a, b, dd in zip(qa[ok].tolist(), fb[ok].tolist(), dist[ok].tolist()):
                    uf.union(a, b)
                    edges_d[a] = max(edges_d[a], dd)
                    edges_d[b] = max(edges_d[b], dd)
    if stats is not None:
        stats.update(nlist=nlist, nprobe=nprobe, candidates=candidates, pairs=pairs, max_quantisation_error=max_err)
    log.debug("ivf-sq8 dedupe: %d candidate pairs re-checked, %d under the threshold", candidates, pairs)
    return collect_groups(uf, edges_d)
