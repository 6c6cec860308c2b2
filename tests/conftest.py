"""Shared fixtures: synthetic images of every awkward kind, the real emoji-dev set, and a store of its codes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import write_shapes

os.environ.setdefault("EMBEDKIT_FORCE_CPU", "1")  # the suite is CPU-only; GPU paths are measured by benchmarks

REPO = Path(__file__).resolve().parents[1]
EMOJI_DEV = Path(os.environ.get("EMBEDKIT_EMOJI_DEV", REPO.parent / "shared" / "datasets" / "emoji-dev"))
DEMO = REPO / "embedkit" / "data" / "demo" / "images"


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


@pytest.fixture(scope="session")
def lite0():
    """The default backbone (efficientnet_lite0, real weights, offline) on the CPU, built once."""
    import embedkit

    return embedkit.Backbone("efficientnet_lite0", device="cpu")


@pytest.fixture
def shapes_dir(tmp_path) -> Path:
    """A small labelled ImageFolder of synthetic images: 3 classes x 8 images."""
    return write_shapes(tmp_path / "shapes")
