"""Model folders (issue 14): a format that cannot run code, refusal to overwrite, the model saved before plots."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from click.testing import CliRunner
from test_classify import app, blobs, make_store

from embedkit.classify.model_folder import load_classifier, save_classifier
from embedkit.classify.svm import SVMClassifier
from embedkit.errors import ConfigError, StoreError


@pytest.fixture
def store(tmp_path):
    X, y = blobs(n_per=12, k=3, d=6)
    return make_store(tmp_path / "codes", X, list(y))


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("decision", ["ovr", "ovo"])
@pytest.mark.parametrize("kernel", ["rbf", "sigmoid", "linear", "poly"])
def test_roundtrip_predicts_bit_for_bit(tmp_path, store, kernel, decision, k):
    X, y = blobs(n_per=15, k=k, d=6, sep=1.5, seed=5)
    kw = {"gamma": 1e-2, "coef0": -0.5} if kernel == "sigmoid" else {"gamma": "scale"}
    clf = SVMClassifier(kernel=kernel, C=3, decision=decision, backend="sklearn", **kw).fit(X, y)
    save_classifier(tmp_path / "m", clf, store)
    assert not (tmp_path / "m" / "model.pkl").exists()
    back, meta = load_classifier(tmp_path / "m")
    assert type(back) is SVMClassifier and meta["classifier"]["type"] == "SVMClassifier"
    np.testing.assert_array_equal(back.class_scores(X), clf.class_scores(X))
    np.testing.assert_array_equal(back.predict(X), clf.predict(X))
    assert back.get_params() == clf.get_params() and list(back.classes_) == list(clf.classes_)


def test_knn_and_int_labels_roundtrip(tmp_path, store):
    from embedkit.classify.knn import KNNCodesClassifier

    X, y = blobs(n_per=10, k=3, d=6)
    yi = np.searchsorted(np.unique(y), y)  # integer labels stay integers
    for clf in (KNNCodesClassifier(n_neighbors=3).fit(X, y), SVMClassifier(backend="sklearn").fit(X, yi)):
        save_classifier(tmp_path / type(clf).__name__, clf, store)
        back, _ = load_classifier(tmp_path / type(clf).__name__)
        np.testing.assert_array_equal(back.predict(X), clf.predict(X))
        assert back.predict(X).dtype == clf.predict(X).dtype


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # would create the marker file when unpickled


def test_crafted_pickle_is_refused_and_never_run(tmp_path, store):
    folder = tmp_path / "evil"
    folder.mkdir()
    marker = tmp_path / "pwned"
    (folder / "model.pkl").write_bytes(pickle.dumps(_Payload(str(marker))))
    (folder / "model.json").write_text(json.dumps({"format": "embedkit-classifier/1", "dim": 6}))
    with pytest.raises(StoreError, match="no longer loads pickles"):
        load_classifier(folder)
    assert not marker.exists()
    # an object array (needs pickle) in model.npz of the current format
    clf = SVMClassifier(backend="sklearn").fit(*blobs(n_per=5, k=2, d=6))
    save_classifier(tmp_path / "m", clf, store)
    np.savez(tmp_path / "m" / "model.npz", evil=np.array([_Payload(str(marker))], dtype=object))
    with pytest.raises(StoreError, match="only pickle could load"):
        load_classifier(tmp_path / "m")
    assert not marker.exists()


def test_crafted_json_is_refused(tmp_path, store):
    clf = SVMClassifier(backend="sklearn").fit(*blobs(n_per=5, k=2, d=6))
    save_classifier(tmp_path / "m", clf, store)
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    for bad, match in ((dict(meta["classifier"], type="os.system"), "unknown type 'os.system'"),
                       (dict(meta["classifier"], params={"kernel": "rbf", "evil": 1}), "cannot be rebuilt"),
                       ("x", "unknown type")):
        (tmp_path / "m" / "model.json").write_text(json.dumps({**meta, "classifier": bad}))
        with pytest.raises(StoreError, match=match):
            load_classifier(tmp_path / "m")


def test_train_refuses_existing_folder_unless_overwrite(tmp_path, store):
    from embedkit.classify.train import train

    kw = dict(Cs=[1], gammas=["scale"], n_jobs=1, progress=False, baseline=False)
    train(store, tmp_path / "m", **kw)
    before = (tmp_path / "m" / "model.json").read_text()
    with pytest.raises(ConfigError, match=r"already holds a model; .*--overwrite"):
        train(store, tmp_path / "m", **kw)
    assert (tmp_path / "m" / "model.json").read_text() == before
    train(store, tmp_path / "m", overwrite=True, **kw)
    args = ["classify", "train", str(store.path), "-o", str(tmp_path / "m"), "--quiet", "--C", "1", "--gamma",
            "scale", "--jobs", "1", "--no-baseline"]
    r = CliRunner().invoke(app(), args)
    assert r.exit_code == 2 and r.output.strip().splitlines() == [
        f"error: {str(tmp_path / 'm')!r} already holds a model; choose another folder or replace it with --overwrite"]
    r = CliRunner().invoke(app(), args + ["--overwrite"])
    assert r.exit_code == 0, r.output


def test_math_like_labels_train_and_plot(tmp_path):
    from embedkit.classify.train import train

    X, y = blobs(n_per=10, k=3, d=6)
    names = {"c0": "$x^$", "c1": "a_b$", "c2": "100%"}
    store = make_store(tmp_path / "codes", X, [names[v] for v in y])
    res = train(store, tmp_path / "m", Cs=[1], gammas=["scale"], n_jobs=1, progress=False, baseline=False)
    assert (tmp_path / "m" / "model.json").exists() and res.files["confusion"].stat().st_size > 0
    assert set(load_classifier(tmp_path / "m")[0].classes_) == set(names.values())
