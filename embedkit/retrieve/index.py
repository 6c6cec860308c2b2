"""Retrieval: a k-nearest-neighbour index over codes, with FAISS or torch.

:class:`KNNIndex` is the facade: parameters, ``fit``/``search``/``save``/``load``
and the mapping of ids back to rows and image paths. The work is done by one
backend module each:

- :mod:`~embedkit.retrieve.faiss_backend`: ``flat`` (exact, ``IndexFlat``), ``ivf``
  (``IndexIVFFlat``, trained on a sample, approximate, tuned by ``nprobe``) and
  ``hnsw`` (``IndexHNSWFlat``, approximate, tuned by ``ef_search``), CPU or GPU;
- :mod:`~embedkit.retrieve.torch_backend`: exact search by chunked matmul + top-k;
- :mod:`~embedkit.retrieve.exhaustive`: exact search that *streams* a store's codes
  chunk by chunk with a running top-k (``storage="stream"``, the default for exact
  search on a store on CPU), so a million rows never need to be in RAM.

Distances: smaller is closer for every metric (see :mod:`~embedkit.retrieve.common`).
Where fewer than ``k`` neighbours are found (possible with IVF/HNSW), the
missing slots hold id ``-1`` and distance ``inf``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator

from embedkit.defaults import CHUNK_ROWS
from embedkit.errors import ConfigError, DataError, MismatchError, StoreError, invalid
from embedkit.estimators import EstimatorNotFittedError, check_positive_int
from embedkit.retrieve import persist
from embedkit.retrieve.common import FLAT_MAX, resolve_knn_backend, to_distance
from embedkit.retrieve.constants import KINDS, METRICS, STORAGES
from embedkit.retrieve.source import CodeSource

#: GPU FAISS returns at most this many neighbours per query
GPU_MAX_K = 2048


class KNNIndex(BaseEstimator):
    """k-nearest-neighbour search over codes (a scikit-learn estimator: ``fit`` returns self, ``repr`` works).

    Parameters
    ----------
    metric : ``"l2"`` (squared L2), ``"ip"`` (negated inner product) or ``"cosine"`` (1 - cosine).
    kind : ``"flat"`` (exact), ``"ivf"``, ``"hnsw"`` or ``"auto"`` (flat up to 200k vectors, IVF beyond).
    nlist : IVF cells; default ``4 * sqrt(N)`` capped so each cell has >= 39 training points.
    nprobe : IVF cells visited per query (more = better recall, slower); may be changed after fit.
    M : HNSW links per node.
    ef_search : HNSW search breadth (more = better recall, slower); may be changed after fit.
    backend : ``"auto"``, ``"faiss"`` (CPU), ``"faiss-gpu"`` or ``"torch"`` (exact matmul + top-k).
    device : ``"auto"``, ``"cpu"`` or ``"cuda"``: where ``auto`` backends and the torch backend run.
    chunk_size : rows added / compared per step (bounds memory).
    storage : exact search only: ``"memory"`` copies the codes into the index, ``"stream"`` reads them from
        the codes (a store) at every search, ``"auto"`` streams a code store on CPU and copies otherwise.

    Fitted attributes: ``ids_``, ``paths_``, ``identity_``, ``n_``, ``dim_``, ``kind_``, ``backend_``,
    ``storage_``, ``nlist_``, ``fingerprint_`` (of the store it was built from) and ``searcher_``.
    """

    def __init__(self, metric="l2", kind="auto", nlist=None, nprobe=16, M=32, ef_search=64, backend="auto",
                 device="auto", chunk_size=CHUNK_ROWS, storage="auto"):
        self.metric = metric
        self.kind = kind
        self.nlist = nlist
        self.nprobe = nprobe
        self.M = M
        self.ef_search = ef_search
        self.backend = backend
        self.device = device
        self.chunk_size = chunk_size
        self.storage = storage

    # ------------------------------------------------------------------ fit
    def _check_params(self) -> None:
        for name, value, valid in (("metric", self.metric, METRICS), ("kind", self.kind, KINDS),
                                   ("storage", self.storage, STORAGES)):
            if value not in valid:
                raise invalid(name, value, valid)
        for name in ("nprobe", "M", "ef_search", "chunk_size") + (("nlist",) if self.nlist is not None else ()):
            check_positive_int(name, getattr(self, name))

    def fit(self, X, ids=None, *, paths=None, identity=None, progress=False) -> "KNNIndex":
        """Build the index on ``X``: N x D codes (array or memmap) or a code store; returns self.

        ``ids``: N distinct integers returned by :meth:`search` (default: row numbers).
        ``paths``: N image paths (for :meth:`paths_of`); ``identity``: the codes' identity.
        For a store, ``paths`` and ``identity`` default to the store's and the index records the
        store's fingerprint (see :meth:`check_store`).
        """
        self._check_params()
        source = CodeSource.of(X)
        source.check("codes", chunk=int(self.chunk_size))
        n, d = source.shape
        if source.store is not None:
            paths = source.store.paths if paths is None else paths
            identity = getattr(source.store, "identity", None) if identity is None else identity
        ids_ = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids)
        if ids_.shape != (n,) or not np.issubdtype(ids_.dtype, np.integer):
            raise DataError(f"ids must be {n} integers, one per row of the codes; got shape {ids_.shape} dtype {ids_.dtype}")
        ids_ = ids_.astype(np.int64)
        if len(np.unique(ids_)) != n or (ids_ < 0).any():
            raise DataError("ids must be distinct non-negative integers (-1 marks 'no neighbour')")
        if paths is not None and len(paths) != n:
            raise DataError(f"{len(paths)} paths were given for {n} code rows; they must be in step")
        kind_ = self.kind if self.kind != "auto" else ("flat" if n <= FLAT_MAX else "ivf")
        backend_ = resolve_knn_backend(self.backend, kind_, self.device)
        nlist_ = None
        if kind_ == "ivf":
            from embedkit.retrieve.faiss_backend import default_nlist

            nlist_ = int(self.nlist) if self.nlist else default_nlist(n)
            if nlist_ > n:
                raise ConfigError(f"nlist={nlist_} is larger than the {n} vectors; use nlist <= {n} or kind='flat'")
        storage_ = self._resolve_storage(kind_, backend_, source)
        # every check passed: only now set fitted attributes, so a failed fit leaves an unfitted index
        self.ids_, self.identity_, self.dim_, self.n_ = ids_, identity, d, n
        self.paths_ = None if paths is None else [str(p) for p in paths]
        self.kind_, self.backend_, self.nlist_, self.storage_ = kind_, backend_, nlist_, storage_
        self.fingerprint_ = persist.store_fingerprint(source.store) if source.store is not None else None
        self._row_of = None
        self.searcher_ = self._build(source, progress)
        return self

    def _resolve_storage(self, kind_, backend_, source) -> str:
        if self.storage == "auto":
            # streaming pays where the copy would land in host RAM: CPU FAISS, or torch on the CPU
            on_cpu = backend_ == "faiss" or (backend_ == "torch" and self._device().type == "cpu")
            return "stream" if kind_ == "flat" and source.store is not None and on_cpu else "memory"
        if self.storage == "stream" and (kind_ != "flat" or backend_ == "faiss-gpu"):
            raise ConfigError(f"storage='stream' is exact search on CPU FAISS or torch; it cannot serve kind={kind_!r} "
                              f"on backend={backend_!r}: use storage='memory' or kind='flat'")
        return self.storage

    def _device(self):
        from embedkit.device import resolve_device

        return resolve_device(self.device)

    def _gpu(self) -> int:
        """The CUDA device number a ``faiss-gpu`` index goes to (N of ``device='cuda:N'``, else 0)."""
        return (self._device().index or 0) if self.backend_ == "faiss-gpu" else 0

    def _build(self, source, progress):
        cs = int(self.chunk_size)
        if self.storage_ == "stream":
            from embedkit.retrieve.exhaustive import StreamSearcher

            return StreamSearcher(source, "torch" if self.backend_ == "torch" else "faiss", cs, self.device)
        if self.backend_ == "torch":
            from embedkit.retrieve.torch_backend import TorchSearcher

            return TorchSearcher.build(source, metric=self.metric, device=self.device, chunk_size=cs, progress=progress)
        from embedkit.retrieve.faiss_backend import FaissSearcher

        return FaissSearcher.build(source, kind=self.kind_, metric=self.metric, nlist=self.nlist_, M=self.M,
                                   backend=self.backend_, chunk_size=cs, progress=progress, gpu=self._gpu())

    @property
    def device_(self):
        """The torch device of a torch-backed index (None for FAISS)."""
        self._check_fitted()
        return getattr(self.searcher_, "device", None)

    # --------------------------------------------------------------- search
    def _check_fitted(self) -> None:
        if not hasattr(self, "searcher_"):
            raise EstimatorNotFittedError("this KNNIndex is not built yet; call fit(X) or KNNIndex.load(dir) first")

    def _check_queries(self, Q) -> np.ndarray:
        from embedkit.checks import check_codes

        if not hasattr(Q, "shape") or not hasattr(Q, "dtype"):
            Q = np.asarray(Q)
        if Q.ndim == 1:  # documented: one query may be given as a 1-D vector
            Q = Q.reshape(1, -1)
        if Q.ndim == 2 and Q.shape[1] != self.dim_:
            raise MismatchError(f"queries have {Q.shape[1]} dims but the index holds {self.dim_}-dim codes; "
                                "embed the queries with the store's backbone and layer")
        return check_codes(Q, "queries", allow_empty=True)

    def search(self, Q, k: int = 10):
        """The ``k`` nearest indexed vectors of each query: ``(distances, ids)``, both (nq x k), closest first."""
        self._check_fitted()
        Q = self._check_queries(Q)
        check_positive_int("k", k)
        if k > self.n_:
            raise ConfigError(f"k={k} is larger than the {self.n_} vectors in the index; use k <= {self.n_}")
        if self.backend_ == "faiss-gpu" and k > GPU_MAX_K:
            raise ConfigError(f"k={k} is more than GPU FAISS can return ({GPU_MAX_K}); use backend='torch' or 'faiss'")
        if Q.shape[0] == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        if hasattr(self.searcher_, "set_search_params"):
            self.searcher_.set_search_params(self.kind_, self.nlist_, self.nprobe, self.ef_search)
        S, rows = self.searcher_.search(Q, int(k), self.metric)
        rows = np.asarray(rows, dtype=np.int64)
        D = to_distance(np.asarray(S, dtype=np.float32), self.metric).astype(np.float32)
        D[rows < 0] = np.inf
        ids = np.where(rows >= 0, self.ids_[np.maximum(rows, 0)], -1)
        return D, ids

    # ---------------------------------------------------------------- paths
    def rows_of(self, ids) -> np.ndarray:
        """Row numbers (in the store) of ids returned by :meth:`search` (-1 stays -1)."""
        self._check_fitted()
        ids = np.asarray(ids, dtype=np.int64)
        if getattr(self, "_row_of", None) is None:
            default = np.array_equal(self.ids_, np.arange(self.n_))
            self._row_of = "rows" if default else {int(v): r for r, v in enumerate(self.ids_)}
        if self._row_of == "rows":
            bad = (ids >= self.n_) | (ids < -1)
            rows = ids.copy()
        else:
            rows = np.array([self._row_of.get(int(v), -2) if v >= 0 else -1 for v in ids.ravel()],
                            dtype=np.int64).reshape(ids.shape)
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
        """One line: kind, metric, backend, size (and "streamed" when exact search reads the store)."""
        self._check_fitted()
        extra = {"ivf": f", nlist={self.nlist_}, nprobe={self.nprobe}", "hnsw": f", M={self.M}, ef_search={self.ef_search}"}
        how = ", streamed" if self.storage_ == "stream" else ""
        return f"{self.kind_} {self.metric} index on {self.backend_} ({self.n_} x {self.dim_}{extra.get(self.kind_, '')}{how})"

    # -------------------------------------------------------- store & disk
    @classmethod
    def from_store(cls, store, *, progress=False, **params) -> "KNNIndex":
        """Build an index on a :class:`~embedkit.store.codestore.CodeStore`'s codes, with its paths and identity."""
        return cls(**params).fit(store, progress=progress)

    def check_store(self, store) -> None:
        """Raise :class:`MismatchError` unless this index was built from ``store`` (identity, count, dim, paths)."""
        self._check_fitted()
        store_identity = getattr(store, "identity", None)
        if (self.identity_ is None) != (store_identity is None):
            have = "records no code identity" if self.identity_ is None else "was built from codes of a backbone"
            raise MismatchError(f"this index {have} but store {str(store.path)!r} "
                                f"{'has one' if store_identity is not None else 'holds imported codes without one'}; "
                                "rebuild the index with KNNIndex.from_store")
        if self.identity_ is not None:
            store.check_compatible(self.identity_, what="the codes of this index")
        if (len(store), store.dim) != (self.n_, self.dim_):
            raise MismatchError(f"the index holds {self.n_} x {self.dim_} codes but store {str(store.path)!r} holds "
                                f"{len(store)} x {store.dim}; rebuild the index")
        if self.fingerprint_ is not None and self.fingerprint_ != persist.store_fingerprint(store):
            raise MismatchError(f"the index was built from other rows than store {str(store.path)!r} holds now "
                                "(paths or image contents differ); rebuild the index")

    def save(self, path) -> Path:
        """Write the index to folder ``path`` (index, ids, paths, parameters, identity), atomically."""
        self._check_fitted()
        meta = {"params": self.get_params(), "kind": self.kind_, "backend": self.backend_, "storage": self.storage_,
                "nlist": self.nlist_, "count": self.n_, "dim": self.dim_, "identity": self.identity_,
                "store_fingerprint": self.fingerprint_}
        return persist.write_folder(path, meta, self.ids_, self.paths_, self.searcher_.write)

    @classmethod
    def load(cls, path, *, store=None, identity=None, backend="auto", device="auto") -> "KNNIndex":
        """Read an index written by :meth:`save`; with ``store``/``identity`` refuse one of other codes.

        A streamed exact index reads its codes from ``store`` (without it, :meth:`search` says so).
        An unreadable folder raises :class:`StoreError`, other codes :class:`MismatchError`.
        """
        from embedkit.models.identity import identity_mismatch

        path = Path(path)
        meta, ids, paths = persist.read_folder(path)
        if identity is not None:
            diffs = identity_mismatch(identity, meta.get("identity") or {})
            if diffs:
                raise MismatchError(f"the index at {str(path)!r} was built from other codes ({'; '.join(diffs)}); rebuild it")
        try:
            self = cls(**dict(meta["params"], backend=backend, device=device))
            self._check_params()
        except (TypeError, ConfigError) as exc:
            raise StoreError(f"{str(path)!r}: index.json holds parameters this version cannot use ({exc}); rebuild it") from exc
        self.kind_, self.nlist_, self.storage_ = meta["kind"], meta["nlist"], meta["storage"]
        self.n_, self.dim_ = int(meta["count"]), int(meta["dim"])
        self.identity_, self.fingerprint_ = meta.get("identity"), meta.get("store_fingerprint")
        self.ids_, self.paths_, self._row_of = ids, paths, None
        self.backend_ = resolve_knn_backend(backend, self.kind_, device)
        self.searcher_ = self._read_searcher(path, store)
        if self.storage_ != "stream" and self.searcher_.ntotal != self.n_:
            raise StoreError(f"{str(path)!r}: the index holds {self.searcher_.ntotal} vectors, index.json says "
                             f"{self.n_}; rebuild it")
        if store is not None:
            self.check_store(store)
            if paths is not None and meta["paths_sha256"] != persist.paths_digest(store.paths):
                raise MismatchError(f"{str(path)!r}: paths.json lists other files than store {str(store.path)!r}; "
                                    "rebuild the index")
            self.paths_ = [str(p) for p in store.paths]  # answers name the store's own files, whatever the folder says
        return self

    def _read_searcher(self, path: Path, store):
        cs = int(self.chunk_size)
        if self.storage_ == "stream":
            from embedkit.retrieve.exhaustive import StreamSearcher

            return StreamSearcher(CodeSource.of(store) if store is not None else None,
                                  "torch" if self.backend_ == "torch" else "faiss", cs, self.device)
        from embedkit.retrieve.faiss_backend import FaissSearcher
        from embedkit.retrieve.torch_backend import TorchSearcher

        try:
            if (path / "vectors.npy").exists():
                vecs = np.load(path / "vectors.npy", mmap_mode="r", allow_pickle=False)
            else:
                searcher = FaissSearcher.read(path, "faiss" if self.backend_ == "torch" else self.backend_, self._gpu())
                persist.check_faiss_index(searcher.index, self.kind_, self.metric, self.dim_, path)
                if self.backend_ != "torch":
                    return searcher
                vecs = searcher.reconstruct_all()
        except (OSError, ValueError, RuntimeError, EOFError) as exc:
            raise StoreError(f"{str(path)!r}: the index data cannot be read ({str(exc).splitlines()[0] if str(exc) else exc!r}); "
                             "rebuild it") from exc
        if vecs.ndim != 2 or vecs.shape != (self.n_, self.dim_):
            raise StoreError(f"{str(path)!r}: vectors.npy holds {vecs.shape}, expected ({self.n_}, {self.dim_}); rebuild it")
        if self.backend_ == "torch":  # saved vectors are already normalised for cosine; normalising again is a no-op
            return TorchSearcher.build(CodeSource.of(vecs), metric=self.metric, device=self.device, chunk_size=cs)
        return FaissSearcher.build(CodeSource.of(vecs), kind="flat", metric=self.metric, nlist=None, M=self.M,
                                   backend=self.backend_, chunk_size=cs, gpu=self._gpu())
