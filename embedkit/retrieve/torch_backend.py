"""torch backend of :class:`~embedkit.retrieve.index.KNNIndex`: exact search by (query x block) matmul + top-k.

Used on CUDA without faiss-gpu and wherever FAISS is missing. :func:`topk_blocks`
is the one search loop: database blocks come from the in-memory vectors on the
device (:class:`TorchSearcher`) or straight from a store's chunks (streamed
exact search), and every block's top-k is merged into a running top-k, so
memory is (queries x k) plus one (query block x database block) score matrix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedkit.device import resolve_device
from embedkit.retrieve.common import largest_first, prep


def query_block(device) -> int:
    return 4096 if device.type == "cuda" else 1024


def db_block(device, chunk_size: int) -> int:
    # CPU: a (1024 x 16384) float32 score block is 64 MB, cache friendly; the GPU takes whole chunks
    return int(chunk_size) if device.type == "cuda" else min(int(chunk_size), 16384)


def topk_blocks(Q: np.ndarray, blocks, k: int, metric: str, device):
    """Exact top-k of every query over database ``blocks`` (``(first_row, block)``, numpy or tensor, prepped).

    Returns native scores (squared L2, or inner product) and rows, each (nq x k), best first; rows are -1
    and scores +/-inf where the database holds fewer than ``k`` rows.
    Scores are ranked before turning into distances: ``|x|^2 - 2<q,x>`` (one fused addmm; ``|q|^2`` is
    added at the end) for l2, ``<q,x>`` (largest first) for ip/cosine.
    """
    import torch

    largest = largest_first(metric)
    qc = query_block(device)
    qs = [torch.from_numpy(prep(Q[i:i + qc], metric)).to(device) for i in range(0, Q.shape[0], qc)]
    fill = -np.inf if largest else np.inf
    best_s = [torch.full((len(q), k), fill, device=device) for q in qs]
    best_i = [torch.full((len(q), k), -1, dtype=torch.int64, device=device) for q in qs]
    for start, V in blocks:
        V = V if torch.is_tensor(V) else torch.from_numpy(np.ascontiguousarray(V, dtype=np.float32)).to(device)
        sq = (V * V).sum(1) if metric == "l2" else None
        for j, q in enumerate(qs):
            s = torch.addmm(sq, q, V.T, alpha=-2) if metric == "l2" else q @ V.T
            s_, i_ = torch.topk(s, min(k, s.shape[1]), dim=1, largest=largest, sorted=False)
            s_, i_ = torch.cat([best_s[j], s_], 1), torch.cat([best_i[j], i_ + start], 1)
            s_, pos = torch.topk(s_, k, dim=1, largest=largest, sorted=False)
            best_s[j], best_i[j] = s_, torch.gather(i_, 1, pos)
    out_s, out_i = [], []
    for q, s, i in zip(qs, best_s, best_i):
        s, order = torch.sort(s, dim=1, descending=largest)
        i = torch.gather(i, 1, order)
        if metric == "l2":
            s = s + (q * q).sum(1, keepdim=True)
        out_s.append(s.float().cpu().numpy())
        out_i.append(i.cpu().numpy())
    if not qs:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return np.concatenate(out_s).astype(np.float32), np.concatenate(out_i).astype(np.int64)


class TorchSearcher:
    """Every vector on a torch device (float32, normalised for cosine), searched by :func:`topk_blocks`."""

    backend = "torch"

    def __init__(self, vectors, device, chunk_size: int):
        self.vectors = vectors
        self.device = device
        self.chunk_size = int(chunk_size)

    @classmethod
    def build(cls, source, *, metric: str, device, chunk_size: int, progress: bool = False) -> "TorchSearcher":
        """Copy ``source``'s codes to ``device`` chunk by chunk (no second full-size copy on the host)."""
        import torch
        from tqdm.auto import tqdm

        dev = resolve_device(device)
        n, d = source.shape
        V = torch.empty((n, d), dtype=torch.float32, device=dev)
        total = -(-n // int(chunk_size))
        for i, x in tqdm(source.iter_chunks(rows=int(chunk_size)), total=total, disable=not progress,
                         desc="index flat (torch)", unit="chunk"):
            V[i:i + len(x)] = torch.from_numpy(prep(x, metric)).to(dev)
        return cls(V, dev, chunk_size)

    @property
    def ntotal(self) -> int:
        return int(self.vectors.shape[0])

    def search(self, Q: np.ndarray, k: int, metric: str):
        step = db_block(self.device, self.chunk_size)
        blocks = ((j, self.vectors[j:j + step]) for j in range(0, self.ntotal, step))
        # the vectors are prepped already; prep() again inside would be a no-op for cosine but costs a copy
        return topk_blocks(Q, blocks, k, metric, self.device)

    def reconstruct_all(self) -> np.ndarray:
        return self.vectors.cpu().numpy()

    def write(self, folder: Path) -> None:
        np.save(Path(folder) / "vectors.npy", self.reconstruct_all(), allow_pickle=False)
