"""The softmax baseline (issue 15): exact ImageNet mapping of labels, the restricted report, the CLI, paper_table."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from embedkit.classify.baseline import (
    baseline_report,
    imagenet_classes,
    map_labels,
    read_overrides,
)
from embedkit.errors import ConfigError, MismatchError

REPO = Path(__file__).resolve().parents[1]


def test_mapper_has_no_false_matches():
    """Labels that a loose (or even an exact-synonym) match sends to the wrong ImageNet class stay unmapped."""
    m = map_labels(["kite", "sewing_needle", "ear", "mouse", "crane", "no_such_thing"])
    assert m.mapped == {}
    assert set(m.unmapped) == {"kite", "sewing_needle", "ear", "mouse", "crane", "no_such_thing"}
    assert "bird" in m.unmapped["kite"] and "dragonfly" in m.unmapped["sewing_needle"]
    assert "corn" in m.unmapped["ear"] and "ambiguous" in m.unmapped["crane"]
    assert "no ImageNet class" in m.unmapped["no_such_thing"]
    # near misses are not matches: no substring, prefix or plural matching
    assert map_labels(["tige", "tigers", "dragon", "needle"]).mapped == {}


def test_near_but_wrong_animals_are_refused_alone_and_beside_the_real_class():
    """WordNet names 'hedgehog' a porcupine and 'maned wolf' a red wolf: other animals, left unmapped with the
    reason, and no longer in the way of the porcupine label itself."""
    from embedkit.classify.baseline import imagenet_classes

    m = map_labels(["hedgehog", "maned_wolf", "porcupine"])
    assert set(m.unmapped) == {"hedgehog", "maned_wolf"}
    assert "porcupine" in m.unmapped["hedgehog"] and "different animal" in m.unmapped["maned_wolf"]
    assert imagenet_classes().names[m.mapped["porcupine"]] == "porcupine"


def test_mapper_exact_names_and_synonyms():
    m = map_labels(["tiger", "hot_dog", "lady_beetle", "mobile_phone", "t_shirt", "Spider-Web"])
    cls = imagenet_classes()
    assert {lab: cls.names[i] for lab, i in m.mapped.items()} == {
        "tiger": "tiger", "hot_dog": "hotdog", "lady_beetle": "ladybug", "mobile_phone": "cellular telephone",
        "t_shirt": "jersey", "Spider-Web": "spider web"}
    assert m.how["tiger"] == "name" and m.how["lady_beetle"] == "synonym" and not m.unmapped


def test_mapper_overrides(tmp_path):
    table = tmp_path / "map.csv"
    table.write_text("label,imagenet,reason\nmouse,computer mouse\nkite,n01608432\ncrane,134\n"
                     "tiger,,our tigers are cartoons\n", encoding="utf-8")
    m = map_labels(["mouse", "kite", "crane", "tiger"], read_overrides(table))
    cls = imagenet_classes()
    assert {lab: cls.names[i] for lab, i in m.mapped.items()} == {"mouse": "mouse", "kite": "kite",
                                                                 "crane": "crane bird"}
    assert set(m.how.values()) == {"override"}
    assert m.unmapped == {"tiger": "override: our tigers are cartoons"}
    with pytest.raises(ConfigError, match="ambiguous"):
        map_labels(["x"], {"x": ("crane", "")})
    # two labels landing on one class cannot be told apart by the restricted classifier
    m = map_labels(["hot_dog", "hotdog"])
    assert not m.mapped and all("shares ImageNet class" in r for r in m.unmapped.values())


def test_emoji_dev_labels_all_accounted(emoji_dir):
    labels = sorted(p.name for p in emoji_dir.iterdir() if p.is_dir())
    m = map_labels(labels)
    assert sorted(set(m.mapped) | set(m.unmapped)) == labels and not set(m.mapped) & set(m.unmapped)
    assert all(m.unmapped.values())
    assert "mouse" in m.unmapped  # emoji-dev's mouse is the animal; ImageNet's is the computer mouse
    assert len(set(m.mapped.values())) == len(m.mapped) >= 25


def test_baseline_report_excludes_unmapped_and_counts_them():
    cls = imagenet_classes()
    m = map_labels(["tiger", "volcano", "kite"])
    t, v = cls.names.index("tiger"), cls.names.index("volcano")
    logits = np.zeros((5, 1000))
    logits[0, t] = logits[1, t] = 5  # tiger images: 1 right, 1 wrong (volcano), 1000-way: other class wins
    logits[1, v] = 9
    logits[2, v] = 3
    logits[2, 0] = 8  # volcano image: right when restricted, wrong 1000-way
    logits[3:, 21] = 10  # kite images -> ImageNet's bird kite: unmapped, excluded
    y = ["tiger", "tiger", "volcano", "kite", "kite"]
    rep, failures = baseline_report(logits, y, m, [f"p{i}" for i in range(5)])
    assert rep["n"] == 3 and rep["classes"] == ["tiger", "volcano"]
    assert rep["top1"] == pytest.approx(2 / 3) and rep["per_class"]["tiger"]["top1"] == 0.5
    b = rep["baseline"]
    assert b["top1_all"] == pytest.approx(2 / 5) and b["images_excluded"] == 2
    assert b["unmapped"]["kite"]["images"] == 2 and "bird" in b["unmapped"]["kite"]["reason"]
    assert b["imagenet_1000way"]["top1"] == pytest.approx(1 / 3)
    assert [f["path"] for f in failures] == ["p1"]
    with pytest.raises(MismatchError):
        baseline_report(logits[:, :30], y, m)


@pytest.mark.slow
def test_cli_baseline_on_emoji_dev(emoji_dir, tmp_path):
    from embedkit.cli.main import app

    classes = ["tiger", "volcano", "laptop", "pig", "hot_dog", "mouse"]  # mouse: unmapped
    rows = [[str(p), c] for c in classes for p in sorted((emoji_dir / c).iterdir())[:5]]
    manifest = tmp_path / "subset.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["path", "label"]] + rows)
    out = tmp_path / "baseline"
    r = CliRunner().invoke(app, ["classify", "baseline", str(manifest), "--backbone", "efficientnet_lite0",
                                 "-o", str(out), "--workers", "0", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "unmapped mouse (5 images, excluded)" in r.output
    rep = json.loads((out / "report.json").read_text())
    assert 0.0 <= rep["top1"] <= rep["top5"] <= 1.0
    assert rep["n"] == 25 and sorted(rep["classes"]) == sorted(c for c in classes if c != "mouse")
    assert set(rep["baseline"]["unmapped"]) == {"mouse"} and rep["baseline"]["images_total"] == 30
    assert (out / "failures.csv").is_file()
    # the softmax baseline's own summary is not a logistic-regression baseline: no empty line for one
    txt = (out / "report.txt").read_text()
    assert txt.startswith("softmax baseline efficientnet_lite0: top-1") and "logistic-regression" not in txt
    assert txt.rstrip().splitlines()[-1].startswith("MACRO")


def test_paper_table_uses_library_mapping(capsys):
    spec = importlib.util.spec_from_file_location("paper_table", REPO / "benchmarks" / "paper_table.py")
    pt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pt)
    m = pt.imagenet_mapping(["kite", "sewing_needle", "ear", "tiger"])  # used to abort / map to bird, dragonfly
    assert list(m.mapped) == ["tiger"] and set(m.unmapped) == {"kite", "sewing_needle", "ear"}
    assert "not in the softmax baseline" in capsys.readouterr().out
