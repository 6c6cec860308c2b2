"""The items table of a code store: one row per code (path, label, width, height, bytes, sha1, extras).

Arrow strings must be UTF-8, and a file name must never be lost or changed: names that are not
valid UTF-8 are shown with U+FFFD and kept byte for byte in a ``path_bytes`` column. The writer
builds these tables and the reader reads them back through the same functions, so the
store's two halves import this module and not each other.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path


def read_csv_rows(path: Path) -> list[dict]:
    """Rows of a CSV file as dicts ([] when it does not exist)."""
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        return list(csv.DictReader(f))


def _utf8(s) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def text_array(values, exact_bytes: bool = False):
    """Strings as an Arrow array; names that are not valid UTF-8 (surrogate-escaped bytes) are shown with
    U+FFFD. With ``exact_bytes``, also a binary array holding such names byte for byte (null elsewhere)."""
    import pyarrow as pa

    values = ["" if v is None else str(v) for v in values]
    utf8 = [_utf8(v) for v in values]
    if all(utf8):
        return (pa.array(values, pa.string()), pa.nulls(len(values), pa.binary())) if exact_bytes \
            else pa.array(values, pa.string())
    shown = [v if ok else v.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for v, ok in zip(values, utf8)]
    if not exact_bytes:
        return pa.array(shown, pa.string())
    raw = [None if ok else os.fsencode(v) for v, ok in zip(values, utf8)]
    return pa.array(shown, pa.string()), pa.array(raw, pa.binary())


def items_table(columns: dict):
    """An Arrow table of item columns: path and label as strings, width/height/bytes as int64, sha1 as string.

    A ``path_bytes`` column keeps file names that are not valid UTF-8 exactly (null for every other row):
    Arrow strings must be UTF-8, and a name must never be lost or changed. Read paths back with
    :func:`exact_paths`.
    """
    import pyarrow as pa

    types = {"width": pa.int64(), "height": pa.int64(), "bytes": pa.int64()}
    arrays, names = [], []
    for name, values in columns.items():
        if isinstance(values, (pa.Array, pa.ChunkedArray)):
            arrays.append(values)
        elif name == "path":
            shown, raw = text_array(values, exact_bytes=True)
            arrays += [shown, raw]
            names.append("path")
            name = "path_bytes"
        elif name in types:
            arrays.append(pa.array(values, type=types[name]))
        elif name in ("label", "sha1", "reason", "skip") or (len(values) and isinstance(values[0], str)):
            arrays.append(text_array(values))
        else:
            arrays.append(pa.array(values))
        names.append(name)
    return pa.table(arrays, names=names)


def exact_paths(table) -> list:
    """The ``path`` column of an items table with every name exactly as on disk (see :func:`items_table`)."""
    paths = table.column("path").to_pylist()
    if "path_bytes" in table.column_names:
        raw = table.column("path_bytes")
        if raw.null_count < len(raw):
            paths = [p if b is None else os.fsdecode(b) for p, b in zip(paths, raw.to_pylist())]
    return paths


def skipped_table(rows):
    """``[(path, reason)]`` as an Arrow table."""
    rows = list(rows)
    return items_table({"path": [r[0] for r in rows], "reason": [r[1] for r in rows]})
