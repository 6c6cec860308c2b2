"""One logical N x D array over the code shards of a store, read without loading it all.

Each shard is a ``.npy`` file opened as a read-only memmap on first use, so
``store.codes[i:j]``, ``store.codes[indices]`` and ``iter_chunks`` touch only the
shards that hold the rows asked for. ``np.asarray(store.codes)`` still works (it
copies every row into memory: the caller asked for it).
"""

from __future__ import annotations

import numpy as np

from embedkit.defaults import CHUNK_ROWS


class ShardedArray:
    """Read-only rows of several ``.npy`` files (same dim and dtype), in order, as one array."""

    def __init__(self, files, rows, dim: int, dtype):
        self.files = list(files)
        self.offsets = np.concatenate([[0], np.cumsum(np.asarray(rows, dtype=np.int64))]).astype(np.int64)
        self.dtype = np.dtype(dtype)
        self.shape = (int(self.offsets[-1]), int(dim))
        self._maps: dict[int, np.ndarray] = {}

    def __repr__(self) -> str:
        return f"ShardedArray(shape={self.shape}, dtype={self.dtype}, shards={len(self.files)})"

    ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    def shard(self, k: int) -> np.ndarray:
        """The memmap of shard ``k`` (opened once)."""
        m = self._maps.get(k)
        if m is None:
            m = np.load(self.files[k], mmap_mode="r")
            expected = (int(self.offsets[k + 1] - self.offsets[k]), self.shape[1])
            if m.shape != expected:
                from embedkit.errors import StoreError

                raise StoreError(f"shard {self.files[k]} holds {m.shape} codes, the manifest says {expected}; "
                                 "the store is damaged: re-embed or restore the shard")
            self._maps[k] = m
        return m

    def _rows(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((max(0, stop - start), self.shape[1]), self.dtype)
        if stop <= start:
            return out
        k = int(np.searchsorted(self.offsets, start, side="right") - 1)
        pos = start
        while pos < stop:
            lo, hi = int(self.offsets[k]), int(self.offsets[k + 1])
            take = min(stop, hi)
            out[pos - start:take - start] = self.shard(k)[pos - lo:take - lo]
            pos = take
            k += 1
        return out

    def take(self, indices) -> np.ndarray:
        """Rows at ``indices`` (any order, repeats allowed), read shard by shard."""
        idx = np.asarray(indices, dtype=np.int64).ravel()
        n = self.shape[0]
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        idx = np.where(idx < 0, idx + n, idx)
        out = np.empty((len(idx), self.shape[1]), self.dtype)
        shard_of = np.searchsorted(self.offsets, idx, side="right") - 1
        order = np.argsort(shard_of, kind="stable")
        bounds = np.flatnonzero(np.diff(shard_of[order])) + 1
        for group in np.split(order, bounds):
            if len(group):
                k = int(shard_of[group[0]])
                out[group] = self.shard(k)[idx[group] - self.offsets[k]]
        return out

    def __getitem__(self, key):
        if isinstance(key, tuple):
            rows, cols = key[0], key[1:]
            return self[rows][(slice(None), *cols)] if not isinstance(rows, (int, np.integer)) else self[rows][cols]
        if isinstance(key, (int, np.integer)):
            i = int(key) + (self.shape[0] if key < 0 else 0)
            if not 0 <= i < self.shape[0]:
                raise IndexError(f"row {key} out of range for {self.shape[0]} rows")
            return self._rows(i, i + 1)[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            if step == 1:
                return self._rows(start, stop)
            return self.take(np.arange(start, stop, step))
        key = np.asarray(key)
        if key.dtype == bool:
            return self.take(np.flatnonzero(key))
        return self.take(key)

    def __array__(self, dtype=None, copy=None):
        out = self._rows(0, self.shape[0])
        return out.astype(dtype) if dtype is not None else out

    def astype(self, dtype) -> np.ndarray:
        """Every row in memory as ``dtype`` (a copy, like NumPy's)."""
        return self._rows(0, self.shape[0]).astype(dtype)

    def iter_chunks(self, rows: int = CHUNK_ROWS, start: int = 0, stop: int | None = None, dtype=np.float32):
        """Yield ``(first_row, block)`` of at most ``rows`` rows each, in order (bounded memory)."""
        stop = self.shape[0] if stop is None else min(stop, self.shape[0])
        for i in range(start, stop, rows):
            yield i, np.asarray(self._rows(i, min(i + rows, stop)), dtype=dtype)
