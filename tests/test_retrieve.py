"""Retrieval: KNNIndex against a brute-force numpy reference, its errors, save/load, dedupe, kNN classifier, CLI.

Every test is independent (each store test gets its own copy of the store, so no test sees another's index
cache): the file passes in any order. Streaming, IVF-from-a-store, the cache and dedupe tests also run on
FakeStore, which has only the CodeStore surface the library may use (no ``codes``), so they prove codes are
read through ``iter_chunks``/``take`` in bounded blocks.
"""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import click
from click.testing import CliRunner

from helpers import FakeStore, make_shape_image
from embedkit.errors import ConfigError, DataError, MismatchError, NotFittedError, StoreError
from embedkit.retrieve.cache import cached_index
from embedkit.retrieve.dedupe import UnionFind, near_duplicate_groups
from embedkit.retrieve.exhaustive import exhaustive_search
from embedkit.retrieve.common import resolve_knn_backend
from embedkit.retrieve.index import KNNIndex
from embedkit.retrieve.knn_classifier import KNNClassifier
from embedkit.retrieve.queries import embed_queries

#: path names that str.splitlines() cuts in two (U+2028/2029, NEL, VT, FF, FS/GS/RS) and other awkward ones
AWKWARD = ["a\u2028b.png", "c\u2029d.png", "e\x85f.png", "g\x0bh.png", "i\x0cj.png", "k\x1cl.png", "m\x1dn.png",
           "o\x1ep.png", "line\nbreak.png", "cr\rret.png", "tab\t.png", "caf\u00e9 \U0001f600.png"]


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


@pytest.fixture
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


def test_knn_classifier_passes_check_estimator():
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(KNNClassifier(), on_fail=None)
    failed = [(r["check_name"], repr(r["exception"])[:300]) for r in results if r["status"] == "failed"]
    assert failed == [] and len(results) > 40
    est = KNNClassifier(n_neighbors=3).fit(np.eye(4), list("abab"))
    assert repr(est) == "KNNClassifier(n_neighbors=3)" and repr(KNNIndex(kind="flat")) == "KNNIndex(kind='flat')"


def test_not_fitted_is_also_sklearns():
    from sklearn.exceptions import NotFittedError as SkNotFitted
    from sklearn.utils.validation import check_is_fitted

    for est in (KNNIndex(), KNNClassifier()):
        with pytest.raises(SkNotFitted):
            check_is_fitted(est)
    with pytest.raises(SkNotFitted):
        KNNClassifier().predict_topk(np.zeros((1, 4)))
    with pytest.raises(NotFittedError):
        KNNIndex().save("never-written")


# ------------------------------------------------------------------ streamed exact search (bounded memory)
@pytest.mark.parametrize("backend", ["faiss", "torch"])
@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_streamed_exact_search_on_multi_chunk_store_equals_brute_force(data, tmp_path, metric, backend):
    X, Q = data
    store = FakeStore(tmp_path / "s", X)
    index = KNNIndex(metric=metric, kind="flat", backend=backend, device="cpu", chunk_size=256).fit(store)
    assert index.storage_ == "stream" and "streamed" in index.describe()
    D, I = index.search(Q, 10)
    Dref, Iref = brute_force(X, Q, 10, metric)
    np.testing.assert_array_equal(I, Iref)
    np.testing.assert_allclose(D, Dref, rtol=1e-4, atol=1e-3 if metric != "cosine" else 1e-5)
    assert store.largest_block == 256  # 12 chunks of at most 256 rows: the 3000 rows were never read at once
    D2, I2 = exhaustive_search(store, Q, 10, metric, chunk_rows=100, backend=backend)
    np.testing.assert_array_equal(I2, Iref)
    np.testing.assert_allclose(D2, D, rtol=1e-4, atol=1e-4)


