"""Batches of preprocessed images for a model, decoded in DataLoader workers.

:class:`ImageDataset` never raises for a bad image: it returns the reason, and
:func:`collate_skipping` keeps such samples aside so rows and paths stay in step.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, Sequence

from embedkit.io.decode import load_image, raw_jpeg
from embedkit.io.discover import Item


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


def default_workers() -> int:
    """Decoder processes: enough to keep the model fed, leaving cores for the forward pass."""
    n = os.cpu_count() or 1
    return max(1, min(8, n // 2)) if n > 1 else 0
