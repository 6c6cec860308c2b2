"""The README's main job: `embedkit demo` on the demo images shipped inside the package, from any folder."""

from __future__ import annotations

import json
from importlib import resources

import pytest
from click.testing import CliRunner
from PIL import Image

from embedkit.cli.main import app


def test_demo_images_are_package_data_with_their_licence():
    images = resources.files("embedkit") / "data" / "demo" / "images"
    classes = [d for d in images.iterdir() if d.is_dir()]
    assert len(classes) == 12 and sum(len([f for f in d.iterdir() if f.name.endswith(".png")]) for d in classes) == 84
    licence = (resources.files("embedkit") / "data" / "demo" / "LICENSE.md").read_text(encoding="utf-8")
    assert "CC-BY" in licence and "Apache-2.0" in licence


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the checkout: the images come from the installed package
    r = CliRunner().invoke(app, ["demo", "-o", "demo-out", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "embedded 84 images (0 skipped" in r.output and "demo done" in r.output
    out = tmp_path / "demo-out"
    report = json.loads((out / "model" / "report.json").read_text())
    assert report["top1"] >= 0.75 and report["top5"] >= report["top1"]  # 12 classes: chance is 0.083
    assert Image.open(out / "map.png").size[0] > 300
    page = (out / "map.html").read_text(encoding="utf-8")
    assert "<canvas" in page and "http://" not in page and "data:image/png;base64," in page
    html = (out / "neighbors.html").read_text()
    assert html.count("<img") >= 4 * 9 and "http://" not in html and "not inlined" not in html
    assert html.count("<h2>") == 4 and "green: same label as the query" in html
    assert (out / "model" / "confusion.png").exists() and (out / "model" / "failures.html").exists()
    again = CliRunner().invoke(app, ["demo", "-o", "demo-out", "--quiet"])  # a re-run reuses the store
    assert again.exit_code == 0 and "84 already in the store" in again.output and "demo done" in again.output, \
        again.output


def test_demo_help_says_what_it_does():
    r = CliRunner().invoke(app, ["demo", "--help"])
    assert r.exit_code == 0
    assert "demo images shipped with embedkit" in r.output and "t-SNE" in r.output and "map.html" in r.output


def test_demo_with_a_missing_source_says_what_to_give(tmp_path):
    r = CliRunner().invoke(app, ["demo", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "nowhere" in r.output and "one sub-folder per class" in r.output
    assert "Traceback" not in r.output
