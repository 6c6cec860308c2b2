"""Classification: SVMClassifier, the precomputed-kernel grid search, top-k metrics, model folders, the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.svm import SVC

from embedkit.classify.svm import LogisticBaseline, SVMClassifier
from embedkit.errors import ConfigError, DataError, MismatchError, MissingDependencyError, NotFittedError, StoreError
from embedkit.classify.gridsearch import grid_search_svm, param_grid, resolve_gammas
from embedkit.classify.metrics import classification_report, per_class_top_k, report_table, top_k_precision
from embedkit.store.codestore import CodeStore

IDENTITY = {"backbone": "synthetic", "layer": "pool", "node": "x", "spatial": "avg",
            "weights": {"identity": "none", "sha256": None}, "preprocessing": {"input_size": 8}}


def blobs(n_per=20, k=4, d=16, sep=4.0, seed=0):
    """Separable Gaussian blobs with ReLU-like non-negative codes (like CNN codes)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, sep, (k, d))
    X = np.concatenate([c + rng.normal(0, 1, (n_per, d)) for c in centres])
    y = np.repeat([f"c{i}" for i in range(k)], n_per).astype(object)
    return np.maximum(X + 2, 0).astype(np.float32), y


def make_store(root: Path, X, labels, identity=IDENTITY, paths=None, styles=None) -> CodeStore:
    """A code store written by hand (no images needed); ``styles`` adds a ``style`` column to items.csv."""
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "codes.npy", np.asarray(X, np.float32))
    paths = paths or [str(root / f"{lab}" / f"img{i}.png") for i, lab in enumerate(labels)]
    styles = styles or ["s"] * len(labels)
    with open(root / "items.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("path", "label", "width", "height", "bytes", "sha1", "style"))
        w.writerows([[p, lab, 8, 8, 100, "", st] for p, lab, st in zip(paths, labels, styles)])
    (root / "skipped.csv").write_text("path,reason\n")
    meta = {"identity": identity, "backbone": identity["backbone"], "layer": identity["layer"], "dim": int(np.shape(X)[1]),
            "dtype": "float32", "count": len(labels), "l2_normalize": False, "pca_whiten": None}
    (root / "meta.json").write_text(json.dumps(meta))
    return CodeStore.open(root)


def app():
    import embedkit.cli.main

    return embedkit.cli.main.app


# --------------------------------------------------------------------------- metrics


def test_top_k_metrics_hand_worked():
    classes = ["a", "b", "c"]
    scores = np.array([[3.0, 2.0, 1.0],   # true a: top1 a             -> hit@1
                       [1.0, 3.0, 2.0],   # true c: top1 b, top2 c     -> hit@2
                       [2.0, 1.0, 3.0],   # true b: ranked c, a, b     -> hit@3 only
                       [0.0, 5.0, 1.0]])  # true b: top1 b             -> hit@1
    y = ["a", "c", "b", "b"]
    assert top_k_precision(y, scores, classes, 1) == pytest.approx(0.5)
    assert top_k_precision(y, scores, classes, 2) == pytest.approx(0.75)
    assert top_k_precision(y, scores, classes, 5) == pytest.approx(1.0)  # k beyond the class count clips
    assert per_class_top_k(y, scores, classes, 1) == {"a": 1.0, "b": 0.5, "c": 0.0}
    rep = classification_report(y, scores, classes, ks=(1, 2))
    # rows = true a, b, c; columns = predicted a, b, c
    assert rep["confusion"] == [[1, 0, 0], [0, 1, 1], [0, 1, 0]]
    assert rep["per_class"]["b"] == {"n": 2, "top1": 0.5, "top2": 0.5, "precision": 0.5, "recall": 0.5}
    table = report_table(rep, "t")
    assert "ALL" in table and " 0.500" in table and " 0.750" in table
    with pytest.raises(DataError, match="not among"):
        top_k_precision(["zzz"], scores[:1], classes, 1)


def test_ties_rank_in_class_order():
    rep = classification_report(["b"], np.array([[1.0, 1.0]]), ["a", "b"], ks=(1, 2))
    assert rep["top1"] == 0.0 and rep["top2"] == 1.0


# --------------------------------------------------------------------------- SVMClassifier


@pytest.mark.parametrize("decision", ["ovr", "ovo"])
@pytest.mark.parametrize("kernel", ["rbf", "sigmoid", "linear", "poly"])
def test_svm_separable(kernel, decision):
    X, y = blobs()
    kw = {"gamma": "scale"} if kernel != "sigmoid" else {"gamma": 1e-3, "coef0": -1.0}
    clf = SVMClassifier(kernel=kernel, C=10, decision=decision, backend="sklearn", **kw).fit(X, y)
    assert (clf.predict(X) == y).mean() >= (0.95 if kernel != "sigmoid" else 0.7)
    s = clf.decision_function(X)
    assert s.shape == (len(X), 4)
    labels, top = clf.predict_topk(X, 3)
    assert labels.shape == top.shape == (len(X), 3)
    assert (np.diff(top, axis=1) <= 0).all()  # best first
    if decision == "ovr":  # one-vs-rest: predict = class of the largest decision value
        assert (labels[:, 0] == clf.predict(X)).all()


def test_svm_binary_and_weights():
    X, y = blobs(k=2)
    clf = SVMClassifier(backend="sklearn").fit(X, y)
    assert clf.decision_function(X).shape == (len(X),)
    assert ((clf.decision_function(X) > 0) == (clf.predict(X) == clf.classes_[1])).all()
    assert clf.predict_topk(X, 5)[0].shape == (len(X), 2)
    # a heavy weight on one class of overlapping data moves predictions towards it
    Xo, yo = blobs(k=2, sep=0.3, seed=3)
    base = (SVMClassifier(backend="sklearn", C=1).fit(Xo, yo).predict(Xo) == "c1").sum()
    heavy = (SVMClassifier(backend="sklearn", C=1, class_weight={"c1": 20.0}).fit(Xo, yo).predict(Xo) == "c1").sum()
    assert heavy > base
    assert SVMClassifier(backend="sklearn", class_weight="balanced", decision="ovo").fit(Xo, yo).score(Xo, yo) > 0.5


def test_svm_errors():
    X, y = blobs()
    with pytest.raises(MissingDependencyError, match=r"embedkit\[gpu\]"):
        SVMClassifier(backend="cuml").fit(X, y)
    with pytest.raises(ConfigError, match="kernel"):
        SVMClassifier(kernel="rbff").fit(X, y)
    with pytest.raises(ConfigError, match="decision"):
        SVMClassifier(decision="all").fit(X, y)
    with pytest.raises(DataError, match="at least 2 classes"):
        SVMClassifier(backend="sklearn").fit(X, np.array(["a"] * len(X)))
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(DataError, match="NaN"):
        SVMClassifier(backend="sklearn").fit(bad, y)
    with pytest.raises(DataError, match="0 sample"):
        SVMClassifier(backend="sklearn").fit(np.zeros((0, 4)), [])
    with pytest.raises(NotFittedError):
        SVMClassifier().predict(X)
    clf = SVMClassifier(backend="sklearn").fit(X, y)
    with pytest.raises(DataError, match="8 features.*expecting 16"):
        clf.predict(X[:, :8])


@pytest.mark.slow
def test_sklearn_contract():
    from sklearn.base import clone
    from sklearn.utils.estimator_checks import check_estimator

    X, y = blobs()
    gs = GridSearchCV(SVMClassifier(backend="sklearn"), {"C": [0.1, 10]}, cv=3).fit(X, y)
    assert gs.best_score_ > 0.9 and clone(gs.best_estimator_).get_params()["C"] == gs.best_params_["C"]
    for est in (SVMClassifier(backend="sklearn"), LogisticBaseline()):
        failed = check_estimator(est, on_fail=None, expected_failed_checks={
            # as for scikit-learn's own SVC: libsvm weights scale C per item, not the same as repeating items
            "check_sample_weight_equivalence_on_dense_data": "libsvm sample weights scale C"})
        bad = [r for r in failed if r["status"] == "failed"]
        assert not bad, [(r["check_name"], str(r["exception"])[:200]) for r in bad]


# --------------------------------------------------------------------------- grid search == GridSearchCV


def _compare(X, y, kernels, Cs, gammas, decision, estimator):
    folds = list(StratifiedKFold(3, shuffle=True, random_state=1).split(X, y))
    res = grid_search_svm(X, y, kernels, Cs, gammas, cv=folds, decision=decision, n_jobs=2)
    ref = GridSearchCV(estimator, param_grid(kernels, Cs, resolve_gammas(gammas, X)), cv=folds).fit(X, y)
    ours = np.array([r["split_scores"] for r in res.rows])
    theirs = np.column_stack([ref.cv_results_[f"split{i}_test_score"] for i in range(3)])
    np.testing.assert_allclose(ours, theirs, atol=1e-6, rtol=0)
    np.testing.assert_allclose([r["mean_score"] for r in res.rows], ref.cv_results_["mean_test_score"], atol=1e-6, rtol=0)
    assert res.best_params == ref.best_params_
    assert res.best_score == pytest.approx(ref.best_score_, abs=1e-6)
    return res


def test_grid_search_equals_sklearn_synthetic():
    X, y = blobs(n_per=25, k=4, d=32, sep=1.0, seed=2)  # overlapping: scores vary across the grid
    res = _compare(X, y, ["rbf", "sigmoid", "linear", "poly"], [0.1, 1, 10], ["scale", "0.1*scale", 1e-4],
                   "ovo", SVC())
    assert len({r["mean_score"] for r in res.rows}) > 3
    _compare(X, y, ["rbf", "sigmoid"], [0.1, 10], ["scale", 1e-4], "ovr", SVMClassifier(backend="sklearn"))


@pytest.mark.slow
def test_grid_search_equals_sklearn_emoji(emoji_store):
    X = emoji_store.take(np.arange(len(emoji_store)))
    y = emoji_store.labels
    res = _compare(X, y, ["rbf", "sigmoid"], [1, 10], ["scale", 1e-4], "ovo", SVC())
    assert res.best_score > 0.5


def test_grid_search_bad_input():
    X, y = blobs(n_per=2)  # 2 items per class: 3 folds are impossible, 2 are used (issue 15), never refused
    with pytest.warns(UserWarning, match="uses 2-fold CV"):
        res = grid_search_svm(X, y, Cs=[1], gammas=["scale"], cv=3)
    assert len(res.folds) == 2 and res.to_dict()["n_folds"] == 2
    with pytest.raises(ConfigError, match="cv 1 is not valid"):
        grid_search_svm(*blobs(), cv=1)
    with pytest.raises(ConfigError, match="kernel"):
        grid_search_svm(*blobs(), kernels=["gauss"])
    with pytest.raises(ConfigError, match="gamma"):
        grid_search_svm(*blobs(), gammas=["x*scale"])
    with pytest.raises(ConfigError, match="max_gram_bytes"):
        grid_search_svm(*blobs(), max_gram_bytes=1000)


def test_grid_search_refuses_a_bad_C_before_building_the_gram_matrix(monkeypatch):
    import embedkit.classify.gridsearch as gsm

    def no_gram(*a, **k):
        raise AssertionError("the N x N Gram matrix was built before C was checked")

    monkeypatch.setattr(gsm, "centred_gram", no_gram)
    for bad in (-1, 0, float("nan"), "ten"):
        with pytest.raises(ConfigError, match="C .* is not valid; use a positive number"):
            grid_search_svm(*blobs(), Cs=[1, bad], gammas=["scale"])
    with pytest.raises(ConfigError, match="C -2 is not valid"):
        SVMClassifier(C=-2).fit(*blobs())


# --------------------------------------------------------------------------- pipeline and CLI


@pytest.fixture
def synth_store(tmp_path):
    X, y = blobs(n_per=15, k=3, d=12)
    styles = [f"s{i % 5}" for i in range(len(y))]
    paths = [str(tmp_path / "imgs" / lab / f"{i}.png") for i, lab in enumerate(y)]
    return make_store(tmp_path / "codes", X, list(y), paths=paths, styles=styles)


def test_cli_train_eval_predict_synthetic(synth_store, tmp_path):
    model = tmp_path / "model"
    r = CliRunner().invoke(app(), ["classify", "train", str(synth_store.path), "-o", str(model), "--quiet",
                                   "--C", "1,10", "--gamma", "scale", "--jobs", "1"])
    assert r.exit_code == 0, r.output
    # every accuracy with its n and a Wilson interval (9 of 9 right is not "certainly 100%")
    assert "test top-1 1.000 (95% CI 0.701-1.000)" in r.output and "n=9" in r.output
    assert "3 classes of 3 have fewer than 5 test items" in r.output
    for name in ("model.npz", "model.json", "split.csv", "report.json", "report.txt", "confusion.png",
                 "per_class.png", "failures.csv", "failures.html", "grid_search.txt"):
        assert (model / name).exists(), name
    meta = json.loads((model / "model.json").read_text())
    assert meta["identity"] == IDENTITY and meta["dim"] == 12 and meta["classes"] == ["c0", "c1", "c2"]
    assert meta["split"] == {"train": 30, "val": 6, "test": 9}
    r = CliRunner().invoke(app(), ["classify", "eval", str(model), str(synth_store.path), "--part", "test"])
    assert r.exit_code == 0, r.output
    assert "evaluated 9 items: top-1 1.000 (95% CI 0.701-1.000)" in r.output
    report = json.loads((model / "eval-codes" / "report.json").read_text())
    assert report["interval"]["top1"] == pytest.approx([0.7008, 1.0], abs=1e-3)
    out = tmp_path / "pred.csv"
    r = CliRunner().invoke(app(), ["classify", "predict", str(model), str(synth_store.path), str(synth_store.path),
                                   "-o", str(out), "-k", "2", "--json", str(tmp_path / "p.json"),
                                   "--parquet", str(tmp_path / "p.parquet")])
    assert r.exit_code == 0, r.output
    assert "predicted 90 images" in r.output and "score = SVM decision value" in r.output
    assert len([line for line in r.output.splitlines() if line.startswith(f"  {synth_store.paths[0]}: c")]) == 1
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 90 and set(rows[0]) == {"path", "pred", "top1", "score1", "top2", "score2"}
    assert all(r_["pred"] == Path(r_["path"]).parent.name for r_ in rows)
    # numbers stay numbers: negative decision values are not escaped into text
    import pandas as pd

    df = pd.read_csv(out)
    assert df["score1"].dtype.kind == "f" and df["score2"].dtype.kind == "f" and (df["score2"] < 0).any()
    pq = pd.read_parquet(tmp_path / "p.parquet")
    assert pq["score2"].dtype.kind == "f" and np.allclose(pq["score2"], df["score2"], atol=1e-5)
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["score"].startswith("SVM decision value") and len(doc["predictions"]) == 90
    assert doc["predictions"][0]["top"][0]["label"] == doc["predictions"][0]["pred"]
    # codes of another backbone are refused with a clear error
    other = make_store(tmp_path / "other", synth_store.take(np.arange(len(synth_store))), list(synth_store.labels),
                       identity={**IDENTITY, "layer": "fc7"})
    r = CliRunner().invoke(app(), ["classify", "eval", str(model), str(other.path)])
    assert r.exit_code == 2 and "layer" in r.output and "error:" in r.output


def test_train_calibrated_and_repeated(synth_store, tmp_path):
    """--calibrate: probabilities that sum to 1 and survive the model folder; --repeats: mean +- std over splits."""
    model = tmp_path / "model"
    r = CliRunner().invoke(app(), ["classify", "train", str(synth_store.path), "-o", str(model), "--quiet",
                                   "--C", "1", "--gamma", "scale", "--jobs", "1", "--calibrate", "--repeats", "3",
                                   "--no-baseline"])
    assert r.exit_code == 0, r.output
    assert "over 3 splits (seeds 0-2, 9 test items each): top-1 1.000 +- 0.000" in r.output
    rep = json.loads((model / "report.json").read_text())
    assert [run["seed"] for run in json.loads((model / "model.json").read_text())["repeats"]["runs"]] == [0, 1, 2]
    assert rep["classifier"]["estimator"] == "CalibratedSVM" and len(rep["repeats"]["runs"]) == 3
    assert "over 3 splits (seeds 0-2" in (model / "report.txt").read_text()
    out = tmp_path / "pred.json"
    r = CliRunner().invoke(app(), ["classify", "predict", str(model), str(synth_store.path), "-o", str(out), "-k", "3"])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["score"].startswith("probability")
    sums = [sum(t["score"] for t in p["top"]) for p in doc["predictions"]]
    assert np.allclose(sums, 1.0) and all(p["top"][0]["score"] > 0.5 for p in doc["predictions"])


def test_split_by_column_and_split_file(synth_store, tmp_path):
    from embedkit.classify.train import split_store, train

    s1 = split_store(synth_store, split_by="style", seed=3)
    assert s1.to_dict() == split_store(synth_store, split_by="style", seed=3).to_dict()  # seeded
    styles = synth_store.column("style")
    parts = [set(styles[getattr(s1, k)]) for k in ("train", "val", "test")]
    assert all(parts) and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])  # whole styles
    s5 = split_store(synth_store, split_by="style", test_groups=["s0"], val_groups=["s1"])
    assert set(styles[s5.test]) == {"s0"} and set(styles[s5.val]) == {"s1"}
    s3 = split_store(synth_store, seed=0)
    assert s3.sizes() == {"train": 30, "val": 6, "test": 9}
    assert s3.to_dict() == split_store(synth_store, seed=0).to_dict() != split_store(synth_store, seed=1).to_dict()
    res = train(synth_store, tmp_path / "m", Cs=[1], gammas=["scale"], n_jobs=1, progress=False, baseline=False)
    s4 = split_store(synth_store, split_file=tmp_path / "m" / "split.csv")
    assert s4.to_dict() == s3.to_dict() and res.test["n"] == 9
    with pytest.raises(ConfigError, match="split column"):
        split_store(synth_store, split_by="colour")


