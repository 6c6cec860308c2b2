"""Fine-tuning: layer numbering and groups, what each strategy changes, per-group rates, resume, export -> embed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import make_shape_image

import embedkit
import embedkit.io.discover
from embedkit.errors import ConfigError, DataError, MismatchError
from embedkit.finetune.layers import (
    format_ranges,
    layer_table,
    parse_layers,
    weight_layers,
)
from embedkit.finetune.config import FinetuneConfig
from embedkit.finetune.optim import make_optimizer, plan_for
from embedkit.finetune.train import build_model, finetune
from embedkit.models.registry import get_spec
from embedkit.models.weights import load_model
from embedkit.splits import stratified_split

pytestmark = pytest.mark.slow  # fine-tuning runs

CLASSES = ["circle", "square", "triangle"]
# efficientnet_lite0 has real weights offline; 32 px keeps a CPU epoch to a few seconds. The strategies are tested
# from the paper recipe's options (rates 1e-2 / 1e-4, no label smoothing); each test sets what it is about.
FAST = dict(backbone="efficientnet_lite0", input_size=32, batch_size=8, workers=0, recipe="paper")


def _shapes(root, n=8, classes=CLASSES, bad=True):
    rng = np.random.default_rng(0)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            make_shape_image(k, rng).save(root / name / f"{name}_{i}.png")
    if bad:
        (root / classes[0] / "broken.png").write_bytes(b"\x89PNG this is not an image")
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return _shapes(tmp_path_factory.mktemp("ft") / "shapes")


@pytest.fixture(scope="module")
def adaptive_run(data_dir, tmp_path_factory):
    """One adaptive epoch (layers 1-10 + head re-initialised at 1e-2, the rest at 1e-4), with the state before training."""
    opts = dict(FAST, strategy="adaptive", reinit="1-10", epochs=1, augment=False, schedule="none")
    model0, layers, plan, _, _ = build_model(FinetuneConfig(**opts), CLASSES)
    start = {k: v.clone() for k, v in model0.state_dict().items()}
    out = tmp_path_factory.mktemp("ft") / "run"
    logs = []
    res = finetune(data_dir, out, progress=False, log=logs.append, **opts)
    return res, start, layers, plan, "\n".join(logs)


def _rel_change(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


# --- layer numbering and groups -------------------------------------------------------------------------------

def _vgg19(k):
    with torch.device("meta"):  # structure only: no 140M-parameter initialisation
        return get_spec("vgg19").create_model(num_classes=k)


def test_vgg19_weight_layers_and_paper_rates():
    """VGG19: 16 convs + fc6, fc7, head = 19 layers; the default adaptive plan is the paper's."""
    cfg = FinetuneConfig(backbone="vgg19", strategy="adaptive")
    model = _vgg19(5)
    layers = weight_layers(model)
    assert [l.kind for l in layers] == ["Conv2d"] * 16 + ["Linear"] * 3
    assert (layers[0].name, layers[15].name, layers[16].name, layers[18].name) == \
        ("features.0", "features.34", "classifier.0", "classifier.6")
    plan = plan_for(cfg, layers)
    high = [i for i, (a, lr) in plan.items() if a == "reinit" and lr == 1e-2]
    low = [i for i, (a, lr) in plan.items() if a == "train" and lr == 1e-4]
    assert format_ranges(high) == "1-10,17-19" and format_ranges(low) == "11-16"
    opt, _ = make_optimizer(cfg, model, layers, plan, 10)
    groups = {g["lr"]: {id(p) for p in g["params"]} for g in opt.param_groups}
    assert sorted(groups) == [1e-4, 1e-2]
    assert groups[1e-2] == {id(p) for l in layers if l.index in high for p in l.params}
    assert groups[1e-4] == {id(p) for l in layers if 11 <= l.index <= 16 for p in l.params}
    assert (opt.defaults["momentum"], opt.defaults["weight_decay"]) == (0.9, 5e-4)
    table = layer_table(layers, plan)
    assert "features.34" in table and "classifier.6" in table and "0.0001" in table


def test_parse_layers_by_index_range_and_name():
    layers = weight_layers(_vgg19(3))
    assert parse_layers("1-3,17-19", layers) == [1, 2, 3, 17, 18, 19]
    assert parse_layers("features.0,classifier", layers) == [1, 17, 18, 19]
    assert parse_layers("-1,15-", layers) == [15, 16, 17, 18, 19]
    assert parse_layers("features.3*", layers) == [14, 15, 16]  # features.30, .32, .34
    for bad in ("0", "20", "5-3", "fc9"):
        with pytest.raises(ConfigError, match="weight layer"):
            parse_layers(bad, layers)


