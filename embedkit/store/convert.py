"""Converting stores: upgrading an embedkit 0.1 store (codes.npy + items.csv) to the sharded format.

The upgrade writes the shards beside the old files, then ``meta.json`` (the
commit point), then removes the old files: a kill at any moment leaves either
the old store or the new one, and running the upgrade again finishes it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedkit.errors import StoreError
from embedkit.store.layout import META
from embedkit.store.postprocess import PostProcess
from embedkit.store.items import exact_paths, items_table, skipped_table
from embedkit.store.writer import default_shard_rows, finalize, write_shard


def upgrade_store(path, shard_rows: int | None = None):
    """Convert the format-1 store at ``path`` in place; returns the opened format-2 store."""
    from embedkit.store.codestore import CodeStore

    path = Path(path)
    old = CodeStore.open(path)
    if old.version == 2:
        return old
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


def is_v1(path) -> bool:
    """True when ``path`` holds an embedkit 0.1 store."""
    import json

    meta = Path(path) / META
    return meta.exists() and json.loads(meta.read_text(encoding="utf-8")).get("format") is None
