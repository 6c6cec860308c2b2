"""Named fine-tuning recipes (paper / small), their overrides, and the illustration augmentation of the small one."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

from embedkit.errors import ConfigError
from embedkit.finetune.config import FinetuneConfig
from embedkit.finetune.data import LineWeight, train_transform
from embedkit.finetune.layers import weight_layers
from embedkit.finetune.optim import plan_for
from embedkit.finetune.recipes import DEFAULT_RECIPE, RECIPES
from embedkit.models.registry import get_spec


def test_recipes_set_options_that_explicit_ones_override():
    small = FinetuneConfig.from_recipe()
    assert DEFAULT_RECIPE == "small" and small.recipe == "small"
    assert (small.strategy, small.top, small.freeze_bn_stats, small.augment_style) == \
        ("head-then-top", "all", True, "illustration")
    paper = FinetuneConfig.from_recipe("paper", epochs=3)
    assert (paper.strategy, paper.lr_high, paper.lr_low, paper.momentum, paper.weight_decay, paper.epochs) == \
        ("adaptive", 1e-2, 1e-4, 0.9, 5e-4, 3)  # the paper's rates; the given epochs win
    with pytest.raises(ConfigError, match="recipe.*'fast'.*paper.*small"):
        FinetuneConfig.from_recipe("fast")
    assert set(RECIPES) == {"paper", "small"}


def test_top_all_trains_every_layer_in_phase_two():
    layers = weight_layers(get_spec("efficientnet_lite0").create_model(num_classes=3))
    cfg = FinetuneConfig.from_recipe("small")
    head, rest = plan_for(cfg, layers, 0), plan_for(cfg, layers, 1)
    assert set(head) == {len(layers)} and head[len(layers)] == ("reinit", cfg.lr_high)
    assert set(rest) == set(range(1, len(layers) + 1)) and {lr for _, lr in rest.values()} == {cfg.lr_low}


def _drawing(size=64):
    img = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(img).ellipse((12, 12, 52, 52), outline=(200, 30, 30), width=2)
    return img


def test_line_weight_thickens_or_thins_strokes(monkeypatch):
    img = _drawing()
    ink = lambda im: int((np.asarray(im.convert("L")) < 200).sum())  # noqa: E731
    monkeypatch.setattr("random.random", lambda: 0.0)  # apply, and pick the min filter: strokes grow
    thick = LineWeight(p=1.0)(img)
    monkeypatch.setattr("random.random", iter([0.0, 0.9]).__next__)  # apply, max filter: strokes shrink
    thin = LineWeight(p=1.0)(img)
    assert ink(thick) > 1.5 * ink(img) and ink(thin) < 0.5 * ink(img)
    monkeypatch.setattr("random.random", lambda: 0.99)
    assert LineWeight(p=0.3)(img) is img  # not applied


def test_illustration_augmentation_renders_grey_and_colour_versions():
    from torchvision import transforms as T

    pre = get_spec("efficientnet_lite0").preprocessing
    tf = train_transform(pre, True, 1.0, "illustration")
    kinds = {type(t) for t in tf.transforms}
    assert {LineWeight, T.RandomGrayscale, T.RandomPosterize} <= kinds
    assert not {LineWeight, T.RandomGrayscale} & {type(t) for t in train_transform(pre, True, 1.0).transforms}
    img = _drawing()
    grey = 0
    for _ in range(40):
        x = tf(img).numpy()
        grey += bool(np.allclose(x[0], x[1], atol=1e-5) and np.allclose(x[1], x[2], atol=1e-5))
    assert 3 <= grey <= 30  # about 60% x strength of the draws are grey-scale renderings
    with pytest.raises(ConfigError, match="augmentation style.*'sketch'.*photo.*illustration"):
        train_transform(pre, True, 1.0, "sketch")


def test_cli_recipe_and_overrides_reach_the_run(tmp_path):
    from helpers import write_shapes

    from embedkit.cli.main import app

    data = write_shapes(tmp_path / "shapes", per_class=6)
    common = ["--input-size", "32", "--batch-size", "8", "--workers", "0", "--epochs", "1", "--quiet"]
    r = CliRunner().invoke(app, ["finetune", str(data), "-o", str(tmp_path / "paper"), "--recipe", "paper", *common])
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "paper" / "config.json").read_text())
    assert (cfg["recipe"], cfg["strategy"], cfg["lr_low"], cfg["epochs"], cfg["augment_style"]) == \
        ("paper", "adaptive", 1e-4, 1, "photo")
    r = CliRunner().invoke(app, ["finetune", str(data), "-o", str(tmp_path / "small"), "--no-freeze-bn-stats",
                                 "--lr-low", "3e-3", *common])
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "small" / "config.json").read_text())
    assert (cfg["recipe"], cfg["strategy"], cfg["freeze_bn_stats"], cfg["lr_low"], cfg["top"]) == \
        ("small", "head-then-top", False, 3e-3, "all")
