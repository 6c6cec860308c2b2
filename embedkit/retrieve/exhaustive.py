"""Exact search that streams the codes: every chunk of the store against all queries, with a running top-k.

This is faiss contrib's exhaustive search (``faiss.contrib.exhaustive_search.knn``):
each database chunk is searched with ``faiss.knn`` (or a torch matmul) and its
results are merged into a :class:`faiss.ResultHeap` of (queries x k), so an exact
search over a million rows holds one chunk of codes, never all of them. Codes
are read through the store's ``iter_chunks``; nothing is copied into an index,
so "building" a streamed exact index is only the validity check of the codes.
"""

from __future__ import annotations

import numpy as np

from embedkit.defaults import CHUNK_ROWS
from embedkit.device import optional_import, resolve_device
from embedkit.errors import StoreError
from embedkit.estimators import check_positive_int
from embedkit.retrieve.common import largest_first, prep, to_distance
from embedkit.retrieve.constants import METRICS
from embedkit.retrieve.source import CodeSource


def stream_knn(source, Q: np.ndarray, k: int, metric: str, *, chunk_rows: int = CHUNK_ROWS,
               backend: str = "faiss", device=None):
    """Native scores and rows (nq x k, best first) of ``Q`` against every row of ``source``, chunk by chunk.

    ``backend``: ``"faiss"`` (``faiss.knn`` + ``ResultHeap`` on CPU) or ``"torch"`` (matmul + top-k on
    ``device``). Rows are -1 where the source holds fewer than ``k`` rows.
    """
    source = CodeSource.of(source)
    nq = Q.shape[0]
    if backend == "torch":
        from embedkit.retrieve.torch_backend import topk_blocks

        dev = resolve_device(device)
        blocks = ((start, prep(x, metric)) for start, x in source.iter_chunks(rows=int(chunk_rows)))
        return topk_blocks(Q, blocks, k, metric, dev)
    faiss = optional_import("faiss", "exact kNN search")
    q = prep(Q, metric)
    keep_max = largest_first(metric)
    heap = faiss.ResultHeap(nq, k, keep_max=keep_max)
    fm = faiss.METRIC_INNER_PRODUCT if keep_max else faiss.METRIC_L2
    for start, x in source.iter_chunks(rows=int(chunk_rows)):
        D, I = faiss.knn(q, prep(x, metric), min(k, len(x)), metric=fm)
        # faiss.knn numbers rows within the chunk; the heap needs store rows (-1 = "none" must stay -1)
        heap.add_result(D, np.where(I >= 0, I + start, -1))
    heap.finalize()
    return heap.D, heap.I


def exhaustive_search(codes, Q, k: int = 10, metric: str = "l2", *, chunk_rows: int = CHUNK_ROWS,
                      backend: str = "faiss", device=None):
    """Exact ``k`` nearest rows of ``codes`` (array, memmap or code store) for each query, streaming the codes.

    Returns ``(distances, rows)``, both (nq x k), closest first, in the conventions of
    :mod:`embedkit.retrieve.common`. Memory: one chunk of ``chunk_rows`` codes plus (nq x k) results.
    """
    from embedkit.errors import invalid

    if metric not in METRICS:
        raise invalid("metric", metric, METRICS)
    check_positive_int("k", k)
    check_positive_int("chunk_rows", chunk_rows)
    source = CodeSource.of(codes)
    Q = np.asarray(Q, dtype=np.float32)
    S, rows = stream_knn(source, Q, min(int(k), len(source)), metric, chunk_rows=chunk_rows, backend=backend,
                         device=device)
    D = to_distance(S, metric).astype(np.float32)
    D[rows < 0] = np.inf
    return D, rows


class StreamSearcher:
    """The searcher of a streamed exact index: a reference to the store, no copy of its codes."""

    def __init__(self, source, backend: str, chunk_size: int, device=None):
        self.source = source
        self.backend = backend
        self.chunk_size = int(chunk_size)
        self.device = resolve_device(device) if backend == "torch" else None

    @property
    def ntotal(self) -> int:
        return len(self.source) if self.source is not None else 0

    def search(self, Q: np.ndarray, k: int, metric: str):
        if self.source is None:
            raise StoreError("this exact index streams the codes of its store and was loaded without it; "
                             "load it with KNNIndex.load(folder, store=CodeStore.open(STORE))")
        return stream_knn(self.source, Q, k, metric, chunk_rows=self.chunk_size, backend=self.backend,
                          device=self.device)

    def reconstruct_all(self) -> np.ndarray:
        raise StoreError("a streamed exact index holds no vectors; build an in-memory one with storage='memory'")

    def write(self, folder) -> None:
        """Nothing to write: the codes stay in the store (the index folder records ids, paths and parameters)."""
