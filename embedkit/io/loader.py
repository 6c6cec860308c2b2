"""Batches of preprocessed images for a model, decoded in DataLoader workers.

:class:`ImageDataset` never raises for a bad image: it returns the reason, and
:func:`collate_skipping` keeps such samples aside so rows and paths stay in step.
"""

from __future__ import annotations

import hashlib
import os
from typing import Callable, Iterable, Sequence

from embedkit.defaults import BATCH_SIZE
from embedkit.io.decode import decode_bytes, read_file, raw_jpeg
from embedkit.io.discover import Item

CHANGED = "changed since it was embedded (its sha1 is not the one the store recorded)"


def load_item(item: Item, want_sha1: bool = False, svg_size: int | None = None):
    """:func:`~embedkit.io.decode.load_image` of ``item``; with a recorded ``item.sha1``, the bytes read are
    checked against it first (the same bytes are then decoded: no window between check and decode)."""
    data = read_file(item.path)
    if item.sha1 and hashlib.sha1(data).hexdigest() != item.sha1.strip().lower():
        raise ValueError(CHANGED)
    return decode_bytes(data, want_sha1, svg_size)


class ImageDataset:
    """Map-style dataset over items; ``__getitem__`` never raises for a bad image.

    Returns ``(index, tensor, info)`` for a good image and ``(index, None, reason)``
    for a bad one; :func:`collate_skipping` splits the two in each batch.
    """

    def __init__(self, items: Sequence[Item], transform: Callable, want_sha1: bool = True, raw_jpeg: bool = False,
                 svg_size: int | None = None):
        self.items = items
        self.transform = transform
        self.want_sha1 = want_sha1
        self.raw_jpeg = raw_jpeg  # hand complete RGB/grey JPEGs over undecoded, for decode_on_device
        self.svg_size = svg_size  # SVGs are drawn with this shorter side: the preprocessing's resize

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        item = self.items[i]
        try:
            if self.raw_jpeg:
                raw = raw_jpeg(item.path, self.want_sha1)
                if raw is not None:
                    return i, raw[0], raw[1]
            img, info = load_item(item, self.want_sha1, self.svg_size)
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


def default_workers() -> int:
    """Decoder processes: enough to keep the model fed, leaving cores for the forward pass."""
    n = os.cpu_count() or 1
    return max(1, min(8, n // 2)) if n > 1 else 0


def default_batch_size(device) -> int:
    """Images per loader batch on ``device`` (a torch device or its name): :data:`embedkit.defaults.BATCH_SIZE`."""
    return BATCH_SIZE["cuda" if getattr(device, "type", str(device)).split(":")[0] == "cuda" else "cpu"]


class TableItems:
    """Rows of an Arrow table (``path``, ``label``) seen as a sequence of :class:`Item` (no per-row objects kept)."""

    def __init__(self, table):
        self.paths = table.column("path")
        # names that are not UTF-8 are kept byte for byte beside the readable column (store.items.items_table)
        self.raw = table.column("path_bytes") if "path_bytes" in table.column_names else None
        if self.raw is not None and self.raw.null_count == len(self.raw):
            self.raw = None
        self.labels = table.column("label") if "label" in table.column_names else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Item:
        label = self.labels[i].as_py() if self.labels is not None else ""
        raw = self.raw[i].as_py() if self.raw is not None else None
        return Item(os.fsdecode(raw) if raw is not None else self.paths[i].as_py(), label or "")


def batches_within(bounds: Sequence[int], batch_size: int) -> list[list[int]]:
    """Index batches of at most ``batch_size`` that never cross a boundary (``bounds`` = cumulative ends).

    The embed job cuts batches at shard ends, so every shard is finished by whole batches.
    """
    out, start = [], 0
    for end in bounds:
        for i in range(start, end, batch_size):
            out.append(list(range(i, min(i + batch_size, end))))
        start = end
    return out


def make_loader(dataset, batches, workers: int | None = None, pin_memory: bool = False):
    """A DataLoader over ``batches`` of indices: decoding in ``workers`` processes overlaps the forward pass."""
    from torch.utils.data import DataLoader

    nw = default_workers() if workers is None else int(workers)
    return DataLoader(dataset, batch_sampler=batches, num_workers=nw, collate_fn=collate_skipping,
                      pin_memory=pin_memory, prefetch_factor=4 if nw else None, persistent_workers=False)
