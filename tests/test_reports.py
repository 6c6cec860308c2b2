"""Outputs people look at (issue 14) and pictures only of the store's own files (issue 16).

Reports carry macro figures, the classifier's parameters and the baseline; plots say what they plot;
failures.html and the maps inline a store row's picture only when the file still has the sha1
recorded for that row, and escape every file name.
"""

from __future__ import annotations

import hashlib
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embedkit import CodeStore
from embedkit.classify.evaluate import evaluate_scores, model_extra, write_evaluation
from embedkit.classify.metrics import classification_report, report_table
from embedkit.render.gallery import NO_CHECKSUM, NOT_THIS_STORES

NASTY = "<img src=x onerror=alert(1)>.png"
MAGENTA, CYAN, YELLOW, GREEN = (255, 0, 255), (0, 255, 255), (255, 255, 0), (0, 128, 0)


class _Page(HTMLParser):
    """Every start tag with its attributes, the gallery cells (title -> picture or placeholder), the JSON data."""

    def __init__(self):
        super().__init__()
        self.tags, self.cells, self.data = [], {}, None
        self._cell, self._ph, self._in_data = None, None, False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "div" and "it" in (a.get("class") or "").split():
            self._cell = a.get("title")
        elif tag == "img" and self._cell is not None:
            self.cells[self._cell] = a.get("src", "")
            self._cell = None
        elif tag == "div" and a.get("class") == "ph" and self._cell is not None:
            self._ph = self._cell
            self._cell = None
        elif tag == "script" and a.get("id") == "data":
            self._in_data = True

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_data = False

    def handle_data(self, data):
        if self._ph is not None:
            self.cells[self._ph] = "placeholder: " + data
            self._ph = None
        if self._in_data:
            self.data = json.loads(data)


def _parse(path) -> _Page:
    page = _Page()
    page.feed(Path(path).read_text(encoding="utf-8"))
    page.close()
    return page


def _no_injection(page: _Page) -> None:
    for tag, attrs in page.tags:
        assert not any(k.lower().startswith("on") for k in attrs), (tag, attrs)
        assert not (tag == "img" and attrs.get("src") == "x"), attrs


