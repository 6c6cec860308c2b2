"""Atomic file writes: write a temporary file beside the target, flush it to disk, then rename.

A reader (or a resumed run) never sees half a file: either the old one or the new one.
Every artifact embedkit writes goes through here.
"""

from __future__ import annotations

import csv
import io
import json
import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp"):
    """Yield a temporary path next to ``path``; on success it is fsynced and renamed onto ``path``.

    ``suffix`` lets writers that pick a format from the file name (matplotlib) see the right one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the pid keeps two writers of the same file (a retried Ray task and its zombie) off each other's temp file
    tmp = path.with_name(f".{path.name}.{os.getpid()}{suffix}")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    # surrogateescape: file names that are not valid UTF-8 are written back byte for byte
    return write_bytes_atomic(path, text.encode("utf-8", "surrogateescape"))


def write_json_atomic(path: str | os.PathLike, obj) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, default=str))


#: the one way every CSV embedkit writes spells a real number: 6 significant digits, no quote, no padding
NUMBER_FORMAT = ".6g"


def csv_cell(value, spreadsheet: bool = False):
    """One CSV cell: numbers (Python or NumPy) as numbers in :data:`NUMBER_FORMAT`, text escaped when
    ``spreadsheet`` (a negative score stays ``-0.5``: escaping is for text cells only)."""
    import numbers

    if isinstance(value, bool) or value is None:
        return "" if value is None else value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return format(float(value) + 0.0, NUMBER_FORMAT)  # + 0.0: no "-0"
    return spreadsheet_safe(value) if spreadsheet else value


def write_csv_atomic(path: str | os.PathLike, header, rows, spreadsheet: bool = False) -> Path:
    """A CSV file, atomically, numbers in one format (:func:`csv_cell`). ``spreadsheet=True`` for files meant
    for people: no text cell starts a formula."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows([csv_cell(c, spreadsheet) for c in r] for r in rows)
    return write_text_atomic(path, buf.getvalue())


def torch_save_atomic(obj, path: str | os.PathLike) -> Path:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value):
    """A cell value that a spreadsheet will not run as a formula (OWASP: prefix a quote).

    Applied to files meant for people (skipped.csv, failures, predictions, neighbours); numbers pass unchanged.
    """
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value
