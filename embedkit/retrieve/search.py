"""``embedkit.neighbors`` and ``embedkit.dedupe``: what ``embedkit neighbors`` decides, as library functions.

:func:`neighbors` embeds query images the way the store was embedded, searches the store's
cached index and matches each query to its own store row (so it can show its label and,
with ``exclude_self``, leave itself out). :func:`dedupe` chooses the near-duplicate
algorithm (exact/HNSW through the cached index; IVF with 8-bit codes above
:data:`~embedkit.retrieve.common.FLAT_MAX` codes) and groups the pairs under a threshold.
Both return a result that writes itself as CSV (safe to open in a spreadsheet), JSON,
Parquet or an HTML gallery; the command line only prints it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from embedkit.errors import ConfigError, DataError
from embedkit.estimators import check_positive_int
from embedkit.retrieve.constants import DEFAULT_COSINE_THRESHOLD
from embedkit.store.codestore import CodeStore

#: neighbours per query when none is asked for
DEFAULT_K = 10
NEIGHBOR_COLUMNS = ("query", "rank", "path", "label", "distance", "query_label")
DEDUPE_COLUMNS = ("group", "path", "label")
_TEXT_COLUMNS = ("query", "path", "label", "query_label")


def format_distance(d, metric: str, digits: int = 4) -> str:
    """``d`` with ``digits`` decimals; a cosine/l2 distance below 0 (float rounding) is 0, and never "-0.0000"."""
    text = f"{_clipped(d, metric):.{digits}f}"
    return f"{0.0:.{digits}f}" if float(text) == 0 else text


def _clipped(d, metric: str) -> float:
    """A distance as a float; cosine/l2 distances below 0 (float rounding) are 0, and -0.0 is 0.0."""
    d = float(d)
    return (0.0 if metric != "ip" and d < 0 else d) + 0.0


def _same_file(a: str, b: str) -> bool:
    if a == b:
        return True
    return os.path.basename(a) == os.path.basename(b) and os.path.realpath(a) == os.path.realpath(b)


def _store_rows_of(store, paths) -> dict:
    """Store row of each query path that is itself a stored image (by path; one pass over the paths)."""
    want = {os.path.basename(p): [] for p in paths}
    for r, sp in enumerate(store.paths):
        if os.path.basename(sp) in want:
            want[os.path.basename(sp)].append(r)
    out = {}
    for p in paths:
        for r in want[os.path.basename(p)]:
            if _same_file(p, store.paths[r]):
                out[p] = r
                break
    return out


@dataclass
class Neighbor:
    """One stored image near a query: its rank (1 = closest), store row, path, label and distance."""

    rank: int
    row: int
    path: str
    label: str
    distance: float
    same_label: bool


@dataclass
class QueryNeighbors:
    """A query image, its own store row (None when it is not a stored image) and label, and its neighbours."""

    path: str
    row: int | None
    label: str
    neighbors: list[Neighbor]


def _write_tables(result, csv=None, json=None, parquet=None, html=None) -> dict:
    """Write the result's table / document / gallery to each path given; ``{"csv": path, ...}`` of those written."""
    from embedkit.atomic import atomic_path, spreadsheet_safe, write_csv_atomic, write_json_atomic

    written = {}
    if html:
        from embedkit.render.gallery import write_gallery

        write_gallery(html, result.title, result.sections())
        written["html"] = html
    if csv:  # for people: no text cell starts a formula, distances in 6 significant digits
        cells = {c: spreadsheet_safe for c in _TEXT_COLUMNS} | {"distance": lambda d: f"{d:.6g}"}
        write_csv_atomic(csv, result.columns, ([cells.get(c, lambda v: v)(v) for c, v in zip(result.columns, row)]
                                              for row in result.rows()))
        written["csv"] = csv
    if json:
        write_json_atomic(json, result.to_dict())
        written["json"] = json
    if parquet:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from embedkit.store.items import text_array

        rows = list(result.rows())
        cols = {c: [r[i] for r in rows] for i, c in enumerate(result.columns)}
        table = pa.table({c: text_array(v) if c in _TEXT_COLUMNS else pa.array(v) for c, v in cols.items()})
        with atomic_path(parquet) as tmp:
            pq.write_table(table, tmp)
        written["parquet"] = parquet
    return written


