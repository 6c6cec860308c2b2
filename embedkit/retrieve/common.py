"""Names, parameter checks and distance conventions shared by the index facade and its backends.

Every metric returns *distances where smaller is closer*:

- ``l2``: squared Euclidean distance (FAISS' convention, not its square root);
- ``cosine``: ``1 - cos(q, x)`` in [0, 2] (inner product on L2-normalised vectors);
- ``ip``: ``-<q, x>`` (negated inner product).

Backends rank by the library's native score (squared L2 ascending, inner
product descending) and only turn scores into distances at the end, so the
heaps never compare numbers of two conventions.
"""

from __future__ import annotations

import numpy as np

from embedkit.device import cuda_available, has_module, optional_import, resolve_backend, resolve_compute
from embedkit.errors import ConfigError, invalid
from embedkit.retrieve.constants import BACKENDS
from embedkit.store.postprocess import l2_normalize

#: kind="auto": exact search up to this many vectors, IVF beyond
FLAT_MAX = 200_000

def largest_first(metric: str) -> bool:
    """True when the backend's native score is a similarity (inner product), ranked largest first."""
    return metric != "l2"


def prep(x, metric: str) -> np.ndarray:
    """A block of codes as contiguous float32, L2-normalised for ``cosine`` (so inner product = cosine)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return np.ascontiguousarray(l2_normalize(x), dtype=np.float32) if metric == "cosine" else x


def to_distance(S: np.ndarray, metric: str) -> np.ndarray:
    """Native scores -> distances (smaller is closer); rounding can make tiny squared L2 negative: clip."""
    if metric == "l2":
        return np.maximum(S, 0)
    return (1.0 - S) if metric == "cosine" else -S


def faiss_gpu_available() -> bool:
    """True when CUDA is visible and the installed FAISS was built with GPU support."""
    return cuda_available() and has_module("faiss") and hasattr(optional_import("faiss", "kNN search"),
                                                                 "StandardGpuResources")


def resolve_knn_backend(backend: str | None, kind: str, device: str | None = "auto") -> str:
    """Which library searches: GPU FAISS, CPU FAISS, or torch (exact only).

    ``auto``: when ``device`` resolves to CUDA, GPU FAISS if faiss-gpu is there,
    else torch for exact search (CPU FAISS for IVF/HNSW); on CPU, CPU FAISS.
    HNSW has no GPU version in FAISS, so it always runs on CPU FAISS.
    """
    req = "auto" if backend in (None, "auto") else str(backend)
    if req not in BACKENDS:
        raise invalid("backend", req, BACKENDS)
    if req == "auto":
        exact = resolve_compute(device).knn  # the entry point's choice for exact search
        if kind == "hnsw" or (kind != "flat" and exact == "torch"):
            return "faiss"
        return exact
    if req == "torch" and kind != "flat":
        raise ConfigError(f"backend='torch' does exact search only; use kind='flat' or backend='faiss' for kind={kind!r}")
    if req == "faiss-gpu":
        if kind == "hnsw":
            raise ConfigError("FAISS has no GPU HNSW index; use backend='faiss' or kind='flat'/'ivf'")
        resolve_backend("faiss-gpu", gpu="faiss-gpu", cpu="faiss", purpose="kNN search", gpu_module="faiss")
        if not hasattr(optional_import("faiss", "kNN search"), "StandardGpuResources"):
            raise ConfigError("backend='faiss-gpu' needs a GPU build of FAISS (this one is CPU-only); "
                              "fix: pip install \"embedkit[gpu]\", or use backend='torch' for exact GPU search")
    return req