def _sha1(path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def crafted(tmp_path):
    """A store of 5 rows whose files are: unchanged, changed after embedding, the nasty name (unchanged),
    recorded with a wrong sha1, and recorded with no sha1 at all."""
    img = tmp_path / "img"
    img.mkdir()
    files = {"good": (img / "good.png", MAGENTA), "changed": (img / "changed.png", YELLOW),
             "nasty": (img / NASTY, GREEN), "wrong": (img / "wrong.png", CYAN), "none": (img / "none.png", CYAN)}
    for path, colour in files.values():
        Image.new("RGB", (16, 16), colour).save(path)
    sha1 = {k: _sha1(p) for k, (p, _) in files.items()}
    sha1["wrong"] = "0" * 40
    sha1["none"] = ""
    Image.new("RGB", (16, 16), CYAN).save(files["changed"][0])  # modified after "embedding"
    names = list(files)
    paths = [str(files[k][0]) for k in names]
    codes = np.random.default_rng(0).normal(size=(len(names), 6)).astype(np.float32)
    labels = ["a", "b", "a", "b", "a"]
    store = CodeStore.from_arrays(tmp_path / "store", codes, paths, labels,
                                  columns={"sha1": np.array([sha1[k] for k in names], dtype=object)})
    return store, dict(zip(names, paths))


# --------------------------------------------------------------------------- issue 16: failures.html


def test_failures_html_inlines_only_files_with_their_recorded_sha1_and_escapes_names(crafted, tmp_path):
    store, paths = crafted
    classes = ["a", "b"]
    y = store.labels
    scores = np.array([[0.0, 1.0] if v == "a" else [1.0, 0.0] for v in y])  # every item misclassified
    rep, failures = evaluate_scores(scores, classes, y, store.paths, sha1=store.recorded_sha1())
    assert len(failures) == 5
    files = write_evaluation(tmp_path / "ev", rep, failures)
    page = _parse(files["failures_html"])
    _no_injection(page)
    cells = page.cells
    assert set(cells) == set(paths.values())
    assert cells[paths["good"]].startswith("data:image/png;base64,")
    assert cells[paths["nasty"]].startswith("data:image/png;base64,")  # escaped, and still its own picture
    assert cells[paths["changed"]] == "placeholder: " + NOT_THIS_STORES
    assert cells[paths["wrong"]] == "placeholder: " + NOT_THIS_STORES
    assert cells[paths["none"]] == "placeholder: " + NO_CHECKSUM
    assert NASTY not in files["failures_html"].read_text(encoding="utf-8")


def test_failures_html_of_a_store_without_sha1_column_inlines_nothing(crafted, tmp_path):
    store, paths = crafted
    bare = CodeStore.from_arrays(tmp_path / "bare", np.ones((5, 3), np.float32), list(store.paths), list(store.labels))
    assert "sha1" not in bare.columns and list(bare.recorded_sha1()) == [""] * 5
    assert list(bare.recorded_sha1([4, 0])) == [""] * 2
    scores = np.array([[0.0, 1.0] if v == "a" else [1.0, 0.0] for v in bare.labels])
    for sha1 in (bare.recorded_sha1(), None):  # None: a caller that passed no checksums
        rep, failures = evaluate_scores(scores, ["a", "b"], bare.labels, bare.paths, sha1=sha1)
        page = _parse(write_evaluation(tmp_path / f"ev{sha1 is None}", rep, failures)["failures_html"])
        assert set(page.cells.values()) == {"placeholder: " + NO_CHECKSUM}


# --------------------------------------------------------------------------- issue 16: the maps


def test_map_html_thumbnails_only_of_files_with_their_recorded_sha1(crafted, tmp_path):
    from embedkit.view.pipeline import view

    store, paths = crafted
    out = tmp_path / "map.html"
    view(store, out, method="pca", thumbnails=10, metrics=False)
    page = _parse(out)
    _no_injection(page)
    d = page.data
    thumb = {p: d["thumbs"][d["tp"][i]] for i, p in enumerate(d["paths"]) if d["tp"][i] >= 0}
    assert set(thumb) == set(paths.values())  # NASTY round-trips through the escaped JSON exactly
    assert thumb[paths["good"]].startswith("data:image/png;base64,")
    assert thumb[paths["nasty"]].startswith("data:image/png;base64,")
    assert thumb[paths["changed"]] == NOT_THIS_STORES and thumb[paths["wrong"]] == NOT_THIS_STORES
    assert thumb[paths["none"]] == NO_CHECKSUM
    assert NASTY not in out.read_text(encoding="utf-8")


def test_map_png_thumbnails_only_of_files_with_their_recorded_sha1(crafted, tmp_path):
    from embedkit.view.pipeline import view

    store, _ = crafted
    out = tmp_path / "map.png"
    view(store, out, method="pca", thumbnails=5, metrics=False, color_by="none")
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)

    def pixels(rgb):
        return int((np.abs(img - np.array(rgb)).max(-1) <= 6).sum())

    assert pixels(MAGENTA) > 50 and pixels(GREEN) > 50  # unchanged files are drawn
    assert pixels(CYAN) == 0  # changed, wrong or missing sha1: a placeholder, not the file's picture


# --------------------------------------------------------------------------- issue 14: reports and plots


def test_report_has_macro_figures_next_to_the_global_ones():
    from sklearn.metrics import precision_recall_fscore_support

    classes = ["a", "b", "c"]
    y = ["a", "a", "a", "b", "c", "c"]
    scores = np.array([[3, 1, 0], [3, 1, 0], [0, 3, 1], [0, 3, 1], [0, 3, 1], [0, 1, 3]], dtype=float)
    rep = classification_report(y, scores, classes, ks=(1, 2))
    pred = ["a", "a", "b", "b", "b", "c"]
    p, r, f, _ = precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
    assert rep["macro"] == pytest.approx({"precision": p, "recall": r, "f1": f, "classes": 3})
    assert rep["top1"] == pytest.approx(4 / 6)  # global (micro) figure unchanged
    table = report_table({**rep, **model_extra({"method": "svm", "params": {"kernel": "rbf", "C": 10.0,
                                                "gamma": "scale", "decision": "ovr"},
                                                "baseline": {"top1": 0.5, "top5": 0.75, "n": 6}})})
    assert "MACRO" in table and f"{p:6.3f}" in table and f"f1 {f:.3f}" in table and "micro" in table
    assert "kernel rbf" in table and "C 10" in table and "gamma scale" in table and "decision ovr" in table
    assert "logistic-regression baseline" in table and "top-1 0.5000" in table and "top-5 0.7500" in table


