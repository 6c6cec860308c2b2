"""One read interface over the codes an index is built from: an in-memory array, a memmap, or a code store.

Backends read codes only through :class:`CodeSource` (``iter_chunks`` / ``take``),
so a store of a million rows is never loaded whole: the store's own
``iter_chunks``/``take`` decide how rows come off disk (memmap today, shards in
the v2 store). The source also looks like a read-only 2-D array (``shape``,
``dtype``, slicing), which lets :func:`embedkit.checks.check_codes` validate a
store in chunks with row numbers that are the store's.
"""

from __future__ import annotations

import numpy as np

from embedkit.checks import check_codes
from embedkit.defaults import CHUNK_ROWS


def is_store(obj) -> bool:
    """Duck test for a :class:`~embedkit.store.codestore.CodeStore` (what the index needs of one, nothing more)."""
    return all(hasattr(obj, a) for a in ("iter_chunks", "take", "dim", "path")) and not isinstance(obj, np.ndarray)


class CodeSource:
    """Codes to index, read in row chunks; wraps an array-like or a store."""

    def __init__(self, codes, store=None):
        self._codes = codes
        self.store = store
        # an array's shape is kept as given (a 3-D array is reported by check(), not here)
        self.shape = (len(store), int(store.dim)) if store is not None else tuple(int(s) for s in codes.shape)
        self.dtype = np.dtype(np.float32) if store is not None else np.dtype(codes.dtype)
        self.ndim = len(self.shape)

    @classmethod
    def of(cls, X) -> "CodeSource":
        """A source over ``X``: a store, a CodeSource, or anything ``np.asarray`` takes (memmaps stay on disk)."""
        if isinstance(X, CodeSource):
            return X
        if is_store(X):
            return cls(None, store=X)
        if not hasattr(X, "shape") or not hasattr(X, "dtype"):
            X = np.asarray(X)
        return cls(X)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        # only what check_codes and the backends use: row slices and integer row arrays
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            if step != 1:
                return self.take(np.arange(start, stop, step))
            if self.store is None:
                return self._codes[start:stop]
            return next(self.store.iter_chunks(rows=max(1, stop - start), start=start, stop=stop),
                        (start, np.zeros((0, self.shape[1]), np.float32)))[1]
        return self.take(key)

    def iter_chunks(self, rows: int = CHUNK_ROWS, start: int = 0, stop: int | None = None):
        """Yield ``(first_row, float32 block)`` of at most ``rows`` rows, in order."""
        if self.store is not None:
            yield from self.store.iter_chunks(rows=rows, start=start, stop=stop)
            return
        stop = self.shape[0] if stop is None else min(stop, self.shape[0])
        for i in range(start, stop, rows):
            yield i, np.asarray(self._codes[i:min(i + rows, stop)], dtype=np.float32)

    def take(self, rows) -> np.ndarray:
        """float32 codes of ``rows`` (sorted rows read a memmap in order; callers sort samples)."""
        if self.store is not None:
            return np.asarray(self.store.take(np.asarray(rows, dtype=np.int64)), dtype=np.float32)
        return np.asarray(self._codes[np.asarray(rows, dtype=np.int64)], dtype=np.float32)

    def check(self, what: str = "codes", chunk: int = CHUNK_ROWS) -> None:
        """The shared check (numeric, 2-D, non-empty, finite), chunk by chunk, without a copy."""
        check_codes(self if self.store is not None else self._codes, what, copy=False, chunk=chunk)