def test_batchnorm_goes_with_its_convolution():
    layers = weight_layers(get_spec("efficientnet_lite0").create_model(num_classes=3))
    stem = layers[0]
    assert stem.name == "conv_stem" and [n for n, _ in stem.attached] == ["bn1"]
    model_params = sum(p.numel() for p in get_spec("efficientnet_lite0").create_model(num_classes=3).parameters())
    assert sum(l.n_params for l in layers) == model_params  # every parameter belongs to exactly one layer


# --- what training changes ------------------------------------------------------------------------------------

def test_adaptive_changes_reinit_layers_and_keeps_the_rest_close(adaptive_run):
    res, start, layers, plan, logs = adaptive_run
    pretrained = load_model(get_spec("efficientnet_lite0"), "default")[0].state_dict()
    trained = torch.load(res.last_path, weights_only=True)["model"]
    reinit = [l for l in layers if plan[l.index][0] == "reinit"]
    kept = [l for l in layers if plan[l.index][0] == "train"]
    assert [l.index for l in reinit] == list(range(1, 11)) + [50] and len(kept) == 39
    for l in reinit[:-1]:  # re-initialised: nothing like the pretrained weights any more
        key = l.name + ".weight"
        assert _rel_change(start[key], pretrained[key]) > 0.5
    for l in kept:  # kept layers start from the pretrained weights
        key = l.name + ".weight"
        assert torch.equal(start[key], pretrained[key])
    high = [_rel_change(trained[l.name + ".weight"], start[l.name + ".weight"]) for l in reinit]
    low = [_rel_change(trained[l.name + ".weight"], start[l.name + ".weight"]) for l in kept]
    assert min(high) > 0  # all trained layers moved
    assert min(low) > 0
    # kept layers move less than the least-moved re-initialised layer, by at least the rate ratio 1e-4/1e-2
    assert max(low) <= (1e-4 / 1e-2) * min(high)
    # the optimizer really ran at the asked rates, and the table said so before training
    groups = torch.load(res.last_path, weights_only=True)["optimizer"]["param_groups"]
    assert sorted(g["lr"] for g in groups) == [1e-4, 1e-2]
    assert "reinit" in logs and "conv_stem" in logs and "classifier" in logs and "re-initialised: 1-10,50" in logs
    assert logs.index("conv_stem") < logs.index("epoch 1/1")


def test_run_folder_split_and_skipped(adaptive_run, data_dir):
    import csv
    import json

    res, *_ = adaptive_run
    out = res.out
    for name in ("best.pt", "last.pt", "history.csv", "curves.png", "split.json", "skipped.csv", "config.json"):
        assert (out / name).is_file(), name
    skipped = list(csv.DictReader(open(out / "skipped.csv")))
    assert [r["path"].endswith("broken.png") for r in skipped] == [True]
    split = json.loads((out / "split.json").read_text())
    paths = {p: [r["path"] for r in split[p]] for p in ("train", "val", "test")}
    assert not set(paths["train"]) & set(paths["val"]) and not set(paths["train"]) & set(paths["test"])
    # the same split classify makes on a store of the readable images (discover order, labels, seed 0)
    items = [it for it in embedkit.io.discover.discover(data_dir) if not it.path.endswith("broken.png")]
    ref = stratified_split([it.label for it in items], (0.64, 0.16, 0.20), seed=0)
    assert paths["train"] == [items[i].path for i in ref.train]
    assert paths["val"] == [items[i].path for i in ref.val]
    hist = list(csv.DictReader(open(out / "history.csv")))
    assert len(hist) == 1 and int(hist[0]["train_images"]) == len(ref.train)  # val and test never trained on
    assert res.best_epoch == 1 and "best backbone" in res.summary()


