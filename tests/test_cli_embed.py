"""`embedkit embed` through click's CliRunner, and the end-to-end run on the real illustration set."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from embedkit import CodeStore
from embedkit.cli.main import app


def test_embed_cli_writes_a_store_and_a_summary(tmp_path, shapes_dir):
    (shapes_dir / "circle" / "broken.png").write_bytes(b"\x89PNG garbage")
    out = tmp_path / "codes"
    r = CliRunner().invoke(app, ["embed", str(shapes_dir), "-o", str(out), "--quiet", "--batch-size", "8"])
    assert r.exit_code == 0, r.output
    assert "embedded 24 images (1 skipped" in r.output and "images/s" in r.output and str(out) in r.output
    assert "skipped" in r.output and "broken.png" in r.output
    store = CodeStore.open(out)
    assert store.codes.shape == (24, 1280)
    r = CliRunner().invoke(app, ["embed", str(shapes_dir), "-o", str(out), "--quiet"])
    assert r.exit_code == 2 and r.output.strip().startswith("error:") and "--append" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_embed_cli_errors_are_one_line(tmp_path, shapes_dir):
    r = CliRunner().invoke(app, ["embed", str(shapes_dir), "-o", str(tmp_path / "x"), "--backbone", "nonet"])
    assert r.exit_code == 2 and r.output.startswith("error: backbone 'nonet' is not known")
    r = CliRunner().invoke(app, ["embed", str(shapes_dir), "-o", str(tmp_path / "x"), "--weights", str(tmp_path / "w.pt")])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = CliRunner().invoke(app, ["embed", str(tmp_path / "missing"), "-o", str(tmp_path / "x")])
    assert r.exit_code != 0


def test_end_to_end_on_emoji_dev(emoji_store):
    """The real illustration set: every image embedded, and the codes already carry class information."""
    store = emoji_store
    assert len(store) == 366 and store.codes.shape == (366, 1280) and not store.skipped
    labels = store.labels
    assert len(set(labels)) == 30
    x = np.array(store.codes, np.float32)
    assert np.isfinite(x).all()
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    nn_acc = float(np.mean(labels[sim.argmax(1)] == labels))
    assert nn_acc > 0.4, nn_acc  # chance is 1/30; ImageNet codes group illustrations of a class