def test_streamed_index_save_load_needs_its_store(data, tmp_path):
    X, Q = data
    store = FakeStore(tmp_path / "s", X, identity={"backbone": "b", "layer": "l"})
    index = KNNIndex(kind="flat", chunk_size=500).fit(store)
    index.save(tmp_path / "idx")
    assert not (tmp_path / "idx" / "index.faiss").exists()  # the codes stay in the store
    back = KNNIndex.load(tmp_path / "idx", store=store)
    np.testing.assert_array_equal(back.search(Q, 5)[1], index.search(Q, 5)[1])
    with pytest.raises(StoreError, match="store="):
        KNNIndex.load(tmp_path / "idx").search(Q, 5)


def test_ivf_from_store_is_trained_on_a_sample_and_filled_by_chunks(data, tmp_path):
    X, Q = data
    store = FakeStore(tmp_path / "s", X)
    ivf = KNNIndex(kind="ivf", nlist=8, nprobe=8, chunk_size=300).fit(store)
    # a bounded training sample (taken once), then every row in chunks of 300: never all 3000 at once
    assert ivf.storage_ == "memory" and store.largest_block < len(X) and store.reads.count(300) >= 10
    np.testing.assert_array_equal(ivf.search(Q, 10)[1], brute_force(X, Q, 10, "l2")[1])  # nprobe = nlist: exact


def test_dedupe_streams_the_store(data, tmp_path):
    X = data[0][:400]
    Xd = np.concatenate([X, X[[3, 3, 3]] + 1e-4, X[[9]]]).astype(np.float32)
    store = FakeStore(tmp_path / "s", Xd)
    index = KNNIndex(metric="cosine", kind="flat", chunk_size=64).fit(store)
    groups = near_duplicate_groups(index, store, threshold=1e-6, k=2, chunk_size=50)
    assert [g.rows for g in groups] == [[3, 400, 401, 402], [9, 403]]
    assert store.largest_block == 64
    assert [g.rows for g in near_duplicate_groups(index, threshold=1e-6)] == [g.rows for g in groups]  # X optional


# ------------------------------------------------------------------ paths of any string, cache integrity
def test_save_load_keeps_paths_with_line_separators_and_control_characters(data, tmp_path):
    X, Q = data
    paths = [f"dir/{AWKWARD[i % len(AWKWARD)]}{i}" for i in range(len(X))]
    index = KNNIndex(kind="flat").fit(X, paths=paths)
    back = KNNIndex.load(index.save(tmp_path / "idx"))
    assert back.paths_ == paths
    _, I = back.search(Q, 3)
    assert back.paths_of(I).tolist() == [[paths[r] for r in row] for row in I]
    assert not (tmp_path / "idx" / "paths.txt").exists()


def _fake(tmp_path, n=300, paths=None, identity={"backbone": "b", "layer": "l"}, seed=0):
    X = np.random.default_rng(seed).standard_normal((n, 16)).astype(np.float32)
    return FakeStore(tmp_path / "store", X, paths=paths, identity=identity)


def test_cache_is_reused_and_rebuilt_when_the_store_changes(tmp_path):
    notes = []
    paths = [f"p/{AWKWARD[i % len(AWKWARD)]}{i}" for i in range(300)]
    store = _fake(tmp_path, paths=paths)
    index, how = cached_index(store, "l2", "flat", note=notes.append)
    assert how == "built" and notes == [] and index.paths_ == paths
    again, how = cached_index(store, "l2", "flat", note=notes.append)
    assert how == "loaded" and again.paths_ == paths and notes == []
    for changed in (_fake(tmp_path, paths=paths[::-1]),  # same count and identity, other rows
                    _fake(tmp_path, paths=paths, identity={"backbone": "b", "layer": "other"}),
                    _fake(tmp_path, n=299, paths=paths[:299])):
        notes.clear()
        index, how = cached_index(changed, "l2", "flat", note=notes.append)
        assert how == "built" and len(notes) == 1 and "rebuilding" in notes[0]
        assert index.paths_ == list(changed.paths)


def test_cache_of_imported_codes_without_identity(tmp_path):
    store = _fake(tmp_path, identity=None)
    assert cached_index(store, "cosine", "flat")[1] == "built"
    assert cached_index(store, "cosine", "flat")[1] == "loaded"
    with pytest.raises(StoreError, match="without a backbone"):
        embed_queries(store, ["q.png"])


