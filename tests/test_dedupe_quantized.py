"""The quantised (IVF + 8-bit) near-duplicate search equals the exact one on a multi-shard store with planted duplicates."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from embedkit import CodeStore
from embedkit.errors import ConfigError
from embedkit.retrieve.index import KNNIndex
from embedkit.retrieve.dedupe import near_duplicate_groups
from embedkit.retrieve.dedupe_quantized import quantized_duplicate_groups

pytest.importorskip("faiss")

THRESHOLD = 0.5  # squared L2


def planted(n=3000, d=32, seed=0):
    """A 20-class Gaussian mixture with duplicates planted at distances just under and just over THRESHOLD."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (20, d))
    X = (centres[rng.integers(0, 20, n)] + rng.normal(0, 1, (n, d))).astype(np.float32)
    def at(row, dist):  # a copy of X[row] moved by exactly sqrt(dist) in a random direction
        u = rng.normal(size=d)
        return X[row] + np.sqrt(dist) * u / np.linalg.norm(u)
    extra, want = [], []
    for i, row in enumerate(rng.choice(n, 60, replace=False)):
        kind = i % 4
        new = n + len(extra)
        if kind == 0:    # a pair far under the threshold
            extra.append(at(row, 0.01)); want.append({row, new})
        elif kind == 1:  # a pair just under it: an 8-bit distance could land above, the widened radius keeps it
            extra.append(at(row, 0.97 * THRESHOLD)); want.append({row, new})
        elif kind == 2:  # just over it: a candidate the exact re-check must drop
            extra.append(at(row, 1.03 * THRESHOLD))
        else:            # a group of three copies
            extra += [at(row, 0.02), at(row, 0.03)]; want.append({row, new, new + 1})
    Xd = np.concatenate([X, np.asarray(extra, np.float32)])
    perm = rng.permutation(len(Xd))  # duplicates spread over shards and chunks
    inv = np.argsort(perm)
    return Xd[perm], sorted(sorted(int(inv[r]) for r in g) for g in want)


@pytest.fixture
def store(tmp_path):
    X, want = planted()
    s = CodeStore.from_arrays(tmp_path / "s", X, [f"img{i}.png" for i in range(len(X))], shard_rows=700)
    assert len(s.shards) > 3
    return s, X, want


@pytest.mark.parametrize("metric,threshold", [("l2", THRESHOLD), ("cosine", 2e-4)])
@pytest.mark.parametrize("dim", [64, 6])  # 64 >= D = 32: no projection; 6: a PCA projection that adds candidates
def test_quantized_dedupe_equals_the_exact_path(store, metric, threshold, dim):
    s, X, want = store
    stats = {}
    got = quantized_duplicate_groups(s, threshold, metric, nlist=16, nprobe=4, dim=dim, chunk_rows=500, stats=stats)
    assert stats["dim"] == min(dim, X.shape[1])
    exact = near_duplicate_groups(KNNIndex(metric=metric, kind="flat").fit(X), X, threshold, k=4)
    assert [g.rows for g in got] == [g.rows for g in exact]
    assert [g.max_distance for g in got] == pytest.approx([g.max_distance for g in exact], rel=1e-4, abs=1e-6)
    if metric == "l2":  # the planted groups, no more: the pairs planted just over the threshold were re-checked out
        assert sorted(g.rows for g in got) == want
        assert stats["candidates"] > stats["pairs"] == sum(len(g) - 1 for g in want) + sum(len(g) == 3 for g in want)
        assert stats["max_quantisation_error"] > 0


def test_quantized_dedupe_refuses_bad_arguments(store):
    s, _, _ = store
    for kwargs, match in [({"threshold": -1}, "threshold"), ({"threshold": 1, "metric": "ip"}, "ip"),
                          ({"threshold": 1, "nlist": 10**6}, "nlist")]:
        with pytest.raises(ConfigError, match=match):
            quantized_duplicate_groups(s, **kwargs)


def test_neighbors_cli_dedupe_names_the_quantised_index(store, tmp_path):
    from embedkit.cli.main import app

    s, _, want = store
    res = CliRunner().invoke(app, ["neighbors", str(s.path), "--dedupe", "--metric", "l2", "--kind", "ivf",
                                   "--threshold", str(THRESHOLD), "--quiet"])
    assert res.exit_code == 0, res.output
    assert f"{len(want)} near-duplicate groups" in res.output and "ivf-sq8 l2 index" in res.output
    assert not (s.path / "index").exists()  # nothing cached: the one-pass index is only the dedupe's


def test_projection_only_adds_candidates(store):
    """Projected on 6 of 32 dimensions, no pair under the threshold is lost, and more pairs are re-checked."""
    s, _, want = store
    full, proj = {}, {}
    quantized_duplicate_groups(s, THRESHOLD, "l2", nlist=16, nprobe=4, dim=64, stats=full)
    groups = quantized_duplicate_groups(s, THRESHOLD, "l2", nlist=16, nprobe=4, dim=6, stats=proj)
    assert sorted(g.rows for g in groups) == want
    assert proj["pairs"] == full["pairs"] and proj["candidates"] > full["candidates"]


def test_default_cells_grow_with_the_rows():
    from embedkit.retrieve.dedupe_quantized import ROWS_PER_CELL, default_dedupe_nlist

    assert default_dedupe_nlist(100) == 1
    assert default_dedupe_nlist(1_000_000) == 1_000_000 // ROWS_PER_CELL
    assert default_dedupe_nlist(1_000_000) / default_dedupe_nlist(100_000) == pytest.approx(10, rel=0.01)


def test_two_level_centroids_keep_a_tiny_far_cluster():
    """A coarse cluster of fewer rows than rows-per-centroid still gets a centroid (faiss.contrib's gives none and fails)."""
    import faiss
    from embedkit.retrieve.dedupe_quantized import two_level_centroids

    rng = np.random.default_rng(0)
    X = rng.normal(size=(20000, 16)).astype(np.float32)
    X[:20] += 100  # 20 rows far from the rest: 400 cells of 20000 rows is 50 rows a cell
    C = two_level_centroids(faiss, X, 400)
    assert 380 <= len(C) <= 420
    assert np.linalg.norm(C - X[:20].mean(0), axis=1).min() < 1  # a centroid sits on the far rows
    assert np.isfinite(C).all()
