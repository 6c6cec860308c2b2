"""The fine-tuned network's own classifier: `classify predict` / `classify eval` on a fine-tuning run or its best.pt."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import write_shapes

from embedkit.finetune.train import finetune

pytestmark = pytest.mark.slow  # fine-tuning runs


def app():
    import embedkit.cli.main

    return embedkit.cli.main.app


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A one-epoch head-only run on synthetic shapes (seconds on a CPU), with its image folder."""
    root = tmp_path_factory.mktemp("ftpred")
    data = write_shapes(root / "shapes", per_class=5, size=32)
    finetune(data, root / "run", progress=False, log=lambda m: None, backbone="efficientnet_lite0", strategy="head",
             epochs=1, input_size=32, batch_size=8, workers=0, augment=False)
    return root / "run", data


def test_predict_with_the_finetuned_softmax(run, tmp_path):
    folder, data = run
    out = tmp_path / "p.json"
    r = CliRunner().invoke(app(), ["classify", "predict", str(folder), str(data / "circle"), str(data / "square"),
                                   "-o", str(out), "-k", "2", "--show", "3", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "predicted 10 images" in r.output
    doc = json.loads(out.read_text())
    assert doc["score"].startswith("probability: softmax") and doc["k"] == 2 and doc["model"].endswith("best.pt")
    for p in doc["predictions"]:
        probs = [t["score"] for t in p["top"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9
        assert {t["label"] for t in p["top"]} <= {"circle", "square", "triangle"}
    # best.pt itself, with the terminal preview saying what a score is
    r = CliRunner().invoke(app(), ["classify", "predict", str(folder / "best.pt"), str(data), "-o",
                                   str(tmp_path / "p.csv"), "--show", "2"])
    assert r.exit_code == 0, r.output
    assert "score = probability: softmax of the fine-tuned network's own classifier" in r.output
    assert "... 13 more in" in r.output


def test_eval_of_the_finetuned_softmax_has_n_and_an_interval(run, tmp_path):
    folder, data = run
    r = CliRunner().invoke(app(), ["classify", "eval", str(folder), str(data), "-o", str(tmp_path / "ev"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "evaluated 15 items: top-1" in r.output and "95% CI" in r.output and "n=15" in r.output
    rep = json.loads((tmp_path / "ev" / "report.json").read_text())
    low, high = rep["interval"]["top1"]
    assert rep["n"] == 15 and low <= rep["top1"] <= high and rep["classifier"]["method"].startswith("softmax")
    assert (tmp_path / "ev" / "failures.csv").is_file() and (tmp_path / "ev" / "confusion.png").is_file()
    assert np.isclose(rep["top5"], 1.0)  # 3 classes: always among the top 5


def test_code_store_and_plain_weights_are_refused(run, tmp_path):
    import torch

    folder, data = run
    torch.save({"w": torch.zeros(2)}, tmp_path / "plain.pt")
    r = CliRunner().invoke(app(), ["classify", "predict", str(tmp_path / "plain.pt"), str(data)])
    assert r.exit_code != 0 and "not an `embedkit finetune` checkpoint" in r.output
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "meta.json").write_text("{}")
    r = CliRunner().invoke(app(), ["classify", "predict", str(folder), str(tmp_path / "store")])
    assert r.exit_code != 0 and "is a code store" in r.output
