"""The on-disk folder of a :class:`~embedkit.retrieve.index.KNNIndex` and the checks made when reading it back.

A saved index is a folder::

    index.json    format, parameters, kind, backend, storage, count, dim, code identity,
                  sha256 of paths.json and the fingerprint of the store it was built from
    ids.npy       int64 ids, one per row (read with allow_pickle=False: never pickle)
    paths.json    a JSON list of the image paths (any string survives: U+2028, newlines, control characters)
    index.faiss   the FAISS index (in-memory kinds), or vectors.npy (torch), or nothing (streamed exact search)

Paths used to be written one per line and read back with ``splitlines()``, which
also splits on U+2028/2029, \\x85, \\x0b, \\x0c and \\x1c-\\x1e: one such path
shifted every later path by a row. JSON holds any string exactly. Anything
that cannot be read back (missing file, garbage JSON, truncated index, object
array) becomes a :class:`~embedkit.errors.StoreError` naming the file, never a
raw traceback, so callers (the index cache) can rebuild.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from embedkit.atomic import atomic_folder
from embedkit.errors import StoreError

INDEX_FORMAT = "embedkit-knn/2"
META_KEYS = ("format", "params", "kind", "backend", "storage", "nlist", "count", "dim")


def paths_digest(paths) -> str:
    """sha256 of a list of path strings, as written to paths.json (so a reader can check the file)."""
    return hashlib.sha256(json.dumps([str(p) for p in paths]).encode("ascii")).hexdigest()


def store_fingerprint(store) -> str:
    """What ties an index to a store's rows: count, dim, and the sha256 of every row's path (and sha1 if listed).

    Same identity and count are not enough: a store re-embedded from other images, or in another order, would
    return the wrong files for the right ids.
    """
    h = hashlib.sha256(f"{len(store)}x{store.dim}\n".encode())
    h.update(paths_digest(store.paths).encode())
    try:
        sha1 = store.column("sha1")
    except Exception:  # noqa: BLE001 - a store without content hashes is fingerprinted by its paths alone
        sha1 = None
    if sha1 is not None:
        h.update(json.dumps([str(s) for s in sha1]).encode("ascii"))
    return h.hexdigest()


def write_folder(path, meta: dict, ids: np.ndarray, paths, write_index) -> Path:
    """Write the folder atomically (:func:`~embedkit.atomic.atomic_folder`); a full disk is a ``DiskFullError``.

    ``write_index(tmp_folder)`` writes the backend's files (or nothing for a streamed index).
    """
    with atomic_folder(path) as tmp:
        write_index(tmp)
        np.save(tmp / "ids.npy", np.asarray(ids, dtype=np.int64), allow_pickle=False)
        meta = dict(meta, format=INDEX_FORMAT, paths_sha256=None)
        if paths is not None:
            text = json.dumps([str(p) for p in paths])  # ensure_ascii: even lone surrogates round-trip
            (tmp / "paths.json").write_text(text, encoding="ascii")
            meta["paths_sha256"] = hashlib.sha256(text.encode("ascii")).hexdigest()
        (tmp / "index.json").write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    return Path(path)


def read_folder(path) -> tuple[dict, np.ndarray, list | None]:
    """``(meta, ids, paths)`` of a saved index, each checked; :class:`StoreError` saying what is wrong otherwise."""
    path = Path(path)
    where = repr(str(path))
    meta_file = path / "index.json"
    if not meta_file.exists():
        raise StoreError(f"{where} is not a saved kNN index (index.json is missing); build one with KNNIndex.save")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise StoreError(f"{where}: index.json cannot be read ({exc}); rebuild the index") from exc
    if not isinstance(meta, dict):
        raise StoreError(f"{where}: index.json does not hold an index description; rebuild the index")
    if meta.get("format") != INDEX_FORMAT:
        raise StoreError(f"{where} has index format {meta.get('format')!r}, expected {INDEX_FORMAT!r}; rebuild it")
    missing = [k for k in META_KEYS if k not in meta]
    if missing or not isinstance(meta["params"], dict):
        raise StoreError(f"{where}: index.json lacks {', '.join(missing) or 'params'}; rebuild the index")
    try:
        n, d = int(meta["count"]), int(meta["dim"])
        ids = np.load(path / "ids.npy", allow_pickle=False)
    except (OSError, ValueError, TypeError, EOFError) as exc:
        raise StoreError(f"{where}: ids.npy cannot be read ({exc}); rebuild the index") from exc
    if ids.shape != (n,) or not np.issubdtype(ids.dtype, np.integer) or n < 1 or d < 1:
        raise StoreError(f"{where}: ids.npy holds {ids.shape} {ids.dtype}, expected {n} integers; rebuild the index")
    if ids.min() < 0 or len(np.unique(ids)) != n:
        raise StoreError(f"{where}: ids.npy holds negative or repeated ids; rebuild the index")
    paths = None
    pf = path / "paths.json"
    if meta.get("paths_sha256") is not None:
        try:
            raw = pf.read_bytes()
            paths = json.loads(raw.decode("ascii"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise StoreError(f"{where}: paths.json cannot be read ({exc}); rebuild the index") from exc
        if hashlib.sha256(raw).hexdigest() != meta["paths_sha256"]:
            raise StoreError(f"{where}: paths.json does not match its checksum in index.json; rebuild the index")
        if not isinstance(paths, list) or len(paths) != n or not all(isinstance(p, str) for p in paths):
            raise StoreError(f"{where}: paths.json does not hold {n} path strings; rebuild the index")
    return meta, ids.astype(np.int64), paths


#: the FAISS class each saved kind must be (a crafted index.faiss of another type would be searched with the
#: wrong parameters: an IVF index has no ``hnsw`` to set, a binary index no float search)
FAISS_KINDS = {"flat": "IndexFlat", "hnsw": "IndexHNSW", "ivf": "IndexIVF"}


def check_faiss_index(index, kind: str, metric: str, dim: int, where) -> None:
    """Refuse (:class:`StoreError`) an ``index.faiss`` whose type, metric or width is not what index.json says."""
    import faiss

    want = FAISS_KINDS.get(kind)
    metric_type = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    have = (type(index).__name__, getattr(index, "d", None), getattr(index, "metric_type", None))
    # by name: faiss's own classes (IndexFlatIP, IndexHNSWFlat, GpuIndexIVFFlat...), so a GPU index needs no copy
    if want is None or not have[0].removeprefix("Gpu").startswith(want) or have[1:] != (dim, metric_type):
        raise StoreError(f"{str(where)!r}: index.faiss holds a {have[0]} of width {have[1]}, index.json describes a "
                         f"{kind} {metric} index of width {dim}; rebuild it")
