"""`embedkit serve`: every route through FastAPI's test client, bad input included, on real embedded images."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import served_shapes
from PIL import Image

pytest.importorskip("fastapi", reason="embedkit serve needs the serve extra (pip install 'embedkit[serve]')")
pytest.importorskip("httpx", reason="FastAPI's test client needs httpx")

from fastapi.testclient import TestClient

from embedkit.serve import service as service_mod
from embedkit.serve.app import create_app
from embedkit.serve.service import SearchService


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Synthetic shapes (3 classes x 6) plus one exact copy, embedded with the default backbone; an SVM on them."""
    images, store, model = served_shapes(tmp_path_factory.mktemp("serve"))
    svc = SearchService.open(store, model=model)
    with TestClient(create_app(svc)) as client:
        yield client, svc, images
    svc.close()


def png_bytes(path) -> bytes:
    return Path(path).read_bytes()


def test_page_and_info(served):
    client = served[0]
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN: the page needs only this server
    info = client.get("/api/info").json()
    assert info["count"] == 19 and info["can_embed"] and info["backbone"] == "efficientnet_lite0"
    assert sorted(info["model"]) == ["circle", "square", "triangle"] and info["map"] == "pca"
    paths = client.get("/api/openapi.json").json()["paths"]
    for route in ("/api/info", "/api/points", "/api/items", "/api/items/{row}", "/api/thumbnails/{row}",
                  "/api/search/row/{row}", "/api/search/path", "/api/search/image", "/api/predict", "/api/duplicates"):
        assert route in paths


def test_points_and_items(served):
    client, svc, _ = served
    pts = client.get("/api/points").json()
    assert sorted(pts["rows"]) == list(range(19)) and len(pts["xy"]) == 19 and len(pts["paths"]) == 19
    assert np.isfinite(np.asarray(pts["xy"])).all()
    it = client.get("/api/items/3").json()
    assert it["path"] == svc.paths[3] and it["label"] == svc.labels[3] and len(it["sha1"]) == 40 and it["width"] == 64
    assert client.get("/api/items", params={"path": svc.paths[5]}).json()["row"] == 5
    for url, status in (("/api/items/19", 404), ("/api/items/-1", 404), ("/api/items/abc", 422),
                        ("/api/items?path=/etc/passwd", 404), ("/api/items", 422)):
        r = client.get(url)
        assert r.status_code == status and set(r.json()) == {"error"}, (url, r.text)


def test_thumbnails_only_of_unchanged_recorded_files(served, tmp_path):
    client, svc, images = served
    r = client.get("/api/thumbnails/0")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content[:4] == b"\x89PNG"
    assert max(Image.open(io.BytesIO(r.content)).size) <= 128
    # a stored file replaced by other bytes is never served: its sha1 no longer matches the record
    row = svc.row_of_path(str(images / "square" / "square_3.png"))
    keep = png_bytes(svc.paths[row])
    try:
        Image.new("RGB", (64, 64), (0, 0, 0)).save(svc.paths[row])
        r = client.get(f"/api/thumbnails/{row}")
        assert r.status_code == 404 and "sha1" in r.json()["error"]
    finally:
        Path(svc.paths[row]).write_bytes(keep)
    assert client.get("/api/thumbnails/999").status_code == 404
    assert client.get("/api/thumbnails/..%2F..%2Fetc%2Fpasswd").status_code in (404, 422)


def test_search_by_row_and_path(served):
    client, svc, _ = served
    r = client.get("/api/search/row/0", params={"k": 5}).json()
    res = r["results"]
    assert r["query"]["row"] == 0 and len(res) == 5 and all(h["row"] != 0 for h in res)
    d = [h["distance"] for h in res]
    assert d == sorted(d)
    # circle_0 and its exact copy: the copy is the nearest neighbour, at distance ~0
    copy = svc.row_of_path(svc.paths[0].replace("circle_0.png", "circle_copy.png"))
    assert res[0]["row"] == copy and res[0]["distance"] < 1e-5 and res[0]["label"] == "circle"
    withself = client.get("/api/search/row/0", params={"k": 2, "exclude_self": "false"}).json()["results"]
    assert {h["row"] for h in withself} == {0, copy}
    by_path = client.get("/api/search/path", params={"path": svc.paths[0], "k": 5}).json()
    assert [h["row"] for h in by_path["results"]] == [h["row"] for h in res]
    for url, status in (("/api/search/row/0?k=0", 400), ("/api/search/row/0?k=500", 400),
                        ("/api/search/row/0?k=x", 422), ("/api/search/row/77", 404),
                        ("/api/search/path?path=nowhere.png", 404)):
        r = client.get(url)
        assert r.status_code == status and r.json()["error"], (url, r.text)


