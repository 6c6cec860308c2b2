"""Issue 22's smaller defects, each reproduced: non-UTF-8 class folders, PCA asked beyond the data,
--overwrite with --resume, a bad --top found before training, `store import` of a text file."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import write_shapes

import embedkit
from embedkit.cli.main import app
from embedkit.errors import ConfigError
from embedkit.io.discover import iter_items


def _non_utf8_classes(root):
    """Two class folders whose names differ only in a byte that is not UTF-8 (lab\\xfe, lab\\xff)."""
    write_shapes(root, per_class=4, classes=("a", "b"))
    for old, raw in (("a", b"lab\xfe"), ("b", b"lab\xff")):
        os.rename(os.fsencode(root / old), os.fsencode(root) + b"/" + raw)
    return root


def test_non_utf8_class_folders_stay_two_classes(tmp_path):
    root = _non_utf8_classes(tmp_path / "imgs")
    assert {it.label for it in iter_items(root)} == {"lab\\xfe", "lab\\xff"}


def test_pca_beyond_the_data_records_the_dims_it_has_and_mixed_names_keep_their_classes(tmp_path):
    root = _non_utf8_classes(tmp_path / "imgs")
    r = CliRunner().invoke(app, ["embed", str(root), "-o", str(tmp_path / "s"), "--pca-whiten", "5000"])
    assert r.exit_code == 0, r.output
    assert "PCA-whitening to 5000 components asked for, but 8 codes" in r.output
    store = embedkit.CodeStore.open(tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert meta["pca_whiten"] == meta["dim"] == store.dim == 8 and store.codes.shape == (8, 8)
    assert sorted(set(store.labels)) == ["lab\\xfe", "lab\\xff"]


def test_overwrite_with_resume_is_refused_before_any_work(tmp_path, shapes_dir):
    for extra in (["--resume"], ["--append"]):
        r = CliRunner().invoke(app, ["embed", str(shapes_dir), "-o", str(tmp_path / "s"), "--overwrite", *extra])
        assert r.exit_code == 2 and "--overwrite starts the store over" in r.output and "give only one" in r.output
    assert not (tmp_path / "s").exists()
    from embedkit.finetune.train import finetune

    with pytest.raises(ConfigError, match="--overwrite starts the run over and --resume continues it"):
        finetune(shapes_dir, tmp_path / "run", resume=True, overwrite=True, progress=False)


def test_a_bad_top_is_refused_before_the_first_epoch(tmp_path):
    from embedkit.finetune.train import finetune

    data = write_shapes(tmp_path / "shapes", per_class=5, size=32)
    with pytest.raises(ConfigError, match="foo"):
        finetune(data, tmp_path / "run", strategy="head-then-top", top="foo", epochs=2, backbone="efficientnet_lite0",
                 input_size=32, batch_size=8, workers=0, augment=False, progress=False, log=lambda m: None)
    assert not (tmp_path / "run" / "last.pt").exists() and not (tmp_path / "run" / "history.csv").exists()


def test_store_import_of_a_text_file_says_what_it_is(tmp_path):
    (tmp_path / "notes.txt").write_text("my notes\n")
    (tmp_path / "items.csv").write_text("path\na.png\n")
    r = CliRunner().invoke(app, ["store", "import", str(tmp_path / "notes.txt"), "--items", str(tmp_path / "items.csv"),
                                 "-o", str(tmp_path / "s")])
    assert r.exit_code == 2 and "is not a .npy array file (found a text file)" in r.output, r.output
    assert "pickled" not in r.output
    np.save(tmp_path / "c.npy", np.ones((1, 4), np.float32))
    r = CliRunner().invoke(app, ["store", "import", str(tmp_path / "c.npy"), "--items", str(tmp_path / "items.csv"),
                                 "-o", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output


def test_file_names_with_escape_sequences_are_printed_escaped(tmp_path, capsys):
    import logging

    from embedkit.cli.options import configure_logging
    from embedkit.cli.text import printable

    name = "a\x1b]0;owned\x07\x1b[2J\u202egnp.exe\tb\n"
    assert printable(name) == "a\\x1b]0;owned\\x07\\x1b[2J\\u202egnp.exe\tb\n"
    logger = logging.getLogger("embedkit")
    saved = logger.handlers[:], logger.propagate, logger.level
    try:
        configure_logging()
        logging.getLogger("embedkit.io.discover").warning("manifest lists %s twice", name)
    finally:
        logger.handlers[:], logger.propagate = saved[0], saved[1]
        logger.setLevel(saved[2])
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\u202e" not in err and "a\\x1b]0;owned" in err


def test_inspect_patches_reads_a_stores_files_only_with_their_recorded_sha1(tmp_path):
    import hashlib

    from PIL import Image
    from test_inspect import _hand_net

    from embedkit.inspect.patches import inspect_patches
    from embedkit.store.codestore import CodeStore

    rng = np.random.default_rng(0)
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(paths[-1])
    sha1 = np.array([hashlib.sha1(p.read_bytes()).hexdigest() for p in paths], dtype=object)
    CodeStore.from_arrays(tmp_path / "store", np.zeros((4, 4), np.float32), [str(p) for p in paths],
                          columns={"sha1": sha1})
    Image.new("RGB", (32, 32), (255, 0, 0)).save(paths[1])  # swapped for another picture since it was embedded
    run = inspect_patches(tmp_path / "store", tmp_path / "s.html", layer="2", channels="1", nets=[_hand_net()],
                          workers=0, progress=False, cell=16)
    assert run.images == 3 and str(paths[1]) not in {h.path for h in run.nets[0].hits[0]}
    assert run.skipped == [(str(paths[1]), "changed since it was embedded (its sha1 is not the one the store recorded)")]
