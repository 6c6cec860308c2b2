"""The one input check for arrays of codes, used by every stage (classify, retrieve, view, store import).

Codes may be a NumPy array, a memmap or a store's sharded array: the check reads
them in chunks, so a million rows never need to be in memory at once.
"""

from __future__ import annotations

import numpy as np

from embedkit.defaults import CHUNK_ROWS
from embedkit.errors import DataError


def check_codes(X, what: str = "codes", dim: int | None = None, *, allow_empty: bool = False,
                copy: bool = True, chunk: int = CHUNK_ROWS) -> np.ndarray:
    """Validate codes: numeric, 2-D, non-empty, ``dim`` columns when given, finite; raise :class:`DataError`.

    Returns float32 codes in memory (``copy=True``) or, with ``copy=False``, ``X`` itself after a
    chunked check (for memory-mapped or sharded codes that should stay on disk).
    A 1-D array is not taken for one item: the message says how to reshape it.
    """
    if not hasattr(X, "shape") or not hasattr(X, "dtype"):
        try:
            X = np.asarray(X)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{what} cannot be read as a numeric array: {exc}") from exc
    dtype = np.dtype(X.dtype)
    if dtype == object or not np.issubdtype(dtype, np.number):
        raise DataError(f"{what} must be numeric, got dtype {dtype}")
    if len(X.shape) != 2:
        raise DataError(f"{what} must be a 2-D array (items x dims), got shape {tuple(X.shape)}; "
                        "reshape a single item with X.reshape(1, -1)")
    n, d = X.shape
    if n == 0 and not allow_empty:
        raise DataError(f"{what} hold no items (shape {tuple(X.shape)}); embed some images first")
    if d == 0:
        raise DataError(f"{what} have 0 features (shape {tuple(X.shape)})")
    if dim is not None and d != dim:
        raise DataError(f"{what} have {d} dims but {dim} were expected; use codes from the same backbone and layer")
    out = np.empty((n, d), np.float32) if copy else None
    bad, first = 0, []
    for i in range(0, n, chunk):
        block = np.asarray(X[i:i + chunk], dtype=np.float32)
        rows = np.flatnonzero(~np.isfinite(block).all(axis=1))
        if len(rows):
            bad += len(rows)
            first.extend((rows[:max(0, 5 - len(first))] + i).tolist())
        if out is not None:
            out[i:i + len(block)] = block
    if bad:
        raise DataError(f"{what} contain NaN or infinity in {bad} of {n} rows (first: {first}); re-embed those "
                        "images or drop the rows")
    return out if out is not None else X