def test_head_then_top_freezes_then_unfreezes(data_dir, tmp_path):
    opts = dict(FAST, strategy="head-then-top", epochs=2, head_epochs=1, top="blocks.6,conv_head", lr_low=1e-3)
    model0, layers, *_ = build_model(FinetuneConfig(**opts), CLASSES)
    start = {k: v.clone() for k, v in model0.state_dict().items()}
    after = {}
    finetune(data_dir, tmp_path / "run", progress=False, log=lambda m: None,
             on_epoch_end=lambda row: after.setdefault(row["epoch"], torch.load(tmp_path / "run" / "last.pt",
                                                                                  weights_only=True)), **opts)

    def keys_of(ls):  # state-dict keys of these layers and their attached BatchNorms
        prefixes = [p + "." for l in ls for p in [l.name] + [n for n, _ in l.attached]]
        return {k for k in start if k.startswith(tuple(prefixes))}

    top = [l for l in layers if l.name.startswith(("blocks.6", "conv_head"))]
    head_keys, top_keys = keys_of(layers[-1:]), keys_of(top)
    assert len(top) == 4 and head_keys == {"classifier.weight", "classifier.bias"}
    for epoch, trained in ((1, head_keys), (2, head_keys | top_keys)):
        m = after[epoch]["model"]
        for key, v in start.items():  # frozen weights and BN statistics alike stay bit-for-bit the same
            if key not in trained:
                assert torch.equal(m[key], v), f"frozen {key} changed in epoch {epoch}"
        for l in layers[-1:] + (top if epoch == 2 else []):
            assert not torch.equal(m[l.name + ".weight"], start[l.name + ".weight"]), f"{l.name} did not train"
    assert [h["phase"] for h in after[2]["history"]] == [1, 2]


