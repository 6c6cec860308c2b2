"""Files that are not files: a FIFO, a link to /dev/zero, a huge sparse file, in a folder and in a manifest.

Each is skipped with its reason without being read (a FIFO used to hang ``embed`` for ever, /dev/zero to be
read until memory ran out); the timeouts turn a regression into a failure instead of a hung suite.
"""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner
from PIL import Image

from embedkit import CodeStore
from embedkit.cli.main import app
from embedkit.io.decode import MAX_FILE_BYTES, load_image, raw_jpeg, read_file
from embedkit.io.discover import iter_items

needs_dev_zero = pytest.mark.skipif(not os.path.exists("/dev/zero") or not hasattr(os, "mkfifo"),
                                    reason="needs /dev/zero and FIFOs")


def _hostile(folder):
    """A FIFO, a link to /dev/zero and a sparse file past the byte limit, all named like images."""
    os.mkfifo(folder / "pipe.png")
    os.symlink("/dev/zero", folder / "zero.png")
    with open(folder / "sparse.png", "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # no disk used, but reading it would cost 512 MiB of RAM
    return {"pipe.png": "FIFO", "zero.png": "character device", "sparse.png": "file too large"}


@needs_dev_zero
@pytest.mark.timeout(20)
def test_non_regular_files_are_refused_before_reading(tmp_path):
    _hostile(tmp_path)
    for name, reason in [("pipe.png", "not a regular file \\(a FIFO"), ("zero.png", "character device"),
                         ("sparse.png", "file too large \\(536,870,913 bytes"), (".", "a folder")]:
        with pytest.raises(ValueError, match=reason):
            load_image(str(tmp_path / name))
        with pytest.raises(ValueError, match=reason):
            raw_jpeg(str(tmp_path / name))
    ok = tmp_path / "ok.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(ok)
    assert load_image(str(ok))[0].size == (8, 8)
    with pytest.raises(ValueError, match="file too large"):
        read_file(str(ok), limit=10)


@needs_dev_zero
@pytest.mark.timeout(20)
def test_discovery_gives_the_reason_without_opening(tmp_path):
    _hostile(tmp_path)
    skips = {os.path.basename(it.path): it.skip for it in iter_items(tmp_path, others=True)}
    assert skips["pipe.png"] == "not a regular file (a FIFO (named pipe))"
    assert skips["zero.png"] == "not a regular file (a character device)"
    assert skips["sparse.png"] == ""  # a regular file: its size is checked by the reader, before reading


@needs_dev_zero
@pytest.mark.timeout(240)
def test_embed_skips_them_from_a_folder_and_from_a_manifest(tmp_path, shapes_dir):
    reasons = _hostile(shapes_dir / "circle")
    out = tmp_path / "codes"
    r = CliRunner().invoke(app, ["embed", str(shapes_dir), "-o", str(out), "-q", "--batch-size", "8"])
    assert r.exit_code == 0, r.output
    store = CodeStore.open(out)
    skipped = {os.path.basename(s["path"]): s["reason"] for s in store.skipped}
    assert len(store) == 24 and set(skipped) == set(reasons)
    assert all(reasons[n] in skipped[n] for n in reasons), skipped
    assert not (out / ".lock").exists()
    # the same rows in a CSV manifest (with /dev/zero itself) are skipped the same way
    manifest = tmp_path / "m.csv"
    good = next((shapes_dir / "square").iterdir())
    manifest.write_text("path,label\n" + "".join(f"{p},x\n" for p in [
        shapes_dir / "circle" / "pipe.png", "/dev/zero", shapes_dir / "circle" / "sparse.png", good]))
    r = CliRunner().invoke(app, ["embed", str(manifest), "-o", str(tmp_path / "m"), "-q", "--batch-size", "8"])
    assert r.exit_code == 0, r.output
    store = CodeStore.open(tmp_path / "m")
    assert len(store) == 1 and len(store.skipped) == 3
    assert {s["path"]: s["reason"] for s in store.skipped}["/dev/zero"] == "not a regular file (a character device)"


@needs_dev_zero
@pytest.mark.timeout(30)
def test_a_fifo_or_device_as_weights_or_codes_is_refused_not_waited_on(tmp_path):
    from embedkit.errors import WeightsError
    from embedkit.models.checkpoint import load_torch_file

    os.mkfifo(tmp_path / "w.pt")
    with pytest.raises(WeightsError, match=r"it is not a regular file \(a FIFO"):
        load_torch_file(tmp_path / "w.pt")
    with pytest.raises(WeightsError, match="character device"):
        load_torch_file("/dev/zero")
    (tmp_path / "items.csv").write_text("path\na.png\n")
    r = CliRunner().invoke(app, ["store", "import", str(tmp_path / "w.pt"), "--items", str(tmp_path / "items.csv"),
                                 "-o", str(tmp_path / "s")])
    assert r.exit_code == 2 and "is not a regular file (a FIFO" in r.output, r.output
