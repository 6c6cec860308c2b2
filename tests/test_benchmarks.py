"""The benchmark scripts keep running: bench_scale end to end at toy sizes, paper_report keeps its hand-written notes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # benchmark runs

REPO = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses in the module look themselves up here
    spec.loader.exec_module(mod)
    return mod


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
