"""Near-duplicate groups: every pair of codes closer than a threshold, joined by union-find.

The pairs come from kNN searches of the indexed codes against their own index,
chunk by chunk (codes read through the store's ``iter_chunks``), so memory stays
at (chunk x k) rather than N x N; a widened search is split so that no more
than :data:`MAX_RESULTS` neighbour results are held at once. When a row's
k-th neighbour is still under the threshold the row is searched again with a
doubled k, so with an exact (flat) index no pair under the threshold is missed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedkit.errors import ConfigError, DataError


class UnionFind:
    """Disjoint sets over ``0..n-1`` with path halving and union by size."""

    def __init__(self, n: int):
        self.parent = np.arange(n, dtype=np.int64)
        self.size = np.ones(n, dtype=np.int64)

    def find(self, a: int) -> int:
        p = self.parent
        while p[a] != a:
            p[a] = p[p[a]]
            a = p[a]
        return int(a)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]


@dataclass
class DuplicateGroup:
    """Rows (store order) of one group of near-duplicates and the largest linking distance inside it."""

    rows: list[int]
    max_distance: float


#: most (row x neighbour) results held at once while widening a search (about 50 MB): never N x N
MAX_RESULTS = 4_000_000


def near_duplicate_groups(index, X=None, threshold: float = 0.05, k: int = 10, chunk_size: int | None = None,
                          progress: bool = False) -> list[DuplicateGroup]:
    """Groups of rows linked by distances ``<= threshold`` (in the index's metric).

    ``index`` is a fitted :class:`~embedkit.retrieve.index.KNNIndex` with default ids (row numbers); ``X``
    its codes (array, memmap or code store, read chunk by chunk); for a store-built streamed index ``X``
    may be left out. Groups are sorted largest first; rows inside a group ascending. Singletons are not
    returned. Memory: one chunk of queries and at most ``MAX_RESULTS`` neighbour results at a time.
    """
    from tqdm.auto import tqdm

    from embedkit.retrieve.source import CodeSource

    index._check_fitted()
    if not np.isfinite(threshold) or threshold < 0:
        raise ConfigError(f"threshold={threshold!r} is not valid; give a distance >= 0 in the index's metric "
                          f"({index.metric}: {'squared L2' if index.metric == 'l2' else '1 - cosine' if index.metric == 'cosine' else '-inner product'})")
    if index.metric == "ip":
        raise ConfigError("near-duplicates need a distance; metric='ip' gives similarities: use metric='cosine' or 'l2'")
    if X is None:
        X = getattr(index.searcher_, "source", None)
        if X is None:
            raise ConfigError("give the codes the index was built on: near_duplicate_groups(index, X, threshold)")
    source = CodeSource.of(X)
    if len(source) != index.n_:
        raise DataError(f"the index holds {index.n_} vectors but {len(source)} codes were given; pass the codes the index was built on")
    if not np.array_equal(index.ids_, np.arange(index.n_)):
        raise ConfigError("near_duplicate_groups needs an index with default ids (row numbers)")
    n = index.n_
    if chunk_size is None:
        # a streamed exact index reads the whole store once per search call: few, large query chunks
        chunk_size = 65536 if index.storage_ == "stream" else 4096
    cap = min(n, 2048) if index.backend_ == "faiss-gpu" else n  # GPU FAISS searches at most k=2048
    uf = UnionFind(n)
    edges_d = np.zeros(n, dtype=np.float64)  # largest linking distance at each row, for each group's max
    total = -(-n // chunk_size)
    for start, q in tqdm(source.iter_chunks(rows=chunk_size), total=total, disable=not progress,
                         desc="near-duplicates", unit="chunk"):
        rows = np.arange(start, start + len(q))
        kk = min(k + 1, cap)
        while len(rows):
            more = np.zeros(len(rows), dtype=bool)
            step = max(1, MAX_RESULTS // kk)  # rows per search so that (rows x kk) stays bounded
            for a0 in range(0, len(rows), step):
                r_sub = rows[a0:a0 + step]
                D, I = index.search(q[a0:a0 + step], kk)
                hit = (I >= 0) & (I != r_sub[:, None]) & (D <= threshold)
                for a, b in zip(*np.nonzero(hit)):  # only the (few) pairs under the threshold are visited in Python
                    r, j, dist = int(r_sub[a]), int(I[a, b]), float(D[a, b])
                    uf.union(r, j)
                    edges_d[r] = max(edges_d[r], dist)
                    edges_d[j] = max(edges_d[j], dist)
                # rows whose last neighbour is still under the threshold may have more: search them again, wider
                more[a0:a0 + step] = (D[:, -1] <= threshold) & (kk < cap)
            rows, q, kk = rows[more], q[more], min(2 * kk, cap)
    return collect_groups(uf, edges_d)


def collect_groups(uf: UnionFind, edges_d: np.ndarray) -> list[DuplicateGroup]:
    """The sets of ``uf`` with more than one row, largest first (rows ascending), with their max linking distance."""
    roots = uf.parent.copy()
    while True:  # pointer jumping, vectorised: a Python find() per row costs seconds at a million rows
        up = roots[roots]
        if np.array_equal(up, roots):
            break
        roots = up
    groups = {}
    for i in np.flatnonzero(uf.size[roots] > 1):
        groups.setdefault(int(roots[i]), []).append(int(i))
    out = [DuplicateGroup(rows, float(edges_d[rows].max())) for rows in groups.values()]
    out.sort(key=lambda g: (-len(g.rows), g.rows[0]))
    return out
