"""`view` at scale: bounded memory (sample, fit, transform in chunks), vectorised paths/labels, device choice."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from helpers import synthetic_store

import embedkit.device
import embedkit.view.project as vp
from embedkit.errors import ConfigError
from embedkit.view.metrics import code_metrics
from embedkit.view.pipeline import view
from embedkit.view.project import project, resolve_view_backend


def traced_peak(fn):
    """``(result, peak bytes allocated while fn runs)``; run fn once before so imports/JIT are not counted."""
    fn()
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture
def small_chunks(monkeypatch):
    """Stream 2000 rows at a time so chunking shows on small fabricated stores."""
    monkeypatch.setattr(vp, "chunk_rows", lambda d: 2000)


def test_pca_fits_on_a_sample_and_transforms_every_row_in_chunks(small_chunks):
    store = synthetic_store(60_000, 128)
    p, peak = traced_peak(lambda: project(store, "pca", max_points=3000, seed=0))
    assert p.xy.shape == (60_000, 2) and np.array_equal(p.indices, np.arange(60_000))
    assert p.params["policy"] == "transform" and p.params["n_fit"] == 3000
    assert store.largest_block <= 3000 and store.unsorted_takes == 0
    assert store.rows_read == 2 * (60_000 + 3000)  # two runs: every row once, plus the fit sample
    # All codes would be 60k x 128 x 4 = 30.7 MB; we hold the 0.96 MB output, a fit sample and one chunk.
    assert peak < 8e6, f"peak {peak / 1e6:.1f} MB"
    # The plane is the one a PCA of all rows finds (up to a rotation within it): a sample fit is enough.
    from sklearn.decomposition import PCA

    full = PCA(2).fit_transform(np.concatenate([b for _, b in store.iter_chunks(10_000)]))
    a = np.c_[p.xy, np.ones(len(p.xy))]
    resid = full - a @ np.linalg.lstsq(a, full, rcond=None)[0]
    assert (resid ** 2).sum() / ((full - full.mean(0)) ** 2).sum() < 0.01


@pytest.mark.slow
def test_umap_fits_on_a_sample_and_transforms_the_rest(monkeypatch):
    monkeypatch.setattr(vp, "chunk_rows", lambda d: 400)
    store = synthetic_store(2000, 96, k=3)
    logs = []
    p = project(store, "umap", max_points=500, pca_dims=10, seed=0, log=logs.append)
    assert p.xy.shape == (2000, 2) and p.params["policy"] == "transform" and p.params["n_fit"] == 500
    assert p.params["pca_dims"] == 10 and store.largest_block <= 500 and store.unsorted_takes == 0
    assert store.rows_read == 2000 + 500 + 500  # PCA sample, fit sample, then every row once in chunks
    # transformed points land with their own class: 5-NN in 2-D on the transformed (not fitted) rows
    from sklearn.neighbors import KNeighborsClassifier

    fit = np.zeros(2000, bool)
    fit[np.sort(np.random.default_rng(0).choice(2000, 500, replace=False))] = True
    clf = KNeighborsClassifier(5).fit(p.xy[fit], store.cls[fit])
    assert (clf.predict(p.xy[~fit]) == store.cls[~fit]).mean() > 0.95
    assert any("fitting umap-learn on 500 of 2,000" in m for m in logs) and any("transformed in" in m for m in logs)


def test_tsne_projects_the_sample_only_by_default_and_says_so(tmp_path):
    store = synthetic_store(3000, 16)
    res = view(store, tmp_path / "t.png", method="tsne", backend="opentsne", max_points=300, metrics_points=400)
    p = res.params[0]
    assert p["policy"] == "sample" and len(res.panels[0].xy) == 300 and store.unsorted_takes == 0
    s = res.summary()
    assert "t-SNE of a sample of 300 of 3,000 points (the rest not projected)" in s
    assert "(on 400 of 3,000 labelled codes)" in s


def test_tsne_can_transform_the_rest_with_opentsne():
    store = synthetic_store(700, 16, k=2)
    p = project(store, "tsne", backend="opentsne", max_points=200, rest="transform", seed=0)
    assert p.xy.shape == (700, 2) and p.params["policy"] == "transform" and np.isfinite(p.xy).all()
    with pytest.raises(ConfigError, match="--rest drop"):
        project(store, "tsne", backend="sklearn", max_points=200, rest="transform")


def test_view_draws_a_bounded_sample_and_indexes_paths_as_arrays(tmp_path, small_chunks):
    store = synthetic_store(30_000, 32)
    res = view(store, tmp_path / "m.html", method="pca", max_points=1000, max_draw=2500, thumbnails=0)
    assert len(res.panels[0].xy) == 2500 and res.params[0]["n_fit"] == 1000
    assert store.path_reads <= 2  # not once per point (issue 8: 2.4 s at 8k items, minutes at 100k)
    rows = res.panels[0].paths
    assert isinstance(rows, np.ndarray) and len(set(rows.tolist())) == 2500
    i = int(rows[0][4:11])  # img/0001234.png -> row 1234: label and path stay in step
    assert res.panels[0].labels[0] == store.labels[i]
    s = res.summary()
    assert "PCA fitted on 1,000 of 30,000 points, the rest transformed; 2,500 of them drawn" in s
    assert "(on 5,000 of 30,000 labelled codes)" in s and "synthetic (30,000 codes)" in s  # identity None


def test_metrics_run_on_a_bounded_sample():
    store = synthetic_store(50_000, 24)
    m = code_metrics(store, store.labels, max_points=800)
    assert m["n"] == 800 and m["n_labelled"] == 50_000 and store.largest_block == 800 and m["knn_acc"] > 0.9


def test_device_cpu_forces_cpu_libraries_on_a_cuda_machine_with_cuml(monkeypatch, tmp_path):
    monkeypatch.setattr(embedkit.device, "cuda_available", lambda: True)
    monkeypatch.setattr(embedkit.device, "has_module", lambda name: True)
    assert resolve_view_backend("umap", "auto", "auto") == "cuml"  # what auto would pick here
    assert resolve_view_backend("umap", "auto", "cpu") == "umap-learn"
    assert resolve_view_backend("tsne", "auto", "cpu") == "opentsne"
    assert resolve_view_backend("pca", None, "cpu") == "sklearn"
    with pytest.raises(ConfigError, match="device 'cpu'"):
        resolve_view_backend("umap", "cuml", "cpu")
    with pytest.raises(ConfigError, match="runs on the CPU"):
        resolve_view_backend("tsne", "sklearn", "cuda")
    res = view(synthetic_store(200, 8), tmp_path / "m.png", method="pca", device="cpu")
    assert res.params[0]["backend"] == "sklearn"
