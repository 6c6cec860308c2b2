"""Writing a code store: one shard at a time (commit marker last), then ``meta.json``, the one commit.

:func:`write_shard` is a pure function of (folder, shard id, arrays): the local
engine calls it in its loop and Ray workers call it on a shared filesystem, so
both produce exactly the same store. :func:`finalize` turns committed shards
into a store (fits PCA-whitening when asked, then writes ``meta.json`` holding
the shard list and the count: one rename, so no crash and no reader sees a half
store). :func:`from_arrays` writes a store from codes made elsewhere.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from embedkit.atomic import atomic_path, write_json_atomic
from embedkit.errors import ConfigError, DataError, StoreError, invalid
from embedkit.store.items import exact_paths, items_table, skipped_table
from embedkit.store.layout import (
    DTYPES, FOLDERS, MANIFEST, META, ROW_KINDS, SHARDS, SKIPPED_CSV, STORE_FORMAT, V1_FILES, WORK, shard_file,
)
from embedkit.store.postprocess import PCA_FILE, PostProcess, l2_normalize

SKIPPED_FIELDS = ("path", "reason")


@contextmanager
def disk_errors(folder):
    """Turn a full disk into one clear :class:`StoreError`; what was committed before stays intact."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StoreError(f"no space left on the device holding {str(folder)!r}; free some space and run the "
                             "same command with --resume (committed shards are kept)") from exc
        raise


