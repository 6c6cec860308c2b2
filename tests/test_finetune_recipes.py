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

pytestmark = pytest.mark.slow  # fine-tuning runs


def test_recipes_set_options_that_explicit_ones_override():
    small = FinetuneConfig.from_recipe()
    assert DEFAULT_RECIPE == "small" and small.recipe == "small"
    assert (small.strategy, small.top, small.freeze_bn_stats, small.augment_style) == \
        ("head-then-top", "all", True, "illustration")
    paper = FinetuneConfig.from_recipe("paper", epochs=3)
    assert (paper.strategy, paper.lr_high, paper.lr_low, paper.momentum, paper.weight_decay, paper.epochs) == \
        ("adaptive", 1e-2, 1e-4, 0.9, 5e-4, 3)  # the paper's rates; the given epochs win
    head = FinetuneConfig.from_recipe(strategy="head")
    assert head.average == "none" and head.freeze_bn_stats  # the mix needs head-then-top; the rest still applies
    with pytest.raises(ConfigError, match="average='wise'.*head-then-top"):
        FinetuneConfig.from_recipe(strategy="full", average="wise").validate()
    with pytest.raises(ConfigError, match="recipe.*'fast'.*paper.*small"):
        FinetuneConfig.from_recipe("fast")
    assert set(RECIPES) == {"paper", "small", "codes"}


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
    import random

    import torch
    from torchvision import transforms as T

    pre = get_spec("efficientnet_lite0").preprocessing
    tf = train_transform(pre, True, 1.0, "illustration")
    kinds = {type(t) for t in tf.transforms}
    assert {LineWeight, T.RandomGrayscale, T.RandomPosterize} <= kinds
    assert not {LineWeight, T.RandomGrayscale} & {type(t) for t in train_transform(pre, True, 1.0).transforms}
    img = _drawing()
    grey = 0
    random.seed(0)
    torch.manual_seed(0)
    for _ in range(40):
        x = tf(img).numpy()
        grey += bool(np.allclose(x[0], x[1], atol=1e-5) and np.allclose(x[1], x[2], atol=1e-5))
    assert 12 <= grey <= 36  # about 60% x strength of the draws are grey-scale renderings (seeded)
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
    assert (cfg["recipe"], cfg["strategy"], cfg["freeze_bn_stats"], cfg["lr_low"], cfg["top"], cfg["head_init"]) == \
        ("small", "head-then-top", False, 3e-3, "all", "logistic")


def test_interpolate_and_choose_alpha_by_validation():
    import torch
    from torch import nn

    from embedkit.finetune.average import choose_alpha, interpolate

    a = {"w": torch.zeros(3), "n": torch.tensor(1)}
    b = {"w": torch.full((3,), 4.0), "n": torch.tensor(7)}
    mid = interpolate(a, b, 0.25)
    assert torch.equal(mid["w"], torch.full((3,), 1.0)) and int(mid["n"]) == 7  # counters are not averaged
    with pytest.raises(ConfigError, match="different parameters"):
        interpolate(a, {"w": b["w"]}, 0.5)

    model = nn.Linear(1, 1, bias=False)
    probe, tuned = {"weight": torch.zeros(1, 1)}, {"weight": torch.ones(1, 1)}
    peak = lambda m: 1 - abs(m.weight.item() - 0.5)  # noqa: E731  (validation accuracy peaks at the middle)
    alpha, scores = choose_alpha(model, probe, tuned, peak)
    assert alpha == 0.5 and model.weight.item() == 0.5 and set(scores) == {0.0, 0.25, 0.5, 0.75, 1.0}
    right = lambda m: 1 - abs(m.weight.item() - 0.8)  # noqa: E731
    assert choose_alpha(model, probe, tuned, right)[0] == 0.75 and model.weight.item() == 0.75
    alpha, _ = choose_alpha(model, probe, tuned, lambda m: 0.9)  # all tied: halfway
    assert alpha == 0.5
    alpha, _ = choose_alpha(model, probe, tuned, lambda m: 0.9 if m.weight.item() < 0.3 else 0.8)
    assert alpha == 0.25  # tied at 0 and 0.25: the one nearer halfway
    with pytest.raises(ConfigError, match="mixes.*\\[0, 1\\]"):
        choose_alpha(model, probe, tuned, peak, alphas=(0.5, 2.0))


