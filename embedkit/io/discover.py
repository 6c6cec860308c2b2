"""Which images a job reads: a folder, a list file, a CSV manifest or a list of paths."""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from embedkit.errors import ConfigError, DataError

log = logging.getLogger(__name__)

NOT_IMAGE = "not an image extension"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".svg")
FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
              (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words, from its ``st_mode`` (for skip reasons and errors)."""
    return next((name for test, name in FILE_KINDS if test(mode)), "not a regular file")


def not_regular(mode: int) -> str:
    """The skip reason of a file that is not a regular file ("" for a regular file)."""
    return "" if stat.S_ISREG(mode) else f"not a regular file ({file_kind(mode)})"


@dataclass(frozen=True)
class Item:
    """One image to read: its path and optional label."""

    path: str
    label: str = ""
    skip: str = ""  # a reason not to read it at all (e.g. "not an image extension"); listed in skipped
    sha1: str = ""  # the content hash recorded for it (a store's row): read only if the file still has it


def discover(source: str | os.PathLike | Sequence, labels: bool = True) -> list[Item]:
    """List the images of ``source`` (see :func:`iter_items`); an empty folder is a :class:`DataError`."""
    items = list(iter_items(source, labels))
    if not items and not isinstance(source, (list, tuple)) and Path(source).is_dir():
        raise DataError(f"folder {str(source)!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return items


def iter_items(source: str | os.PathLike | Sequence, labels: bool = True, others: bool = False) -> Iterator[Item]:
    """Yield the images of ``source``, streaming (a folder of millions of files is never listed at once).

    - a folder: every image file below it (recursively, in sorted order); the label is the
      first-level sub-folder when the file is inside one, "" for loose files at the top;
      hidden files and folders (``.git``, ``.ipynb_checkpoints``) are skipped; each directory is
      visited once (by device and inode), so symlink loops end; a link is recorded under its own path;
    - a ``.csv`` manifest with a ``path`` column (optionally ``label``), or
      headerless ``path[,label]`` rows; relative paths are taken from the CSV's folder;
    - any other text file: one path per line;
    - a single image file, or a list of paths.

    ``others=True`` also yields the folder's other (non-hidden) files, with ``skip="not an image extension"``,
    so that a job can list what it left out instead of ignoring it silently.
    """
    if isinstance(source, (list, tuple)):
        yield from (Item(_abs(p)) for p in source)
        return
    src = Path(source)
    if not src.exists():
        raise ConfigError(f"input {str(src)!r} does not exist; give a folder of images, a .csv manifest or a list file")
    if src.is_dir():
        yield from _walk(src, labels, others)
    elif src.suffix.lower() in IMAGE_EXTENSIONS:
        yield Item(_abs(src))
    elif src.suffix.lower() == ".csv":
        yield from _read_manifest(src)
    else:
        yield from _read_list(src)


def _abs(p) -> str:
    """An absolute path; URIs (``s3://``, ``gs://``, ``file://``) are kept as they are, for fsspec."""
    s = os.fspath(p)
    if is_uri(s):
        return s
    # abspath, not resolve(): a link keeps its own path (and resolve() raises on link loops)
    return os.path.abspath(s)


def is_uri(path: str) -> bool:
    """True for ``scheme://...`` names that fsspec opens (a filesystem other than the local one)."""
    head, sep, _ = path.partition("://")
    return bool(sep) and head.isascii() and head.replace("+", "").isalnum() and len(head) > 1


def _walk(root: Path, labels: bool, others: bool = False) -> Iterator[Item]:
    """Sorted, loop-safe recursive listing of image files below ``root``."""
    seen: set[tuple[int, int]] = set()
    root_abs = _abs(root)
    stack = [root_abs]
    while stack:
        d = stack.pop()
        try:
            st = os.stat(d)
        except OSError:
            continue  # a dangling or looping directory link
        if (st.st_dev, st.st_ino) in seen:
            continue  # already visited through another link: each directory once
        seen.add((st.st_dev, st.st_ino))
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for e in entries:
            if e.name.startswith("."):
                continue
            try:
                is_dir = e.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                subdirs.append(e.path)
            elif e.name.lower().endswith(IMAGE_EXTENSIONS) or others:
                rel = os.path.relpath(e.path, root_abs).split(os.sep)
                skip = _special(e) or ("" if e.name.lower().endswith(IMAGE_EXTENSIONS) else NOT_IMAGE)
                yield Item(e.path, label_of(rel[0]) if (labels and len(rel) > 1) else "", skip)
        stack.extend(reversed(subdirs))  # depth-first, in sorted order


def label_of(folder_name: str) -> str:
    """The class label of a sub-folder: its name, with bytes that are not UTF-8 written as ``\\xfe``.

    Shown as U+FFFD instead, ``lab\\xfe`` and ``lab\\xff`` would become one class; this way each stays its own,
    readable, in every file the label is written to.
    """
    try:
        folder_name.encode("utf-8")
        return folder_name
    except UnicodeEncodeError:
        return folder_name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _special(e: os.DirEntry) -> str:
    """The skip reason of an entry that is not a regular file (a FIFO, a link to a device...), else "".

    Free for ordinary files (the directory entry's type); a dangling link is left to the reader, which
    lists it as "file not found". The reader checks again on the open file (the entry may change).
    """
    try:
        if e.is_file(follow_symlinks=True):
            return ""
        return not_regular(e.stat(follow_symlinks=True).st_mode)
    except OSError:
        return ""


def _read_list(src: Path) -> Iterator[Item]:
    base = src.parent
    try:
        with open(src, encoding="utf-8", errors="strict") as f:
            for line in f:
                if line.strip() and not line.startswith("#"):
                    yield Item(_abs(base / line.strip()))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"input {str(src)!r} is neither an image, a folder, a .csv manifest nor a text list of "
                          f"paths (it is not UTF-8 text: {exc.reason} at byte {exc.start})") from exc


#: names a manifest's header may use for its columns; a first row holding one of them is a header
HEADER_NAMES = {"path", "label", "file", "filename", "image", "class", "split", "url", "uri"}


def _read_manifest(path: Path) -> list[Item]:
    """Items of a CSV manifest: a header with a ``path`` column (and optionally ``label``), or headerless
    ``path[,label]`` rows. A path listed twice is read once (its first row)."""
    from embedkit.io.tables import read_csv

    rows = read_csv(path, "manifest", "a CSV with a path column (and optionally label)")
    if not rows:
        raise DataError(f"manifest {str(path)!r} is empty; it needs a path column (and optionally label)")
    header = [c.strip().lower() for c in rows[0]]
    if "path" in header:
        pi, li = header.index("path"), (header.index("label") if "label" in header else None)
        rows = rows[1:]
    elif HEADER_NAMES & set(header) or not any("." in c or "/" in c for c in header):
        # a header without "path" (``file,class``) would otherwise be read as an image called "file"
        raise ConfigError(f"manifest {str(path)!r} has the header {','.join(rows[0])!r} without a path column; "
                          "name the column of image paths `path` (and the labels `label`), or drop the header")
    else:
        pi, li = 0, (1 if len(rows[0]) > 1 else None)
    out, seen, dups = [], set(), []
    for row in rows:
        if pi >= len(row) or not row[pi].strip():
            continue
        name = row[pi].strip()
        p = name if is_uri(name) else (Path(name) if Path(name).is_absolute() else path.parent / name)
        item = Item(_abs(p), row[li].strip() if li is not None and li < len(row) else "")
        if item.path in seen:
            dups.append(item.path)
            continue
        seen.add(item.path)
        out.append(item)
    if dups:
        log.warning("manifest %s lists %d path(s) more than once (first: %s); each is read once, with its first row",
                    path, len(dups), dups[0])
    return out