def test_search_and_predict_by_uploaded_image(served):
    client, _, images = served
    q = png_bytes(images / "triangle" / "triangle_2.png")
    r = client.post("/api/search/image", params={"k": 3}, content=q, headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["results"][0]["path"].endswith("triangle_2.png") and body["results"][0]["distance"] < 1e-4
    assert body["predictions"][0]["label"] == "triangle" and len(body["predictions"]) == 3
    p = client.post("/api/predict", params={"top": 2}, content=q).json()["predictions"]
    assert p[0]["label"] == "triangle" and len(p) == 2 and p[0]["score"] >= p[1]["score"]
    assert len(client.post("/api/predict", params={"top": 9}, content=q).json()["predictions"]) == 3  # all classes
    assert client.post("/api/predict", params={"top": 0}, content=q).status_code == 400


@pytest.mark.parametrize("data, status, words", [
    (b"", 400, "empty"),
    (b"this is not an image", 400, "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, 400, "cannot be used as an image"),
])
def test_bad_uploads_get_one_clear_4xx(served, data, status, words):
    client, _, _ = served
    for url in ("/api/search/image", "/api/predict"):
        r = client.post(url, content=data)
        assert r.status_code == status and words in r.json()["error"], r.text


def test_upload_limits(served, monkeypatch):
    client, _, images = served
    q = png_bytes(images / "circle" / "circle_1.png")
    monkeypatch.setattr(service_mod, "MAX_UPLOAD_BYTES", len(q) - 1)
    r = client.post("/api/search/image", content=q)
    assert r.status_code == 413 and "larger than" in r.json()["error"]
    monkeypatch.undo()
    # the reader's pixel limit (PIL's decompression-bomb guard) applies to uploads as to files
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    r = client.post("/api/search/image", content=q)
    assert r.status_code == 400 and "pixels" in r.json()["error"]


def test_duplicates(served):
    client = served[0]
    r = client.get("/api/duplicates", params={"threshold": 0.001}).json()
    groups = [{it["path"].rsplit("/", 1)[-1] for it in g["items"]} for g in r["groups"]]
    assert {"circle_0.png", "circle_copy.png"} in groups and r["groups_total"] == len(groups)
    assert client.get("/api/duplicates", params={"threshold": 2.0, "limit": 1}).json()["groups_total"] >= 1
    for q, status in (({"threshold": -1}, 400), ({"threshold": "nan"}, 400), ({"threshold": "x"}, 422),
                      ({"limit": 0}, 400)):
        assert client.get("/api/duplicates", params=q).status_code == status


def test_concurrent_requests(served):
    """Many threads searching at once (batched on one worker) all get their own, correct answers."""
    client, svc, _ = served
    want = {row: [h["row"] for h in svc.search_row(row, 4)] for row in range(19)}
    errors, wrong = [], []

    def worker(seed):
        rng = np.random.default_rng(seed)
        for _ in range(15):
            row = int(rng.integers(19))
            r = client.get(f"/api/search/row/{row}", params={"k": 4})
            if r.status_code != 200:
                errors.append(r.text)
            elif [h["row"] for h in r.json()["results"]] != want[row]:
                wrong.append(row)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not wrong


def test_imported_codes_without_files(tmp_path):
    """Imported codes: search by row works; uploads say why not; paths outside any store are never read."""
    from embedkit.store.codestore import CodeStore

    X = np.random.default_rng(0).normal(size=(50, 16)).astype(np.float32)
    store = CodeStore.from_arrays(tmp_path / "imp", X, ["/etc/passwd"] + [f"x/{i}.png" for i in range(49)])
    svc = SearchService.open(store, load_backbone=False)
    try:
        client = TestClient(create_app(svc))
        assert client.get("/api/info").json()["can_embed"] is False
        assert len(client.get("/api/search/row/1?k=3").json()["results"]) == 3
        r = client.get("/api/thumbnails/0")
        assert r.status_code == 404 and "no sha1" in r.json()["error"]
        r = client.post("/api/search/image", content=b"\x89PNG....")
        assert r.status_code == 400 and "without a backbone" in r.json()["error"]
        r = client.post("/api/predict", content=b"\x89PNG....")
        assert r.status_code == 400 and "--model" in r.json()["error"]
    finally:
        svc.close()


def test_cli_without_the_serve_extra(tmp_path, monkeypatch):
    import sys

    from embedkit.cli.main import app

    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi -> ImportError
    r = CliRunner().invoke(app, ["serve", str(tmp_path)])
    assert r.exit_code == 2 and "pip install 'embedkit[serve]'" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["serve", "--help"])
    assert r.exit_code == 0 and "127.0.0.1" in r.output
