"""Crafted artefacts outside the store: a model folder, an index cache, a last.pt, a CSV manifest.

Each is built the way an attacker (or a damaged disk) would, and must be refused in one line, or, for a cache,
rebuilt, instead of a traceback, GBs of memory or silently wrong answers.
"""

from __future__ import annotations

import json
import resource
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from test_classify import app, blobs, make_store

from embedkit.classify.model_folder import load_classifier, save_classifier
from embedkit.classify.svm import SVMClassifier
from embedkit.errors import StoreError


@pytest.fixture
def model(tmp_path):
    X, y = blobs(n_per=12, k=3, d=6)
    store = make_store(tmp_path / "codes", X, list(y))
    clf = SVMClassifier(kernel="rbf", backend="sklearn").fit(X, y)
    return save_classifier(tmp_path / "m", clf, store), store


def _rewrite_npz(folder, change):
    with np.load(folder / "model.npz") as a:
        arrays = {k: a[k] for k in a.files}
    change(arrays)
    np.savez(folder / "model.npz", **arrays)


def test_support_vectors_of_another_width_are_refused(model):
    folder, store = model

    def wider(a):
        sv = a["estimators_.0.support_vectors_"]
        a["estimators_.0.support_vectors_"] = np.hstack([sv, sv[:, :1]])

    _rewrite_npz(folder, wider)
    with pytest.raises(StoreError, match=r"support_vectors_ has shape \(\d+, 7\), expected \(rows, 6\)"):
        load_classifier(folder)
    r = CliRunner().invoke(app(), ["classify", "predict", str(folder), str(store.path), "-o", str(folder / "p.csv")])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and "retrain it" in r.output, r.output


