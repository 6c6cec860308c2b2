"""Converting stores of older formats in place to the current one (see :mod:`embedkit.store.layout`).

Format 1 (embedkit 0.1: codes.npy + items.csv) is rewritten into shards; format 2
(every shard file in ``shards/``, the shard list in ``manifest.json``) gets its
item and skipped tables and raw codes linked into their own folders. Either way
the new files are written beside the old ones, then ``meta.json`` (the commit
point), then the old files are removed: a kill at any moment leaves either the
old store or the new one, and running the upgrade again finishes it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from embedkit.atomic import atomic_path, write_json_atomic
from embedkit.errors import StoreError
from embedkit.store.layout import MANIFEST, META, ROW_KINDS, SHARDS, STORE_FORMAT, shard_file
from embedkit.store.postprocess import PostProcess
from embedkit.store.items import exact_paths, items_table, skipped_table
from embedkit.store.writer import default_shard_rows, finalize, write_shard

MOVED_IN_V3 = ("parquet", "skipped.parquet", "raw.npy")  # the shard files format 3 keeps outside shards/


def upgrade_store(path, shard_rows: int | None = None):
    """Convert the store at ``path`` (format 1 or 2) in place; returns the opened current store."""
    from embedkit.store.codestore import CodeStore

    path = Path(path)
    old = CodeStore.open(path)
    if old.version == 3:
        _remove_v2_files(path, old.shards)  # left by an upgrade killed after its commit
        return old
    if old.version == 2:
        return _upgrade_v2(old)
    n = len(old)
    rows = shard_rows or default_shard_rows(n)
    pp = old.postprocess
    raw = np.load(path / "raw.npy", mmap_mode="r") if pp.pca_whiten else None
    items = old.items
    ints = {"width", "height", "bytes"}
    cols = {name: (np.array([int(v) if v not in ("", None) else 0 for v in items.column(name).to_pylist()])
                   if name in ints else items.column(name).to_pylist())
            for name in items.column_names if name not in ("path", "path_bytes")}
    cols = {"path": exact_paths(items), **cols}
    skipped = [(s["path"], s["reason"]) for s in old.skipped]
    ids = []
    for k, start in enumerate(range(0, n, rows)):
        stop = min(start + rows, n)
        block = {name: v[start:stop] for name, v in cols.items()}
        if raw is not None:  # the whitening is kept: raw codes are stored and re-whitened identically
            codes = np.asarray(raw[start:stop], np.float32)
        else:
            codes = np.asarray(old.codes[start:stop], np.float32)
        write_shard(path, k, codes, items_table(block), skipped_table(skipped if k == 0 else []),
                    dtype=old.meta["dtype"], postprocess=pp if raw is not None else PostProcess(),
                    files=stop - start + (len(skipped) if k == 0 else 0))
        ids.append(k)
    if raw is None and pp.l2_normalize:
        pp = PostProcess(l2_normalize=True)  # the stored codes already are L2-normalised: kept as they are
    finalize(path, ids, identity=old.identity, dim=int(old.meta.get("code_dim", old.dim)), dtype=old.meta["dtype"],
             postprocess=pp, extra_meta={"upgraded_from": "embedkit-store/1"})
    for name in ("codes.npy", "items.csv", "raw.npy"):
        (path / name).unlink(missing_ok=True)
    new = CodeStore.open(path)
    if len(new) != n:
        raise StoreError(f"upgrade of {str(path)!r} produced {len(new)} rows instead of {n}; restore a backup")
    return new


def _upgrade_v2(old):
    """Format 2 -> 3: hard links (a copy across file systems) into the new folders, meta.json, then cleanup."""
    from embedkit.store.codestore import CodeStore

    path = old.path
    for s in old.shards:
        for kind in MOVED_IN_V3:
            src = shard_file(path, s["id"], kind, version=2)
            if src.exists() and (s["rows"] or kind not in ROW_KINDS):
                with atomic_path(shard_file(path, s["id"], kind)) as tmp:
                    try:
                        os.link(src, tmp)
                    except OSError:
                        shutil.copyfile(src, tmp)
    write_json_atomic(path / META, {**old.meta, "format": STORE_FORMAT, "shards": old.shards,
                                    "upgraded_from": old.meta["format"]})
    _remove_v2_files(path, old.shards)
    return CodeStore.open(path)


def _remove_v2_files(path: Path, shards) -> None:
    """The format-2 files a format-3 store has no use for (after its commit): the manifest, the files that
    moved, and the empty codes of shards without rows."""
    (path / MANIFEST).unlink(missing_ok=True)
    for s in shards:
        if not s["rows"]:
            shard_file(path, s["id"], "npy").unlink(missing_ok=True)
    for kind in MOVED_IN_V3:
        for f in (path / SHARDS).glob(f"*.{kind}"):
            f.unlink()
