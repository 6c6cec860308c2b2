"""A finished code store, read-only: one logical array of codes over shards, rows in step with items.

The layout is described in :mod:`embedkit.store.layout`. Codes are never loaded
whole: ``store.codes`` is a :class:`~embedkit.store.array.ShardedArray` (a memmap
per shard), read with ``iter_chunks`` / ``take`` / slicing. Items are an Arrow
table (``store.items``) and NumPy columns (``store.paths``, ``store.labels``,
``store.column(name)``), never per-row dicts. Every file is checked before it is
read (:mod:`embedkit.store.validate`). Stores of older formats (0.1's ``codes.npy`` +
``items.csv``, format 2's ``manifest.json``) open read-only; ``embedkit store upgrade``
converts them.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

import numpy as np

from embedkit.defaults import CHUNK_ROWS
from embedkit.errors import MismatchError, StoreError, invalid
from embedkit.models.identity import identity_mismatch
from embedkit.store.items import exact_paths, read_csv_rows, text_array
from embedkit.store.layout import ITEM_FIELDS, MANIFEST, META, SKIPPED_CSV, WORK, shard_file
from embedkit.store.validate import check_meta, check_parquet, check_shards, read_json

__all__ = ["CodeStore"]


class CodeStore:
    """A finished code store, opened read-only. Use :meth:`open` (or ``embedkit.CodeStore.from_arrays``)."""

    def __init__(self, path: Path, meta: dict, shards: list[dict], version: int):
        self.path = Path(path)
        self.meta = meta
        self.shards = shards  # [{"id", "rows", "skipped"}], in row order
        self.version = version  # 3 (current), 2 or 1 (older formats, read-only)

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
        """Open and validate a store (format 3; formats 2 and 1 read-only).

        ``meta.json`` is read once and holds the shard list: a store being appended to is seen either
        before or after the append, never between. Every shard's header is checked against that list.
        """
        path = Path(path)
        meta_file = path / META
        if not meta_file.exists():
            if (path / WORK).exists():
                raise StoreError(f"{str(path)!r} is not a code store yet: an interrupted run is there; embed again "
                                 "with --resume")
            from embedkit.store.folders import not_a_store

            raise StoreError(f"{str(path)!r} is not a code store: {not_a_store(path)}")
        meta = read_json(meta_file, path)
        version = check_meta(meta, path)
        if version == 3:
            shards = meta.get("shards")
        elif version == 2:
            manifest = read_json(path / MANIFEST, path)
            shards = manifest.get("shards") if isinstance(manifest, dict) else manifest
        elif (path / "codes.npy").exists():
            shards = [{"id": None, "rows": meta["count"], "skipped": meta.get("skipped", 0)}]
        else:
            raise StoreError(f"{str(path)!r} holds neither shards nor codes.npy; it is not a code store")
        store = cls(path, meta, check_shards(shards, meta, path, version), version)
        store._check_files()
        return store

    def _check_files(self) -> None:
        """Every shard file against the shard list (headers and footers only) and the whitening's shapes."""
        self.codes.check()
        if self.version > 1:
            for s in self._filled:
                check_parquet(self._file(s, "parquet"), s["rows"], ("path",), self.path)
            for s in self.shards:
                check_parquet(self._file(s, "skipped.parquet"), s["skipped"], ("path", "reason"), self.path)
        self.postprocess  # noqa: B018 - loads and checks pca.npz

    @property
    def _filled(self) -> list[dict]:
        """The shards with rows (a shard of only skipped files has no codes or items file)."""
        return [s for s in self.shards if s["rows"]]

    def _file(self, shard: dict, kind: str) -> Path:
        return shard_file(self.path, shard["id"], kind, self.version)

    # ---- codes
    @cached_property
    def codes(self):
        """The N x D codes as one read-only array over the shards (memory-mapped; nothing read until used)."""
        from embedkit.store.array import ShardedArray

        shards = self.shards if self.version == 1 else self._filled
        files = [self.path / "codes.npy"] if self.version == 1 else [self._file(s, "npy") for s in shards]
        return ShardedArray(files, [s["rows"] for s in shards], self.dim, self.meta["dtype"])

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

        if self.version == 1:
            rows = read_csv_rows(self.path / "items.csv")
            if len(rows) != len(self):
                raise StoreError(f"store {str(self.path)!r} is damaged: items.csv has {len(rows)} rows for "
                                 f"{len(self)} codes; re-embed, or restore the store from a copy")
            names = list(rows[0]) if rows else list(ITEM_FIELDS)
            cols = {}
            for k in names:
                if k == "path":
                    cols["path"], cols["path_bytes"] = text_array([r[k] for r in rows], exact_bytes=True)
                else:
                    cols[k] = text_array([r[k] for r in rows])
            return pa.table(cols)
        tables = [check_parquet(self._file(s, "parquet"), s["rows"], ("path",), self.path, read=True)
                  for s in self._filled]
        if not tables:
            return pa.table({"path": pa.array([], pa.string())})
        try:
            return pa.concat_tables(tables, promote_options="default")
        except pa.ArrowException as exc:
            raise StoreError(f"store {str(self.path)!r} is damaged: its item tables do not fit together "
                             f"({str(exc).splitlines()[0]}); re-embed, or restore the store from a copy") from None

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
        out = []
        for s in self.shards:
            if s["skipped"]:
                table = check_parquet(self._file(s, "skipped.parquet"), s["skipped"], ("path", "reason"), self.path,
                                      read=True)
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
                                self.path, dims=(int(self.meta.get("code_dim", self.dim)), self.dim))

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
