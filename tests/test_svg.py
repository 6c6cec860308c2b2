"""SVG illustrations: drawn on white at the backbone's resize, references to other files never read,
and without the extra one line naming the install before any work."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from embedkit.io.decode import load_image
from embedkit.io.discover import iter_items

pytest.importorskip("resvg_py")

# left half red, right half transparent (drawn on white), 2:1
HALVES = ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="100" height="50">'
          '<rect width="50" height="50" fill="#ff0000"/>{extra}</svg>')


def _svg(path: Path, extra: str = "") -> Path:
    path.write_text(HALVES.format(extra=extra))
    return path


def test_an_svg_is_drawn_on_white_with_its_short_side_at_the_resize(tmp_path):
    p = _svg(tmp_path / "halves.svg")
    for size in (256, 320):
        img, info = load_image(str(p), want_sha1=True, svg_size=size)
        assert img.mode == "RGB" and img.size == (2 * size, size)
        a = np.asarray(img)
        assert (a[:, : size - 2] == [255, 0, 0]).all() and (a[:, size + 2:] == 255).all()
        assert info["bytes"] == p.stat().st_size and len(info["sha1"]) == 40
    assert any(it.path == str(p) and not it.skip for it in iter_items(tmp_path, others=True))


@pytest.mark.timeout(20)
def test_references_to_other_files_are_never_read(tmp_path):
    from PIL import Image

    outside = tmp_path / "outside.png"
    Image.new("RGB", (8, 8), (0, 0, 255)).save(outside)
    refs = "".join(f'<image x="50" width="50" height="50" {attr}="{href}"/>' for attr, href in [
        ("xlink:href", outside), ("href", "outside.png"), ("href", "/dev/zero")])  # /dev/zero used to hang
    a = np.asarray(load_image(str(_svg(tmp_path / "refs.svg", refs)), svg_size=64)[0])
    assert (a[:, 66:] == 255).all()  # nothing drawn from outside: the right half stays white


def test_bad_svgs_are_skip_reasons(tmp_path):
    (tmp_path / "bad.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'><rect")
    with pytest.raises(ValueError, match="SVG that cannot be parsed"):
        load_image(str(tmp_path / "bad.svg"))
    (tmp_path / "strip.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="6400" height="10"/>')
    with pytest.raises(ValueError, match="extreme aspect ratio"):
        load_image(str(tmp_path / "strip.svg"))


def test_embed_reads_svgs_and_without_the_extra_says_how_to_install_it(tmp_path, shapes_dir, monkeypatch):
    from embedkit import CodeStore
    from embedkit.cli.main import app

    _svg(shapes_dir / "circle" / "drawn.svg")
    out = tmp_path / "codes"
    r = CliRunner().invoke(app, ["embed", str(shapes_dir), "-o", str(out), "-q", "--batch-size", "8"])
    assert r.exit_code == 0, r.output
    store = CodeStore.open(out)
    assert len(store) == 25 and any(p.endswith("drawn.svg") for p in store.paths) and not store.skipped

    monkeypatch.setitem(sys.modules, "resvg_py", None)  # as if the extra were not installed
    r = CliRunner().invoke(app, ["embed", str(shapes_dir), "-o", str(tmp_path / "b"), "-q"])
    assert r.exit_code == 2 and len(r.output.splitlines()) == 1, r.output
    assert "holds 1 SVG file; reading SVG needs the optional package resvg-py" in r.output
    assert 'fix: pip install "embedkit[svg]"' in r.output
    with pytest.raises(ValueError, match=r'an SVG image: reading it needs the svg extra \(pip install "embedkit\[svg\]"'):
        load_image(str(shapes_dir / "circle" / "drawn.svg"))
    extras = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("resvg-py") for req in extras["svg"])  # the fix installs what is needed