@dataclass
class NeighborsResult:
    """What :func:`neighbors` found: per query its neighbours, the queries skipped, the index that searched."""

    store: object = field(repr=False)
    metric: str
    k: int
    exclude_self: bool
    queries: list[QueryNeighbors]
    skipped: list[tuple[str, str]]
    index: str
    how: str
    seconds: float
    columns = NEIGHBOR_COLUMNS

    @property
    def title(self) -> str:
        return f"neighbors in {self.store.path}"

    def rows(self):
        """One row per (query, neighbour): query, rank, path, label, distance, query_label (raw values)."""
        for q in self.queries:
            for n in q.neighbors:
                yield q.path, n.rank, n.path, n.label, _clipped(n.distance, self.metric), q.label

    def to_dict(self) -> dict:
        return {"store": str(self.store.path), "metric": self.metric, "k": self.k, "exclude_self": self.exclude_self,
                "index": self.index, "queries": [
                    {"query": q.path, "store_row": q.row, "label": q.label,
                     "neighbors": [{"rank": n.rank, "row": n.row, "path": n.path, "label": n.label,
                                    "distance": _clipped(n.distance, self.metric), "same_label": n.same_label}
                                   for n in q.neighbors]} for q in self.queries],
                "skipped": [{"path": p, "reason": r} for p, r in self.skipped]}

    def sections(self) -> list[dict]:
        """The HTML gallery: one section per query, the query first; a store image is inlined only when the
        file still has the sha1 recorded at embed time."""
        sha1 = self.store.recorded_sha1()
        out = []
        for qi, q in enumerate(self.queries):
            items = [{"path": q.path, "caption": "query" + (f"\n[{q.label}]" if q.label else "") + "\n" + Path(q.path).name}]
            items += [{"path": n.path, "caption": f"#{n.rank} d={format_distance(n.distance, self.metric)}\n{n.label}\n"
                                                  f"{Path(n.path).name}",
                       "ok": True if n.same_label else None, "sha1": sha1[n.row]} for n in q.neighbors]
            note = f"{len(q.neighbors)} nearest ({self.metric})" + (", the query itself left out" if self.exclude_self else "")
            if q.label:
                note += f"; green: same label as the query ({sum(n.same_label for n in q.neighbors)} of {len(q.neighbors)})"
            out.append({"title": f"query {qi + 1}: {q.path}" + (f" [{q.label}]" if q.label else ""), "note": note,
                        "items": items})
        return out

    def write(self, *, csv=None, json=None, parquet=None, html=None) -> dict:
        """Write the neighbours to each path given (all atomically); ``{"csv": path, ...}`` of those written."""
        return _write_tables(self, csv, json, parquet, html)


def neighbors(store, queries, k: int = DEFAULT_K, *, metric: str = "cosine", kind: str = "auto",
              backend: str = "auto", exclude_self: bool = False, rebuild: bool = False, device: str = "auto",
              workers: int | None = None, batch_size: int | None = None, progress: bool = False,
              note: Callable[[str], None] | None = None) -> NeighborsResult:
    """The ``k`` stored images nearest to each query image, closest first.

    ``store``: a :class:`~embedkit.store.codestore.CodeStore` or its folder. ``queries``: image files or
    folders (searched recursively); unreadable ones are listed in ``result.skipped``. Queries are embedded
    with the store's backbone, layer and post-processing; the store's index is cached in ``<store>/index/``.
    A query that is itself a stored image gets its label; ``exclude_self`` leaves it out of its own list
    (still ``k`` results). ``note(message)`` receives one-line notes about the cache.
    """
    from embedkit.retrieve.cache import cached_index
    from embedkit.retrieve.queries import check_embeddable, collect_queries, embed_queries

    t0 = time.perf_counter()
    store = CodeStore.of(store)
    queries = [queries] if isinstance(queries, (str, os.PathLike)) else list(queries)
    if not queries:
        raise ConfigError("give at least one query image or folder of images (or --dedupe)")
    k = check_positive_int("k", k)
    if k > len(store):
        raise ConfigError(f"-k {k} is larger than the {len(store)} images in store {store.path}; use -k {len(store)} or less")
    check_embeddable(store)  # before any image is read: a store of imported codes cannot embed queries
    paths, skipped = collect_queries(queries)
    codes, paths, bad = embed_queries(store, paths, device=device, workers=workers, batch_size=batch_size,
                                      progress=progress)
    skipped += bad
    if codes is None:
        raise DataError(f"none of the {len(skipped)} queries could be read as an image ("
                        + "; ".join(f"{p}: {r}" for p, r in skipped[:3]) + ("; ..." if len(skipped) > 3 else "") + ")")
    index, how = cached_index(store, metric, kind, backend, rebuild, progress=progress, device=device, note=note)
    D, ids = index.search(codes, min(k + 1, len(store)) if exclude_self else k)
    labels = store.labels
    in_store = _store_rows_of(store, paths)
    found = []
    for qi, qpath in enumerate(paths):
        qrow = in_store.get(qpath)
        qlabel = labels[qrow] if qrow is not None else ""
        hits = []
        for d, r in zip(D[qi], ids[qi]):
            if r < 0 or len(hits) == k:
                continue
            p, lab = index.paths_[r], labels[r]
            if exclude_self and qrow is not None and (r == qrow or _same_file(p, qpath)):
                continue
            hits.append(Neighbor(len(hits) + 1, int(r), p, lab, float(d), bool(qlabel) and lab == qlabel))
        found.append(QueryNeighbors(qpath, qrow, qlabel, hits))
    return NeighborsResult(store, metric, k, exclude_self, found, skipped, index.describe(), how,
                           time.perf_counter() - t0)


