"""Rules users rely on: the label rule (files directly in the top folder are unlabelled and left out of
training with a warning, never an empty-string class), one writer per run folder, optional view extras."""

from __future__ import annotations

import numpy as np
from helpers import captured_logs, make_shape_image

import embedkit
from embedkit.splits import make_split


def test_unlabelled_rows_are_left_out_of_every_part():
    labels = np.array(["a", "b"] * 20 + ["", ""], dtype=object)
    paths = [f"/x/{i}.png" for i in range(42)]
    with captured_logs() as logs:
        split = make_split(paths, labels, fractions=(0.6, 0.2, 0.2), seed=0)
    used = np.concatenate([split.train, split.val, split.test])
    assert sorted(used.tolist()) == list(range(40))  # every labelled row once, no unlabelled row
    assert "2 of 42 items have no label" in logs.text and "/x/40.png" in logs.text


def test_classify_trains_without_the_loose_files(tmp_path):
    from embedkit.classify.train import train

    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c * 3, 1, (30, 8)) for c in range(3)]).astype(np.float32)
    labels = [str(i // 30) for i in range(90)]
    labels[0] = labels[45] = ""
    store = embedkit.CodeStore.from_arrays(tmp_path / "s", X, [f"p{i}.png" for i in range(90)], labels)
    res = train(store, tmp_path / "m", progress=False, baseline=False, Cs=(1.0,), kernels=("rbf",))
    assert res.out.exists()
    import json

    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["classes"] == ["0", "1", "2"]  # no "" class


def test_finetune_data_leaves_loose_files_out(tmp_path):
    from embedkit.finetune.data import prepare_data

    rng = np.random.default_rng(1)
    for k, cls in enumerate(["red", "green"]):
        (tmp_path / cls).mkdir()
        for i in range(5):
            make_shape_image(k, rng).save(tmp_path / cls / f"{cls}{i}.png")
    make_shape_image(2, rng).save(tmp_path / "loose.png")
    with captured_logs() as logs:
        data = prepare_data(tmp_path, (0.6, 0.2, 0.2), seed=0, progress=False)
    assert sorted(data.class_names) == ["green", "red"] and len(data.items) == 10
    assert "loose.png" in logs.text


def test_a_second_finetune_into_the_same_run_folder_is_refused(tmp_path):
    import subprocess
    import sys

    import pytest

    from embedkit.finetune.train import finetune

    out = tmp_path / "run"
    out.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import sys, time; from embedkit.store.lock import FolderLock; "
                             "FolderLock(sys.argv[1], 'finetune').acquire(); print('held', flush=True); time.sleep(60)",
                             str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert live.stdout.readline().strip() == "held"
        with pytest.raises(embedkit.StoreError, match="being written by another run"):
            finetune(tmp_path, out, progress=False, log=lambda _m: None, weights="none", epochs=1)
    finally:
        live.kill()
        live.wait()
    assert (out / ".lock").exists()  # the refused run did not remove the holder's lock


def test_view_without_the_view_extra_falls_back_or_names_it(monkeypatch):
    """umap-learn/openTSNE are the `view` extra: t-SNE falls back to scikit-learn, UMAP names the extra."""
    import sys

    import pytest

    import embedkit.device as device
    from embedkit.view.project import resolve_view_backend

    real = device.has_module
    monkeypatch.setattr(device, "has_module", lambda m: False if m in ("openTSNE", "umap") else real(m))
    assert resolve_view_backend("tsne", "auto", "cpu") == "sklearn"
    monkeypatch.setitem(sys.modules, "umap", None)
    with pytest.raises(embedkit.MissingDependencyError, match=r"embedkit\[view\]"):
        device.optional_import("umap", "UMAP projection")
