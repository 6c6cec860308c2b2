"""`embedkit embed` through click's CliRunner, and the end-to-end run on the real illustration set."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from embedkit import CodeStore
from embedkit.cli.main import app


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_hostile_inputs_give_one_line_errors(tmp_path, shapes_dir):
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 4)  # a binary file given as SOURCE
    r = CliRunner().invoke(app, ["embed", str(blob), "-o", str(tmp_path / "x"), "-q"])
    assert r.exit_code == 2 and r.output.startswith("error: ") and "not UTF-8" in r.output, r.output
    afile = tmp_path / "afile"
    afile.write_text("x")  # -o pointing at an existing file
    r = CliRunner().invoke(app, ["embed", str(shapes_dir), "-o", str(afile), "-q"])
    assert r.exit_code == 2 and "is a file, not a folder" in r.output and len(r.output.splitlines()) == 1


@pytest.mark.slow
def test_a_second_writer_is_refused_and_a_stale_lock_is_taken_over(tmp_path, shapes_dir):
    import subprocess
    import sys

    out = tmp_path / "s"
    out.mkdir()
    # a live run holding the lock (the lock is the kernel's flock, not the file's content)
    live = subprocess.Popen([sys.executable, "-c", "import sys, time; from embedkit.store.lock import FolderLock; "
                             "FolderLock(sys.argv[1], 'embed').acquire(); print('held', flush=True); time.sleep(60)",
                             str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert live.stdout.readline().strip() == "held"
        r = CliRunner().invoke(app, ["embed", str(shapes_dir), "-o", str(out), "-q", "--resume"])
        assert r.exit_code == 2 and "being written by another run" in r.output and str(live.pid) in r.output
    finally:
        live.kill()
        live.wait()
    # the holder is gone (killed): the system released its lock, the file left behind is no obstacle
    r = CliRunner().invoke(app, ["embed", str(shapes_dir), "-o", str(out), "--resume"])
    assert r.exit_code == 0, r.output
    assert "nothing to resume" in r.output and "embedded 24 images" in r.output
    assert not (out / ".lock").exists()


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_previous_store_stays(tmp_path, shapes_dir, monkeypatch):
    import errno

    import embedkit.store.writer as writer

    out = tmp_path / "s"
    r = CliRunner().invoke(app, ["embed", str(shapes_dir / "circle"), "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    before = np.asarray(CodeStore.open(out).codes).copy()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer, "save_npy_atomic", full)
    r = CliRunner().invoke(app, ["embed", str(shapes_dir), "-o", str(out), "-q", "--append"])
    assert r.exit_code == 2 and r.output.startswith("error: no space left") and len(r.output.splitlines()) == 1
    assert np.array_equal(np.asarray(CodeStore.open(out).codes), before)  # the previous store is intact


def test_interrupt_advice_only_where_resume_exists(tmp_path, shapes_dir, monkeypatch):
    import embedkit.runner.embed as runner

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "embed", interrupted)
    r = CliRunner().invoke(app, ["embed", str(shapes_dir), "-o", str(tmp_path / "s"), "-q"])
    assert r.exit_code == 130 and r.output.startswith("\ninterrupted") and "--resume" in r.output
    monkeypatch.setattr("embedkit.store.codestore.CodeStore.open", interrupted)
    r = CliRunner().invoke(app, ["store", "info", str(tmp_path)])
    assert r.exit_code == 130 and "interrupted" in r.output and "--resume" not in r.output


@pytest.mark.slow
def test_every_embed_says_which_stage_bounds_it(tmp_path, shapes_dir):
    """decode / forward / write seconds with their shares, printed and kept in EmbedResult.stages."""
    import embedkit
    from embedkit.runner.stages import StageTimes

    r = CliRunner().invoke(app, ["embed", str(shapes_dir), "-o", str(tmp_path / "a"), "--quiet", "--workers", "0"])
    assert r.exit_code == 0, r.output
    line = r.output.strip().splitlines()[1]
    assert line.startswith("stages: decode ") and ", forward " in line and ", write " in line
    assert "bounds the run" in line
    res = embedkit.embed(shapes_dir, tmp_path / "b", workers=0, progress=False)
    st = res.stages
    assert st.decode > 0 and st.forward > 0 and st.write > 0 and st.total <= res.seconds
    assert st.bound in ("decode", "forward", "write") and sum(st.share(s) for s in ("decode", "forward", "write")) \
        == __import__("pytest").approx(1.0)
    made = StageTimes(decode=3.0, forward=1.0, write=0.5)
    assert made.bound == "decode" and made.line() == (
        "stages: decode 3.0s (67%), forward 1.0s (22%), write 0.5s (11%); decode bounds the run: more --workers "
        "(or --decode device) would feed the model faster")