def _truncate(p):
    p.write_bytes(p.read_bytes()[:100])


@pytest.mark.parametrize("damage", [
    lambda f: _truncate(f / "index.faiss"),
    lambda f: np.save(f / "ids.npy", np.array([object()] * 300, dtype=object), allow_pickle=True),
    lambda f: np.save(f / "ids.npy", np.arange(5)),
    lambda f: (f / "index.json").write_text("{ not json"),
    lambda f: (f / "index.json").write_text("[1, 2]"),
    lambda f: (f / "paths.json").write_text('["only one"]'),
    lambda f: (f / "ids.npy").unlink(),
    lambda f: (f / "index.json").write_text(json.dumps({**json.loads((f / "index.json").read_text()),
                                                        "format": "embedkit-knn/1"})),
], ids=["truncated-faiss", "object-ids", "short-ids", "garbage-json", "json-list", "paths-count", "no-ids",
        "old-format"])
def test_unreadable_cache_is_rebuilt_with_a_one_line_note(tmp_path, damage):
    store = _fake(tmp_path)
    index, _ = cached_index(store, "l2", "hnsw")
    Q = store.take([0, 5, 7])
    want = index.search(Q, 3)[1]
    damage(index_folder := store.path / "index" / "l2-hnsw")
    notes = []
    index, how = cached_index(store, "l2", "hnsw", note=notes.append)
    assert how == "built" and len(notes) == 1 and "\n" not in notes[0] and str(index_folder) in notes[0]
    np.testing.assert_array_equal(index.search(Q, 3)[1], want)
    assert cached_index(store, "l2", "hnsw", note=notes.append)[1] == "loaded" and len(notes) == 1


# ------------------------------------------------------------------ real store + CLI
@pytest.fixture(scope="module")
def _pristine_store(tmp_path_factory):
    """Images and a real store of them, built once; tests get copies (shape_store), never this one.

    18 synthetic images (3 classes), an exact copy of square_2 whose name holds U+2028, and a triangle whose
    name holds a control character that str.splitlines() also breaks on.
    """
    import embedkit

    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("shapes")
    for k, name in enumerate(["circle", "square", "triangle"]):
        (root / name).mkdir()
        for i in range(6):
            make_shape_image(k, rng).save(root / name / (f"{name}_{i}\x1c.png" if (k, i) == (2, 4) else f"{name}_{i}.png"))
    shutil.copy(root / "square" / "square_2.png", root / "square" / "square_2\u2028copy.png")
    store = embedkit.embed(root, tmp_path_factory.mktemp("codes") / "codes", progress=False, workers=0).store
    return root, store.path


@pytest.fixture
def shape_store(_pristine_store, tmp_path):
    """This test's own copy of the store (its own index cache)."""
    from embedkit.store.codestore import CodeStore

    root, path = _pristine_store
    return root, CodeStore.open(shutil.copytree(path, tmp_path / "codes"))


def test_index_from_store_identity(shape_store, tmp_path):
    root, store = shape_store
    index = KNNIndex.from_store(store, metric="cosine")
    assert index.identity_ == store.identity and list(index.paths_) == list(store.paths)
    assert any("\u2028" in p for p in index.paths_)
    index.save(tmp_path / "idx")
    assert KNNIndex.load(tmp_path / "idx", store=store).paths_ == list(store.paths)  # its own store: accepted
    other = dict(store.identity, layer="another_layer")
    KNNIndex(metric="cosine").fit(store.take(np.arange(len(store))), identity=other).save(tmp_path / "other")
    with pytest.raises(MismatchError, match="another_layer"):
        KNNIndex.load(tmp_path / "other", store=store)
    KNNIndex().fit(store.take(np.arange(5)), identity=store.identity).save(tmp_path / "short")
    with pytest.raises(MismatchError, match="rebuild the index"):
        KNNIndex.load(tmp_path / "short", store=store)


