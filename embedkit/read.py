"""Reading images: discovery (folder, list file, CSV manifest) and robust decoding.

Every decodable image becomes RGB: grayscale, palette, CMYK, 16-bit and
RGBA (composited on white) are converted. Corrupt, truncated, empty or
non-image files are never fatal: :class:`ImageDataset` reports them with a
reason so the caller lists them in ``skipped.csv`` and keeps rows and paths
in step.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from .errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")
# PIL refuses truncated files by default, which is what we want: a truncated
# file is listed as skipped rather than embedded with a grey bottom half.
ImageFile.LOAD_TRUNCATED_IMAGES = False


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


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; transparency is composited on white (illustrations are drawn on white)."""
    if getattr(img, "is_animated", False):
        img.seek(0)
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / float greyscale: rescale to 8 bits instead of clipping to white.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        canvas = Image.new("RGB", img.size, (255, 255, 255))
        canvas.paste(img, mask=img.getchannel("A"))
        return canvas
    return img.convert("RGB")


def load_image(path: str, want_sha1: bool = False) -> tuple[Image.Image, dict]:
    """Decode ``path`` to an RGB image; returns ``(image, info)`` with bytes, width, height (and sha1).

    Raises ``ValueError`` with a short reason for anything that is not a usable image.
    """
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise ValueError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            img.load()
        img = to_rgb(img)
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        reason = "not an image" if isinstance(exc, UnidentifiedImageError) else f"corrupt or truncated: {exc}"
        raise ValueError(reason) from exc
    if img.width == 0 or img.height == 0:
        raise ValueError("zero-sized image")
    info = {"bytes": len(data), "width": img.width, "height": img.height}
    if want_sha1:
        info["sha1"] = hashlib.sha1(data).hexdigest()
    return img, info


class ImageDataset:
    """Map-style dataset over items; ``__getitem__`` never raises for a bad image.

    Returns ``(index, tensor, info)`` for a good image and ``(index, None, reason)``
    for a bad one; :func:`collate_skipping` splits the two in each batch.
    """

    def __init__(self, items: Sequence[Item], transform: Callable, want_sha1: bool = True, raw_jpeg: bool = False):
        self.items = items
        self.transform = transform
        self.want_sha1 = want_sha1
        self.raw_jpeg = raw_jpeg  # hand complete RGB/grey JPEGs over undecoded, for decode_on_device

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        item = self.items[i]
        try:
            if self.raw_jpeg:
                raw = raw_jpeg(item.path, self.want_sha1)
                if raw is not None:
                    return i, raw[0], raw[1]
            img, info = load_image(item.path, self.want_sha1)
            return i, self.transform(img), info
        except FileNotFoundError:
            return i, None, "file not found"
        except (ValueError, OSError) as exc:
            return i, None, str(exc) or type(exc).__name__


def collate_skipping(batch: Iterable):
    """Collate good samples into one tensor; keep bad ones aside as ``(index, reason)``."""
    import torch

    good = [b for b in batch if b[1] is not None]
    bad = [(b[0], b[2]) for b in batch if b[1] is None]
    if good:
        idx = [b[0] for b in good]
        tensors = [b[1] for b in good]
        # undecoded JPEG bytes (1-D) cannot be stacked: the batch stays a list for decode_on_device
        x = torch.stack(tensors) if all(t.ndim == 3 for t in tensors) else tensors
        infos = [b[2] for b in good]
    else:
        idx, x, infos = [], None, []
    return idx, x, infos, bad


JPEG_START, JPEG_END = b"\xff\xd8\xff", b"\xff\xd9"


def raw_jpeg(path: str, want_sha1: bool = False):
    """``(bytes as a uint8 tensor, info)`` of a complete RGB or greyscale JPEG, else None.

    Only the header is parsed (no decoding). Anything else (other formats, CMYK,
    a file without its end marker, i.e. truncated) returns None and goes through
    :func:`load_image`, which converts it or gives the reason to skip it.
    """
    import torch

    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(JPEG_START) or not data.rstrip(b"\x00\r\n ").endswith(JPEG_END):
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.mode not in ("RGB", "L"):
                return None
            w, h = im.size
    except (UnidentifiedImageError, OSError, SyntaxError):
        return None
    info = {"bytes": len(data), "width": w, "height": h}
    if want_sha1:
        info["sha1"] = hashlib.sha1(data).hexdigest()
    return torch.frombuffer(bytearray(data), dtype=torch.uint8), info


def decode_on_device(samples: list, pre, device):
    """Finish a batch whose JPEGs came undecoded: decode them with torchvision.io on ``device``
    (nvJPEG on CUDA), resize and centre-crop them there like ``pre.transform_uint8()``.

    ``samples`` mixes ready uint8 crops (3-D) and JPEG bytes (1-D). Returns
    ``(uint8 batch on device or None, kept positions, [(position, reason)])``.
    """
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    pos = [k for k, t in enumerate(samples) if t.ndim == 1]
    decoded, failed = {}, {}
    if pos:
        try:
            decoded = dict(zip(pos, decode_jpeg([samples[k] for k in pos], mode=ImageReadMode.RGB, device=device)))
        except RuntimeError:  # one bad file fails the batched call: decode one by one to find it
            for k in pos:
                try:
                    decoded[k] = decode_jpeg(samples[k], mode=ImageReadMode.RGB, device=device)
                except RuntimeError as exc:
                    failed[k] = f"corrupt JPEG: {exc}"
    interp = InterpolationMode(pre.interpolation)
    out, keep = [], []
    for k, t in enumerate(samples):
        if k in failed:
            continue
        if t.ndim == 1:
            t = F.center_crop(F.resize(decoded[k], [pre.resize], interpolation=interp, antialias=True),
                              [pre.input_size])
        out.append(t.to(device, non_blocking=True))
        keep.append(k)
    return (torch.stack(out) if out else None), keep, sorted(failed.items())