@pytest.mark.parametrize("case", ["one_class", "nan", "empty"])
def test_cli_bad_stores(tmp_path, case):
    X, y = blobs(n_per=6, k=2, d=4)
    if case == "one_class":
        y = np.array(["a"] * len(y))
    if case == "nan":
        X[1, 1] = np.nan
    if case == "empty":
        X, y = np.zeros((0, 4), np.float32), []
    store = make_store(tmp_path / "s", X, list(y))
    r = CliRunner().invoke(app(), ["classify", "train", str(store.path), "-o", str(tmp_path / "m"), "--quiet"])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output  # one line, no traceback
    assert {"one_class": "at least 2 classes", "nan": "NaN", "empty": "no codes"}[case] in lines[0]
    assert not (tmp_path / "m" / "model.json").exists()


def test_model_folder_errors(tmp_path, synth_store):
    from embedkit.classify.model_folder import load_classifier, postprocess_of

    with pytest.raises(StoreError, match="model.json is missing"):
        load_classifier(tmp_path)
    from embedkit.classify.train import train

    train(synth_store, tmp_path / "m", Cs=[1], gammas=["scale"], n_jobs=1, progress=False, baseline=False)
    clf, meta = load_classifier(tmp_path / "m")
    assert not list((tmp_path / "m").glob("*.tmp"))
    with pytest.raises(DataError, match="expecting 12"):
        clf.predict(postprocess_of(meta, tmp_path / "m").apply(np.ones((2, 7))))
    short = make_store(tmp_path / "short", synth_store.take(np.arange(len(synth_store)))[:, :6], list(synth_store.labels))
    from embedkit.classify.model_folder import check_store_matches

    with pytest.raises(MismatchError, match="6-d"):
        check_store_matches(meta, short, tmp_path / "m")


