"""Shared fixtures: synthetic images of every awkward kind, the real emoji-dev set, and a store of its codes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("EMBEDKIT_FORCE_CPU", "1")  # the suite is CPU-only; GPU paths are measured by benchmarks

REPO = Path(__file__).resolve().parents[1]
EMOJI_DEV = Path(os.environ.get("EMBEDKIT_EMOJI_DEV", REPO.parent / "shared" / "datasets" / "emoji-dev"))
DEMO = REPO / "demo" / "images"


@pytest.fixture(scope="session")
def emoji_dir() -> Path:
    if not EMOJI_DEV.is_dir():
        pytest.skip(f"the real illustration set is not at {EMOJI_DEV} (set EMBEDKIT_EMOJI_DEV to its folder)")
    return EMOJI_DEV


@pytest.fixture(scope="session")
def emoji_store(emoji_dir, tmp_path_factory):
    """Codes of emoji-dev with the default backbone (efficientnet_lite0 pool, real weights), embedded once."""
    import embedkit

    out = tmp_path_factory.mktemp("emoji_store")
    return embedkit.embed(emoji_dir, out, progress=False).store


def make_shape_image(kind: int, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """A synthetic image of class ``kind``: a coloured shape on white with jitter."""
    img = Image.new("RGB", (size, size), (255, 255, 255))
    from PIL import ImageDraw

    d = ImageDraw.Draw(img)
    colours = [(220, 30, 30), (30, 160, 30), (30, 60, 220), (230, 180, 20), (150, 40, 180)]
    c = colours[kind % len(colours)]
    o = int(rng.integers(2, 10))
    box = (o, o, size - o - int(rng.integers(0, 8)), size - o - int(rng.integers(0, 8)))
    [d.ellipse, d.rectangle, lambda b, fill: d.polygon([(b[0], b[3]), ((b[0] + b[2]) // 2, b[1]), (b[2], b[3])], fill=fill),
     lambda b, fill: d.line([b[:2], b[2:]], fill=fill, width=6), d.rectangle][kind % 5](box, fill=c)
    return img


@pytest.fixture
def shapes_dir(tmp_path) -> Path:
    """A small labelled ImageFolder of synthetic images: 3 classes x 8 images."""
    rng = np.random.default_rng(0)
    root = tmp_path / "shapes"
    for k, name in enumerate(["circle", "square", "triangle"]):
        (root / name).mkdir(parents=True)
        for i in range(8):
            make_shape_image(k, rng).save(root / name / f"{name}_{i}.png")
    return root
