"""A finished code store, read-only: one logical array of codes over shards, rows in step with items.

The layout is described in :mod:`embedkit.store.layout`. Codes are never loaded
whole: ``store.codes`` is a :class:`~embedkit.store.array.ShardedArray` (a memmap
per shard), read with ``iter_chunks`` / ``take`` / slicing. Items are an Arrow
table (``store.items``) and NumPy columns (``store.paths``, ``store.labels``,
``store.column(name)``), never per-row dicts. Stores written by embedkit 0.1
(``codes.npy`` + ``items.csv``) open read-only; ``embedkit store upgrade`` converts them.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path

import numpy as np

from embedkit.defaults import CHUNK_ROWS
from embedkit.errors import MismatchError, StoreError, invalid
from embedkit.models.identity import identity_mismatch
from embedkit.store.items import exact_paths, read_csv_rows, text_array
from embedkit.store.layout import ITEM_FIELDS, MANIFEST, META, SKIPPED_CSV, STORE_FORMAT, WORK, shard_file

__all__ = ["CodeStore"]


class CodeStore:
    """A finished code store, opened read-only. Use :meth:`open` (or ``embedkit.CodeStore.from_arrays``)."""

    def __init__(self, path: Path, meta: dict, shards: list[dict]):
        self.path = Path(path)
        self.meta = meta
        self.shards = shards  # [{"id", "rows", "skipped"}], in row order
        self.version = 2 if meta.get("format") == STORE_FORMAT else 1

    def __repr__(self) -> str:
        who = f"{self.meta.get('backbone')}/{self.meta.get('layer')}" if self.identity else "no backbone identity"
        return f"CodeStore({str(self.path)!r}, {len(self)} x {self.dim} {self.meta.get('dtype')}, {who})"

    @classmethod
    def of(cls, store) -> "CodeStore":
        """``store`` itself when it already is a store (anything read through ``take`` / ``iter_chunks``), else
        the store opened at that path: what the library functions that take "a store or its folder" call."""
        return store if hasattr(store, "take") and hasattr(store, "iter_chunks") else cls.open(store)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "CodeStore":
        """Open and validate a store (format 2, or a format-1 store read-only)."""
        path = Path(path)
        meta_file = path / META
        if not meta_file.exists():
            hint = " (an interrupted run is there: embed again with --resume)" if (path / WORK).exists() else ""
            raise StoreError(f"{str(path)!r} is not a code store: meta.json is missing{hint}; create one with "
                             f"`embedkit embed IMAGES -o {path}`")
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StoreError(f"{str(meta_file)!r} is not valid JSON ({exc}); the store is damaged: re-embed") from exc
        if meta.get("format") == STORE_FORMAT:
            try:
                shards = json.loads((path / MANIFEST).read_text(encoding="utf-8"))["shards"]
            except (OSError, ValueError, KeyError) as exc:
                raise StoreError(f"store {str(path)!r} has no readable manifest.json ({exc}); re-embed") from exc
        elif (path / "codes.npy").exists():
            shards = [{"id": None, "rows": int(meta["count"]), "skipped": int(meta.get("skipped", 0))}]
        else:
            raise StoreError(f"{str(path)!r} holds neither shards nor codes.npy; it is not a code store")
        store = cls(path, meta, shards)
        n = sum(int(s["rows"]) for s in shards)
        if n != int(meta["count"]):
            raise StoreError(f"store {str(path)!r} is inconsistent: the manifest lists {n} rows, meta.json "
                             f"{meta['count']}; re-run `embedkit embed ... --resume` or re-embed")
        if store.version == 1 and store.codes.shape[0] != n:
            raise StoreError(f"store {str(path)!r} is inconsistent: {store.codes.shape[0]} code rows, meta count {n}")
        return store

    # ---- codes
    @cached_property
    def codes(self):
        """The N x D codes as one read-only array over the shards (memory-mapped; nothing read until used)."""
        from embedkit.store.array import ShardedArray

        if self.version == 1:
            files = [self.path / "codes.npy"]
        else:
            files = [shard_file(self.path, s["id"], "npy") for s in self.shards]
        return ShardedArray(files, [s["rows"] for s in self.shards], self.dim, self.meta["dtype"])

    def iter_chunks(self, rows: int = CHUNK_ROWS, start: int = 0, stop: int | None = None):
        """Yield ``(first_row, float32 array)`` blocks of at most ``rows`` codes, in row order."""
        yield from self.codes.iter_chunks(rows, start, stop)

    def take(self, indices) -> np.ndarray:
        """Codes of the given rows (float32, in the order given)."""
        return np.asarray(self.codes.take(indices), dtype=np.float32)

    def __len__(self) -> int:
        return int(self.meta["count"])

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.meta["dtype"])

    # ---- items
    @cached_property
    def items(self):
        """Every row's item columns as one Arrow table (path, label, width, height, bytes, sha1, extras)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.version == 1:
            rows = read_csv_rows(self.path / "items.csv")
            names = list(rows[0]) if rows else list(ITEM_FIELDS)
            cols = {}
            for k in names:
                if k == "path":
                    cols["path"], cols["path_bytes"] = text_array([r[k] for r in rows], exact_bytes=True)
                else:
                    cols[k] = text_array([r[k] for r in rows])
            return pa.table(cols)
        tables = [pq.read_table(shard_file(self.path, s["id"], "parquet")) for s in self.shards]
        return pa.concat_tables(tables, promote_options="default") if tables else pa.table({"path": pa.array([], pa.string())})

    @property
    def columns(self) -> list[str]:
        """Names of the item columns (path, label, width, height, bytes, sha1 and any extra manifest columns)."""
        return list(self.items.column_names)

    def column(self, name: str) -> np.ndarray:
        """One item column for every row, as a NumPy array (object dtype for text)."""
        if name not in self.columns:
            raise invalid("column", name, self.columns)
        return self.items.column(name).to_numpy(zero_copy_only=False)

    @cached_property
    def paths(self) -> np.ndarray:
        """Path of every row, exactly as on disk (object array, computed once)."""
        return np.array(exact_paths(self.items), dtype=object)

    @cached_property
    def labels(self) -> np.ndarray:
        """Label of every row (object array, "" when unlabelled; computed once)."""
        if "label" not in self.columns:
            return np.full(len(self), "", dtype=object)
        return np.array(["" if v is None else v for v in self.column("label")], dtype=object)

    def recorded_sha1(self, rows=None) -> np.ndarray:
        """The sha1 recorded at embed time for each row (``rows`` of them when given); "" where none was
        recorded (imported codes may have no sha1 column). Galleries inline a picture only when the file
        still has it."""
        n = len(self) if rows is None else len(np.asarray(rows))
        if "sha1" not in self.columns:
            return np.full(n, "", dtype=object)
        col = self.items.column("sha1")
        if rows is not None:  # only the rows asked for become Python strings (a million sha1s are ~100 MB)
            col = col.take(np.asarray(rows, dtype=np.int64))
        return np.array(["" if v is None else str(v) for v in col.to_pylist()], dtype=object)

    @property
    def skipped(self) -> list[dict]:
        """Files that could not be read, with the reason (``[{"path", "reason"}]``)."""
        if self.version == 1:
            return read_csv_rows(self.path / SKIPPED_CSV)
        import pyarrow.parquet as pq

        out = []
        for s in self.shards:
            if s["skipped"]:
                table = pq.read_table(shard_file(self.path, s["id"], "skipped.parquet"))
                out.extend({"path": p, "reason": r} for p, r in zip(exact_paths(table),
                                                                     table.column("reason").to_pylist()))
        return out

    # ---- identity and post-processing
    @property
    def identity(self) -> dict | None:
        """Backbone, layer, weights and preprocessing the codes were made with (None for imported codes)."""
        return self.meta.get("identity")

    def check_compatible(self, identity: dict | None, what: str = "these codes") -> None:
        """Raise :class:`MismatchError` when ``identity`` (of a model or index) is not this store's."""
        diffs = identity_mismatch(self.identity, identity)
        if diffs:
            raise MismatchError(f"{what} come from another backbone/layer than store {str(self.path)!r} "
                                f"({'; '.join(diffs)}); embed with the same backbone and layer")

    @cached_property
    def postprocess(self):
        """The store's :class:`~embedkit.store.postprocess.PostProcess` (L2 / PCA-whitening of raw codes)."""
        from embedkit.store.postprocess import PostProcess

        return PostProcess.load({"l2_normalize": self.meta.get("l2_normalize"), "pca_whiten": self.meta.get("pca_whiten")},
                                self.path)

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """Apply the store's post-processing (PCA-whitening, L2) to raw codes of new images, e.g. queries."""
        return self.postprocess.apply(raw)

    def backbone(self, device: str | None = "auto"):
        """Rebuild the backbone these codes were made with (to embed queries or new images)."""
        if self.identity is None:
            raise StoreError(f"store {str(self.path)!r} holds imported codes without a backbone identity: new images "
                             "cannot be embedded to match them; import them with identity=... or embed the images "
                             "with `embedkit embed`")
        from embedkit.models.backbone import Backbone

        return Backbone.from_identity(self.identity, device=device)

    # ---- summary
    def size_bytes(self) -> int:
        """Bytes on disk of every file of the store."""
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())

    def info(self) -> dict:
        """What ``embedkit store info`` prints."""
        ident = self.identity
        return {
            "path": str(self.path), "format": self.meta.get("format", "embedkit-store/1"), "count": len(self),
            "dim": self.dim, "dtype": str(self.dtype), "shards": len(self.shards),
            "skipped": int(self.meta.get("skipped", 0)),
            "backbone": ident.get("backbone") if ident else None, "layer": ident.get("layer") if ident else None,
            "weights": (ident.get("weights") or {}).get("identity") if ident else None,
            "l2_normalize": bool(self.meta.get("l2_normalize")), "pca_whiten": self.meta.get("pca_whiten"),
            "size_bytes": self.size_bytes(), "created": self.meta.get("created"),
        }

    @classmethod
    def from_arrays(cls, out, codes, paths, labels=None, identity: dict | None = None, **kwargs) -> "CodeStore":
        """Write a store from codes made elsewhere; see :func:`embedkit.store.writer.from_arrays`."""
        from embedkit.store.writer import from_arrays

        from_arrays(out, codes, paths, labels, identity, **kwargs)
        return cls.open(out)