def test_train_report_carries_svm_parameters_baseline_and_macro(tmp_path):
    from embedkit.classify.train import train

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1.2, (3, 8))
    X = np.concatenate([c + rng.normal(0, 1, (20, 8)) for c in centres]).astype(np.float32)
    y = np.repeat(["c0", "c1", "c2"], 20)
    store = CodeStore.from_arrays(tmp_path / "s", X, [str(tmp_path / f"{i}.png") for i in range(60)], y)
    res = train(store, tmp_path / "m", kernels=("rbf",), Cs=(1.0,), gammas=("scale",), cv=2, progress=False,
                n_jobs=1, device="cpu", backend="sklearn")
    rep = json.loads((tmp_path / "m" / "report.json").read_text())
    assert set(rep["macro"]) >= {"precision", "recall", "f1"}
    clf = rep["classifier"]
    assert clf["kernel"] == "rbf" and clf["C"] == 1.0 and clf["decision"] == "ovr"
    assert isinstance(clf["gamma"], float) and clf["gamma"] > 0  # "scale" resolved on the training codes
    assert rep["logistic_baseline"]["top1"] == pytest.approx(res.baseline["top1"])
    assert rep["logistic_baseline"]["top5"] == pytest.approx(res.baseline["top5"])
    txt = (tmp_path / "m" / "report.txt").read_text()
    assert "MACRO" in txt and "kernel rbf" in txt and "decision ovr" in txt
    assert "logistic-regression baseline" in txt and f"top-1 {res.baseline['top1']:.4f}" in txt


def test_per_class_png_shows_precision_and_recall_and_names_its_means(tmp_path, monkeypatch):
    import embedkit.render.plots as plots

    seen = {}
    original = plots.save_figure

    def spy(fig, path, dpi=120):
        texts = [t.get_text() for ax in fig.axes for t in ([ax.title, ax.xaxis.label, ax.yaxis.label]
                 + (ax.get_legend().get_texts() if ax.get_legend() else []))]
        seen[Path(path).name] = {"texts": texts, "bars": [len(ax.patches) for ax in fig.axes]}
        return original(fig, path, dpi)

    monkeypatch.setattr(plots, "save_figure", spy)
    classes = ["a", "b", "c"]
    y = ["a", "a", "a", "b", "c", "c"]
    scores = np.array([[3, 1, 0], [3, 1, 0], [0, 3, 1], [0, 3, 1], [0, 3, 1], [0, 1, 3]], dtype=float)
    rep, failures = evaluate_scores(scores, classes, y, [f"{i}.png" for i in range(6)])
    files = write_evaluation(tmp_path / "ev", rep, failures, title="t")
    assert files["per_class"].exists() and files["confusion"].exists()
    per = " | ".join(seen["per_class.png"]["texts"])
    assert "top-1 precision (" not in per and "precision and recall" in per.lower()
    assert "recall" in per and f"macro precision {rep['macro']['precision']:.3f}" in per
    assert f"macro recall {rep['macro']['recall']:.3f}" in per
    assert f"global (micro) top-1 {rep['top1']:.3f}" in per
    assert seen["per_class.png"]["bars"][0] == 2 * len(classes)  # precision and recall per class
    conf = " | ".join(seen["confusion.png"]["texts"])
    assert "fraction of the true class" in conf


def test_curves_of_a_single_epoch_have_one_integer_tick(tmp_path, monkeypatch):
    import embedkit.render.plots as plots

    figs = []
    real = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, **k: (figs.append(fig), real(fig, path, **k))[1])
    plots.learning_curves_png([{"epoch": 1, "train_loss": 1.0, "val_loss": 1.2, "train_acc": 0.5, "val_acc": 0.4}],
                              tmp_path / "curves.png", best_epoch=1)
    for ax in figs[0].axes:
        low, high = ax.get_xlim()
        assert [t for t in ax.get_xticks() if low <= t <= high] == [1.0]  # was 0.96, 0.975, ... for one epoch
