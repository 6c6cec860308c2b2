"""A folder given where a code store or a classifier model is expected: the error says what it is and what to do."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from embedkit.cli.main import app
from embedkit.store.codestore import CodeStore


def _error(*args) -> str:
    r = CliRunner().invoke(app, list(map(str, args)))
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.output
    return lines[0]


def test_what_the_folder_is_and_what_to_do_with_it(tmp_path, shapes_dir):
    codes = tmp_path / "codes"
    CodeStore.from_arrays(codes, np.eye(6, dtype=np.float32), [f"{i}.png" for i in range(6)], labels=["a", "b"] * 3)
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"")  # what marks a fine-tuning run folder

    msg = _error("classify", "train", shapes_dir, "-o", tmp_path / "m")
    assert "it is a folder of images" in msg and f"`embedkit embed {shapes_dir} -o codes/`" in msg
    msg = _error("store", "info", codes / "shards")
    assert f"it is the shards folder of the store {str(codes)!r}" in msg
    msg = _error("view", run, "-o", tmp_path / "map.png")
    assert "it is a fine-tuning run" in msg and f"--weights {run / 'best.pt'}" in msg
    msg = _error("classify", "predict", codes, shapes_dir)
    assert "is not a classifier model: it is a code store" in msg
    assert f"`embedkit classify train {codes} -o model/`" in msg
    # a fine-tuning run is a model for `classify predict` (its own softmax, test_finetune_predict): an unreadable
    # best.pt is refused as such, naming the file
    msg = _error("classify", "predict", run, shapes_dir)
    assert f"could not read weights file {str(run / 'best.pt')!r}: it is not a torch/safetensors file" in msg
    msg = _error("classify", "predict", shapes_dir, codes)
    assert "it is a folder of images: give the model folder first" in msg
    # a folder that is none of these keeps the plain advice, which writes into it
    empty = tmp_path / "empty"
    empty.mkdir()
    assert f"`embedkit embed IMAGES -o {empty}`" in _error("store", "info", empty)
