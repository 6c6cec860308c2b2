"""Atomic file writes: write a temporary file beside the target, flush it to disk, then rename.

A reader (or a resumed run) never sees half a file: either the old one or the new one.
Every artifact embedkit writes goes through here.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import logging
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

from embedkit.errors import DiskFullError

log = logging.getLogger(__name__)

#: Free space below which a failed write is taken for a full disk: libraries that write through C
#: (torch.save, faiss.write_index, NumPy's short writes) often lose the errno on the way.
FULL_BELOW_BYTES = 1 << 20


def _free_bytes(path: Path) -> int | None:
    for p in (path, *path.parents):
        try:
            return shutil.disk_usage(p).free
        except OSError:
            continue
    return None


def _full_errno(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def as_disk_full(exc: BaseException, where: Path) -> DiskFullError | None:
    """``exc`` (raised while writing below folder ``where``) as a :class:`DiskFullError`, or None if it is not one.

    A full disk shows as ENOSPC/EDQUOT, as a short write without errno (NumPy's ``40960 requested and
    14304 written``), or as a library's RuntimeError (torch's "file write failed", faiss's fwrite check):
    then the free space, measured before the partial file is removed, tells.
    """
    if isinstance(exc, DiskFullError):
        return exc
    vague = isinstance(exc, RuntimeError) or (isinstance(exc, OSError) and exc.errno is None)  # no errno to tell
    short = vague and "requested and" in str(exc)
    free = _free_bytes(where)
    if not (_full_errno(exc) or short or (vague and free is not None and free < FULL_BELOW_BYTES)):
        return None
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    left = f"{free:,} bytes left" if free is not None else "space unknown"
    return DiskFullError(errno.ENOSPC, f"no space left on the device holding {str(where)!r} ({left}; the write "
                                       f"failed with: {detail}); free space on that device (`df -h {where}` shows "
                                       "it); what was written before is intact")


@contextmanager
def disk_full_errors(where: str | os.PathLike):
    """Turn a write failing for lack of space below ``where`` into one :class:`DiskFullError`; others pass."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        full = as_disk_full(exc, Path(where))
        if full is None or full is exc:
            raise
        raise full from exc


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
        with disk_full_errors(path.parent):
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


@contextmanager
def atomic_folder(path: str | os.PathLike):
    """Yield a temporary sibling folder; on success it replaces folder ``path`` (the old one is removed after).

    A reader sees the old folder or the new one, never a half-written one; a full disk is a :class:`DiskFullError`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        with disk_full_errors(path.parent):
            yield tmp
            if path.exists():
                os.replace(path, old)
            os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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


#: names of the temporary files and folders written here: ``.NAME.PID.tmp[.EXT]``, ``.NAME.tmp-PID``, ``.NAME.old-PID``
TEMP_NAME = re.compile(r"^\..+\.(?:(\d+)\.tmp(?:\.\w+)?|(?:tmp|old)-(\d+))$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process (or a pid no process can have)
        return True
    return True


def sweep_temp(folder: str | os.PathLike, depth: int = 2) -> int:
    """Remove the temporary files and folders that killed writers left in ``folder`` (and ``depth`` levels of
    sub-folders): those whose writer's pid is no longer running. Returns how many were removed.

    Called when a run takes a folder's lock; a live writer's temporary file (its pid runs) is left alone.
    """
    removed, level = 0, [Path(folder)]
    for _ in range(depth + 1):
        below = []
        for d in level:
            try:
                entries = list(os.scandir(d))
            except OSError:
                continue
            for e in entries:
                m = TEMP_NAME.match(e.name)
                if m and not _pid_alive(int(m.group(1) or m.group(2))):
                    if e.is_dir(follow_symlinks=False):
                        shutil.rmtree(e.path, ignore_errors=True)
                    else:
                        Path(e.path).unlink(missing_ok=True)
                    removed += 1
                elif e.is_dir(follow_symlinks=False):
                    below.append(Path(e.path))
        level = below
    if removed:
        log.info("removed %d temporary file(s) left in %s by killed runs", removed, folder)
    return removed
