"""A finished code store, read-only: codes memory-mapped, rows in step with paths.

A store is a folder::

    codes.npy     N x D float32/float16, open with np.load(mmap_mode="r")
    items.csv     row -> path, label, width, height, bytes, sha1
    meta.json     backbone, layer, weights identity + hash, preprocessing, dtype, dim, count, version
    skipped.csv   files that could not be read, with the reason
    raw.npy, pca.npz   only with PCA-whitening: the raw codes and the fitted transform
"""

from __future__ import annotations

import csv
import json
import os
from functools import cached_property
from pathlib import Path

import numpy as np

from embedkit.defaults import CHUNK_ROWS
from embedkit.errors import MismatchError, StoreError
from embedkit.models.identity import identity_mismatch

ITEM_FIELDS = ("path", "label", "width", "height", "bytes", "sha1")





DTYPES = ("float32", "float16")


def read_csv_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


class CodeStore:
    """A finished code store, opened read-only. Use :meth:`open`."""

    def __init__(self, path: Path, meta: dict, items: list[dict]):
        self.path = Path(path)
        self.meta = meta
        self.items = items
        self._codes = None

    @classmethod
    def open(cls, path: str | os.PathLike) -> "CodeStore":
        """Open and validate a store written by :func:`embed`."""
        path = Path(path)
        meta_file = path / "meta.json"
        if not meta_file.exists():
            hint = " (an interrupted run is there: embed again with --resume)" if (path / ".work").exists() else ""
            raise StoreError(f"{str(path)!r} is not a code store: meta.json is missing{hint}; create one with `embedkit embed IMAGES -o {path}`")
        with open(meta_file, encoding="utf-8") as f:
            meta = json.load(f)
        items = read_csv_rows(path / "items.csv")
        store = cls(path, meta, items)
        n = store.codes.shape[0]
        if not (n == len(items) == int(meta["count"])):
            raise StoreError(f"store {str(path)!r} is inconsistent: {n} code rows, {len(items)} items, meta count "
                             f"{meta['count']}; re-run `embedkit embed ... --resume` or re-embed")
        return store

    @property
    def codes(self) -> np.ndarray:
        """The N x D codes, memory-mapped (nothing is read until used)."""
        if self._codes is None:
            self._codes = np.load(self.path / "codes.npy", mmap_mode="r")
        return self._codes

    def __len__(self) -> int:
        return len(self.items)

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @cached_property
    def paths(self) -> np.ndarray:
        """Path of every row (object array, computed once)."""
        return np.array([it["path"] for it in self.items], dtype=object)

    @cached_property
    def labels(self) -> np.ndarray:
        """Label of every row (object array, "" when unlabelled; computed once)."""
        return np.array([it["label"] for it in self.items], dtype=object)

    @property
    def columns(self) -> list[str]:
        """Names of the item columns (path, label, width, height, bytes, sha1 and any extra manifest columns)."""
        return list(self.items[0]) if self.items else list(ITEM_FIELDS)

    def column(self, name: str) -> np.ndarray:
        """One item column for every row, as a NumPy array (object dtype for text)."""
        if name not in self.columns:
            from embedkit.errors import invalid

            raise invalid("column", name, self.columns)
        return np.array([it[name] for it in self.items], dtype=object)

    def iter_chunks(self, rows: int = CHUNK_ROWS, start: int = 0, stop: int | None = None):
        """Yield ``(first_row, float32 array)`` blocks of at most ``rows`` codes, in row order."""
        stop = len(self) if stop is None else min(stop, len(self))
        for i in range(start, stop, rows):
            yield i, np.asarray(self.codes[i:min(i + rows, stop)], dtype=np.float32)

    def take(self, indices) -> np.ndarray:
        """Codes of the given rows (float32, in the order given)."""
        idx = np.asarray(indices, dtype=np.int64)
        return np.asarray(self.codes[idx], dtype=np.float32)

    @property
    def identity(self) -> dict:
        return self.meta["identity"]

    @property
    def skipped(self) -> list[dict]:
        return read_csv_rows(self.path / "skipped.csv")

    def check_compatible(self, identity: dict, what: str = "these codes") -> None:
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
        """Rebuild the backbone these codes were made with."""
        from embedkit.models.backbone import Backbone

        return Backbone.from_identity(self.identity, device=device)