def test_neighbors_cli(shape_store, tmp_path):
    from embedkit.cli.main import app

    root, store = shape_store
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    query = root / "circle" / "circle_3.png"
    html, out_csv = tmp_path / "g.html", tmp_path / "n.csv"
    args = ["neighbors", str(store.path), str(query), str(root / "triangle"), str(bad), "-k", "4",
            "--html", str(html), "--csv", str(out_csv), "--quiet", "--workers", "0", "--batch-size", "3"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "skipped query" in res.output and "broken.png" in res.output
    assert "7 queries (1 skipped) x 4 neighbours" in res.output and "[built]" in res.output
    with open(out_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7 * 4
    first = rows[0]
    assert first["rank"] == "1" and first["path"] == str(query.resolve()) and float(first["distance"]) < 1e-4
    # every query image is in the store: each one comes back first with distance ~0, itself
    assert sorted(r["query"] for r in rows if r["rank"] == "1") == sorted(
        [str(query.resolve())] + [str(p.resolve()) for p in (root / "triangle").iterdir()])
    for r in rows:
        if r["rank"] == "1":
            assert float(r["distance"]) < 1e-4 and r["path"] == r["query"]
    assert html.read_text().count("<img") == 7 * 5
    again = CliRunner().invoke(app, ["neighbors", str(store.path), str(query), "--top-k", "2", "--quiet"])
    assert again.exit_code == 0 and "[loaded]" in again.output, again.output
    assert "query 1/1" in again.output and "   1  0.0000  " + str(query.resolve()) in again.output


def test_neighbors_library_function_is_what_the_cli_prints_and_writes_json_and_parquet(shape_store, tmp_path):
    import pyarrow.parquet as pq

    import embedkit
    from embedkit.cli.main import app

    root, store = shape_store
    query = root / "circle" / "circle_3.png"
    res = embedkit.neighbors(store.path, [str(query), str(tmp_path / "nope.png")], 3, exclude_self=True)
    assert res.skipped == [(str(tmp_path / "nope.png"), "does not exist")]
    (q,) = res.queries
    assert q.path == str(query.resolve()) and q.label == "circle" and store.paths[q.row] == q.path
    assert [n.rank for n in q.neighbors] == [1, 2, 3] and q.row not in [n.row for n in q.neighbors]
    assert all(n.same_label == (n.label == "circle") for n in q.neighbors)
    out = {kind: tmp_path / f"n.{kind}" for kind in ("csv", "json", "parquet")}
    cli = CliRunner().invoke(app, ["neighbors", str(store.path), str(query), "-k", "3", "--exclude-self", "--quiet",
                                   *(a for kind, p in out.items() for a in (f"--{kind}", str(p)))])
    assert cli.exit_code == 0 and f"json -> {out['json']}; parquet -> {out['parquet']}" in cli.output, cli.output
    for n in q.neighbors:
        assert f"  {n.rank:3d}  " in cli.output and n.path in cli.output
    with open(out["csv"], newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [n.path for n in q.neighbors]
    doc = json.loads(out["json"].read_text())
    assert [n["path"] for n in doc["queries"][0]["neighbors"]] == [n.path for n in q.neighbors]
    assert doc["queries"][0]["label"] == "circle" and doc["k"] == 3 and doc["exclude_self"] is True
    table = pq.read_table(out["parquet"])
    assert table.column_names == list(res.columns) and table.column("rank").to_pylist() == [1, 2, 3]
    assert table.column("distance").to_pylist() == pytest.approx([float(r["distance"]) for r in rows], rel=1e-5)
    groups = embedkit.dedupe(store, threshold=1e-4)
    assert [sorted(store.paths[r] for r in g.rows) for g in groups.groups] == [sorted(
        [str((root / "square" / "square_2.png").resolve()), str((root / "square" / "square_2\u2028copy.png").resolve())])]
    groups.write(json=tmp_path / "d.json", parquet=tmp_path / "d.parquet")
    assert len(json.loads((tmp_path / "d.json").read_text())["groups"][0]["items"]) == 2
    assert pq.read_table(tmp_path / "d.parquet").column("group").to_pylist() == [1, 1]


def test_neighbors_cli_still_takes_codes_with_a_deprecation_note(shape_store):
    from embedkit.cli.main import app

    root, store = shape_store
    res = CliRunner().invoke(app, ["neighbors", str(root / "circle" / "circle_0.png"), "--codes", str(store.path),
                                   "-k", "2", "--quiet"])
    assert res.exit_code == 0 and "note: --codes is deprecated" in res.output and "1 query (0 skipped)" in res.output


def test_neighbors_cli_dedupe_from_built_and_loaded_cache_names_the_right_files(shape_store, tmp_path):
    from embedkit.cli.main import app

    root, store = shape_store
    want = sorted([str((root / "square" / "square_2.png").resolve()),
                   str((root / "square" / "square_2\u2028copy.png").resolve())])
    for run, how in enumerate(["[built]", "[loaded]"]):
        out = tmp_path / f"d{run}.csv"
        res = CliRunner().invoke(app, ["neighbors", str(store.path), "--dedupe", "--threshold", "1e-4",
                                       "--csv", str(out), "--quiet"])
        assert res.exit_code == 0 and how in res.output, res.output
        assert "1 near-duplicate groups (2 images)" in res.output
        with open(out, newline="", encoding="utf-8") as f:
            assert sorted(r["path"] for r in csv.DictReader(f)) == want


def test_neighbors_cli_errors(shape_store, tmp_path):
    from embedkit.cli.main import app

    root, store = shape_store
    for argv, match in [
        ([str(store.path)], "at least one query"),
        ([], "give the code store folder first"),
        ([str(store.path), str(tmp_path / "nope.png")], "none of the 1 queries"),
        ([str(store.path), str(root), "-k", "100"], "-k 100 is larger than the 19"),
        ([str(store.path), "--dedupe", "--metric", "l2"], "needs --threshold"),
        ([str(store.path), str(root), "--dedupe"], "takes no QUERIES"),
        ([str(store.path), str(root), "--threshold", "0.1"], "only applies with --dedupe"),
        ([str(root), str(root / "circle" / "circle_0.png")], "is not a code store"),
    ]:
        res = CliRunner().invoke(app, ["neighbors", *argv])
        assert res.exit_code == 2 and "error:" in res.output and match in res.output, (argv, res.output)
        assert "Traceback" not in res.output


def test_neighbors_cli_options_all_have_help():
    from embedkit.cli.neighbors import command

    opts = [p for p in command.params if isinstance(p, click.Option)]
    assert {o.name for o in opts} >= {"k", "workers", "batch_size", "device", "quiet", "verbose"}
    assert [o.name for o in opts if not o.help] == []
    assert "--top-k" in next(o for o in opts if o.name == "k").opts


def test_neighbors_cli_rebuilds_stale_cache(shape_store):
    from embedkit.cli.main import app

    root, store = shape_store
    folder = store.path / "index" / "l2-flat"
    # a cached index of other codes (another layer, fewer rows) must not be used
    KNNIndex(kind="flat").fit(store.take(np.arange(5)), identity=dict(store.identity, layer="x")).save(folder)
    args = ["neighbors", str(store.path), str(root / "circle" / "circle_0.png"), "--metric", "l2",
            "--kind", "flat", "-k", "3", "--quiet"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "[built]" in res.output and "(19 x " in res.output, res.output
    assert "note: the cached index" in res.output
    assert KNNIndex.load(folder, store=store).n_ == len(store)
    assert "[loaded]" in CliRunner().invoke(app, args).output


def test_neighbors_cli_rebuilds_a_truncated_cache_without_traceback(shape_store):
    from embedkit.cli.main import app

    root, store = shape_store
    args = ["neighbors", str(store.path), str(root / "circle" / "circle_0.png"), "--kind", "hnsw",
            "-k", "3", "--quiet"]
    assert "[built]" in CliRunner().invoke(app, args).output
    faiss_file = store.path / "index" / "cosine-hnsw" / "index.faiss"
    faiss_file.write_bytes(faiss_file.read_bytes()[:64])
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "[built]" in res.output and "Traceback" not in res.output, res.output
    assert sum(line.startswith("note: ") for line in res.output.splitlines()) == 1
