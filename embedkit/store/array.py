"""One logical N x D array over the code shards of a store, read without loading it all.

Rows are read two ways, and neither keeps pages of the store mapped afterwards:

- contiguous rows (``store.codes[i:j]``, ``iter_chunks``, ``np.asarray``) are read with
  plain file reads into an ordinary buffer. A memmap would do the same work, but every
  page it touched would stay mapped (and counted in the process' RSS) for as long as the
  memmap lives, so one pass over a million rows would end up "holding" the whole store;
- scattered rows (``take``, fancy indexing) go through a memmap of each shard that is
  opened for that call and dropped at its end (only the pages of the rows asked for are read).

The page cache still keeps recently read shards, so a second pass is as fast as before.
"""

from __future__ import annotations

import os
import stat

import numpy as np

from embedkit.defaults import CHUNK_ROWS
from embedkit.store.validate import npy_header


class ShardedArray:
    """Read-only rows of several ``.npy`` files (same dim and dtype), in order, as one array."""

    def __init__(self, files, rows, dim: int, dtype):
        self.files = list(files)
        self.offsets = np.concatenate([[0], np.cumsum(np.asarray(rows, dtype=np.int64))]).astype(np.int64)
        self.dtype = np.dtype(dtype)
        self.shape = (int(self.offsets[-1]), int(dim))
        self._headers: dict[int, tuple[int, np.dtype, bool]] = {}  # shard -> (data offset, dtype, fortran order)

    def __repr__(self) -> str:
        return f"ShardedArray(shape={self.shape}, dtype={self.dtype}, shards={len(self.files)})"

    ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    def _expected(self, k: int) -> tuple[int, int]:
        return int(self.offsets[k + 1] - self.offsets[k]), self.shape[1]

    def _damaged(self, k: int, what) -> Exception:
        from embedkit.errors import StoreError

        if not isinstance(what, str):
            what = f"holds {tuple(what)} codes, the shard list says {self._expected(k)}"
        return StoreError(f"shard {self.files[k]} {what}; the store is damaged: re-embed or restore the shard")

    def _header(self, k: int) -> tuple[int, np.dtype, bool]:
        """Where shard ``k``'s data starts, its dtype and order (read once; a few hundred bytes).

        Checked before any row is read or any buffer allocated: a regular file, the store's dtype, the
        shape the shard list gives, and exactly the bytes that shape needs (a crafted header or a
        ``/dev/zero`` shard is refused here, not read).
        """
        h = self._headers.get(k)
        if h is None:
            try:
                st = os.stat(self.files[k])
                if not stat.S_ISREG(st.st_mode):
                    raise self._damaged(k, "is not a regular file")
                with open(self.files[k], "rb") as f:
                    shape, fortran, dtype, offset = npy_header(f)
            except FileNotFoundError:
                raise self._damaged(k, "is missing") from None
            except (OSError, ValueError, TypeError) as exc:
                raise self._damaged(k, f"is not a NumPy array file ({exc})") from None
            rows, dim = self._expected(k)
            if shape != (rows, dim):
                raise self._damaged(k, shape)
            if dtype != self.dtype:
                raise self._damaged(k, f"holds {dtype} values, the store's dtype is {self.dtype}")
            if st.st_size != offset + rows * dim * dtype.itemsize:
                raise self._damaged(k, f"has {st.st_size} bytes, not the {(rows, dim)} codes its header says")
            h = self._headers[k] = (offset, dtype, fortran)
        return h

    def check(self) -> "ShardedArray":
        """Check every shard's header against the shard list (cheap: one small read per shard)."""
        for k in range(len(self.files)):
            self._header(k)
        return self

    def shard(self, k: int) -> np.ndarray:
        """A read-only memmap of shard ``k``, opened for the caller (drop it to unmap its pages)."""
        self._header(k)
        m = np.load(self.files[k], mmap_mode="r")
        if m.shape != self._expected(k):
            raise self._damaged(k, m.shape)
        return m

    def _read_into(self, k: int, lo: int, hi: int, out: np.ndarray) -> None:
        """Rows ``lo:hi`` of shard ``k`` into ``out`` (C-contiguous, ``hi - lo`` rows) by plain reads."""
        offset, dtype, fortran = self._header(k)
        if fortran:  # never written by embedkit; read through a short-lived memmap rather than by offset
            out[:] = self.shard(k)[lo:hi]
            return
        buf = out if dtype == out.dtype else np.empty(out.shape, dtype)
        view = memoryview(buf.reshape(-1).view(np.uint8))
        with open(self.files[k], "rb", buffering=0) as f:
            f.seek(offset + lo * self.shape[1] * dtype.itemsize)
            got = 0
            while got < len(view):
                n = f.readinto(view[got:])
                if not n:
                    raise self._damaged(k, f"is truncated at row {lo + got // (self.shape[1] * dtype.itemsize)}")
                got += n
        if buf is not out:
            out[:] = buf

    def _rows(self, start: int, stop: int, dtype=None) -> np.ndarray:
        out = np.empty((max(0, stop - start), self.shape[1]), self.dtype)
        if stop <= start:
            return out if dtype is None else out.astype(dtype)
        k = int(np.searchsorted(self.offsets, start, side="right") - 1)
        pos = start
        while pos < stop:
            lo, hi = int(self.offsets[k]), int(self.offsets[k + 1])
            take = min(stop, hi)
            self._read_into(k, pos - lo, take - lo, out[pos - start:take - start])
            pos = take
            k += 1
        return out if dtype is None or out.dtype == np.dtype(dtype) else out.astype(dtype)

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
                m = self.shard(k)  # this call's memmap: unmapped when it goes out of scope
                out[group] = m[idx[group] - self.offsets[k]]
                del m
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
        return self._rows(0, self.shape[0], dtype)

    def astype(self, dtype) -> np.ndarray:
        """Every row in memory as ``dtype`` (a copy, like NumPy's)."""
        return self._rows(0, self.shape[0]).astype(dtype)

    def iter_chunks(self, rows: int = CHUNK_ROWS, start: int = 0, stop: int | None = None, dtype=np.float32):
        """Yield ``(first_row, block)`` of at most ``rows`` rows each, in order (bounded memory, nothing left mapped)."""
        stop = self.shape[0] if stop is None else min(stop, self.shape[0])
        for i in range(start, stop, rows):
            yield i, self._rows(i, min(i + rows, stop), dtype)