def test_wise_run_exports_the_validated_mix_of_probe_and_best_epoch(tmp_path):
    import torch
    from helpers import write_shapes

    from embedkit.finetune.average import interpolate
    from embedkit.finetune.train import finetune
    from embedkit.models.checkpoint import read_checkpoint

    data = write_shapes(tmp_path / "shapes", per_class=8)
    # a head that barely moves in phase 1 (lr_high 1e-5): the best epoch comes from phase 2, so the ends differ
    opts = dict(input_size=32, batch_size=8, workers=0, epochs=3, head_epochs=1, lr_high=1e-5, lr_low=1e-2,
                head_init="random")  # a closed-form head could already be the best epoch
    with pytest.raises(ConfigError, match="average='wise'.*head-then-top"):
        finetune(data, tmp_path / "bad", progress=False, log=lambda m: None, strategy="full", average="wise", **opts)
    logs = []
    res = finetune(data, tmp_path / "run", progress=False, log=logs.append, average_alphas=(0.5,), **opts)
    info = json.loads((res.out / "average.json").read_text())
    assert info["alpha"] == 0.5 and any("best.pt holds mix 0.5" in m for m in logs)
    probe = torch.load(res.last_path, weights_only=True)["probe"]
    tuned = read_checkpoint(res.out / "best-finetuned.pt")
    best = read_checkpoint(res.best_path)
    want = interpolate(probe, tuned["state_dict"], 0.5)
    assert all(torch.allclose(best["state_dict"][k].float(), want[k].float()) for k in want)
    moved = [k for k in want if want[k].is_floating_point() and not torch.equal(probe[k], tuned["state_dict"][k])]
    assert tuned["finetune"]["epoch"] >= 2 and moved  # phase 2 trained: the mix is neither end
    assert best["finetune"]["alpha"] == 0.5 and best["finetune"]["epoch"] == tuned["finetune"]["epoch"]


def test_logistic_head_fits_separable_codes_two_classes_and_absent_ones():
    from embedkit.finetune.probe import logistic_head

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (3, 16))
    y = np.repeat([0, 2, 3], 20)  # class 1 has no training image
    X = np.concatenate([c + rng.normal(0, 1, (20, 16)) for c in centres])
    W, b = logistic_head(X, y, n_classes=4)
    pred = (X @ W.T + b).argmax(1)
    assert W.shape == (4, 16) and (pred == y).mean() == 1.0 and not (pred == 1).any() and not W[1].any()
    W2, b2 = logistic_head(X[:40], y[:40], n_classes=3)  # two classes: one row of log-odds split in two
    assert ((X[:40] @ W2.T + b2).argmax(1) == y[:40]).all()


def test_logistic_head_init_starts_training_from_the_probe(tmp_path):
    from helpers import write_shapes

    from embedkit.finetune.train import finetune

    data = write_shapes(tmp_path / "shapes", per_class=8)
    opts = dict(input_size=32, batch_size=8, workers=0, epochs=1, strategy="head", lr=1e-9, augment=False,
                average="none")  # a rate too small to move the head: epoch 1 measures the initial head
    with pytest.raises(ConfigError, match="head_init='logistic'.*adaptive"):
        finetune(data, tmp_path / "bad", progress=False, log=lambda m: None, recipe="paper", head_init="logistic")
    logs = []
    fitted = finetune(data, tmp_path / "lp", progress=False, log=logs.append, head_init="logistic", **opts)
    random = finetune(data, tmp_path / "rand", progress=False, log=lambda m: None, head_init="random", **opts)
    fit_line = next(m for m in logs if "head fitted by logistic regression" in m)
    assert float(fit_line.rsplit("accuracy ", 1)[1].rstrip(")")) >= 0.9
    assert fitted.history[0]["train_acc"] >= 0.9 > random.history[0]["train_acc"] + 0.3