@dataclass
class DedupeResult:
    """What :func:`dedupe` found: groups of store rows (``group.rows``), largest linking distance of each."""

    store: object = field(repr=False)
    metric: str
    threshold: float
    groups: list
    index: str
    seconds: float
    columns = DEDUPE_COLUMNS

    @property
    def title(self) -> str:
        return f"near-duplicates in {self.store.path}"

    def rows(self):
        """One row per image in a group: group number (from 1), path, label."""
        paths, labels = self.store.paths, self.store.labels
        for gi, g in enumerate(self.groups, 1):
            for r in g.rows:
                yield gi, paths[r], labels[r]

    def to_dict(self) -> dict:
        paths, labels = self.store.paths, self.store.labels
        return {"store": str(self.store.path), "metric": self.metric, "threshold": self.threshold,
                "codes": len(self.store), "index": self.index, "groups": [
                    {"group": gi, "max_distance": _clipped(g.max_distance, self.metric),
                     "items": [{"row": int(r), "path": paths[r], "label": labels[r]} for r in g.rows]}
                    for gi, g in enumerate(self.groups, 1)]}

    def sections(self) -> list[dict]:
        paths, labels, sha1 = self.store.paths, self.store.labels, self.store.recorded_sha1()
        return [{"title": f"group {gi}: {len(g.rows)} images (max distance {format_distance(g.max_distance, self.metric)})",
                 "items": [{"path": paths[r], "caption": f"{labels[r]}\n{Path(paths[r]).name}", "sha1": sha1[r]}
                           for r in g.rows]} for gi, g in enumerate(self.groups, 1)]

    def write(self, *, csv=None, json=None, parquet=None, html=None) -> dict:
        """Write the groups to each path given (all atomically); ``{"csv": path, ...}`` of those written."""
        return _write_tables(self, csv, json, parquet, html)


def dedupe(store, threshold: float | None = None, *, metric: str = "cosine", kind: str = "auto",
           backend: str = "auto", rebuild: bool = False, device: str = "auto", progress: bool = False,
           note: Callable[[str], None] | None = None) -> DedupeResult:
    """Groups of near-duplicate images of ``store``: every pair closer than ``threshold``, joined transitively.

    ``threshold`` defaults to 0.05 for the cosine metric and must be given for the others. Exact and HNSW
    search (``kind`` flat/hnsw, and auto up to 200k codes) go through the store's cached index. IVF (``kind
    ivf``, and auto above 200k codes) is the one-pass IVF + 8-bit index of
    :mod:`embedkit.retrieve.dedupe_quantized` with exact re-checks, built for this search only, on CPU FAISS:
    an IVF-Flat index would hold every code in RAM.
    """
    from embedkit.retrieve.cache import cached_index
    from embedkit.retrieve.common import FLAT_MAX, resolve_knn_backend
    from embedkit.retrieve.dedupe import near_duplicate_groups
    from embedkit.retrieve.dedupe_quantized import describe, quantized_duplicate_groups

    t0 = time.perf_counter()
    store = CodeStore.of(store)
    if threshold is None:
        if metric != "cosine":
            raise ConfigError(f"--dedupe with --metric {metric} needs --threshold (a {metric} distance); "
                              f"or use --metric cosine (default threshold {DEFAULT_COSINE_THRESHOLD})")
        threshold = DEFAULT_COSINE_THRESHOLD
    kind_ = kind if kind != "auto" else ("flat" if len(store) <= FLAT_MAX else "ivf")
    if kind_ != "ivf":
        index, how = cached_index(store, metric, kind, backend, rebuild, progress=progress, device=device, note=note)
        groups = near_duplicate_groups(index, store, threshold, progress=progress)
        described = f"{index.describe()} [{how}]"
    else:
        if resolve_knn_backend(backend, "ivf", device) == "faiss-gpu" and note:
            note("the quantised near-duplicate search runs on CPU FAISS")
        stats = {}
        groups = quantized_duplicate_groups(store, threshold, metric, progress=progress, stats=stats)
        described = (f"{describe(len(store), store.dim, metric, stats['nlist'], stats['nprobe'], stats['dim'])}: "
                     f"{stats['candidates']} candidate pairs, {stats['pairs']} under the threshold [built]")
    return DedupeResult(store, metric, float(threshold), groups, described, time.perf_counter() - t0)