def test_inconsistent_or_nan_coefficients_are_refused(model):
    folder, _ = model
    _rewrite_npz(folder, lambda a: a["estimators_.1.dual_coef_"].__setitem__((0, 0), np.nan))
    with pytest.raises(StoreError, match="dual_coef_ holds NaN or infinite values"):
        load_classifier(folder)
    _rewrite_npz(folder, lambda a: a.update({k: np.nan_to_num(a[k])[:, :-1]  # finite, one support vector short
                                             for k in ("estimators_.1.dual_coef_", "estimators_.1._dual_coef_")}))
    with pytest.raises(StoreError, match=r"dual_coef_ is \(1, \d+\), expected"):
        load_classifier(folder)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_an_npz_zip_bomb_is_refused_before_allocation(model):
    folder, _ = model
    names = np.load(folder / "model.npz").files
    # 1: a real bomb, 256 MB of zeros deflated to a few hundred KB, in place of the support vectors
    header = {"descr": "<f8", "fortran_order": False, "shape": (32 * 2**20,)}
    with zipfile.ZipFile(folder / "model.npz", "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("estimators_.0.support_vectors_.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_2_0(f, header)
            zeros = bytes(2**20)
            for _ in range(256):
                f.write(zeros)
    assert (folder / "model.npz").stat().st_size < 2**20
    before = _peak_mb()
    with pytest.raises(StoreError, match="would take over .* bytes in memory from a .*-byte file"):
        load_classifier(folder)
    assert _peak_mb() - before < 100
    # 2: a header that promises 1.6 GB over a few bytes of data
    with zipfile.ZipFile(folder / "model.npz", "w") as zf:
        with zf.open(names[0] + ".npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (200_000_000,)})
            f.write(bytes(64))
    with pytest.raises(StoreError, match="would take over 1,600,000,000 bytes"):
        load_classifier(folder)


def test_model_json_dim_must_be_a_positive_integer(model):
    folder, _ = model
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps(dict(meta, dim="6")))
    with pytest.raises(StoreError, match="gives dim '6', not a positive integer"):
        load_classifier(folder)


@pytest.fixture
def cached(tmp_path):
    """A store of 40 random codes and its cached HNSW index."""
    pytest.importorskip("faiss")
    from embedkit import CodeStore
    from embedkit.retrieve.cache import cached_index, index_folder

    rng = np.random.default_rng(0)
    store = CodeStore.from_arrays(tmp_path / "s", rng.normal(size=(40, 8)).astype(np.float32),
                                  [f"/imgs/{i}.png" for i in range(40)])
    assert cached_index(store, kind="hnsw", backend="faiss")[1] == "built"
    return store, index_folder(store, "cosine", "hnsw")


def _reload(store):
    from embedkit.retrieve.cache import cached_index

    notes = []
    index, how = cached_index(store, kind="hnsw", backend="faiss", note=notes.append)
    ids = index.search(np.asarray(store.codes[:5]), 3)[1]
    assert set(index.paths_of(ids).ravel()) <= set(store.paths)  # answers come from the store's own files
    return how, notes


def test_a_self_consistent_tampered_index_cache_never_answers_other_files(cached):
    import hashlib

    store, folder = cached
    text = json.dumps(["/etc/passwd"] * len(store))
    (folder / "paths.json").write_text(text)
    meta = json.loads((folder / "index.json").read_text())
    meta["paths_sha256"] = hashlib.sha256(text.encode()).hexdigest()  # checksum updated: only the store can tell
    (folder / "index.json").write_text(json.dumps(meta))
    how, notes = _reload(store)
    assert how == "built" and "paths.json lists other files than store" in notes[0]


@pytest.mark.parametrize("ids, reason", [(np.arange(40) + 5, "ids are not the store's row numbers"),
                                         (np.r_[np.arange(39), -7], "negative or repeated ids"),
                                         (np.r_[np.arange(39), 0], "negative or repeated ids")])
def test_cached_ids_out_of_range_are_rebuilt(cached, ids, reason):
    store, folder = cached
    np.save(folder / "ids.npy", ids.astype(np.int64))
    how, notes = _reload(store)
    assert how == "built" and reason in notes[0]


def test_a_cached_index_of_another_type_is_rebuilt(cached):
    import faiss

    store, folder = cached
    x = np.asarray(store.codes, np.float32)
    quant = faiss.IndexFlatIP(8)
    ivf = faiss.IndexIVFFlat(quant, 8, 2, faiss.METRIC_INNER_PRODUCT)
    ivf.train(x)
    ivf.add(x)  # as many vectors as index.json says: only the type gives it away
    faiss.write_index(ivf, str(folder / "index.faiss"))
    how, notes = _reload(store)
    assert how == "built" and "index.faiss holds a IndexIVFFlat of width 8, index.json describes a hnsw" in notes[0]
    wide = faiss.IndexHNSWFlat(16, 32, faiss.METRIC_INNER_PRODUCT)
    wide.add(np.hstack([x, x]))
    faiss.write_index(wide, str(folder / "index.faiss"))
    how, notes = _reload(store)
    assert how == "built" and "of width 16" in notes[0]


@pytest.mark.parametrize("config", ["oops", {}, {"split": [0.6, 0.2, 0.2], "no_such_option": 1},
                                    {"split": 5}, {"split": [0.6, 0.2, 0.2], "epochs": "ten"},
                                    {"split": [0.6, 0.2, 0.2], "strategy": "rm -rf"}])
def test_a_last_pt_with_a_malformed_config_is_one_line(tmp_path, config):
    import torch

    from embedkit.errors import ConfigError
    from embedkit.finetune.train import finetune

    out = tmp_path / "run"
    out.mkdir()
    torch.save({"config": config, "model": {}, "epoch": 1}, out / "last.pt")
    with pytest.raises(ConfigError, match=r"last.pt\) holds a configuration that cannot be used .*--overwrite") as e:
        finetune(tmp_path / "no-images-needed", out, resume=True, progress=False, log=lambda m: None)
    assert "\n" not in str(e.value)


@pytest.mark.timeout(30)
def test_a_model_npz_that_is_not_a_file_is_refused(model):
    import os

    folder, _ = model
    (folder / "model.npz").unlink()
    os.symlink("/dev/zero", folder / "model.npz")
    with pytest.raises(StoreError, match="model.npz' is not a regular file"):
        load_classifier(folder)