def save_npy_atomic(path: Path, arr: np.ndarray) -> None:
    """``np.save`` to a temporary name, fsync, rename."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())


def write_parquet_atomic(path: Path, table) -> None:
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_shard(folder, shard_id: int, codes: np.ndarray, items, skipped=None, *, dtype: str = "float32",
                postprocess: PostProcess | None = None, files: int | None = None) -> dict:
    """Write shard ``shard_id`` of the store at ``folder``; returns its marker (committed last).

    ``codes`` are raw float codes (rows x dim) in the row order of ``items`` (an Arrow table or a dict of
    columns with at least ``path``). With PCA-whitening the raw codes are kept and whitened at
    :func:`finalize`; L2 alone is applied here. Rewriting a shard (a resumed job) replaces it whole.
    """
    folder = Path(folder)
    pp = postprocess or PostProcess()
    table = items if hasattr(items, "num_rows") else items_table(items)
    codes = np.asarray(codes, dtype=np.float32)
    if codes.ndim != 2 or codes.shape[0] != table.num_rows:
        raise DataError(f"shard {shard_id}: {codes.shape[0] if codes.ndim else 0} code rows for {table.num_rows} "
                        "items; rows and items must be in step")
    skipped = skipped if hasattr(skipped, "num_rows") else skipped_table(skipped or [])
    with disk_errors(folder):
        for kind in ("json", "parquet", "skipped.parquet") + (("raw.npy",) if pp.pca_whiten else ()):
            shard_file(folder, shard_id, kind).parent.mkdir(parents=True, exist_ok=True)
        shard_file(folder, shard_id, "json").unlink(missing_ok=True)  # not committed while it is rewritten
        if not table.num_rows:  # only skipped files: no codes or items file (see layout: readers pair them up)
            for kind in ROW_KINDS:
                shard_file(folder, shard_id, kind).unlink(missing_ok=True)
        elif pp.pca_whiten:
            save_npy_atomic(shard_file(folder, shard_id, "raw.npy"), codes)
            if pp.components is not None:  # appending to a store whose whitening is already fitted
                save_npy_atomic(shard_file(folder, shard_id, "npy"), pp.apply(codes).astype(dtype))
        else:
            save_npy_atomic(shard_file(folder, shard_id, "npy"),
                            (l2_normalize(codes) if pp.l2_normalize else codes).astype(dtype))
        if table.num_rows:
            write_parquet_atomic(shard_file(folder, shard_id, "parquet"), table)
        write_parquet_atomic(shard_file(folder, shard_id, "skipped.parquet"), skipped)
        marker = {"id": int(shard_id), "rows": int(table.num_rows), "skipped": int(skipped.num_rows),
                  "files": int(files if files is not None else table.num_rows + skipped.num_rows)}
        write_json_atomic(shard_file(folder, shard_id, "json"), marker)
    return marker


def shard_marker(folder, shard_id: int) -> dict | None:
    """The commit marker of a shard, or None when the shard is not (completely) written."""
    path = shard_file(folder, shard_id, "json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def finalize(folder, shard_ids, *, identity: dict | None, dim: int, dtype: str, postprocess: PostProcess,
             extra_meta: dict | None = None) -> None:
    """Make the committed shards ``shard_ids`` (in row order) a store: PCA, skipped.csv, then meta.json.

    ``meta.json`` is the commit: it holds the shard list and the count, so an append becomes visible in
    one rename (before it, readers and ``--resume`` see the old store whole). Safe to repeat after a kill:
    each step rewrites whole files by rename.
    """
    from embedkit import __version__
    from embedkit.store.array import ShardedArray

    folder = Path(folder)
    markers = []
    for sid in shard_ids:
        m = shard_marker(folder, sid)
        if m is None:
            raise StoreError(f"shard {sid} of {str(folder)!r} is not committed; run the job again with --resume")
        markers.append(m)
    count = sum(m["rows"] for m in markers)
    with disk_errors(folder):
        _write_skipped_csv(folder, shard_ids)
        if count == 0:
            raise DataError(f"none of the {sum(m['files'] for m in markers)} files could be read as an image; "
                            f"see {folder / SKIPPED_CSV} for the reasons")
        if postprocess.pca_whiten:
            filled = [m for m in markers if m["rows"]]
            if postprocess.components is None:  # a new store: fit on every raw code, streamed
                raw = ShardedArray([shard_file(folder, m["id"], "raw.npy") for m in filled],
                                   [m["rows"] for m in filled], dim, np.float32)
                postprocess.fit(raw)
                postprocess.save(folder)
            for sid in (m["id"] for m in filled):
                if not shard_file(folder, sid, "npy").exists():
                    raw = np.load(shard_file(folder, sid, "raw.npy"), mmap_mode="r")
                    save_npy_atomic(shard_file(folder, sid, "npy"), postprocess.apply(raw).astype(dtype))
        ident = identity
        meta = {
            "format": STORE_FORMAT, "embedkit_version": __version__, "identity": ident,
            "backbone": ident["backbone"] if ident else None, "layer": ident["layer"] if ident else None,
            "dim": postprocess.out_dim(dim), "code_dim": int(dim), "dtype": dtype, "count": int(count),
            "skipped": int(sum(m["skipped"] for m in markers)),
            **postprocess.identity, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(extra_meta or {}),
            "shards": [{"id": m["id"], "rows": m["rows"], "skipped": m["skipped"]} for m in markers],
        }
        write_json_atomic(folder / META, meta)


def _write_skipped_csv(folder: Path, shard_ids) -> None:
    """The human-readable list of skipped files (streamed shard by shard)."""
    import pyarrow.parquet as pq

    from embedkit.atomic import spreadsheet_safe

    with atomic_path(folder / SKIPPED_CSV) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
            w = csv.writer(f)
            w.writerow(SKIPPED_FIELDS)
            for sid in shard_ids:
                t = pq.read_table(shard_file(folder, sid, "skipped.parquet"))
                for p, r in zip(exact_paths(t), t.column("reason").to_pylist()):
                    w.writerow([spreadsheet_safe(p), spreadsheet_safe(r)])


def default_shard_rows(n: int) -> int:
    """Rows per shard for ``n`` items: about 64 shards, between 32 and 8192 rows.

    A shard is the unit of commit: small jobs get small shards, so that even on a CPU a commit comes every
    few seconds and a killed run of a few hundred images loses at most a few seconds of work; a million
    images stay ~120 files of codes.
    """
    return int(min(8192, max(32, -(-n // 64))))


def from_arrays(out, codes, paths, labels=None, identity: dict | None = None, *, columns: dict | None = None,
                dtype: str | None = None, shard_rows: int | None = None, overwrite: bool = False):
    """Write a store at ``out`` from codes made elsewhere (another tool's ``.npy``, a notebook).

    ``codes`` is N x D (a NumPy array or memmap, read in chunks), ``paths`` N strings, ``labels`` N strings
    or None, ``columns`` extra item columns (N values each). ``identity`` is the backbone identity the codes
    were made with (e.g. another store's ``store.identity``) or None: such codes can be classified, searched,
    deduplicated and viewed, but nothing can embed new images to compare with them.
    """
    from embedkit.checks import check_codes

    out = Path(out)
    check_codes(codes, what="codes", copy=False)
    n, dim = codes.shape
    dtype = dtype or ("float16" if np.dtype(codes.dtype) == np.float16 else "float32")
    if dtype not in DTYPES:
        raise invalid("dtype", dtype, DTYPES)
    paths = np.asarray(paths, dtype=object)
    if paths.ndim != 1 or len(paths) != n:
        raise DataError(f"got {len(paths) if paths.ndim else 0} paths for {n} code rows; give one path per row")
    if not all(isinstance(p, str) for p in paths):
        raise DataError("paths must be strings (one per row)")
    cols = {"path": paths, "label": np.asarray(labels if labels is not None else [""] * n, dtype=object)}
    if len(cols["label"]) != n:
        raise DataError(f"got {len(cols['label'])} labels for {n} code rows; give one label per row (or none)")
    cols["label"] = np.array(["" if v is None else str(v) for v in cols["label"]], dtype=object)
    for name, values in (columns or {}).items():
        if name in cols:
            raise ConfigError(f"column {name!r} is given twice; the path/label columns come from paths=/labels=")
        values = np.asarray(values)
        if len(values) != n:
            raise DataError(f"column {name!r} has {len(values)} values for {n} code rows")
        cols[name] = values
    _prepare_out(out, overwrite)
    rows = shard_rows or default_shard_rows(n)
    ids = []
    for k, start in enumerate(range(0, n, rows)):
        stop = min(start + rows, n)
        write_shard(out, k, np.asarray(codes[start:stop], np.float32),
                    items_table({name: v[start:stop] for name, v in cols.items()}), dtype=dtype)
        ids.append(k)
    finalize(out, ids, identity=identity, dim=dim, dtype=dtype, postprocess=PostProcess(),
             extra_meta={"source": "import"})


def _prepare_out(out: Path, overwrite: bool) -> None:
    """Refuse to write over an existing store unless ``overwrite``; make the folder."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {str(out)!r} is a file, not a folder; give a folder path for the store")
    if (out / META).exists() or (out / SHARDS).exists():
        if not overwrite:
            raise StoreError(f"{str(out)!r} is already a code store; replace it with --overwrite (overwrite=True)")
        remove_store_files(out)
    out.mkdir(parents=True, exist_ok=True)


def remove_store_files(out: Path) -> None:
    """Delete a store's own files (meta first, so a half-deleted folder never opens as a store)."""
    import shutil

    for name in (META, MANIFEST, SKIPPED_CSV, PCA_FILE, *V1_FILES):
        (out / name).unlink(missing_ok=True)
    for sub in (*FOLDERS, WORK):
        shutil.rmtree(out / sub, ignore_errors=True)


__all__ = ["write_shard", "finalize", "from_arrays", "shard_marker", "default_shard_rows"]
