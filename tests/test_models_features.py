"""Token outputs of transformer blocks (B, T, C) are reduced as --spatial asks, and the reduction is recorded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import embedkit
from embedkit import Backbone, ConfigError

VIT = "timm:test_vit"  # a tiny timm ViT: 160 px, 64-d tokens, 1 class token, 100 patch tokens


@pytest.fixture(scope="module")
def tokens_and_codes():
    x = torch.randn(2, 3, 160, 160)
    out = {}
    for spatial in ("flatten", "avg", "max", "cls"):
        bb = Backbone(VIT, layer="blocks.5", weights="none", device="cpu", spatial=spatial)
        out[spatial] = (bb, bb.forward(x))
    return x, out


def test_token_codes_are_pooled_as_asked(tokens_and_codes):
    _, out = tokens_and_codes
    flat = out["flatten"][1]
    assert flat.shape == (2, 101 * 64)  # flatten: as before, every token
    tokens = flat.view(2, 101, 64)
    assert out["avg"][1].shape == (2, 64)
    assert torch.allclose(out["avg"][1], tokens[:, 1:].mean(1), atol=1e-5)  # patch tokens only
    assert not torch.allclose(out["avg"][1], tokens.mean(1), atol=1e-5)
    assert torch.allclose(out["max"][1], tokens[:, 1:].amax(1), atol=1e-5)
    assert torch.allclose(out["cls"][1], tokens[:, 0], atol=1e-5)
    assert out["avg"][0].dim == 64


def test_the_reduction_done_is_recorded(tokens_and_codes):
    _, out = tokens_and_codes
    ident = out["avg"][0].identity()
    assert ident["spatial"] == "avg" and ident["reduction"] == "avg over 100 patch tokens (1 prefix token left out)"
    assert out["cls"][0].identity()["reduction"] == "cls token"
    assert out["flatten"][0].identity()["reduction"] == "flatten"
    conv = Backbone("timm:test_resnet", layer="layer2", weights="none", device="cpu")
    assert conv.identity()["reduction"] == "avg over H x W"


def test_cls_needs_a_class_token():
    with pytest.raises(ConfigError, match="cls"):
        Backbone("timm:test_resnet", layer="layer2", weights="none", device="cpu", spatial="cls").dim
    with pytest.raises(ConfigError, match="spatial reduction 'mean' is not valid"):
        Backbone(VIT, weights="none", device="cpu", spatial="mean")


def test_embedding_a_token_layer_stores_pooled_codes(tmp_path):
    src = tmp_path / "imgs"
    src.mkdir()
    for i in range(2):
        Image.fromarray(np.full((40, 40, 3), 60 * i, np.uint8)).save(src / f"{i}.png")
    store = embedkit.embed(src, tmp_path / "codes", backbone=VIT, layer="blocks.5", weights="none", spatial="avg",
                           progress=False, workers=0).store
    assert store.dim == 64 and store.identity["spatial"] == "avg"
    assert store.identity["reduction"].startswith("avg over 100 patch tokens")
