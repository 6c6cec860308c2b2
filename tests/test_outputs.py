"""Outputs people open: the neighbours/dedupe CSV (spreadsheet-safe) and HTML gallery (escaped, only this
store's files inlined, query path and label, same-label results marked, --exclude-self, no "-0.0000")."""

from __future__ import annotations

import csv
import hashlib
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import make_shape_image
from PIL import Image

from embedkit.atomic import FORMULA_START
from embedkit.cli.main import app
from embedkit.retrieve.search import format_distance
from embedkit.render.gallery import NO_CHECKSUM, NOT_THIS_STORES

EVIL = "<img src=x onerror=alert(1)>.png"
FORMULA_LABEL = "=SUM(1+1)"


class Page(HTMLParser):
    def __init__(self, text: str):
        super().__init__()
        self.tags, self.text, self._in, self.h2 = [], [], None, []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in = tag

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        self.text.append(data)
        if self._in == "h2":
            self.h2.append(data)


def _safe_page(text: str) -> Page:
    page = Page(text)
    assert {t for t, _ in page.tags} <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "div", "br",
                                          "img"}
    for tag, attrs in page.tags:
        assert not any(a.startswith("on") for a in attrs), (tag, attrs)
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,")
    return page


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A real store of 3 classes (one labelled like a formula) and a file whose name is HTML."""
    import embedkit

    rng = np.random.default_rng(1)
    root = tmp_path_factory.mktemp("hostile")
    for k, name in enumerate(["circle", FORMULA_LABEL, "triangle"]):
        (root / name).mkdir()
        for i in range(4):
            make_shape_image(k, rng).save(root / name / (EVIL if (k, i) == (0, 0) else f"{name[:3]}_{i}.png"))
    store = embedkit.embed(root, tmp_path_factory.mktemp("codes") / "codes", progress=False, workers=0).store
    return root, store.path


def _neighbors(*args):
    res = CliRunner().invoke(app, ["neighbors", *map(str, args), "--quiet", "--workers", "0"])
    assert res.exit_code == 0, res.output
    return res.output


def test_neighbors_gallery_escapes_names_and_shows_query_path_and_label(hostile, tmp_path):
    root, codes = hostile
    q_evil, q_formula = (root / "circle" / EVIL).resolve(), (root / FORMULA_LABEL / "=SU_1.png").resolve()
    html = tmp_path / "g.html"
    out = _neighbors(codes, q_evil, q_formula, "-k", "4", "--html", html)
    assert f"{q_evil}  [circle]" in out and f"[{FORMULA_LABEL}]" in out
    page = _safe_page(html.read_text(encoding="utf-8"))
    assert sum(t == "img" for t, _ in page.tags) == 2 * 5  # every stored file still has its sha1: all inlined
    assert page.h2 == [f"query 1: {q_evil} [circle]", f"query 2: {q_formula} [{FORMULA_LABEL}]"]  # distinct
    assert any(a.get("title") == str(q_evil) for _, a in page.tags)  # the name is an attribute value, not markup
    assert EVIL in "".join(page.text)
    # results with the query's label are marked (green border); each class has 4 images, the query among them
    marked = [a for t, a in page.tags if t == "div" and a.get("class") == "it ok"]
    assert 2 <= len(marked) <= 8
    assert "green: same label as the query" in "".join(page.text)


def test_neighbors_csv_is_spreadsheet_safe(hostile, tmp_path):
    root, codes = hostile
    out_csv = tmp_path / "n.csv"
    _neighbors(codes, root / FORMULA_LABEL, "-k", "3", "--csv", out_csv)
    rows = _rows(out_csv)
    assert len(rows) == 4 * 3 and any(r["label"] == "'" + FORMULA_LABEL for r in rows)
    assert all(r["query_label"] == "'" + FORMULA_LABEL for r in rows)
    for r in rows:
        for col in ("query", "path", "label", "query_label"):
            assert not r[col].startswith(FORMULA_START), r
        assert float(r["distance"]) >= 0 and not r["distance"].startswith("-")


def test_neighbors_exclude_self_and_no_negative_zero(hostile, tmp_path):
    root, codes = hostile
    q = (root / "triangle" / "tri_2.png").resolve()
    out_csv = tmp_path / "n.csv"
    plain = _neighbors(codes, q, "-k", "3")
    assert f"   1  0.0000  {q}" in plain and "-0.0000" not in plain
    out = _neighbors(codes, q, "-k", "3", "--exclude-self", "--csv", out_csv)
    rows = _rows(out_csv)
    assert [r["rank"] for r in rows] == ["1", "2", "3"] and all(r["path"] != str(q) for r in rows)
    assert str(q) not in out.split("\n", 1)[1] and "-0.0000" not in out
    assert format_distance(-1e-7, "cosine") == "0.0000" and format_distance(-0.0, "ip") == "0.0000"
    assert format_distance(-0.25, "ip") == "-0.2500" and format_distance(2e-5, "l2") == "0.0000"


def test_neighbors_gallery_placeholder_for_a_changed_file(hostile, tmp_path):
    root, codes = hostile
    from embedkit.store.codestore import CodeStore

    # a copy of the store whose images are a copy of the folder; then one image is replaced after embedding
    src = tmp_path / "imgs"
    shutil.copytree(root, src)
    store = CodeStore.open(codes)
    moved = [str(src / Path(p).relative_to(root.resolve())) for p in store.paths]
    CodeStore.from_arrays(tmp_path / "codes", store.take(np.arange(len(store))), moved, list(store.labels),
                          store.identity, columns={"sha1": store.column("sha1")})
    victim = src / "triangle" / "tri_1.png"
    Image.new("RGB", (64, 64), (0, 0, 0)).save(victim)
    html = tmp_path / "g.html"
    _neighbors(tmp_path / "codes", src / "triangle" / "tri_0.png", "-k", "12", "--html", html)
    text = html.read_text(encoding="utf-8")
    page = _safe_page(text)
    assert sum(t == "img" for t, _ in page.tags) == 1 + 12 - 1  # query + every result but the changed one
    assert text.count(NOT_THIS_STORES.replace("'", "&#x27;")) == 1


def test_crafted_items_table_is_not_inlined_and_dedupe_csv_is_safe(tmp_path):
    """An imported store naming files outside (absolute, ../) with no or wrong sha1: placeholders, no pixels."""
    secret = tmp_path / "home" / "secret.png"
    secret.parent.mkdir()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(secret)
    own = tmp_path / "own.png"
    Image.new("RGB", (32, 32), (9, 9, 9)).save(own)
    paths = [str(secret), str(tmp_path / "x" / ".." / "home" / "secret.png"), "=HYPERLINK(\"http://e.x\")",
             "@cmd.png", str(own)]
    sha1 = ["", "0" * 40, "", "", hashlib.sha1(own.read_bytes()).hexdigest()]
    labels = ["-2+3", "+1", "@SUM(A1)", "plain", "\tTab"]
    from embedkit.store.codestore import CodeStore

    codes = np.tile(np.array([[1.0, 2.0, 3.0, 4.0]], np.float32), (5, 1))
    CodeStore.from_arrays(tmp_path / "codes", codes, paths, labels, columns={"sha1": np.array(sha1, dtype=object)})
    html, out_csv = tmp_path / "d.html", tmp_path / "d.csv"
    out = _neighbors(tmp_path / "codes", "--dedupe", "--html", html, "--csv", out_csv)
    assert "1 near-duplicate groups (5 images)" in out and "-0.0000" not in out
    text = html.read_text(encoding="utf-8")
    page = _safe_page(text)
    assert sum(t == "img" for t, _ in page.tags) == 1  # only the row whose file has the recorded sha1
    assert text.count(NO_CHECKSUM) == 3 and text.count(NOT_THIS_STORES.replace("'", "&#x27;")) == 1
    rows = _rows(out_csv)
    assert len(rows) == 5
    for r in rows:
        assert not r["path"].startswith(FORMULA_START) and not r["label"].startswith(FORMULA_START), r
    assert {r["path"] for r in rows} >= {"'=HYPERLINK(\"http://e.x\")", "'@cmd.png"}
    assert {r["label"] for r in rows} == {"'-2+3", "'+1", "'@SUM(A1)", "plain", "'\tTab"}


def test_csv_files_for_people_never_start_a_formula(tmp_path):
    import csv

    from embedkit.atomic import write_csv_atomic

    rows = [["=HYPERLINK(\"x\")", "+1", "-cmd", "@SUM(A1)", 0.5, "plain"]]
    write_csv_atomic(tmp_path / "p.csv", list("abcdef"), rows, spreadsheet=True)
    got = list(csv.reader(open(tmp_path / "p.csv")))[1]
    assert got == ["'=HYPERLINK(\"x\")", "'+1", "'-cmd", "'@SUM(A1)", "0.5", "plain"]
    write_csv_atomic(tmp_path / "m.csv", list("abcdef"), rows)  # machine-read files (split.csv) stay exact
    assert list(csv.reader(open(tmp_path / "m.csv")))[1][0] == "=HYPERLINK(\"x\")"


def test_numbers_stay_numbers_in_every_csv(tmp_path):
    """Negative scores used to be written as text ('-0.589153): escaping is for text cells only, and every
    number is written in one format, so pandas reads numeric columns as numbers."""
    import numpy as np
    import pandas as pd

    from embedkit.atomic import write_csv_atomic
    from embedkit.classify.evaluate import evaluate_scores, write_evaluation

    rows = [["-cmd", np.float32(-0.58915312), -1e-7, np.int64(3), -0.0, 7],
            ["=1+1", 0.1 + 0.2, np.float64(12345678.9), 4, 2.5, np.int32(-2)]]
    write_csv_atomic(tmp_path / "p.csv", list("abcdef"), rows, spreadsheet=True)
    df = pd.read_csv(tmp_path / "p.csv")
    assert df["a"].tolist() == ["'-cmd", "'=1+1"]  # text: escaped
    assert [df[c].dtype.kind for c in "bcdef"] == ["f", "f", "i", "f", "i"]
    assert list(csv.reader(open(tmp_path / "p.csv")))[1][1:] == ["-0.589153", "-1e-07", "3", "0", "7"]
    # failures.csv of a real evaluation: negative decision values, read back as floats
    scores = np.array([[-0.5, 0.25, -1.5], [0.75, -0.125, -2.0], [-0.3, -0.2, 0.1]])
    rep, failures = evaluate_scores(scores, ["a", "b", "c"], ["a", "c", "c"], ["x.png", "y.png", "z.png"])
    files = write_evaluation(tmp_path / "ev", rep, failures)
    fail = pd.read_csv(files["failures_csv"])
    assert len(fail) == 2 and all(fail[f"score{j}"].dtype.kind == "f" for j in (1, 2, 3))
    assert (fail["score3"] < 0).all() and fail["true_rank"].dtype.kind == "i"
