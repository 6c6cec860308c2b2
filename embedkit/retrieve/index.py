"""Retrieval: a k-nearest-neighbour index over codes, with FAISS or torch.

:class:`KNNIndex` wraps three kinds of index:

- ``flat``: exact search (FAISS ``IndexFlatL2`` / ``IndexFlatIP``, or a chunked
  torch matmul + top-k when FAISS cannot use the GPU);
- ``ivf``: inverted file (``IndexIVFFlat``), trained by k-means on a sample;
  approximate, tuned by ``nprobe``;
- ``hnsw``: graph index (``IndexHNSWFlat``); approximate, tuned by ``ef_search``.

Every metric returns *distances where smaller is closer*, so thresholds and
sorting read the same everywhere:

- ``l2``: squared Euclidean distance (FAISS' convention, not its square root);
- ``cosine``: ``1 - cos(q, x)`` in [0, 2] (inner product on L2-normalised vectors);
- ``ip``: ``-<q, x>`` (negated inner product).

Where fewer than ``k`` neighbours are found (possible with IVF/HNSW), the
missing slots hold id ``-1`` and distance ``inf``.

Rows are added in chunks from (possibly memory-mapped, float16) codes, so no
second full-size copy is made. An index remembers the identity of the store
it was built from and the store's paths, so ids always map back to images.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np

from embedkit.device import (
    cuda_available,
    has_module,
    optional_import,
    resolve_backend,
    resolve_device,
)
from embedkit.errors import (
    ConfigError,
    DataError,
    MismatchError,
    NotFittedError,
    StoreError,
)
from embedkit.models.identity import identity_mismatch
from embedkit.store.postprocess import l2_normalize

METRICS = ("l2", "ip", "cosine")
KINDS = ("auto", "flat", "ivf", "hnsw")
BACKENDS = ("auto", "faiss", "faiss-gpu", "torch")
INDEX_FORMAT = "embedkit-knn/1"
FLAT_MAX = 200_000  # kind="auto": exact search up to this many vectors, IVF beyond
CHUNK = 65536


def faiss_gpu_available() -> bool:
    """True when CUDA is visible and the installed FAISS was built with GPU support."""
    return cuda_available() and has_module("faiss") and hasattr(optional_import("faiss", "kNN search"), "StandardGpuResources")


def resolve_knn_backend(backend: str | None, kind: str, device: str | None = "auto") -> str:
    """Which library searches: GPU FAISS, CPU FAISS, or torch (exact only).

    ``auto``: when ``device`` resolves to CUDA, GPU FAISS if faiss-gpu is there,
    else torch for exact search (CPU FAISS for IVF/HNSW); on CPU, CPU FAISS.
    HNSW has no GPU version in FAISS, so it always runs on CPU FAISS.
    """
    req = "auto" if backend in (None, "auto") else str(backend)
    if req not in BACKENDS:
        raise ConfigError(f"backend {req!r} is not valid; use one of {', '.join(BACKENDS)}")
    if req == "auto":
        on_gpu = resolve_device(device).type == "cuda"
        if kind == "hnsw":
            return "faiss"
        if on_gpu and faiss_gpu_available():
            return "faiss-gpu"
        if kind == "flat" and (on_gpu or not has_module("faiss")):
            return "torch"
        return "faiss"
    if req == "torch" and kind != "flat":
        raise ConfigError(f"backend='torch' does exact search only; use kind='flat' or backend='faiss' for kind={kind!r}")
    if req == "faiss-gpu":
        if kind == "hnsw":
            raise ConfigError("FAISS has no GPU HNSW index; use backend='faiss' or kind='flat'/'ivf'")
        resolve_backend("faiss-gpu", gpu="faiss-gpu", cpu="faiss", purpose="kNN search", gpu_module="faiss")
        if not hasattr(optional_import("faiss", "kNN search"), "StandardGpuResources"):
            raise ConfigError("backend='faiss-gpu' needs a GPU build of FAISS (this one is CPU-only); "
                              "fix: pip install 'embedkit[gpu]', or use backend='torch' for exact GPU search")
    return req


def check_finite(X, what: str = "codes", chunk: int = CHUNK) -> None:
    """Raise :class:`DataError` naming the first rows holding NaN/inf (checked in chunks)."""
    bad, count = [], 0
    for i in range(0, X.shape[0], chunk):
        ok = np.isfinite(np.asarray(X[i:i + chunk], dtype=np.float32)).all(axis=1)
        rows = np.flatnonzero(~ok)
        count += len(rows)
        bad.extend((rows[: max(0, 5 - len(bad))] + i).tolist())
    if count:
        raise DataError(f"{what} hold NaN or inf in {count} row(s) (first: {bad}); re-embed those images "
                        "or drop the rows before building an index")


def _as_2d(X, what: str) -> np.ndarray:
    if not hasattr(X, "shape"):
        X = np.asarray(X, dtype=np.float32)
    if X.ndim == 1:
        X = np.asarray(X).reshape(1, -1)
    if X.ndim != 2:
        raise DataError(f"{what} must be a 2-D array (n x dim); got shape {tuple(X.shape)}")
    if not np.issubdtype(X.dtype, np.number):
        raise DataError(f"{what} must be numeric; got dtype {X.dtype}")
    return X


class KNNIndex:
    """k-nearest-neighbour search over codes (see the module docstring for distances).

    Parameters
    ----------
    metric : ``"l2"`` (squared L2), ``"ip"`` (negated inner product) or ``"cosine"`` (1 - cosine).
    kind : ``"flat"`` (exact), ``"ivf"``, ``"hnsw"`` or ``"auto"`` (flat up to 200k vectors, IVF beyond).
    nlist : IVF cells; default ``4 * sqrt(N)`` capped so each cell has >= 39 training points.
    nprobe : IVF cells visited per query (more = better recall, slower).
    M : HNSW links per node.
    ef_search : HNSW search breadth (more = better recall, slower).
    backend : ``"auto"``, ``"faiss"`` (CPU), ``"faiss-gpu"`` or ``"torch"`` (exact matmul + top-k).
    device : ``"auto"``, ``"cpu"`` or ``"cuda"``: where ``auto`` backends and the torch backend run.
    chunk_size : rows added / compared per step (bounds memory).
    """

    def __init__(self, metric="l2", kind="auto", nlist=None, nprobe=16, M=32, ef_search=64, backend="auto",
                 device="auto", chunk_size=CHUNK):
        self.metric = metric
        self.kind = kind
        self.nlist = nlist
        self.nprobe = nprobe
        self.M = M
        self.ef_search = ef_search
        self.backend = backend
        self.device = device
        self.chunk_size = chunk_size

    # ------------------------------------------------------------------ fit
    def _check_params(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"metric {self.metric!r} is not valid; use one of {', '.join(METRICS)}")
        if self.kind not in KINDS:
            raise ConfigError(f"kind {self.kind!r} is not valid; use one of {', '.join(KINDS)}")
        for name in ("nprobe", "M", "ef_search", "chunk_size") + (("nlist",) if self.nlist is not None else ()):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigError(f"{name}={v!r} is not valid; give a positive integer")

    def fit(self, X, ids=None, *, paths=None, identity=None, progress=False) -> "KNNIndex":
        """Build the index on ``X`` (N x D, may be a memmap); returns self.

        ``ids``: N distinct integers returned by :meth:`search` (default: row numbers).
        ``paths``: N image paths (for :meth:`paths_of`); ``identity``: the store's code identity.
        """
        self._check_params()
        X = _as_2d(X, "codes")
        n, d = X.shape
        if n == 0 or d == 0:
            raise DataError(f"cannot build an index on {n} x {d} codes: the store is empty; embed some images first")
        check_finite(X, "codes", self.chunk_size)
        self.ids_ = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids)
        if self.ids_.shape != (n,) or not np.issubdtype(self.ids_.dtype, np.integer):
            raise DataError(f"ids must be {n} integers, one per row of the codes; got shape {self.ids_.shape} dtype {self.ids_.dtype}")
        self.ids_ = self.ids_.astype(np.int64)
        if len(np.unique(self.ids_)) != n or (self.ids_ < 0).any():
            raise DataError("ids must be distinct non-negative integers (-1 marks 'no neighbour')")
        if paths is not None and len(paths) != n:
            raise DataError(f"{len(paths)} paths were given for {n} code rows; they must be in step")
        self.paths_ = None if paths is None else [str(p) for p in paths]
        self.identity_ = identity
        self.dim_, self.n_ = d, n
        self.kind_ = self.kind if self.kind != "auto" else ("flat" if n <= FLAT_MAX else "ivf")
        self.backend_ = resolve_knn_backend(self.backend, self.kind_, self.device)
        self.nlist_ = None
        if self.kind_ == "ivf":
            self.nlist_ = int(self.nlist) if self.nlist else max(1, min(int(4 * math.sqrt(n)), n // 39))
            if self.nlist_ > n:
                raise ConfigError(f"nlist={self.nlist_} is larger than the {n} vectors; use nlist <= {n} or kind='flat'")
        self._row_of = None
        if self.backend_ == "torch":
            self._build_torch(X, progress)
        else:
            self._build_faiss(X, progress)
        return self

    def _chunks(self, X, progress, desc):
        from tqdm.auto import tqdm

        cs = int(self.chunk_size)
        for i in tqdm(range(0, X.shape[0], cs), disable=not progress, desc=desc, unit="chunk"):
            yield i, self._prep(X[i:i + cs])

    def _prep(self, x) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        return l2_normalize(x).astype(np.float32) if self.metric == "cosine" else x

    def _build_faiss(self, X, progress) -> None:
        faiss = optional_import("faiss", "kNN search")
        fm = faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        d = self.dim_
        if self.kind_ == "flat":
            index = faiss.IndexFlat(d, fm)
        elif self.kind_ == "hnsw":
            index = faiss.IndexHNSWFlat(d, int(self.M), fm)
        else:
            quant = faiss.IndexFlat(d, fm)
            index = faiss.IndexIVFFlat(quant, d, self.nlist_, fm)  # faiss' wrapper keeps quant alive
            # k-means on a sample (FAISS advises 39-256 points per cell); sorted rows read a memmap in order
            m = min(self.n_, 64 * self.nlist_)
            rows = np.sort(np.random.default_rng(0).choice(self.n_, m, replace=False)) if m < self.n_ else slice(None)
            index.train(self._prep(X[rows]))
        self.faiss_index_ = self._to_device(index)
        for _, x in self._chunks(X, progress, f"index {self.kind_}"):
            self.faiss_index_.add(x)
        self._set_search_params()

    def _to_device(self, index):
        if self.backend_ != "faiss-gpu":
            return index
        faiss = optional_import("faiss", "kNN search")
        self._gpu_res = faiss.StandardGpuResources()
        return faiss.index_cpu_to_gpu(self._gpu_res, 0, index)

    def _set_search_params(self) -> None:
        idx = self.faiss_index_
        if self.kind_ == "ivf":
            idx.nprobe = int(min(self.nprobe, self.nlist_))
        elif self.kind_ == "hnsw":
            idx.hnsw.efSearch = int(self.ef_search)

    def _build_torch(self, X, progress) -> None:
        import torch

        self.device_ = resolve_device(self.device)
        self.vectors_ = torch.empty((self.n_, self.dim_), dtype=torch.float32, device=self.device_)
        for i, x in self._chunks(X, progress, "index flat (torch)"):
            self.vectors_[i:i + len(x)] = torch.from_numpy(x).to(self.device_)
        self.sqnorms_ = (self.vectors_ * self.vectors_).sum(1) if self.metric == "l2" else None

    # --------------------------------------------------------------- search
    def _check_fitted(self) -> None:
        if not hasattr(self, "n_"):
            raise NotFittedError("this KNNIndex is not built yet; call fit(X) or KNNIndex.load(dir) first")

    def search(self, Q, k: int = 10):
        """The ``k`` nearest indexed vectors of each query: ``(distances, ids)``, both (nq x k), closest first."""
        self._check_fitted()
        Q = _as_2d(Q, "queries")
        if Q.shape[1] != self.dim_:
            raise MismatchError(f"queries have {Q.shape[1]} dims but the index holds {self.dim_}-dim codes; "
                                "embed the queries with the store's backbone and layer")
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"k={k!r} is not valid; give a positive integer")
        if k > self.n_:
            raise ConfigError(f"k={k} is larger than the {self.n_} vectors in the index; use k <= {self.n_}")
        if self.backend_ == "faiss-gpu" and k > 2048:
            raise ConfigError(f"k={k} is more than GPU FAISS can return (2048); use backend='torch' or 'faiss' for larger k")
        check_finite(Q, "queries")
        if Q.shape[0] == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        D, rows = self._search_torch(Q, int(k)) if self.backend_ == "torch" else self._search_faiss(Q, int(k))
        ids = np.where(rows >= 0, self.ids_[np.maximum(rows, 0)], -1)
        return D, ids

    def _search_faiss(self, Q, k):
        faiss = optional_import("faiss", "kNN search")
        self._set_search_params()  # nprobe / ef_search may have been changed since fit
        Ds, Is = [], []
        old_bs = faiss.cvar.distance_compute_blas_database_bs
        # bigger database blocks for the BLAS path: fewer heap passes (1.4-2x faster on 100k x 512, 2 threads)
        faiss.cvar.distance_compute_blas_database_bs = max(old_bs, 8192)
        try:
            for i in range(0, Q.shape[0], 16384):
                q = self._prep(Q[i:i + 16384])
                s, r = self.faiss_index_.search(q, k)
                Ds.append(s)
                Is.append(r)
        finally:
            faiss.cvar.distance_compute_blas_database_bs = old_bs
        D, rows = np.concatenate(Ds), np.concatenate(Is).astype(np.int64)
        D = self._to_distance(D)
        D[rows < 0] = np.inf
        return D.astype(np.float32), rows

    def _to_distance(self, S: np.ndarray) -> np.ndarray:
        if self.metric == "l2":
            return np.maximum(S, 0)
        return (1.0 - S) if self.metric == "cosine" else -S

    def _search_torch(self, Q, k):
        """Exact search: (query chunk x database chunk) matmul, top-k per chunk, merged top-k.

        Scores are ranked before turning into distances: ``|x|^2 - 2<q,x>`` (one fused addmm; ``|q|^2``
        is added at the end) for l2, ``<q,x>`` (largest first) for ip/cosine.
        """
        import torch

        V, out_d, out_i = self.vectors_, [], []
        cuda = self.device_.type == "cuda"
        qc = 4096 if cuda else 1024
        dc = int(self.chunk_size) if cuda else min(int(self.chunk_size), 16384)  # CPU: distance block stays in cache-friendly 64 MB
        largest = self.metric != "l2"
        for i in range(0, Q.shape[0], qc):
            q = torch.from_numpy(self._prep(Q[i:i + qc])).to(self.device_)
            best_s = best_i = None
            for j in range(0, self.n_, dc):
                if self.metric == "l2":
                    s = torch.addmm(self.sqnorms_[j:j + dc], q, V[j:j + dc].T, alpha=-2)
                else:
                    s = q @ V[j:j + dc].T
                s_, i_ = torch.topk(s, min(k, s.shape[1]), dim=1, largest=largest, sorted=False)
                i_ = i_ + j
                if best_s is not None:
                    s_, i_ = torch.cat([best_s, s_], 1), torch.cat([best_i, i_], 1)
                    s_, pos = torch.topk(s_, min(k, s_.shape[1]), dim=1, largest=largest, sorted=False)
                    i_ = torch.gather(i_, 1, pos)
                best_s, best_i = s_, i_
            best_s, order = torch.sort(best_s, dim=1, descending=largest)
            best_i = torch.gather(best_i, 1, order)
            if self.metric == "l2":
                d = (best_s + (q * q).sum(1, keepdim=True)).clamp_min(0)
            else:
                d = (1.0 - best_s) if self.metric == "cosine" else -best_s
            out_d.append(d.float().cpu().numpy())
            out_i.append(best_i.cpu().numpy())
        return np.concatenate(out_d).astype(np.float32), np.concatenate(out_i).astype(np.int64)

    # ---------------------------------------------------------------- paths
    def rows_of(self, ids) -> np.ndarray:
        """Row numbers (in the store) of ids returned by :meth:`search` (-1 stays -1)."""
        self._check_fitted()
        ids = np.asarray(ids, dtype=np.int64)
        if self._row_of is None:
            self._row_of = None if np.array_equal(self.ids_, np.arange(self.n_)) else {int(v): r for r, v in enumerate(self.ids_)}
        if self._row_of is None:
            bad = (ids >= self.n_) | (ids < -1)
            rows = ids.copy()
        else:
            rows = np.array([self._row_of.get(int(v), -2) if v >= 0 else -1 for v in ids.ravel()]).reshape(ids.shape)
            bad = rows == -2
        if bad.any():
            raise DataError(f"ids {ids[bad][:5].tolist()} are not in this index")
        return rows

    def paths_of(self, ids) -> np.ndarray:
        """Image paths of ids returned by :meth:`search` (None for -1), same shape as ``ids``."""
        rows = self.rows_of(ids)
        if self.paths_ is None:
            raise DataError("this index was built without paths; build it with KNNIndex.from_store(store) or fit(X, paths=...)")
        out = np.empty(rows.shape, dtype=object)
        for pos, r in np.ndenumerate(rows):
            out[pos] = self.paths_[r] if r >= 0 else None
        return out

    def __len__(self) -> int:
        return getattr(self, "n_", 0)

    def describe(self) -> str:
        """One line: kind, metric, backend and size."""
        self._check_fitted()
        extra = {"ivf": f", nlist={self.nlist_}, nprobe={self.nprobe}", "hnsw": f", M={self.M}, ef_search={self.ef_search}"}
        return f"{self.kind_} {self.metric} index on {self.backend_} ({self.n_} x {self.dim_}{extra.get(self.kind_, '')})"

    # -------------------------------------------------------- store & disk
    @classmethod
    def from_store(cls, store, *, progress=False, **params) -> "KNNIndex":
        """Build an index on a :class:`~embedkit.store.CodeStore`'s codes, with its paths and identity."""
        return cls(**params).fit(store.codes, paths=store.paths, identity=store.identity, progress=progress)

    def check_store(self, store) -> None:
        """Raise :class:`MismatchError` unless this index was built from ``store``'s codes (identity, count, dim)."""
        self._check_fitted()
        if self.identity_ is None:
            raise MismatchError("this index records no code identity, so it cannot be checked against a store; rebuild it with KNNIndex.from_store")
        store.check_compatible(self.identity_, what="the codes of this index")
        if (len(store), store.dim) != (self.n_, self.dim_):
            raise MismatchError(f"the index holds {self.n_} x {self.dim_} codes but store {str(store.path)!r} holds "
                                f"{len(store)} x {store.dim}; rebuild the index")

    def save(self, path) -> Path:
        """Write the index to folder ``path`` (index, ids, paths, parameters, identity), atomically."""
        self._check_fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        if self.backend_ == "torch":
            np.save(tmp / "vectors.npy", self.vectors_.cpu().numpy())
        else:
            faiss = optional_import("faiss", "saving a kNN index")
            idx = faiss.index_gpu_to_cpu(self.faiss_index_) if self.backend_ == "faiss-gpu" else self.faiss_index_
            faiss.write_index(idx, str(tmp / "index.faiss"))
        np.save(tmp / "ids.npy", self.ids_)
        if self.paths_ is not None:
            (tmp / "paths.txt").write_text("".join(p + "\n" for p in self.paths_), encoding="utf-8")
        meta = {"format": INDEX_FORMAT, "params": self.get_params(), "kind": self.kind_, "backend": self.backend_,
                "nlist": self.nlist_, "count": self.n_, "dim": self.dim_, "identity": self.identity_}
        (tmp / "index.json").write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
        return path

    @classmethod
    def load(cls, path, *, store=None, identity=None, backend="auto", device="auto") -> "KNNIndex":
        """Read an index written by :meth:`save`; with ``store``/``identity`` refuse one of other codes."""
        path = Path(path)
        meta_file = path / "index.json"
        if not meta_file.exists():
            raise StoreError(f"{str(path)!r} is not a saved kNN index (index.json is missing); build one with KNNIndex.save")
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta.get("format") != INDEX_FORMAT:
            raise StoreError(f"{str(path)!r} has index format {meta.get('format')!r}, expected {INDEX_FORMAT!r}; rebuild it")
        if identity is not None:
            diffs = identity_mismatch(identity, meta.get("identity") or {})
            if diffs:
                raise MismatchError(f"the index at {str(path)!r} was built from other codes ({'; '.join(diffs)}); rebuild it")
        params = dict(meta["params"], backend=backend, device=device)
        self = cls(**params)
        self._check_params()
        self.kind_, self.nlist_, self.n_, self.dim_ = meta["kind"], meta["nlist"], int(meta["count"]), int(meta["dim"])
        self.identity_ = meta.get("identity")
        self.ids_ = np.load(path / "ids.npy")
        self._row_of = None
        pf = path / "paths.txt"
        self.paths_ = pf.read_text(encoding="utf-8").splitlines() if pf.exists() else None
        self.backend_ = resolve_knn_backend(backend, self.kind_, device)
        if (path / "vectors.npy").exists():
            vecs = np.load(path / "vectors.npy", mmap_mode="r")
        else:
            faiss = optional_import("faiss", "loading a kNN index")
            idx = faiss.read_index(str(path / "index.faiss"))
            vecs = idx.reconstruct_n(0, idx.ntotal) if self.backend_ == "torch" else None
        if self.backend_ == "torch":
            self._build_torch(vecs, False)  # saved vectors are already normalised for cosine; normalising again is a no-op
        elif vecs is not None:
            self._build_faiss(vecs, False)
        else:
            self.faiss_index_ = self._to_device(idx)
            self._set_search_params()
        if store is not None:
            self.check_store(store)
        return self

    def get_params(self, deep=True) -> dict:
        return {k: getattr(self, k) for k in ("metric", "kind", "nlist", "nprobe", "M", "ef_search", "backend", "device",
                                            "chunk_size")}

    def set_params(self, **params) -> "KNNIndex":
        for k, v in params.items():
            setattr(self, k, v)
        return self
