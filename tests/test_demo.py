"""The README's main job: `embedkit demo` on the demo images committed to the repo."""

from __future__ import annotations

import json

from click.testing import CliRunner
from PIL import Image

from embedkit.cli.main import app

from conftest import DEMO


def test_demo_runs_the_whole_pipeline_on_the_shipped_images(tmp_path):
    out = tmp_path / "demo-out"
    r = CliRunner().invoke(app, ["demo", str(DEMO), "-o", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "embedded 84 images (0 skipped" in r.output and "demo done" in r.output
    report = json.loads((out / "model" / "report.json").read_text())
    assert report["top1"] >= 0.75 and report["top5"] >= report["top1"]  # 12 classes: chance is 0.083
    assert Image.open(out / "map.png").size[0] > 300
    html = (out / "neighbors.html").read_text()
    assert html.count("<img") >= 4 * 9 and "http://" not in html
    assert (out / "model" / "confusion.png").exists() and (out / "model" / "failures.html").exists()


def test_demo_without_images_says_where_they_should_be(tmp_path):
    r = CliRunner().invoke(app, ["demo", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "demo/images" in r.output
