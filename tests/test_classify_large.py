"""Classification of large stores in bounded memory: the training plan, the Nystroem + linear SVM fall-back."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import CountingStore
from test_classify import app, blobs, make_store

from embedkit.classify.large import ApproxKernelSVM, exact_bytes, plan_training, rows_within, stratified_sample
from embedkit.errors import ConfigError


def test_plan_is_decided_from_sizes():
    # 1M rows of 1,280-d codes never get an exact N x N kernel, whatever the budget of a real machine
    p = plan_training(1_000_000, 1280, memory_budget=64 << 30, jobs=2)
    assert p.mode == "approx" and p.max_kernel_rows < 60_000 and "subsample" in p.reason
    assert exact_bytes(1_000_000, 1280, 2) > 20e12
    n = rows_within(8 << 30, 1280, 2)
    assert exact_bytes(n, 1280, 2) <= 8 << 30 < exact_bytes(n + 100, 1280, 2)
    assert plan_training(500, 16, max_kernel_rows=1000).mode == "exact"
    assert plan_training(5000, 16, max_kernel_rows=1000).to_dict()["max_kernel_rows"] == 1000
    with pytest.raises(ConfigError, match="max_kernel_rows 1 is not valid"):
        plan_training(10, 4, max_kernel_rows=1)


def test_stratified_sample_keeps_every_class():
    y = np.array(["big"] * 990 + ["small"] * 10, dtype=object)
    s = stratified_sample(y, 100, seed=0)
    assert 95 <= len(s) <= 102 and set(y[s]) == {"big", "small"} and (np.diff(s) > 0).all()
    assert len(stratified_sample(y, 5000)) == 1000


def test_approx_svm_in_memory():
    X, y = blobs(n_per=200, k=4, d=16, sep=3.0, seed=4)
    clf = ApproxKernelSVM(C=10, n_components=256, batch_rows=128).fit(X, y)
    assert clf.score(X, y) > 0.95
    labels, scores = clf.predict_topk(X[:5], 2)
    assert labels.shape == (5, 2) and (np.diff(scores, axis=1) <= 0).all()
    Xb, yb = blobs(n_per=100, k=2, d=8, seed=1)
    b = ApproxKernelSVM(kernel="linear", C=1).fit(Xb, yb)
    assert b.decision_function(Xb).shape == (200,) and b.score(Xb, yb) > 0.95


def test_train_falls_back_above_max_kernel_rows_and_beats_majority(tmp_path):
    from embedkit.classify.model_folder import load_classifier
    from embedkit.classify.train import train

    X, y = blobs(n_per=600, k=5, d=24, sep=2.0, seed=7)  # 3,000 rows, 5 balanced classes: majority = 0.2
    store = CountingStore(make_store(tmp_path / "codes", X, list(y)))
    res = train(store, tmp_path / "m", Cs=[1, 10], gammas=["scale"], max_kernel_rows=300, n_jobs=1, progress=False,
                approx_params={"n_components": 256, "batch_rows": 500})
    assert res.plan["mode"] == "approx" and res.plan["search_rows"] <= 305
    assert "fallback: Nystroem + linear SVM (grid search on" in res.summary()
    assert any("subsample of 300 rows" in n for n in res.notes)
    assert res.test["top1"] > 0.9 and res.test["top1"] > 0.2 + 0.6  # far above the majority class
    # bounded reads: the subsample (300), the Nystroem sample (256), SGD batches (500), the test part (600);
    # never the 2,400 training rows at once
    assert max(store.reads) <= 600 and sum(store.reads) > 3 * 2400
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    report = json.loads((tmp_path / "m" / "report.json").read_text())
    assert meta["training"]["mode"] == report["training"]["mode"] == "approx"
    assert meta["estimator"] == "ApproxKernelSVM"
    clf, _ = load_classifier(tmp_path / "m")
    assert type(clf).__name__ == "ApproxKernelSVM"
    Xt = X[::7]
    np.testing.assert_array_equal(clf.class_scores(Xt), clf.class_scores(Xt.copy()))
    assert (clf.predict(Xt) == y[::7]).mean() > 0.9
    # eval and predict stream the store through the loaded fall-back model
    r = CliRunner().invoke(app(), ["classify", "eval", str(tmp_path / "m"), str(store.path), "--part", "test"])
    assert r.exit_code == 0, r.output
    assert f"evaluated {res.test['n']} items: top-1 {res.test['top1']:.3f} (95% CI" in r.output


def test_fallback_report_says_what_was_fitted_not_what_was_asked(tmp_path):
    from embedkit.classify.train import train

    X, y = blobs(n_per=100, k=3, d=8, sep=2.0, seed=3)
    res = train(make_store(tmp_path / "codes", X, list(y)), tmp_path / "m", kernels=("rbf",), Cs=[1], gammas=["scale"],
                decision="ovo", class_weight="balanced", max_kernel_rows=100, n_jobs=1, progress=False,
                approx_params={"n_components": 64, "batch_rows": 100}, device="cpu")
    assert res.plan["mode"] == "approx"
    assert any("one-vs-rest without class weights" in n and "'ovo'" in n and "'balanced'" in n for n in res.notes)
    clf = json.loads((tmp_path / "m" / "report.json").read_text())["classifier"]
    assert clf["decision"] == "ovr" and clf["class_weight"] is None and clf["estimator"] == "ApproxKernelSVM"
    txt = (tmp_path / "m" / "report.txt").read_text()
    assert "decision ovr" in txt and "balanced" not in txt


def test_cli_max_kernel_rows(tmp_path):
    X, y = blobs(n_per=150, k=3, d=8, seed=2)
    store = make_store(tmp_path / "codes", X, list(y))
    r = CliRunner().invoke(app(), ["classify", "train", str(store.path), "-o", str(tmp_path / "m"), "--quiet",
                                   "--C", "1", "--gamma", "scale", "--jobs", "1", "--max-kernel-rows", "100",
                                   "--no-baseline"])
    assert r.exit_code == 0, r.output
    assert "warning: " in r.output and "fallback: Nystroem + linear SVM" in r.output
    r = CliRunner().invoke(app(), ["classify", "train", str(store.path), "-o", str(tmp_path / "m2"), "--quiet",
                                   "--C", "1", "--gamma", "scale", "--jobs", "1", "--no-baseline"])
    assert r.exit_code == 0, r.output
    assert "exact kernel SVM" in r.output and "warning" not in r.output
