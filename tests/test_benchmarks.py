"""Every script under benchmarks/ keeps running: each one end to end at a toy size (seconds), so none can rot.

``test_every_benchmark_has_a_toy_run`` fails when a script is added without one here (paper_table.py and
paper_report.py are run by the tests named in ``TOY_RUNS``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # benchmark runs

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "embedkit" / "data" / "demo" / "images"

#: script -> the test below that runs it at a toy size
TOY_RUNS = {
    "bench_classify": "test_bench_classify_toy",
    "bench_embed": "test_bench_embed_toy",
    "bench_engines": "test_bench_engines_toy",
    "bench_knn": "test_bench_knn_toy",
    "bench_scale": "test_bench_scale_runs_and_reports_growth",
    "bench_startup": "test_bench_startup_toy",
    "bench_view": "test_bench_view_toy",
    "paper_report": "test_paper_report_appends_the_notes_file",
    "paper_table": "test_paper_table_toy",
    "transfer_table": "test_transfer_table_toy",
    "bench_serve": "test_bench_serve_toy",
}


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses in the module look themselves up here
    spec.loader.exec_module(mod)
    return mod


def test_every_benchmark_has_a_toy_run():
    scripts = {p.stem for p in (REPO / "benchmarks").glob("*.py")}
    assert scripts - set(TOY_RUNS) == set(), "add a toy-size run of the new benchmark script here"
    here = sys.modules[__name__]
    missing = {s: t for s, t in TOY_RUNS.items() if s in scripts and not hasattr(here, t)}
    assert not missing, missing


def test_bench_embed_toy(capsys):
    load("bench_embed").main([str(DEMO), "--n", "2", "--rounds", "1", "--workers", "0", "--batch-size", "2"])
    out = capsys.readouterr().out
    assert "embedkit / ceiling" in out and "embedkit / loop" in out and "images/s" in out


def test_bench_classify_toy(capsys):
    load("bench_classify").main(["--n", "120", "--dim", "16", "--classes", "3", "--kernels", "rbf", "--C", "1,10",
                                 "--gamma", "scale", "--jobs", "1", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "embedkit grid_search_svm" in out and "same best params: True" in out


def test_bench_knn_toy(tmp_path, capsys):
    pytest.importorskip("faiss")
    out = tmp_path / "knn.txt"
    load("bench_knn").main(["--n", "2000", "--dim", "8", "--queries", "20", "-k", "5", "--repeat", "1",
                            "--out", str(out)])
    text = out.read_text()
    assert "CPU FAISS flat" in text and "streamed exact" in text and "HNSW" in text
    # exact searches find exactly the scikit-learn neighbours
    exact = [ln for ln in text.splitlines() if "flat" in ln or "streamed exact" in ln]
    assert exact and all("recall 1.000" in ln for ln in exact), text


def test_bench_view_toy(tmp_path):
    out = tmp_path / "view.txt"
    load("bench_view").main(["--n", "120", "--d", "8", "--classes", "3", "--methods", "pca",
                             "--large", "400", "--fit", "100", "--out", str(out)])
    text = out.read_text()
    assert "pca   sklearn" in text and "large pca" in text, text


def test_bench_startup_toy(tmp_path):
    out = tmp_path / "startup.txt"
    load("bench_startup").main(["--repeat", "1", "--skip-torch", "--out", str(out)])
    text = out.read_text()
    assert "embedkit --help" in text and "torch imported by the CLI at start-up: False" in text, text


def test_bench_engines_toy(tmp_path):
    pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    out = tmp_path / "engines.txt"
    load("bench_engines").main(["--images", "4", "--size", "48", "--repeat", "1", "--num-cpus", "2",
                                "--weights", "none", "--out", str(out)])
    text = out.read_text()
    assert "same rows in the same order: True" in text and "ratio ray/local" in text, text


def test_bench_scale_runs_and_reports_growth(tmp_path):
    """Two toy sizes: the stores are fabricated with their planted duplicates, every command listed ok, growth printed."""
    pytest.importorskip("faiss")
    bench = load("bench_scale")
    out = tmp_path / "scale.txt"
    bench.main(["--sizes", "3000", "6000", "--only", "store info", "dedupe", "--workdir", str(tmp_path / "w"),
                "--timeout", "300", "--out", str(out)])
    text = out.read_text()
    rows = [ln for ln in text.splitlines() if ln.strip().startswith(("3000", "6000")) and "fabricate" not in ln]
    assert len(rows) == 4 and all(" ok: " in ln for ln in rows), text
    # n // 1000 planted pairs: 3 groups at 3000 rows, 6 at 6000
    assert "3 near-duplicate groups (6 images)" in text and "6 near-duplicate groups (12 images)" in text
    assert "growth from 3000 to 6000 rows (x2)" in text and "dedupe           time x" in text


def test_paper_report_appends_the_notes_file(tmp_path):
    report = load("paper_report")
    (tmp_path / "cache").mkdir()
    out = tmp_path / "table"
    (tmp_path / "table_notes.md").write_text("## Notes\n\n- written by hand\n")
    meta = {"command": "x", "date": "d", "machine": "m", "backbone": "b"}
    report.write_report(tmp_path / "cache", [], [], out, meta)
    first = out.with_suffix(".md").read_text()
    assert first.rstrip().endswith("- written by hand")
    report.write_report(tmp_path / "cache", [], [], out, meta)  # a rewrite keeps them, once
    assert out.with_suffix(".md").read_text() == first and first.count("written by hand") == 1


def _icon_like_set(root: Path, classes=("circle", "square", "triangle"), designs: int = 8) -> Path:
    """Shapes drawn in ``designs`` designs (file names) of ``designs // 2`` families, with a manifest as icons-dev's."""
    import csv

    import numpy as np
    from helpers import make_shape_image

    rng = np.random.default_rng(0)
    with open(root.parent / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class_name", "folder", "file", "set", "icon", "family", "license"])
        for k, name in enumerate(classes):
            (root / name).mkdir(parents=True, exist_ok=True)
            for d in range(designs):
                make_shape_image(k, rng, size=32).save(root / name / f"d{d}.png")
                w.writerow([name, name, f"{name}/d{d}.png", f"d{d}", name, f"fam{d // 2}", "MIT"])
    (root.parent / "manifest.csv").replace(root / "manifest.csv")
    return root


FAST = ["--set", "epochs=2", "--set", "input_size=32", "--set", "batch_size=8", "--set", "workers=0"]


def test_paper_table_toy(tmp_path):
    """Leave-family-out folds from the manifest, ImageNet codes + SVM and one recipe per fold, the report."""
    data = _icon_like_set(tmp_path / "icons")
    out = tmp_path / "table"
    load("paper_table").main(["--data", str(data), "--folds", "2", "--seeds", "", "--recipes", "small", *FAST,
                              "--set", "monitor=val_codes", "--name", "small-toy", "--work", str(tmp_path / "w"), "--out", str(out)])
    text = out.with_suffix(".md").read_text()
    assert "leave-family-out folds" in text and "small-toy: fine-tuned codes + SVM" in text
    folds = __import__("json").loads(out.with_suffix(".json").read_text())["folds"]
    tested = [set(f["test"]) for f in folds]  # families, disjoint and covering all four
    assert tested[0] | tested[1] == {f"fam{i}" for i in range(4)} and not tested[0] & tested[1]


def test_transfer_table_toy(tmp_path):
    """Adapt on some classes, SVM on the others with both codes, paired over every unit."""
    data = _icon_like_set(tmp_path / "icons", classes=("circle", "square", "triangle", "line"))
    out = tmp_path / "transfer"
    load("transfer_table").main(["--data", str(data), "--folds", "2", "--recipe", "small", *FAST, "--work", str(tmp_path / "w"),
                                 "--out", str(out)])
    res = __import__("json").loads(out.with_suffix(".json").read_text())
    assert sorted(res["units"]) == ["class0-fold0", "class0-fold1", "class1-fold0", "class1-fold1"]
    for r in res["units"].values():
        assert r["imagenet"]["n"] == r["tuned"]["n"] > 0 and len(r["classes"]) == 2
    assert "Paired difference (adapted minus ImageNet), 4 units" in out.with_suffix(".md").read_text()


def test_bench_serve_toy(tmp_path):
    """A real `embedkit serve` process answers concurrent clients without errors."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    out = tmp_path / "serve.txt"
    rc = load("bench_serve").main(["--rows", "3000", "--dim", "32", "--clients", "4", "--queries", "15", "--workdir",
                                   str(tmp_path), "--startup-timeout", "300", "--out", str(out)])
    text = out.read_text()
    assert rc == 0 and "60 requests in" in text and "errors: 0" in text, text
    assert "flat cosine index on torch (3000 x 32)" in text and "peak (VmHWM)" in text
