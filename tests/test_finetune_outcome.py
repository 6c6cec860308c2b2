"""What a fine-tuning run says about its own result: codes unchanged, no epoch for the backbone, tied mixes,
recipe settings dropped for an explicit strategy, the epoch chosen by its codes, the glyph augmentation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import write_shapes

from embedkit.finetune.config import FinetuneConfig
from embedkit.finetune.train import finetune

pytestmark = pytest.mark.slow  # fine-tuning runs
FAST = dict(input_size=32, batch_size=8, workers=0, augment=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_shapes(tmp_path_factory.mktemp("outcome") / "shapes", per_class=6, size=32)


def test_a_head_only_result_says_its_codes_are_the_starting_weights(data, tmp_path):
    logs = []
    res = finetune(data, tmp_path / "head", progress=False, log=logs.append, strategy="head", epochs=1,
                   average="none", head_init="random", **FAST)
    assert res.backbone_change == 0.0
    assert "codes are exactly those of the starting weights" in res.note and "trained only the classifier head" in res.note
    assert res.note in res.summary() and any(res.note in m for m in logs)


def test_a_trained_backbone_has_no_such_note(data, tmp_path):
    res = finetune(data, tmp_path / "full", progress=False, log=lambda m: None, strategy="full", lr=1e-2, epochs=1,
                   average="none", head_init="random", **FAST)
    assert res.backbone_change > 1e-4 and res.note == "" and "starting weights" not in res.summary()


def test_no_epoch_for_the_backbone_is_warned_before_training(data, tmp_path):
    logs = []
    finetune(data, tmp_path / "run", progress=False, log=logs.append, recipe="small", epochs=2, head_epochs=2, **FAST)
    warned = [i for i, m in enumerate(logs) if "leaves no epoch to train the backbone" in m]
    first_epoch = next(i for i, m in enumerate(logs) if m.startswith("epoch 1/"))
    assert warned and warned[0] < first_epoch


def test_tied_mixes_are_reported_as_ties(data, tmp_path):
    logs = []
    # phase 2 at a rate too small to move a weight: every mix has the same codes
    res = finetune(data, tmp_path / "tie", progress=False, log=logs.append, recipe="small", epochs=2, head_epochs=1,
                   lr_low=1e-30, average_alphas=(0.0, 0.5, 1.0), **FAST)
    info = json.loads((res.out / "average.json").read_text())
    assert info["tied_alphas"] == [0.0, 0.5, 1.0] and info["alpha"] == 0.5
    assert any("a tie between mixes 0, 0.5, 1" in m for m in logs)
    assert info.get("codes_equal_start") is True and "starting weights" in info["note"]


def test_an_explicit_strategy_drops_the_recipes_conflicting_settings(data, tmp_path):
    cfg = FinetuneConfig.from_recipe(strategy="adaptive").validate()  # the default recipe fits a logistic head
    assert (cfg.head_init, cfg.average) == ("random", "none") and len(cfg.recipe_notes) == 2
    from embedkit.cli.main import app

    r = CliRunner().invoke(app, ["finetune", str(data), "-o", str(tmp_path / "run"), "--strategy", "adaptive",
                                  "--epochs", "1", "--input-size", "32", "--batch-size", "8", "--workers", "0",
                                  "--no-augment"])
    assert r.exit_code == 0, r.output
    assert "--head-init logistic is left out" in r.output and "fine-tuned 1 epoch" in r.output


def test_monitor_val_codes_chooses_the_epoch_by_its_codes(data, tmp_path):
    res = finetune(data, tmp_path / "codes", progress=False, log=lambda m: None, strategy="full", lr=1e-2, epochs=2,
                   average="none", head_init="random", monitor="val_codes", **FAST)
    scores = [row["val_codes"] for row in res.history]
    assert res.monitor == "val_codes" and res.best_epoch == 1 + int(np.argmax(scores)) and res.best_metric == max(scores)


def test_glyph_augmentation_varies_pose_and_polarity():
    from PIL import Image, ImageDraw

    from embedkit.finetune.data import train_transform
    from embedkit.models.registry import get_spec

    img = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(img).rectangle((20, 20, 44, 44), outline="black", width=3)
    pre = get_spec("efficientnet_lite0").preprocessing
    tf = train_transform(pre, strength=1.0, style="glyph")
    torch.manual_seed(0)
    __import__("random").seed(0)
    means = [float(tf(img).mean()) for _ in range(60)]
    assert tf(img).shape == (3, pre.input_size, pre.input_size)
    # a white ground (mean near +1 after [-1, 1] scaling) in most renderings, a dark one in the inverted ones
    # (p = 0.2); jitter, erasing and the affine make no two alike
    assert sum(m > 0.5 for m in means) >= 20 and sum(m < -0.3 for m in means) >= 3 and len(set(means)) > 50


def test_adapt_on_some_classes_then_embed_and_classify_others(tmp_path):
    """The transfer workflow of the README: fine-tune on one labelled set, codes + SVM for other classes."""
    import shutil

    from embedkit import CodeStore, embed
    from embedkit.classify.train import train

    both = write_shapes(tmp_path / "all", per_class=8, size=32, classes=("c0", "c1", "c2", "c3", "c4"))
    adapt, other = tmp_path / "adapt", tmp_path / "other"
    for i, name in enumerate(("c0", "c1", "c2", "c3", "c4")):
        shutil.move(str(both / name), str((adapt if i < 3 else other) / name))
    run = finetune(adapt, tmp_path / "run", progress=False, log=lambda m: None, strategy="full", lr=1e-2, epochs=1,
                   average="none", head_init="random", **FAST)
    tuned = embed(str(other), tmp_path / "tuned", weights=str(run.best_path), progress=False).store
    base = embed(str(other), tmp_path / "base", progress=False).store
    assert tuned.dim == base.dim and sorted(set(tuned.labels.tolist())) == ["c3", "c4"]
    assert not np.allclose(np.asarray(tuned.codes), np.asarray(base.codes))  # other codes for the unseen classes
    res = train(CodeStore.open(tmp_path / "tuned"), tmp_path / "model", progress=False, baseline=False)
    assert res.test["n"] > 0 and res.test["top1"] >= 0.5