@pytest.mark.slow
def test_cli_emoji_train_and_predict_images(emoji_store, emoji_dir, tmp_path):
    model = tmp_path / "model"
    r = CliRunner().invoke(app(), ["classify", "train", str(emoji_store.path), "-o", str(model), "--quiet",
                                   "--C", "1,10", "--gamma", "scale,1e-4", "--split-by", "design", "--jobs", "2"])
    assert r.exit_code == 0, r.output
    meta = json.loads((model / "model.json").read_text())
    assert meta["test"]["top1"] > 0.4 and meta["test"]["top5"] >= meta["test"]["top1"]
    assert meta["baseline"]["n"] == meta["test"]["n"]
    split = {row[0]: row[1] for row in csv.reader(open(model / "split.csv")) if row[1] != "split"}
    by_design = {}
    for p, part in split.items():
        by_design.setdefault(Path(p).stem, set()).add(part)
    assert all(len(parts) == 1 for parts in by_design.values())  # whole designs held out
    imgs = tmp_path / "new"
    imgs.mkdir()
    src = sorted((emoji_dir / "tiger").glob("*.png"))[:2] + sorted((emoji_dir / "laptop").glob("*.png"))[:1]
    for p in src:
        (imgs / f"{p.parent.name}-{p.name}").write_bytes(p.read_bytes())
    (imgs / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "pred.csv"
    r = CliRunner().invoke(app(), ["classify", "predict", str(model), str(imgs), "-o", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "predicted 3 images (1 skipped)" in r.output
    rows = list(csv.DictReader(open(out)))
    assert [r_["top1"] == r_["pred"] for r_ in rows] == [True] * 3
    # the fitted SVM predicts the same from the freshly embedded images as from the stored codes
    idx = [list(emoji_store.paths).index(str(p.resolve())) for p in src]
    clf = __import__("embedkit.classify.model_folder", fromlist=["load_classifier"]).load_classifier(model)[0]
    stored = clf.predict(emoji_store.take(idx))
    assert [r_["pred"] for r_ in sorted(rows, key=lambda r_: r_["path"])] == list(stored[np.argsort([f"{p.parent.name}-{p.name}" for p in src])])


# --------------------------------------------------------------------------- device, folds, kNN, imported codes


def test_device_cpu_reaches_the_svm_backend(monkeypatch):
    """Issue 8: --device cpu must decide the final SVM's library too, even where CUDA and cuML are there."""
    import embedkit.device
    from embedkit.classify.svm import svm_backend

    monkeypatch.setattr(embedkit.device, "cuda_available", lambda: True)
    monkeypatch.setattr(embedkit.device, "has_module", lambda m: True)
    assert svm_backend("auto", "auto") == "cuml"  # what a GPU machine picks...
    assert svm_backend("auto", "cpu") == "sklearn"  # ...unless the user said cpu
    X, y = blobs()
    assert SVMClassifier(device="cpu").fit(X, y).backend_ == "sklearn"
    with pytest.raises(ConfigError, match="device 'cpu'"):
        SVMClassifier(backend="cuml", device="cpu").fit(X, y)


def test_small_classes_use_fewer_folds_not_refused(tmp_path):
    """Issue 15: --split-by design --test-groups ... leaving 2 training items of a class must train, on 2 folds."""
    X, y = blobs(n_per=4, k=3, d=8)
    paths = [str(tmp_path / "imgs" / lab / f"design{i % 4}.png") for i, lab in enumerate(y)]
    store = make_store(tmp_path / "codes", X, list(y), paths=paths)
    r = CliRunner().invoke(app(), ["classify", "train", str(store.path), "-o", str(tmp_path / "m"), "--quiet", "--C",
                                   "1", "--gamma", "scale", "--jobs", "1", "--split-by", "design", "--test-groups",
                                   "design0,design1"])
    assert r.exit_code == 0, r.output
    assert "warning: 3-fold CV needs at least 3 training items per class" in r.output and "uses 2-fold CV" in r.output
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["grid_search"]["cv"] == 2 and meta["grid_search"]["cv_asked"] == 3
    assert meta["split"] == {"train": 3, "val": 3, "test": 6}  # 2 designs x 3 classes left for the search


def test_cli_knn_method(synth_store, tmp_path):
    model = tmp_path / "knn"
    r = CliRunner().invoke(app(), ["classify", "train", str(synth_store.path), "-o", str(model), "--quiet",
                                   "--method", "knn", "--neighbors", "3"])
    assert r.exit_code == 0, r.output
    assert "trained KNN on 36 codes" in r.output and "test top-1 1.000 (95% CI" in r.output
    meta = json.loads((model / "model.json").read_text())
    assert meta["estimator"] == "KNNCodesClassifier" and meta["method"] == "knn" and "grid_search" not in meta
    r = CliRunner().invoke(app(), ["classify", "eval", str(model), str(synth_store.path)])
    assert r.exit_code == 0 and "evaluated 45 items: top-1 1.000 (95% CI 0.921-1.000)" in r.output, r.output


def test_imported_codes_train_but_cannot_predict_images(tmp_path):
    X, y = blobs(n_per=10, k=2, d=6)
    store = make_store(tmp_path / "codes", X, list(y))
    meta = json.loads((store.path / "meta.json").read_text())
    (store.path / "meta.json").write_text(json.dumps({**meta, "identity": None}))
    store = CodeStore.open(store.path)
    from embedkit.classify.train import train

    train(store, tmp_path / "m", Cs=[1], gammas=["scale"], n_jobs=1, progress=False, baseline=False)
    r = CliRunner().invoke(app(), ["classify", "predict", str(tmp_path / "m"), str(store.path), "-o",
                                   str(tmp_path / "p.csv")])
    assert r.exit_code == 0 and "predicted 20 images" in r.output, r.output
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    r = CliRunner().invoke(app(), ["classify", "predict", str(tmp_path / "m"), str(imgs)])
    assert r.exit_code == 2 and r.output.startswith("error: ") and "imported without a backbone" in r.output
    # a model of imported codes and a store of a known backbone do not mix
    other = make_store(tmp_path / "other", X, list(y))
    r = CliRunner().invoke(app(), ["classify", "eval", str(tmp_path / "m"), str(other.path)])
    assert r.exit_code == 2 and "without a known backbone" in r.output, r.output
