"""Checks of a store's own files before anything is read or allocated from them.

A store folder may come from anywhere (a colleague, a download, a damaged disk), so
nothing in it is trusted: ``meta.json`` must be a small regular JSON file of the
right shape, every shard id an integer (file names are made from it, so they stay
inside the store), every count finite and the counts must agree with each other
and, later, with the headers of the shard files (see
:class:`~embedkit.store.array.ShardedArray`). Anything else is refused with one
:class:`StoreError` line, never a traceback or a huge allocation.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from embedkit.errors import StoreError
from embedkit.store.layout import DTYPES, FORMATS, MAX_SHARD_ID

if TYPE_CHECKING:  # the annotation only: numpy is imported where the headers are read
    import numpy as np

MAX_JSON_BYTES = 64 << 20  # the shard list of ten million images is ~100 kB
MAX_DIM = 1 << 20
MAX_ROWS = 1 << 40


def damaged(path, what: str) -> StoreError:
    return StoreError(f"store {str(path)!r} is damaged: {what}; re-embed, or restore the store from a copy")


def regular_file(path: Path, store) -> os.stat_result:
    """``stat`` of ``path``, refused unless it is a regular file (a link to one is fine; /dev/zero, FIFOs are not)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise damaged(store, f"{path.name} is missing ({str(path)!r})") from None
    except OSError as exc:
        raise damaged(store, f"{str(path)!r} cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise damaged(store, f"{str(path)!r} is not a regular file")
    return st


def read_json(path: Path, store) -> object:
    """A small JSON file of the store, parsed (refused when not a regular file, too big or not JSON)."""
    if regular_file(path, store).st_size > MAX_JSON_BYTES:
        raise damaged(store, f"{path.name} is over {MAX_JSON_BYTES >> 20} MiB")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise damaged(store, f"{path.name} is not valid JSON ({exc})") from None


def npy_header(f) -> tuple[tuple, bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, data offset)`` of the ``.npy`` stream ``f``, from its header alone
    (NumPy's own parser, which refuses oversized headers); raises ValueError for anything else."""
    import numpy as np

    fmt = np.lib.format
    version = fmt.read_magic(f)
    shape, fortran, dtype = (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(f)
    return tuple(shape), bool(fortran), np.dtype(dtype), f.tell()


def _int(value, what: str, store, low: int = 0, high: int = MAX_ROWS) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise damaged(store, f"{what} is {value!r}, not an integer from {low} to {high}")
    return value


def check_meta(meta, store) -> int:
    """The store's format version (1, 2 or 3) after checking the fields every reader relies on."""
    if not isinstance(meta, dict):
        raise damaged(store, f"meta.json holds a {type(meta).__name__}, not an object")
    if meta.get("format") not in FORMATS:
        raise StoreError(f"store {str(store)!r} has format {meta.get('format')!r}, which this embedkit does not read "
                         f"(it reads {', '.join(str(f) for f in FORMATS if f)}); use a newer embedkit")
    _int(meta.get("dim"), "meta.json's dim", store, 1, MAX_DIM)
    _int(meta.get("count"), "meta.json's count", store)
    _int(meta.get("skipped", 0), "meta.json's skipped", store)
    if meta.get("dtype") not in DTYPES:
        raise damaged(store, f"meta.json's dtype is {meta.get('dtype')!r}, not one of {', '.join(DTYPES)}")
    return FORMATS[meta.get("format")]


def check_shards(shards, meta: dict, store, version: int) -> list[dict]:
    """The shard list (from meta.json or a format-2 manifest.json), checked against itself and the count."""
    where = "meta.json" if version == 3 else "manifest.json"
    if not isinstance(shards, list):
        raise damaged(store, f"{where}'s shards is {type(shards).__name__} {str(shards)[:40]!r}, not a list")
    out, seen = [], set()
    for k, s in enumerate(shards):
        if not isinstance(s, dict):
            raise damaged(store, f"{where}'s shard #{k} is {str(s)[:40]!r}, not an object")
        sid = s.get("id") if version == 1 else _int(s.get("id"), f"{where}'s shard #{k} id", store, 0, MAX_SHARD_ID)
        if sid in seen:
            raise damaged(store, f"{where} lists shard {sid} twice")
        seen.add(sid)
        out.append({"id": sid, "rows": _int(s.get("rows"), f"shard {sid}'s rows", store),
                    "skipped": _int(s.get("skipped", 0), f"shard {sid}'s skipped", store)})
    n = sum(s["rows"] for s in out)
    if n != meta["count"]:
        raise StoreError(f"store {str(store)!r} is inconsistent: {where} lists {n} rows, meta.json's count is "
                         f"{meta['count']}; re-run `embedkit embed ... --resume` or re-embed")
    return out


def check_parquet(path: Path, rows: int, columns: tuple, store, read: bool = False):
    """Refuse a shard table unless it is a regular Parquet file of ``rows`` rows with ``columns`` (its footer
    is read, not its data); with ``read``, return the table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    regular_file(path, store)
    try:
        with pq.ParquetFile(path) as f:
            names, n = f.schema_arrow.names, f.metadata.num_rows
            if [c for c in columns if c not in names] or n != rows:
                raise damaged(store, f"{str(path)!r} holds {n} rows with columns {names}, the shard list says "
                                     f"{rows} rows with {', '.join(columns)}")
            return f.read() if read else None
    except (pa.ArrowException, OSError) as exc:
        raise damaged(store, f"{str(path)!r} is not a readable Parquet file ({str(exc).splitlines()[0]})") from None
