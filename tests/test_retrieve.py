"""Retrieval: KNNIndex against a brute-force numpy reference, its errors, save/load, dedupe, kNN classifier, CLI."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import make_shape_image
from embedkit.retrieve.dedupe import UnionFind, near_duplicate_groups
from embedkit.errors import ConfigError, DataError, MismatchError, NotFittedError, StoreError
from embedkit.retrieve.knn_classifier import KNNClassifier
from embedkit.retrieve.index import KNNIndex, resolve_knn_backend


def brute_force(X, Q, k, metric):
    """Reference: all distances in float64, stable sort."""
    X, Q = X.astype(np.float64), Q.astype(np.float64)
    if metric == "l2":
        D = ((Q[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    elif metric == "ip":
        D = -(Q @ X.T)
    else:
        D = 1 - (Q / np.linalg.norm(Q, axis=1, keepdims=True)) @ (X / np.linalg.norm(X, axis=1, keepdims=True)).T
    idx = np.argsort(D, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(D, idx, 1), idx


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, 48)) * 4
    lab = rng.integers(0, 20, 3000)
    X = (centres[lab] + rng.standard_normal((3000, 48))).astype(np.float32)
    Q = (centres[rng.integers(0, 20, 60)] + rng.standard_normal((60, 48))).astype(np.float32)
    return X, Q


def recall(I, Iref):
    return np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(I, Iref)])


# ------------------------------------------------------------------ exactness
@pytest.mark.parametrize("backend", ["faiss", "torch"])
@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_exact_search_equals_brute_force(data, metric, backend):
    X, Q = data
    index = KNNIndex(metric=metric, kind="flat", backend=backend, chunk_size=700).fit(X)  # several chunks
    D, I = index.search(Q, 10)
    Dref, Iref = brute_force(X, Q, 10, metric)
    assert D.shape == I.shape == (60, 10) and I.dtype == np.int64
    np.testing.assert_array_equal(I, Iref)
    np.testing.assert_allclose(D, Dref, rtol=1e-4, atol=1e-3 if metric != "cosine" else 1e-5)
    assert np.all(np.diff(D, axis=1) >= 0)  # closest first


def test_float16_memmap_codes(data, tmp_path):
    X, Q = data
    np.save(tmp_path / "codes.npy", X.astype(np.float16))
    mm = np.load(tmp_path / "codes.npy", mmap_mode="r")
    _, I = KNNIndex(kind="flat", chunk_size=512).fit(mm).search(Q, 5)
    np.testing.assert_array_equal(I, brute_force(np.asarray(mm, np.float32), Q, 5, "l2")[1])


def test_ivf_and_hnsw_recall(data):
    X, Q = data
    _, Iref = brute_force(X, Q, 10, "l2")
    ivf = KNNIndex(kind="ivf", nlist=16, nprobe=16).fit(X)  # nprobe = nlist visits every cell: exact
    assert recall(ivf.search(Q, 10)[1], Iref) == 1.0
    ivf.nprobe = 1  # changed after fit: applied at search time
    assert recall(ivf.search(Q, 10)[1], Iref) < 1.0
    hnsw = KNNIndex(kind="hnsw", M=16, ef_search=128).fit(X)
    assert recall(hnsw.search(Q, 10)[1], Iref) >= 0.9
    assert "ivf" in ivf.describe() and "hnsw" in hnsw.describe()


def test_auto_kind_and_backend_on_cpu(data):
    index = KNNIndex().fit(data[0])
    assert (index.kind_, index.backend_) == ("flat", "faiss")
    assert resolve_knn_backend("auto", "hnsw") == "faiss"
    with pytest.raises(ConfigError, match="CUDA|GPU"):
        resolve_knn_backend("faiss-gpu", "flat")
    with pytest.raises(ConfigError, match="exact"):
        resolve_knn_backend("torch", "hnsw")
    with pytest.raises(ConfigError, match="no CUDA"):  # the suite runs with CUDA hidden
        resolve_knn_backend("auto", "flat", device="cuda")
    torch_index = KNNIndex(backend="torch", device="cpu").fit(data[0][:100])
    assert torch_index.device_.type == "cpu" and "torch" in torch_index.describe()


# ------------------------------------------------------------------ ids & paths
def test_ids_and_paths_map_back(data):
    X, Q = data
    ids = np.arange(len(X)) * 7 + 1000
    paths = [f"img/{i:05d}.png" for i in range(len(X))]
    index = KNNIndex(kind="flat").fit(X, ids=ids, paths=paths)
    _, I = index.search(Q, 3)
    _, rows = brute_force(X, Q, 3, "l2")
    np.testing.assert_array_equal(I, ids[rows])
    np.testing.assert_array_equal(index.rows_of(I), rows)
    assert index.paths_of(I)[0, 0] == paths[rows[0, 0]]
    assert index.paths_of(np.array([-1]))[0] is None
    with pytest.raises(DataError, match="not in this index"):
        index.rows_of([5])


# ------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize("X, match", [
    (np.zeros((0, 8), np.float32), "no items"),
    (np.zeros((5,), np.float32).reshape(5, 1, 1), "2-D"),
    (np.array([["a", "b"]]), "numeric"),
])
def test_bad_codes(X, match):
    with pytest.raises(DataError, match=match):
        KNNIndex().fit(X)


def test_nan_codes_named_by_row(data):
    X = data[0].copy()
    X[[3, 1234]] = np.nan
    with pytest.raises(DataError, match=r"NaN or infinity in 2 of 3000 rows \(first: \[3, 1234\]\)"):
        KNNIndex().fit(X)


def test_bad_queries_and_k(data):
    X, Q = data
    index = KNNIndex(kind="flat").fit(X[:50])
    with pytest.raises(MismatchError, match="queries have 47 dims but the index holds 48"):
        index.search(Q[:, :47], 5)
    with pytest.raises(ConfigError, match="k=51 is larger than the 50 vectors"):
        index.search(Q, 51)
    with pytest.raises(ConfigError, match="k 0 is not valid"):
        index.search(Q, 0)
    bad = Q.copy()
    bad[2, 0] = np.inf
    with pytest.raises(DataError, match="queries contain NaN"):
        index.search(bad, 5)
    assert index.search(Q[0], 50)[1].shape == (1, 50)  # 1-D query, k = N allowed


@pytest.mark.parametrize("params, match", [
    ({"metric": "euclid"}, "metric 'euclid'"), ({"kind": "lsh"}, "kind 'lsh'"), ({"backend": "cuml"}, "backend 'cuml'"),
    ({"nprobe": 0}, "nprobe 0 is not valid"), ({"kind": "ivf", "nlist": 100}, "nlist=100 is larger than the 50"),
    ({"kind": "hnsw", "backend": "torch"}, "exact search only"),
])
def test_bad_params(data, params, match):
    with pytest.raises(ConfigError, match=match):
        KNNIndex(**params).fit(data[0][:50])


def test_bad_ids_and_paths(data):
    X = data[0][:10]
    with pytest.raises(DataError, match="distinct"):
        KNNIndex().fit(X, ids=[1] * 10)
    with pytest.raises(DataError, match="10 integers"):
        KNNIndex().fit(X, ids=np.arange(9))
    with pytest.raises(DataError, match="3 paths were given for 10"):
        KNNIndex().fit(X, paths=["a", "b", "c"])


def test_not_fitted():
    with pytest.raises(NotFittedError):
        KNNIndex().search(np.zeros((1, 4)), 1)
    with pytest.raises(NotFittedError):
        KNNClassifier().predict(np.zeros((1, 4)))


# ------------------------------------------------------------------ save / load
@pytest.mark.parametrize("kind, backend, load_backend", [
    ("flat", "faiss", "faiss"), ("flat", "torch", "faiss"), ("flat", "faiss", "torch"), ("ivf", "faiss", "auto"),
    ("hnsw", "faiss", "auto"),
])
def test_save_load_round_trip(data, tmp_path, kind, backend, load_backend):
    X, Q = data
    ident = {"backbone": "x", "layer": "pool"}
    index = KNNIndex(metric="cosine", kind=kind, backend=backend, nlist=8, nprobe=4).fit(
        X, paths=[f"p{i}" for i in range(len(X))], identity=ident)
    D, I = index.search(Q, 7)
    out = index.save(tmp_path / "idx")
    index.save(tmp_path / "idx")  # overwriting an existing index is atomic too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no temporary folders left behind
    back = KNNIndex.load(out, identity=ident, backend=load_backend)
    D2, I2 = back.search(Q, 7)
    np.testing.assert_array_equal(I2, I)
    np.testing.assert_allclose(D2, D, atol=1e-5)
    assert (back.kind_, back.metric, back.paths_[:2], back.identity_) == (kind, "cosine", ["p0", "p1"], ident)
    with pytest.raises(MismatchError, match="layer"):
        KNNIndex.load(out, identity={**ident, "layer": "fc7"})


def test_load_errors(tmp_path):
    with pytest.raises(StoreError, match="index.json is missing"):
        KNNIndex.load(tmp_path)


# ------------------------------------------------------------------ dedupe
def test_union_find():
    uf = UnionFind(6)
    uf.union(0, 1), uf.union(2, 3), uf.union(1, 3)
    assert uf.find(0) == uf.find(2) != uf.find(4)


def test_near_duplicate_groups_find_every_pair(data):
    X = data[0][:500]
    rng = np.random.default_rng(1)
    # a group of 6 copies (more than k=2 neighbours: the search must widen) and a pair
    Xd = np.concatenate([X, X[[0] * 5] + rng.normal(0, 1e-3, (5, 48)), X[[7]] + 1e-3]).astype(np.float32)
    index = KNNIndex(kind="flat").fit(Xd)
    groups = near_duplicate_groups(index, Xd, threshold=1e-3, k=2, chunk_size=64)
    assert [g.rows for g in groups] == [[0, 500, 501, 502, 503, 504], [7, 505]]
    assert 0 < groups[0].max_distance <= 1e-3
    with pytest.raises(ConfigError, match="threshold"):
        near_duplicate_groups(index, Xd, threshold=-1)


# ------------------------------------------------------------------ kNN classifier
@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_knn_classifier_matches_sklearn(data, weights):
    from sklearn.base import clone
    from sklearn.neighbors import KNeighborsClassifier

    X, _ = data
    y = np.array(["cat", "dog", "owl"])[np.argmax(X[:, :3], axis=1)]
    Xtr, ytr, Xte = X[:2500], y[:2500], X[2500:]
    ours = clone(KNNClassifier(n_neighbors=7, weights=weights, metric="l2"))
    assert ours.fit(Xtr, ytr) is ours
    ref = KNeighborsClassifier(n_neighbors=7, weights=weights).fit(Xtr, ytr)
    np.testing.assert_array_equal(ours.classes_, ref.classes_)
    np.testing.assert_allclose(ours.predict_proba(Xte), ref.predict_proba(Xte), atol=1e-6)
    np.testing.assert_array_equal(ours.predict(Xte), ref.predict(Xte))
    top, shares = ours.predict_topk(Xte, 2)
    assert top.shape == shares.shape == (len(Xte), 2) and np.all(top[:, 0] == ours.predict(Xte))
    np.testing.assert_allclose(shares[:, 0], ours.predict_proba(Xte).max(axis=1))
    assert ours.score(Xte, y[2500:]) > 0.5


def test_knn_classifier_errors(data):
    X = data[0][:20]
    with pytest.raises(DataError, match="one label per row"):
        KNNClassifier().fit(X, np.zeros(19))
    with pytest.raises(ConfigError, match="weights 'near'"):
        KNNClassifier(weights="near").fit(X, np.zeros(20))
    with pytest.raises(ConfigError, match="metric='ip'"):
        KNNClassifier(weights="distance", metric="ip").fit(X, np.zeros(20))


# ------------------------------------------------------------------ real store + CLI
@pytest.fixture(scope="module")
def shape_store(tmp_path_factory):
    """A real store of 18 synthetic images (3 classes) plus an exact copy of one of them."""
    import embedkit

    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("shapes")
    for k, name in enumerate(["circle", "square", "triangle"]):
        (root / name).mkdir()
        for i in range(6):
            make_shape_image(k, rng).save(root / name / f"{name}_{i}.png")
    shutil.copy(root / "square" / "square_2.png", root / "square" / "square_2_copy.png")
    store = embedkit.embed(root, tmp_path_factory.mktemp("codes") / "codes", progress=False, workers=0).store
    return root, store


def test_index_from_store_identity(shape_store, tmp_path):
    root, store = shape_store
    index = KNNIndex.from_store(store, metric="cosine")
    assert index.identity_ == store.identity and list(index.paths_) == list(store.paths)
    index.save(tmp_path / "idx")
    KNNIndex.load(tmp_path / "idx", store=store)  # its own store: accepted
    other = dict(store.identity, layer="another_layer")
    KNNIndex(metric="cosine").fit(store.codes, identity=other).save(tmp_path / "other")
    with pytest.raises(MismatchError, match="another_layer"):
        KNNIndex.load(tmp_path / "other", store=store)
    KNNIndex().fit(store.codes[:5], identity=store.identity).save(tmp_path / "short")
    with pytest.raises(MismatchError, match="rebuild the index"):
        KNNIndex.load(tmp_path / "short", store=store)


def test_neighbors_cli(shape_store, tmp_path):
    from embedkit.cli.main import app

    root, store = shape_store
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    query = root / "circle" / "circle_3.png"
    html, out_csv = tmp_path / "g.html", tmp_path / "n.csv"
    args = ["neighbors", str(query), str(root / "triangle"), str(bad), "--codes", str(store.path), "-k", "4",
            "--html", str(html), "--csv", str(out_csv), "--quiet"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "skipped query" in res.output and "broken.png" in res.output
    assert "7 queries (1 skipped) x 4 neighbours" in res.output and "[built]" in res.output
    with open(out_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7 * 4
    first = rows[0]
    assert first["rank"] == "1" and first["path"] == str(query.resolve()) and float(first["distance"]) < 1e-4
    # every query image is in the store: each one comes back first with distance ~0
    for r in rows:
        if r["rank"] == "1":
            assert float(r["distance"]) < 1e-4 and (r["path"] == r["query"] or "square_2" in r["path"])
    assert html.read_text().count("<img") == 7 * 5
    again = CliRunner().invoke(app, ["neighbors", str(query), "--codes", str(store.path), "-k", "2", "--quiet"])
    assert again.exit_code == 0 and "[loaded]" in again.output, again.output
    assert "query 1/1" in again.output and "   1  0.0000  " + str(query.resolve()) in again.output


def test_neighbors_cli_dedupe_and_errors(shape_store, tmp_path):
    from embedkit.cli.main import app

    root, store = shape_store
    res = CliRunner().invoke(app, ["neighbors", "--dedupe", "--codes", str(store.path), "--threshold", "1e-4",
                                   "--csv", str(tmp_path / "d.csv"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "1 near-duplicate groups (2 images)" in res.output
    assert "square_2.png" in res.output and "square_2_copy.png" in res.output
    for argv, match in [
        (["--codes", str(store.path)], "at least one query"),
        ([str(tmp_path / "nope.png"), "--codes", str(store.path)], "none of the 1 queries"),
        ([str(root), "--codes", str(store.path), "-k", "100"], "-k 100 is larger than the 19"),
        (["--dedupe", "--metric", "l2", "--codes", str(store.path)], "needs --threshold"),
        ([str(root), "--dedupe", "--codes", str(store.path)], "takes no QUERIES"),
    ]:
        res = CliRunner().invoke(app, ["neighbors", *argv])
        assert res.exit_code == 2 and "error:" in res.output and match in res.output, (argv, res.output)


def test_neighbors_cli_rebuilds_stale_cache(shape_store):
    from embedkit.cli.main import app

    root, store = shape_store
    folder = store.path / "index" / "l2-flat"
    # a cached index of other codes (another layer, fewer rows) must not be used
    KNNIndex(kind="flat").fit(store.codes[:5], identity=dict(store.identity, layer="x")).save(folder)
    args = ["neighbors", str(root / "circle" / "circle_0.png"), "--codes", str(store.path), "--metric", "l2",
            "--kind", "flat", "-k", "3", "--quiet"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "[built]" in res.output and "(19 x " in res.output, res.output
    assert KNNIndex.load(folder, store=store).n_ == len(store)
    assert "[loaded]" in CliRunner().invoke(app, args).output
