"""Which images a job reads: a folder, a list file, a CSV manifest or a list of paths."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from embedkit.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")


@dataclass(frozen=True)
class Item:
    """One image to read: its path and optional label."""

    path: str
    label: str = ""


def discover(source: str | os.PathLike | Sequence, labels: bool = True) -> list[Item]:
    """List the images of ``source``.

    - a folder: every image file below it (recursively, sorted); the label is
      the first-level sub-folder when the file is inside one;
    - a ``.csv`` manifest with a ``path`` column (optionally ``label``), or
      headerless ``path[,label]`` rows; relative paths are taken from the CSV's folder;
    - any other text file: one path per line;
    - a single image file, or a list of paths.
    """
    if isinstance(source, (list, tuple)):
        return [Item(str(Path(p).resolve())) for p in source]
    src = Path(source)
    if not src.exists():
        raise ConfigError(f"input {str(src)!r} does not exist; give a folder of images, a .csv manifest or a list file")
    if src.is_dir():
        items = []
        for root, dirs, files in os.walk(src, followlinks=True):
            dirs.sort()
            for name in sorted(files):
                if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                    p = Path(root) / name
                    rel = p.relative_to(src)
                    label = rel.parts[0] if (labels and len(rel.parts) > 1) else ""
                    items.append(Item(str(p.resolve()), label))
        if not items:
            raise DataError(f"folder {str(src)!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
        return items
    if src.suffix.lower() in IMAGE_EXTENSIONS:
        return [Item(str(src.resolve()))]
    if src.suffix.lower() == ".csv":
        return _read_manifest(src)
    base = src.parent
    with open(src, encoding="utf-8") as f:
        return [Item(str((base / line.strip()).resolve())) for line in f if line.strip() and not line.startswith("#")]


def _read_manifest(path: Path) -> list[Item]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DataError(f"manifest {str(path)!r} is empty; it needs a path column (and optionally label)")
    header = [c.strip().lower() for c in rows[0]]
    if "path" in header:
        pi, li = header.index("path"), (header.index("label") if "label" in header else None)
        rows = rows[1:]
    else:
        pi, li = 0, (1 if len(rows[0]) > 1 else None)
    out = []
    for row in rows:
        if not row or not row[pi].strip():
            continue
        p = Path(row[pi].strip())
        p = p if p.is_absolute() else path.parent / p
        out.append(Item(str(p.resolve()), row[li].strip() if li is not None and li < len(row) else ""))
    return out