def test_resume_matches_an_uninterrupted_run(data_dir, tmp_path):
    opts = dict(FAST, strategy="adaptive", reinit="1-5", epochs=2, schedule="step", step_size=1, balanced=True,
                augment_strength=0.5, seed=3)
    full = finetune(data_dir, tmp_path / "full", progress=False, log=lambda m: None, **opts)

    def kill(row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(data_dir, tmp_path / "killed", progress=False, log=lambda m: None, on_epoch_end=kill, **opts)
    with pytest.raises(ConfigError, match="--resume"):
        finetune(data_dir, tmp_path / "killed", progress=False, log=lambda m: None, **opts)
    with pytest.raises(ConfigError, match="lr_high"):
        finetune(data_dir, tmp_path / "killed", resume=True, progress=False, log=lambda m: None,
                 **{**opts, "lr_high": 0.1})
    resumed = finetune(data_dir, tmp_path / "killed", resume=True, progress=False, log=lambda m: None, **opts)
    a = torch.load(full.last_path, weights_only=True)
    b = torch.load(resumed.last_path, weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert [g["lr"] for g in a["optimizer"]["param_groups"]] == [g["lr"] for g in b["optimizer"]["param_groups"]]
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in h]  # noqa: E731
    assert strip(full.history) == strip(resumed.history)


def test_export_embed_round_trip(adaptive_run, data_dir, tmp_path):
    res, *_ = adaptive_run
    spec = get_spec("efficientnet_lite0")
    model, info = load_model(spec, res.best_path)
    assert (info.kind, info.num_classes, info.class_names) == ("checkpoint", 3, CLASSES)
    best = torch.load(res.best_path, weights_only=True)
    assert best["preprocessing"]["input_size"] == 32 and best["default_layer"] == spec.default_layer
    store = embedkit.embed(data_dir, tmp_path / "codes", backbone="efficientnet_lite0", weights=str(res.best_path),
                           progress=False, workers=0).store
    assert len(store) == 24 and store.dim == 1280 and len(store.skipped) == 1
    assert store.identity["weights"]["kind"] == "checkpoint" and store.identity["preprocessing"]["input_size"] == 32
    # the classifier head came along: logits from the exported backbone are the fine-tuned model's
    bb = embedkit.Backbone("efficientnet_lite0", layer="logits", weights=str(res.best_path), device="cpu")
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(bb.forward(x), model(x), atol=1e-5)


# --- clear errors ---------------------------------------------------------------------------------------------

def test_one_class_and_empty_split_are_data_errors(data_dir, tmp_path):
    one = _shapes(tmp_path / "one", n=4, classes=["circle"], bad=False)
    with pytest.raises(DataError, match="at least 2 classes"):
        finetune(one, tmp_path / "r1", progress=False, log=lambda m: None, **FAST)
    with pytest.raises(DataError, match="val split is empty.*--fractions"):
        finetune(data_dir, tmp_path / "r2", split=(0.8, 0.0, 0.2), progress=False, log=lambda m: None, **FAST)


def test_checkpoint_for_other_classes(adaptive_run, tmp_path):
    res, *_ = adaptive_run
    two = _shapes(tmp_path / "two", n=6, classes=["circle", "square"], bad=False)
    with pytest.raises(MismatchError, match="3 classes.*--new-head"):
        finetune(two, tmp_path / "r", weights=str(res.best_path), progress=False, log=lambda m: None, **FAST)
    r = CliRunner().invoke(embedkit_cli_app(), ["finetune", str(two), "-o", str(tmp_path / "r"), "--weights",
                                                str(res.best_path), "--input-size", "32"])
    assert r.exit_code == 2 and "error:" in r.output and "--new-head" in r.output
    ok = finetune(two, tmp_path / "r3", weights=str(res.best_path), new_head=True, strategy="head", epochs=1,
                  progress=False, log=lambda m: None, **FAST)
    assert load_model(get_spec("efficientnet_lite0"), ok.best_path)[1].class_names == ["circle", "square"]


def embedkit_cli_app():
    import embedkit.cli.main

    return embedkit.cli.main.app


def test_cli_finetune_prints_table_and_summary(data_dir, tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(embedkit_cli_app(), [
        "finetune", str(data_dir), "-o", str(out), "--backbone", "efficientnet_lite0", "--strategy", "head",
        "--epochs", "1", "--input-size", "32", "--batch-size", "8", "--no-augment", "--eval-test", "--workers", "0"])
    assert r.exit_code == 0, r.output
    assert "layer" in r.output and "frozen" in r.output and "classifier" in r.output
    assert "best backbone" in r.output and "broken.png" in r.output and "test acc" in r.output
    assert (out / "best.pt").is_file() and (out / "test.json").is_file()


def test_split_by_design_holds_out_whole_designs(tmp_path):
    from embedkit.splits import pick_groups
    from embedkit.finetune.data import prepare_data

    root = tmp_path / "designs"
    rng = np.random.default_rng(1)
    for k, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for d in range(5):
            make_shape_image(k, rng).save(root / name / f"design{d}.png")
    data = prepare_data(root, (0.6, 0.2, 0.2), seed=0, split_by="design", progress=False)
    design = {p: {embedkit.splits.design_of(data.items[i].path) for i in data.part(p)} for p in ("train", "val", "test")}
    assert not design["train"] & design["test"] and not design["train"] & design["val"] and design["val"] and design["test"]
    groups = np.array([embedkit.splits.design_of(it.path) for it in data.items], dtype=object)
    assert sorted(design["test"]) == sorted(pick_groups(groups, 0.2, 0))  # the groups classify --split-by design holds out
    with pytest.raises(ConfigError, match="design"):
        prepare_data(root, split_by="label", progress=False)
    # named test/validation designs, from the command line as in classify train
    r = CliRunner().invoke(embedkit_cli_app(), [
        "finetune", str(root), "-o", str(tmp_path / "run"), "--weights", "none", "--backbone", "timm:resnet18",
        "--epochs", "1", "--batch-size", "8", "--workers", "0", "--quiet", "--strategy", "head",
        "--split-by", "design", "--test-groups", "design4", "--val-groups", "design3"])
    assert r.exit_code == 0, r.output
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    parts = {k: {embedkit.splits.design_of(r["path"]) for r in split[k]} for k in ("train", "val", "test")}
    assert parts["test"] == {"design4"} and parts["val"] == {"design3"}, parts


def test_freeze_bn_stats_keeps_running_statistics_while_weights_train(data_dir, tmp_path):
    opts = dict(FAST, strategy="full", epochs=1, lr=1e-2)
    model0, *_ = build_model(FinetuneConfig(**opts), CLASSES)
    start = {k: v.clone() for k, v in model0.state_dict().items()}
    runs = {}
    for frozen in (False, True):
        res = finetune(data_dir, tmp_path / f"run{frozen}", progress=False, log=lambda m: None,
                       freeze_bn_stats=frozen, **opts)
        runs[frozen] = torch.load(res.out / "last.pt", weights_only=True)["model"]
    stats = [k for k in start if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(runs[True][k], start[k]) for k in stats)
    assert not all(torch.equal(runs[False][k], start[k]) for k in stats)  # without the option they move
    assert not torch.equal(runs[True]["conv_stem.weight"], start["conv_stem.weight"])  # weights still train
