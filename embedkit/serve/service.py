"""The search service behind `embedkit serve`, usable from Python without any web framework.

:class:`SearchService` loads a code store once: its kNN index (from the same cache as
`embedkit neighbors`), the 2-D points of its map, the backbone that embeds query images and,
optionally, a trained classifier. Its methods answer what the HTTP routes ask (neighbours of a
stored row, of a stored path or of an uploaded image; metadata; thumbnails; duplicate groups; class
predictions) and are safe to call from many threads at once.

Bounded: memory is the index plus fixed caches (:data:`THUMB_CACHE` thumbnails, a few duplicate
results), uploads are refused above :data:`MAX_UPLOAD_BYTES` or the reader's pixel limit, and a
thumbnail is made only of a file whose bytes still have the sha1 recorded for its row at embed time,
so no other file is ever read out through the service.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import numpy as np

from embedkit.errors import ConfigError, DataError, StoreError
from embedkit.serve.batcher import SearchBatcher

#: largest upload accepted (bytes): far above any image embedkit embeds well, far below what would hurt
MAX_UPLOAD_BYTES = 32 * 2**20
#: largest k a search may ask for
MAX_K = 200
#: thumbnails kept in memory (PNG bytes of at most THUMB_SIZE px, a few KB to ~40 KB each)
THUMB_CACHE = 1024
THUMB_SIZE = 128
#: map points sent to the page (a seeded sample beyond this)
MAX_POINTS = 20_000
#: duplicate-group results kept (one per threshold asked)
DUPLICATE_CACHE = 4


class NotFound(DataError):
    """A row or path the store does not hold (the HTTP layer answers 404)."""


class SearchService:
    """One code store loaded for searching. Build with :meth:`open`; every method is thread-safe."""

    def __init__(self, store, index, *, classifier=None, projection=None,
                 max_points: int = MAX_POINTS, load_backbone: bool = True, device: str = "auto"):
        self.store = store
        self.index = index
        self.metric = index.metric
        # the store's own cached columns (object arrays of str), not copies; paths found by binary search in a
        # sorted view (two pointer arrays) rather than a dict of N entries
        self.paths, self.labels = store.paths, store.labels
        self.sha1 = store.recorded_sha1()
        self._by_path = np.argsort(self.paths, kind="stable")
        self._sorted_paths = self.paths[self._by_path]
        self._sizes = {c: store.column(c) for c in ("width", "height", "bytes") if c in store.columns}
        self._batcher = SearchBatcher(index)
        self._embed_lock = threading.Lock()
        self._dup_lock = threading.Lock()
        self._duplicates: dict = {}
        self.classifier = classifier
        self.backbone = store.backbone(device) if load_backbone and store.identity is not None else None
        self.points = _points(store, projection, max_points)
        self.points["paths"] = [self.paths[r] for r in self.points["rows"]]
        self.points["labels"] = [self.labels[r] for r in self.points["rows"]]
        self.thumbnail = functools.lru_cache(maxsize=THUMB_CACHE)(self._thumbnail)

    @classmethod
    def open(cls, store, *, model=None, metric: str = "cosine", kind: str = "auto", backend: str = "auto",
             device: str = "auto", projection=None, max_points: int = MAX_POINTS, load_backbone: bool = True,
             note=None) -> SearchService:
        """Load ``store`` (a folder or a CodeStore) for serving.

        The index comes from the store's index cache (built and saved when missing, as `neighbors` does);
        an exact index that would stream the store at every search is held in memory instead (one copy of
        the codes, searched by torch unless ``backend`` says otherwise), so a search reads no file. ``model``: a classifier folder trained on codes like these.
        ``projection``: a saved ``projection-<method>/`` folder of `embedkit view` for the map; without it
        the map is a PCA of the codes computed now (fitted on at most ``max_points`` rows).
        """
        from embedkit.retrieve.cache import cached_index
        from embedkit.retrieve.index import KNNIndex
        from embedkit.store.codestore import CodeStore

        store = store if isinstance(store, CodeStore) else CodeStore.open(store)
        clf = None
        if model is not None:
            from embedkit.classify.model_folder import (
                check_store_matches,
                load_classifier,
            )

            clf, meta = load_classifier(model)
            check_store_matches(meta, store, model)
        index, _ = cached_index(store, metric, kind, backend, device=device, note=note)
        if index.storage_ == "stream":
            # torch's matmul + top-k by default: one pass over the codes serves a whole batch of queries, where
            # CPU FAISS scans them once per query below 20 queries (measured on 100k x 512: 4 queries 73 vs 38 ms)
            index = KNNIndex(metric=metric, kind="flat", backend="torch" if backend == "auto" else backend,
                             device=device, storage="memory").fit(store)
        return cls(store, index, classifier=clf, projection=projection, max_points=max_points,
                   load_backbone=load_backbone, device=device)

    def close(self) -> None:
        self._batcher.close()

    # ------------------------------------------------------------------ info
    def info(self) -> dict:
        """What the page shows in its header: the store, the index, the map and the model."""
        ident = self.store.identity or {}
        return {"store": str(self.store.path), "count": len(self.paths), "dim": int(self.store.dim),
                "backbone": ident.get("backbone"), "layer": ident.get("layer"), "metric": self.metric,
                "index": self.index.describe(), "can_embed": self.backbone is not None,
                "map": self.points["method"], "map_points": len(self.points["rows"]),
                "model": None if self.classifier is None else [str(c) for c in self.classifier.classes_],
                "max_upload_bytes": MAX_UPLOAD_BYTES, "max_k": self.max_k,
                "searches": {"batches": self._batcher.batches, "queries": self._batcher.queries}}

    @property
    def max_k(self) -> int:
        return min(MAX_K, len(self.paths))

    def item(self, row: int) -> dict:
        """Metadata of stored row ``row`` (path, label, sha1 and the size columns the store recorded)."""
        row = self._check_row(row)
        out = {"row": row, "path": self.paths[row], "label": self.labels[row], "sha1": self.sha1[row]}
        for col, values in self._sizes.items():
            out[col] = None if values[row] is None else int(values[row])
        return out

    def row_of_path(self, path: str) -> int:
        """The row of a path exactly as the store records it; :class:`NotFound` otherwise."""
        i = int(np.searchsorted(self._sorted_paths, str(path)))
        row = int(self._by_path[i]) if i < len(self.paths) and self._sorted_paths[i] == str(path) else None
        if row is None:
            raise NotFound(f"path {str(path)!r} is not one of the {len(self.paths)} paths store "
                           f"{str(self.store.path)!r} holds; give a path as /api/items lists it")
        return row

    # ---------------------------------------------------------------- search
    def search_vectors(self, Q: np.ndarray, k: int = 10, exclude_rows=()) -> list[list[dict]]:
        """Neighbours (``row``, ``path``, ``label``, ``distance``) of each query code, closest first."""
        k = self._check_k(k)
        extra = 1 if len(exclude_rows) else 0
        D, ids = self._batcher.search(Q, min(k + extra, len(self.paths)))
        rows = self.index.rows_of(ids)
        out = []
        for qi in range(len(rows)):
            hits = []
            for d, r in zip(D[qi], rows[qi]):
                if r < 0 or (extra and r == exclude_rows[qi]) or len(hits) == k:
                    continue
                dist = float(d) if self.metric == "ip" else max(float(d), 0.0)
                hits.append({"row": int(r), "path": self.paths[r], "label": self.labels[r], "distance": dist})
            out.append(hits)
        return out

    def search_row(self, row: int, k: int = 10, exclude_self: bool = True) -> list[dict]:
        """Neighbours of stored row ``row`` (itself left out unless ``exclude_self`` is False)."""
        row = self._check_row(row)
        Q = np.asarray(self.store.take(np.array([row])), dtype=np.float32)
        return self.search_vectors(Q, k, exclude_rows=[row] if exclude_self else ())[0]

    def search_path(self, path: str, k: int = 10, exclude_self: bool = True) -> list[dict]:
        """Neighbours of the stored image at ``path`` (a path the store records)."""
        return self.search_row(self.row_of_path(path), k, exclude_self)

    def embed_upload(self, data: bytes) -> np.ndarray:
        """The code (1 x D, in the store's space) of an uploaded image's bytes.

        :class:`DataError` for a file over :data:`MAX_UPLOAD_BYTES`, over the reader's pixel limit, or not
        an image; :class:`StoreError` when the store's codes were imported without a backbone.
        """
        from embedkit.io.decode import decode_bytes

        if self.backbone is None:
            raise StoreError(f"store {str(self.store.path)!r} holds codes imported without a backbone, so an "
                             "uploaded image cannot be embedded like them; search by a stored row or path instead")
        check_upload_size(len(data))
        try:
            img, _ = decode_bytes(data)
        except ValueError as exc:
            raise DataError(f"the uploaded file cannot be used as an image: {exc}") from exc
        with self._embed_lock:  # one forward at a time: bounded memory, and torch modules are not re-entrant
            raw = self.backbone.embed_images([img])
        return np.asarray(self.store.transform(raw), dtype=np.float32)

    def search_upload(self, data: bytes, k: int = 10, top: int = 5) -> dict:
        """Neighbours of an uploaded image, and the classifier's ``top`` classes when a model is loaded."""
        code = self.embed_upload(data)
        out = {"results": self.search_vectors(code, k)[0]}
        if self.classifier is not None:
            out["predictions"] = self._predict(code, top)
        return out

    def predict_upload(self, data: bytes, top: int = 5) -> list[dict]:
        """The classifier's ``top`` classes (``label``, ``score``) for an uploaded image, best first."""
        if self.classifier is None:
            raise ConfigError("no classifier is loaded; start the service with --model MODEL (model=...) "
                              "to get predicted labels")
        return self._predict(self.embed_upload(data), top)

    def _predict(self, code: np.ndarray, top: int) -> list[dict]:
        top = min(_check_int("top", top, 1, MAX_K), len(self.classifier.classes_))  # more than there are: all
        labels, scores = self.classifier.predict_topk(code, top)
        return [{"label": str(l), "score": float(s)} for l, s in zip(labels[0], scores[0])]

    # ------------------------------------------------------------ duplicates
    def duplicates(self, threshold: float = 0.05, limit: int = 200) -> dict:
        """Groups of stored rows closer than ``threshold`` (largest groups first, at most ``limit`` listed).

        Computed once per threshold (the last :data:`DUPLICATE_CACHE` kept); a second caller of the same
        threshold waits for the first instead of searching again.
        """
        threshold = float(threshold)
        if not np.isfinite(threshold) or threshold < 0:
            raise ConfigError(f"threshold {threshold!r} is not valid; use a distance >= 0 ({self.metric})")
        limit = _check_int("limit", limit, 1, 10_000)
        with self._dup_lock:
            groups = self._duplicates.get(threshold)
            if groups is None:
                groups = self._find_duplicates(threshold)
                self._duplicates[threshold] = groups
                while len(self._duplicates) > DUPLICATE_CACHE:
                    self._duplicates.pop(next(iter(self._duplicates)))
        return {"threshold": threshold, "metric": self.metric, "groups_total": len(groups),
                "groups": [{"max_distance": float(g.max_distance),
                            "items": [{"row": int(r), "path": self.paths[r], "label": self.labels[r]} for r in g.rows]}
                           for g in groups[:limit]]}

    def _find_duplicates(self, threshold: float):
        from embedkit.retrieve.dedupe import near_duplicate_groups
        from embedkit.retrieve.dedupe_quantized import quantized_duplicate_groups

        if self.index.kind_ == "flat":
            return near_duplicate_groups(self.index, self.store, threshold)
        return quantized_duplicate_groups(self.store, threshold, self.metric)

    # ------------------------------------------------------------ thumbnails
    def _thumbnail(self, row: int) -> bytes:
        """PNG thumbnail of stored row ``row``: :class:`NotFound` unless its file still has the recorded sha1."""
        from embedkit.render.gallery import checked_thumbnail_png

        row = self._check_row(row)
        png = checked_thumbnail_png(self.paths[row], self.sha1[row], THUMB_SIZE)
        if png is None:
            why = "no sha1 was recorded for it" if not self.sha1[row] else \
                "its file is missing or no longer has the sha1 recorded at embed time"
            raise NotFound(f"row {row} has no thumbnail: {why}")
        return png

    # ---------------------------------------------------------------- checks
    def _check_row(self, row) -> int:
        row = int(row)
        if not 0 <= row < len(self.paths):
            raise NotFound(f"row {row} is not in the store; use a row from 0 to {len(self.paths) - 1}")
        return row

    def _check_k(self, k) -> int:
        return _check_int("k", k, 1, self.max_k)


def check_upload_size(n: int) -> None:
    """Refuse an upload of more than :data:`MAX_UPLOAD_BYTES` (or an empty one) with a :class:`DataError`."""
    if n > MAX_UPLOAD_BYTES:
        raise UploadTooLarge(f"the upload is larger than {MAX_UPLOAD_BYTES // 2**20} MiB; send a smaller image")
    if n == 0:
        raise DataError("the upload is empty; send the image file's bytes as the request body")


class UploadTooLarge(DataError):
    """An upload over :data:`MAX_UPLOAD_BYTES` (the HTTP layer answers 413)."""


def _check_int(name: str, value, lo: int, hi: int) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        v = None
    if v is None or not lo <= v <= hi:
        raise ConfigError(f"{name} {value!r} is not valid; use an integer from {lo} to {hi}")
    return v


def _points(store, projection, max_points: int) -> dict:
    """The map: a seeded sample of at most ``max_points`` rows and their 2-D coordinates."""
    from embedkit.view.project import Projection, project

    if projection is not None:
        proj = Projection.load(projection)
        n_in = int(proj.params.get("n_input", len(store)))
        if n_in != len(store) or (len(proj.indices) and int(proj.indices.max()) >= len(store)):
            raise StoreError(f"the projection in {str(projection)!r} was made from {n_in} codes, store "
                             f"{str(store.path)!r} holds {len(store)}; run `embedkit view` on this store again, or "
                             "leave out --projection")
        method = str(proj.params.get("method", Path(projection).name.removeprefix("projection-")))
    elif len(store) < 3:
        return {"method": "none", "rows": [], "xy": []}
    else:
        proj = project(store, "pca", max_points=max_points)
        method = "pca"
    keep = np.arange(len(proj.indices))
    if len(keep) > max_points:
        keep = np.sort(np.random.default_rng(0).choice(len(keep), max_points, replace=False))
    xy = np.asarray(proj.xy[keep], dtype=np.float64)
    return {"method": method, "rows": proj.indices[keep].astype(int).tolist(), "xy": np.round(xy, 5).tolist()}
