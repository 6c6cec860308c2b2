"""A torch/torchvision pair that cannot load together is one line at start-up that names the torchvision to
install, and an import of torchvision that fails anyway is told in the same words (both simulated)."""

from __future__ import annotations

import sys

from click.testing import CliRunner

from embedkit import versions
from embedkit.cli.main import app


def _versions(monkeypatch, torch, torchvision):
    monkeypatch.setattr(versions, "_version", {"torch": torch, "torchvision": torchvision}.get)


def test_a_mismatched_pair_is_refused_at_start_up_with_the_matching_version(monkeypatch, shapes_dir, tmp_path):
    _versions(monkeypatch, "2.5.1+cpu", "0.19.0")
    r = CliRunner().invoke(app, ["embed", str(shapes_dir), "-o", str(tmp_path / "s")])
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1, r.output
    assert "torch 2.5.1+cpu and torchvision 0.19.0 cannot load together (torch 2.5 goes with torchvision 0.20)" \
        in lines[0]
    assert lines[0].endswith(f'fix: pip install "torchvision==0.20.*" --index-url {versions.CPU_INDEX}')
    assert not (tmp_path / "s").exists()  # refused before any work
    _versions(monkeypatch, "2.5.1+cpu", "0.20.1+cu124")
    assert "one is a cpu build, the other a cu124 build" in versions.pair_problem()
    _versions(monkeypatch, "2.5.1", "0.20.1")
    assert versions.pair_problem() is None
    _versions(monkeypatch, "2.14.1", "0.29.1")
    assert versions.pair_problem() is None


def test_the_installed_pair_passes():
    assert versions.pair_problem() is None


def test_a_torchvision_that_fails_to_import_is_one_line(monkeypatch):
    import torchvision  # noqa: F401 - imported for real first; then its import is made to fail

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        monkeypatch.setitem(sys.modules, name, None)
    r = CliRunner().invoke(app, ["layers", "torchvision:resnet18"])
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: torchvision "), r.output
    assert "cannot be loaded with torch" in lines[0] and 'pip install "torchvision==' in lines[0]
    assert versions.import_failure(RuntimeError("operator torchvision::nms does not exist"))
    assert versions.import_failure(RuntimeError("CUDA out of memory")) is None
