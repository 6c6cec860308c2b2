"""Views of the embedding: projections, saved projections, metrics, PNG/HTML output and `embedkit view`."""

from __future__ import annotations

import csv
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from embedkit.device import has_module
from embedkit.errors import ConfigError, DataError, MissingDependencyError, StoreError
from embedkit.store.codestore import CodeStore
from embedkit.view.metrics import code_metrics
from embedkit.view.pipeline import view
from embedkit.view.plot import ViewPanel, palette, plot_views
from embedkit.view.project import Projection, project
from embedkit.view.html import write_view_html

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def blobs(n_per=40, k=3, d=64, seed=0, spread=0.3):
    """``k`` well separated Gaussian blobs in ``d`` dims, labels 'c0'..."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 4
    x = np.concatenate([c + spread * rng.normal(size=(n_per, d)) for c in centres]).astype(np.float32)
    y = np.repeat([f"c{i}" for i in range(k)], n_per).astype(object)
    return x, y


def knn_acc_2d(xy, y, k=5):
    """Leave-one-out k-NN accuracy of a 2-D map: do the classes stay together?"""
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.model_selection import cross_val_score

    return cross_val_score(KNeighborsClassifier(k), xy, y.astype(str), cv=5).mean()


def make_store(root: Path, codes: np.ndarray, labels, paths) -> CodeStore:
    """A minimal finished code store on disk (what embed writes), without running a backbone."""
    root.mkdir(parents=True)
    np.save(root / "codes.npy", codes.astype(np.float32))
    with open(root / "items.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(("path", "label", "width", "height", "bytes", "sha1"))
        w.writerows([[p, lab, 64, 64, 0, ""] for p, lab in zip(paths, labels)])
    meta = {"identity": {"backbone": "synthetic", "layer": "x"}, "dim": codes.shape[1], "dtype": "float32",
            "count": len(codes), "created": "2024-01-01T00:00:00"}
    (root / "meta.json").write_text(json.dumps(meta))
    return CodeStore.open(root)


@pytest.fixture
def shape_store(shapes_dir, tmp_path):
    """24 synthetic images (3 classes) with blob codes of their class, paths pointing at real PNGs."""
    paths = sorted(str(p) for p in shapes_dir.rglob("*.png"))
    labels = [Path(p).parent.name for p in paths]
    x, _ = blobs(n_per=8, k=3, d=32)
    return make_store(tmp_path / "store", x, labels, paths)


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.remote, self.data = [], [], {}
        self._in = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        for key in ("src", "href"):
            if str(a.get(key, "")).lower().startswith(("http://", "https://", "//")):
                self.remote.append(a[key])
        self._in = a.get("id")

    def handle_data(self, data):
        if self._in == "data":
            self.data = json.loads(data)


def test_pca_shape_seed_reproducible_and_fit_on_sample():
    x, _ = blobs(n_per=50)
    a = project(x, "pca", seed=1)
    assert a.xy.shape == (150, 2) and a.xy.dtype == np.float32
    assert np.array_equal(a.indices, np.arange(150))
    np.testing.assert_array_equal(a.xy, project(x, "pca", seed=1).xy)
    # Above max_points PCA is fitted on a sample and still applied to every row.
    s = project(x, "pca", seed=1, max_points=40)
    assert s.xy.shape == (150, 2) and s.params["n_fit"] == 40 and s.params["fraction"] == pytest.approx(40 / 150, 1e-4)


def test_tsne_groups_blobs_reproducible_and_subsamples():
    x, y = blobs(n_per=40, d=100)
    a = project(x, "tsne", backend="opentsne", seed=3, pca_dims=20)
    assert a.xy.shape == (120, 2) and a.params["backend"] == "opentsne" and a.params["pca_dims"] == 20
    np.testing.assert_allclose(a.xy, project(x, "tsne", backend="opentsne", seed=3, pca_dims=20).xy)
    assert not np.allclose(a.xy, project(x, "tsne", backend="opentsne", seed=4, pca_dims=20).xy)
    assert knn_acc_2d(a.xy, y) == 1.0
    s = project(x, "tsne", backend="sklearn", seed=0, max_points=30)
    assert s.xy.shape == (30, 2) and len(np.unique(s.indices)) == 30 and s.indices.max() < 120
    assert np.all(np.diff(s.indices) > 0) and s.params["fraction"] == 0.25


@pytest.mark.slow
def test_umap_groups_blobs_and_is_reproducible():
    x, y = blobs(n_per=30, d=16)
    a = project(x, "umap", seed=0)
    assert a.xy.shape == (90, 2) and a.params["backend"] == "umap-learn"
    np.testing.assert_allclose(a.xy, project(x, "umap", seed=0).xy, atol=1e-5)
    assert knn_acc_2d(a.xy, y) == 1.0


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(DataError, match="at least 3 codes"):
        project(np.zeros((1, 8), np.float32), "pca")
    bad = np.ones((10, 4), np.float32)
    bad[3, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        project(bad, "pca")
    with pytest.raises(ConfigError, match="umap, tsne, pca"):
        project(np.ones((10, 4)), "mds")
    with pytest.raises(ConfigError, match="opentsne"):
        project(np.ones((10, 4)), "tsne", backend="umap-learn")


@pytest.mark.skipif(has_module("cuml"), reason="cuML is installed here; the missing-dependency path cannot be shown")
def test_cuml_backend_without_cuml_names_the_gpu_extra():
    with pytest.raises(MissingDependencyError, match=r"embedkit\[gpu\]"):
        project(np.ones((10, 4)), "umap", backend="cuml")


def test_projection_save_load_roundtrip(tmp_path):
    x, _ = blobs(n_per=20)
    p = project(x, "tsne", backend="opentsne", max_points=30, seed=2)
    p.save(tmp_path / "proj")
    # a sample: the row numbers go to indices.npy (not a JSON list, which grows with the sample)
    assert {f.name for f in (tmp_path / "proj").iterdir()} == {"proj.npy", "proj.json", "indices.npy"}
    q = Projection.load(tmp_path / "proj")
    np.testing.assert_array_equal(q.xy, p.xy)
    np.testing.assert_array_equal(q.indices, p.indices)
    assert q.params["method"] == "tsne" and q.params["seed"] == 2 and q.params["max_points"] == 30


def test_metrics_tell_grouped_from_shuffled_labels():
    x, y = blobs(n_per=30, k=4, spread=1.0)
    good = code_metrics(x, y)
    assert good["knn_acc"] == 1.0 and good["silhouette"] > 0.5 and good["classes"] == 4
    shuffled = code_metrics(x, np.random.default_rng(0).permutation(y))
    assert shuffled["knn_acc"] < 0.5 and abs(shuffled["silhouette"]) < 0.1
    with pytest.raises(DataError, match="at least 2 classes"):
        code_metrics(x, np.array(["a"] * len(x), dtype=object))


def test_png_is_valid_and_shows_one_distinct_colour_per_class(tmp_path):
    x, y = blobs(n_per=30)
    p = project(x, "pca")
    out = plot_views([ViewPanel("blobs", p.xy, y)], tmp_path / "map.png")
    assert out.read_bytes()[:8] == PNG_MAGIC
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    cols = palette(["c0", "c1", "c2", "c3"])
    assert len(set(palette([f"k{i}" for i in range(30)]).values())) == 30

    def pixels_of(hexcol):
        rgb = np.array([int(hexcol[i:i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(img - rgb).max(-1) <= 6).sum())

    for c in ("c0", "c1", "c2"):
        assert pixels_of(cols[c]) > 30, f"class {c} colour {cols[c]} not in the figure"
    assert pixels_of(cols["c3"]) == 0  # a class that is not there is not drawn


def test_html_is_self_contained_with_hover_data(tmp_path, shapes_dir):
    paths = sorted(str(p) for p in shapes_dir.rglob("*.png"))
    y = np.array([Path(p).parent.name for p in paths], dtype=object)
    xy = np.random.default_rng(0).normal(size=(len(paths), 2))
    out = write_view_html(tmp_path / "map.html", [ViewPanel("a", xy, y, paths), ViewPanel("b", xy, y, paths)],
                          thumbnails=5)
    page = _Page()
    page.feed(out.read_text(encoding="utf-8"))
    assert page.remote == [] and page.tags.count("canvas") == 2 and "script" in page.tags
    assert page.data["names"] == ["circle", "square", "triangle"]
    # The two panels show the same images: each thumbnail (and each path) is embedded once, shared by both.
    assert len(page.data["thumbs"]) == 5 and all(t.startswith("data:image/png;base64,") for t in page.data["thumbs"])
    assert page.data["paths"] == paths and len(page.data["tp"]) == 24
    for panel in page.data["panels"]:
        pts = panel["xy"]
        assert len(pts) == 24 and [page.data["paths"][q[3]] for q in pts] == paths
        assert sum(page.data["tp"][q[3]] >= 0 for q in pts) == 5


def test_html_has_zoom_search_hint_and_hidpi(tmp_path):
    xy = np.random.default_rng(0).normal(size=(10, 2))
    out = write_view_html(tmp_path / "m.html", [ViewPanel("a", xy, np.array(["x"] * 5 + ["y"] * 5, dtype=object),
                                                          [f"p{i}.png" for i in range(10)])], thumbnails=0)
    page = _Page()
    text = out.read_text(encoding="utf-8")
    page.feed(text)
    assert "input" in page.tags and "id='search'" in text  # search a path or label
    assert "Hover a point" in text and "Click a legend entry" in text  # the on-page hint
    assert "devicePixelRatio" in text and "'wheel'" in text and "dblclick" in text  # HiDPI, zoom, reset
    # the legend sits in the row of the maps, right after the last one (it used to span the page below them)
    assert "</canvas></div>\n<div class='legend' style='grid-template-columns:repeat(1,max-content)'>" in text
    assert text.index("class='legend'") < text.index("<div id='tip'>")


def test_html_survives_nasty_file_names_and_labels(tmp_path):
    """A path with '<!--<script' used to blank the page: only '</' was escaped in the JSON block."""
    nasty = ["a<!--<script>x.png", "b</script><b>&amp;.png", "c\u2028\u2029 'q\".png"]
    labels = np.array(["<!--", "&lt;", "</script>"], dtype=object)
    out = write_view_html(tmp_path / "m.html", [ViewPanel("<t>", np.eye(3)[:, :2], labels, nasty)], thumbnails=0)
    text = out.read_text(encoding="utf-8")
    start = text.index("<script type='application/json' id='data'>") + len("<script type='application/json' id='data'>")
    blob = text[start:text.index("</script>", start)]
    assert "<" not in blob and ">" not in blob and "&" not in blob
    data = json.loads(blob)
    assert data["paths"] == nasty and data["names"] == sorted(labels.tolist())
    page = _Page()
    page.feed(text)
    assert page.data["paths"] == nasty and page.tags.count("script") == 2


def test_png_draws_mathtext_like_labels_as_plain_text(tmp_path):
    xy = np.random.default_rng(0).normal(size=(6, 2))
    lab = np.array(["$x^$", "$x^$", "a_b$", "a_b$", "50%$", "50%$"], dtype=object)
    # store folder names and titles too: they are laid out (tight_layout) before the figure is saved
    out = plot_views([ViewPanel("store $x^$", xy, lab, None, {"silhouette": 0.1, "knn_acc": 1.0, "k": 5})],
                     tmp_path / "m.png", title="map of $\\frac{$")
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_view_without_labels_is_a_clear_error(tmp_path, shapes_dir):
    paths = sorted(str(p) for p in shapes_dir.rglob("*.png"))
    x, _ = blobs(n_per=8)
    store = make_store(tmp_path / "nolabels", x, [""] * len(paths), paths)
    with pytest.raises(DataError, match="no labels.*--color-by none"):
        view(store, tmp_path / "m.png", method="pca")
    res = view(store, tmp_path / "m.png", method="pca", color_by="none")
    assert res.panels[0].metrics is None and (tmp_path / "m.png").read_bytes()[:8] == PNG_MAGIC


def test_cli_view_compare_reuse_and_errors(tmp_path, shape_store):
    from embedkit.cli.main import app

    other = make_store(tmp_path / "other", np.random.default_rng(1).normal(size=(24, 32)), shape_store.labels,
                       shape_store.paths)
    run = CliRunner().invoke
    out = tmp_path / "cmp.png"
    r = run(app, ["view", str(shape_store.path), str(other.path), "-o", str(out), "--method", "pca", "--thumbnails", "3"])
    assert r.exit_code == 0, r.output
    assert "silhouette" in r.output and "5-NN acc 1.000" in r.output  # blob codes group perfectly...
    assert r.output.count("5-NN acc") == 2
    w, h = Image.open(out).size
    assert w > 1.6 * h  # two panels side by side
    assert (tmp_path / "cmp.proj" / "0_store" / "projection-pca" / "proj.npy").exists()
    assert (tmp_path / "cmp.proj" / "1_other" / "projection-pca" / "proj.json").exists()
    r = run(app, ["view", str(shape_store.path), str(other.path), "-o", str(out), "--method", "pca", "--reuse"])
    assert r.exit_code == 0 and r.output.count("(reused)") == 2, r.output
    r = run(app, ["view", str(shape_store.path), str(other.path), "-o", str(out), "--method", "pca"])
    assert r.exit_code == 0 and r.output.count("(reused)") == 2, r.output  # the same command again: reused
    assert "same codes and options" in r.output
    r = run(app, ["view", str(shape_store.path), str(other.path), "-o", str(out), "--method", "pca", "--seed", "3"])
    assert r.exit_code == 2 and "made differently" in r.output and "seed: saved 0, asked 3" in r.output
    assert "--overwrite" in r.output
    r = run(app, ["view", str(shape_store.path), str(other.path), "-o", str(out), "--method", "pca", "--overwrite"])
    assert r.exit_code == 0 and "(reused)" not in r.output, r.output
    assert "pca: PCA fitted on 24 x 32 codes in" in r.output  # progress lines with timings (stderr)
    r = run(app, ["view", str(shape_store.path), str(other.path), "-o", str(out), "--method", "pca", "--reuse", "--seed", "5"])
    assert r.exit_code == 2 and "error:" in r.output and "seed" in r.output and "drop --reuse" in r.output
    r = run(app, ["view", str(shape_store.path), "-o", str(tmp_path / "m.svg")])
    assert r.exit_code == 2 and ".png" in r.output and ".html" in r.output
    r = run(app, ["view", str(shape_store.path), "-o", str(tmp_path / "m.html"), "--method", "tsne", "--backend", "sklearn"])
    assert r.exit_code == 0, r.output
    page = _Page()
    page.feed((tmp_path / "m.html").read_text(encoding="utf-8"))
    assert page.remote == [] and len(page.data["panels"][0]["xy"]) == 24


def test_default_map_draws_on_the_base_install_and_umap_fails_before_any_work(tmp_path, shape_store, monkeypatch):
    """Without umap-learn (simulated: its import fails) the default draws a PCA map with a one-line note; an
    explicit --method umap is refused before any projection (PCA) runs, naming the extra."""
    import sys

    from embedkit.cli.main import app
    from embedkit.view import pipeline

    monkeypatch.setitem(sys.modules, "umap", None)  # `import umap` raises ImportError, as on the base install
    r = CliRunner().invoke(app, ["view", str(shape_store.path), "-o", str(tmp_path / "map.png")])
    assert r.exit_code == 0, r.output
    notes = [ln for ln in r.output.splitlines() if "umap-learn is not installed" in ln]
    assert len(notes) == 1 and 'pip install "embedkit[view]"' in notes[0], r.output
    assert (tmp_path / "map.proj" / "projection-pca" / "proj.json").exists() and "PCA of all 24 points" in r.output

    def no_work(*_a, **_k):
        raise AssertionError("a projection started before the projection library was checked")

    monkeypatch.setattr(pipeline, "project", no_work)
    r = CliRunner().invoke(app, ["view", str(shape_store.path), "-o", str(tmp_path / "u.png"), "--method", "umap"])
    assert r.exit_code == 2 and "'umap'" in r.output and "embedkit[view]" in r.output, r.output
    assert "Traceback" not in r.output


@pytest.mark.slow
def test_real_codes_group_by_class(emoji_store, tmp_path):
    """On the real illustration codes, neighbours share the class far above chance (1/30), and the map is drawn."""
    res = view(emoji_store, tmp_path / "emoji.png", method="tsne", thumbnails=10, max_points=200)
    m = res.panels[0].metrics
    assert m["classes"] == 30 and m["knn_acc"] > 0.5 and m["silhouette"] > 0
    assert len(res.panels[0].xy) == 200 and res.params[0]["fraction"] == pytest.approx(200 / 366, 1e-4)
    img = Image.open(tmp_path / "emoji.png")
    assert img.format == "PNG" and img.size[0] > 600


def test_one_saved_projection_per_method_never_replaced_silently(tmp_path, shape_store):
    out = tmp_path / "m.png"
    a = view(shape_store, out, method="pca")
    view(shape_store, out, method="tsne", backend="sklearn")  # used to replace the PCA projection
    assert a.proj_dirs[0] == tmp_path / "m.proj" / "projection-pca"
    assert (tmp_path / "m.proj" / "projection-tsne" / "proj.json").exists()
    again = view(shape_store, out, method="pca", reuse=True)  # so --reuse of the PCA one still works
    assert again.reused == [True]
    np.testing.assert_array_equal(again.panels[0].xy, a.panels[0].xy)
    assert view(shape_store, out, method="tsne", backend="sklearn").reused == [True]  # the same call again
    with pytest.raises(ConfigError, match="made differently.*max_points.*--overwrite"):
        view(shape_store, out, method="tsne", backend="sklearn", max_points=10)
    with pytest.raises(StoreError, match="no saved projection"):
        view(shape_store, out, method="umap", reuse=True)
    assert view(shape_store, out, method="pca", overwrite=True).reused == [False]


def finetuned_store(tmp_path, shapes_dir):
    """A store whose codes come from 'fine-tuned weights' (run/best.pt, with run/split.json next to them).

    Train images get well grouped codes (the network saw them), test images random ones.
    """
    paths = sorted(str(p) for p in shapes_dir.rglob("*.png"))
    labels = [Path(p).parent.name for p in paths]
    test = set(paths[1::3])
    x, _ = blobs(n_per=8, k=3, d=32)
    rng = np.random.default_rng(5)
    for i, p in enumerate(paths):
        if p in test:
            x[i] = rng.normal(size=32) * 4
    store = make_store(tmp_path / "ft", x, labels, paths)
    run = tmp_path / "run"
    run.mkdir()
    (run / "split.json").write_text(json.dumps({"classes": ["circle", "square", "triangle"], "train": [], "val": [],
                                                "test": [{"index": i, "path": p, "label": labels[i]}
                                                         for i, p in enumerate(paths) if p in test]}))
    meta = json.loads((store.path / "meta.json").read_text())
    meta["identity"]["weights"] = {"kind": "checkpoint", "identity": "file:best.pt", "path": str(run / "best.pt")}
    (store.path / "meta.json").write_text(json.dumps(meta))
    return CodeStore.open(store.path), run / "split.json", len(test)


def test_metrics_on_the_test_split_of_a_finetuning_run(tmp_path, shapes_dir):
    store, split, n_test = finetuned_store(tmp_path, shapes_dir)
    res = view(store, tmp_path / "m.png", method="pca")  # split.json found next to the weights
    m, mt = res.panels[0].metrics, res.panels[0].metrics_test
    assert m["n"] == 24 and mt["n"] == n_test == mt["n_labelled"]
    assert m["knn_acc"] > mt["knn_acc"] and mt["silhouette"] < m["silhouette"]  # trained-on images flatter
    s = res.summary()
    assert "test split only: silhouette" in s and "found next to the weights" in s and str(split) in s
    # given explicitly (CLI), and refused when it lists none of the store's images
    from embedkit.cli.main import app

    r = CliRunner().invoke(app, ["view", str(store.path), "-o", str(tmp_path / "c.png"), "--method", "pca",
                                 "--split-json", str(split), "-q"])
    assert r.exit_code == 0 and r.output.count("5-NN acc") == 2 and "(given)" in r.output, r.output
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"test": [{"path": "elsewhere.png", "label": "a"}]}))
    with pytest.raises(DataError, match="none of the 24 images"):
        view(store, tmp_path / "d.png", method="pca", split_json=other)
    plain = make_store(tmp_path / "plain", np.asarray(store.take(np.arange(24))), store.labels, store.paths)
    assert view(plain, tmp_path / "e.png", method="pca").panels[0].metrics_test is None


def _lab(rgb):
    """CIELAB of sRGB colours (D65), for colour differences (Delta E 1976) in the palette test."""
    rgb = np.asarray(rgb, float)[:, :3]
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = lin @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    f = np.cbrt(np.maximum(xyz / np.array([0.95047, 1.0, 1.08883]), 0.008856))
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


def test_thirty_class_palette_has_no_look_alike_colours():
    from matplotlib.colors import to_rgb

    from embedkit.view.plot import palette

    cols = palette([f"c{i}" for i in range(30)])
    lab = _lab([to_rgb(c) for c in cols.values()])
    d = np.sqrt(((lab[:, None] - lab[None]) ** 2).sum(-1)) + np.eye(30) * 1e9
    assert len(set(cols.values())) == 30 and d.min() > 15  # tab20 + tab20b had pairs at Delta E ~9


def test_thumbnails_stay_inside_the_frame_and_do_not_pile_up():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from embedkit.view.plot import thumbnail_places

    rng = np.random.default_rng(0)
    xy = np.concatenate([rng.normal(0, 1, (300, 2)), [[-4, -4], [4, 4], [4, -4]]])  # points on the corners
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(xy[:, 0], xy[:, 1])
    ax.set_aspect("equal", adjustable="datalim")
    px = 50.0
    places = thumbnail_places(ax, xy, 40, px)
    frame = ax.get_window_extent()
    centres = np.array([ax.transData.transform(pos) for _, pos in places])
    plt.close(fig)
    assert 5 <= len(places) < 40  # a 4-inch map holds fewer than 40 boxes of 50 px: the rest are passed over
    assert (centres[:, 0] - px / 2 >= frame.x0).all() and (centres[:, 0] + px / 2 <= frame.x1).all()
    assert (centres[:, 1] - px / 2 >= frame.y0).all() and (centres[:, 1] + px / 2 <= frame.y1).all()
    gaps = np.abs(centres[:, None] - centres[None]).max(-1) + np.eye(len(centres)) * 1e9
    assert gaps.min() >= px  # no two boxes overlap


def test_compare_panels_have_distinct_titles_and_t_sne_is_spelt_so(tmp_path, shape_store):
    res = view([shape_store, shape_store.path], tmp_path / "twice.png", method="tsne", backend="sklearn",
               thumbnails=3)
    titles = [p.title for p in res.panels]
    assert titles[0] != titles[1] and titles[0].startswith("A: ") and titles[1].startswith("B: ")
    assert "t-SNE of all 24 points" in res.summary()
    from embedkit.view.pipeline import weights_label  # what tells a fine-tuned store from the ImageNet one

    assert weights_label({"weights": {"kind": "package", "identity": "package:x.pth"}}) == "ImageNet weights"
    assert weights_label({"weights": {"kind": "checkpoint", "path": "/a/run/best.pt"}}) == "weights run/best.pt"
