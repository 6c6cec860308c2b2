"""Helpers shared by the tests (import them with ``from helpers import ...``; fixtures live in conftest.py)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def make_shape_image(kind: int, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """A synthetic image of class ``kind``: a coloured shape on white with jitter."""
    img = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(img)
    colours = [(220, 30, 30), (30, 160, 30), (30, 60, 220), (230, 180, 20), (150, 40, 180)]
    c = colours[kind % len(colours)]
    o = int(rng.integers(2, 10))
    box = (o, o, size - o - int(rng.integers(0, 8)), size - o - int(rng.integers(0, 8)))
    [d.ellipse, d.rectangle, lambda b, fill: d.polygon([(b[0], b[3]), ((b[0] + b[2]) // 2, b[1]), (b[2], b[3])], fill=fill),
     lambda b, fill: d.line([b[:2], b[2:]], fill=fill, width=6), d.rectangle][kind % 5](box, fill=c)
    return img
