"""Reading awkward images, and the code store: rows in step with paths, resume, append, mismatch."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

import embedkit
from embedkit import Backbone, CodeStore, ConfigError, DataError, MismatchError, StoreError
from embedkit.io.discover import discover
from embedkit.io.decode import load_image


def _write_zoo(root):
    """Every awkward kind of file: good ones that must be converted, bad ones that must be skipped."""
    root.mkdir(parents=True, exist_ok=True)
    rgb = Image.new("RGB", (40, 30), (200, 30, 30))
    good = {
        "rgb.png": rgb,
        "gray.png": rgb.convert("L"),
        "palette.gif": rgb.convert("P"),
        "cmyk.jpg": rgb.convert("CMYK"),
        "photo.jpg": rgb,
        "pic.webp": rgb,
        "pic.bmp": rgb,
        "pic.tiff": rgb,
    }
    for name, img in good.items():
        img.save(root / name)
    Image.fromarray((np.arange(40 * 30).reshape(30, 40) * 50).astype(np.uint16)).save(root / "deep16.png")
    rgba = Image.new("RGBA", (20, 20), (0, 0, 255, 0))
    rgba.save(root / "transparent.png")
    pal = Image.new("P", (20, 20), 0)
    pal.putpalette([10, 200, 10] * 256)
    pal.info["transparency"] = 0
    pal.save(root / "palette_transparent.png", transparency=0)
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:])
    n_good = len(good) + 4
    # the bad ones
    (root / "empty.png").write_bytes(b"")
    (root / "notes.jpg").write_text("this is not an image")
    buf = io.BytesIO()
    rgb.resize((400, 300)).save(buf, "PNG")
    (root / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    buf = io.BytesIO()
    Image.effect_noise((400, 300), 60).convert("RGB").save(buf, "JPEG")
    (root / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    return n_good, 5


def test_every_mode_becomes_rgb(tmp_path):
    _write_zoo(tmp_path)
    for name in ("gray.png", "palette.gif", "cmyk.jpg", "deep16.png", "pic.webp", "pic.tiff", "anim.gif"):
        img, info = load_image(str(tmp_path / name), want_sha1=True)
        assert img.mode == "RGB" and len(info["sha1"]) == 40, name
    img, _ = load_image(str(tmp_path / "transparent.png"))
    assert img.getpixel((5, 5)) == (255, 255, 255)  # transparency composited on white
    img, _ = load_image(str(tmp_path / "palette_transparent.png"))
    assert img.getpixel((5, 5)) == (255, 255, 255)
    img, _ = load_image(str(tmp_path / "anim.gif"))
    assert img.getpixel((5, 5)) == (255, 0, 0)  # first frame
    img, _ = load_image(str(tmp_path / "deep16.png"))
    assert img.getpixel((0, 0)) != img.getpixel((39, 29))  # 16-bit rescaled, not clipped flat
    for name, reason in (("empty.png", "empty"), ("notes.jpg", "not an image"), ("truncated.png", "truncated"),
                         ("truncated.jpg", "truncated"), ("corrupt.png", "corrupt|not an image")):
        with pytest.raises(ValueError, match=reason):
            load_image(str(tmp_path / name))


@pytest.mark.slow
def test_bad_images_are_skipped_listed_and_rows_stay_in_step(tmp_path, lite0):
    n_good, n_bad = _write_zoo(tmp_path / "zoo")
    res = embedkit.embed(tmp_path / "zoo", tmp_path / "out", lite0, batch_size=4, workers=2, progress=False)
    store = res.store
    assert (res.embedded, res.skipped) == (n_good, n_bad)
    assert len(store) == n_good == store.codes.shape[0] and store.meta["skipped"] == n_bad
    assert {r["path"].rsplit("/", 1)[-1] for r in store.skipped} == {
        "empty.png", "notes.jpg", "truncated.png", "truncated.jpg", "corrupt.png"}
    assert all(r["reason"] for r in store.skipped)
    # every row is the code of the path on that row
    for i in (0, 5, n_good - 1):
        img, _ = load_image(store.paths[i])
        assert np.allclose(store.codes[i], lite0.embed_images([img])[0], atol=1e-4)


def test_sources_folder_csv_and_list(tmp_path, shapes_dir):
    items = discover(shapes_dir)
    assert len(items) == 24 and {it.label for it in items} == {"circle", "square", "triangle"}
    man = tmp_path / "m.csv"
    man.write_text("path,label\n" + "\n".join(f"{it.path},x{i % 2}" for i, it in enumerate(items[:5])))
    assert [it.label for it in discover(man)] == ["x0", "x1", "x0", "x1", "x0"]
    lst = tmp_path / "l.txt"
    lst.write_text("\n".join(it.path for it in items[:3]))
    assert [it.path for it in discover(lst)] == [it.path for it in items[:3]]
    with pytest.raises(ConfigError, match="does not exist"):
        discover(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        discover(tmp_path / "empty")


def test_meta_records_identity(tmp_path, shapes_dir, lite0):
    store = embedkit.embed(shapes_dir, tmp_path / "s", lite0, progress=False).store
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert meta["backbone"] == "efficientnet_lite0" and meta["layer"] == "pool" and meta["dim"] == 1280
    assert meta["count"] == 24 and meta["dtype"] == "float32" and meta["embedkit_version"] == embedkit.__version__
    assert meta["format"] == "embedkit-store/3"
    assert meta["identity"]["weights"]["sha256"] and meta["identity"]["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    assert sum(s["rows"] for s in meta["shards"]) == 24  # the shard list and the count: one file, one commit
    first = np.load(tmp_path / "s" / "shards" / "00000.npy", mmap_mode="r")
    assert np.array_equal(first, CodeStore.open(tmp_path / "s").codes[:len(first)])
    import pyarrow.parquet as pq

    rows = pq.read_table(tmp_path / "s" / "items" / "00000.parquet").to_pylist()
    assert rows[0]["label"] == "circle" and rows[0]["width"] == 64 and len(rows[0]["sha1"]) == 40
    assert not (tmp_path / "s" / ".work").exists()
    assert store.labels.tolist()[:len(rows)] == [r["label"] for r in rows]


class Killed(Exception):
    pass


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_or_duplicating(tmp_path, shapes_dir, lite0):
    full = embedkit.embed(shapes_dir, tmp_path / "full", lite0, batch_size=4, progress=False).store
    commits = []

    def kill_after_two(shard, rows, skipped):
        commits.append(rows)
        if len(commits) == 2:
            raise Killed()

    with pytest.raises(Killed):
        embedkit.embed(shapes_dir, tmp_path / "s", lite0, batch_size=4, shard_rows=8, progress=False,
                       on_shard=kill_after_two)
    assert not (tmp_path / "s" / "meta.json").exists()
    # a crash between a shard's files and its commit marker: the half shard must not survive
    shards = tmp_path / "s" / "shards"
    np.save(shards / "00002.npy", np.zeros((3, 1280), np.float32))
    with pytest.raises(StoreError, match="--resume"):
        embedkit.embed(shapes_dir, tmp_path / "s", lite0, progress=False)
    with pytest.raises(StoreError, match="--resume"):
        CodeStore.open(tmp_path / "s")
    res = embedkit.embed(shapes_dir, tmp_path / "s", lite0, batch_size=4, resume=True, progress=False)
    assert res.resumed and res.embedded == 24 - sum(commits)  # only what had not been committed
    store = res.store
    assert list(store.paths) == list(full.paths) and len(set(store.paths)) == 24
    assert np.allclose(np.asarray(store.codes), np.asarray(full.codes), atol=1e-5)
    assert [s["rows"] for s in store.shards] == [8, 8, 8]


@pytest.mark.slow
def test_append_embeds_only_new_images_and_mismatch_is_refused(tmp_path, shapes_dir, lite0):
    import shutil

    grow = tmp_path / "grow"
    for cls in ("circle", "square"):
        (grow / cls).mkdir(parents=True)
        for p in sorted((shapes_dir / cls).iterdir())[:4]:
            shutil.copy(p, grow / cls / p.name)
    embedkit.embed(grow, tmp_path / "s", lite0, progress=False)
    with pytest.raises(StoreError, match="--append"):
        embedkit.embed(grow, tmp_path / "s", lite0, progress=False)
    shutil.rmtree(grow)
    shutil.copytree(shapes_dir, grow)  # the folder grows: 8 images already embedded, 16 new
    res = embedkit.embed(grow, tmp_path / "s", lite0, append=True, progress=False)
    assert res.embedded == 16 and res.kept == 8 and len(res.store) == 24
    assert len(set(res.store.paths)) == 24
    ref = embedkit.embed(grow, tmp_path / "ref", lite0, progress=False).store
    order = {p: i for i, p in enumerate(ref.paths)}
    assert np.allclose(res.store.codes, ref.codes[[order[p] for p in res.store.paths]], atol=1e-5)
    again = embedkit.embed(grow, tmp_path / "s", lite0, append=True, progress=False)
    assert again.embedded == 0 and len(again.store) == 24
    shapes_dir = grow
    other = Backbone("efficientnet_lite0", layer="head", device="cpu")
    with pytest.raises(MismatchError, match="layer"):
        embedkit.embed(shapes_dir, tmp_path / "s", other, append=True, progress=False)
    with pytest.raises(MismatchError, match="backbone"):
        res.store.check_compatible(Backbone("timm:resnet18", weights="none", device="cpu").identity())


@pytest.mark.slow
def test_l2_and_pca_whitening_are_store_options(tmp_path, shapes_dir, lite0):
    s = embedkit.embed(shapes_dir, tmp_path / "l2", lite0, l2_normalize=True, dtype="float16", progress=False).store
    assert s.codes.dtype == np.float16 and np.allclose(np.linalg.norm(s.codes.astype(np.float32), axis=1), 1, atol=1e-2)
    w = embedkit.embed(shapes_dir, tmp_path / "w", lite0, pca_whiten=8, progress=False).store
    assert w.codes.shape == (24, 8) and w.meta["code_dim"] == 1280
    cov = np.cov(np.asarray(w.codes, np.float64).T)
    assert np.allclose(cov, np.eye(8), atol=1e-3)
    raw = np.load(tmp_path / "w" / "raw" / "00000.npy")
    assert np.allclose(w.transform(raw[:3]), w.codes[:3], atol=1e-4)  # queries get the same transform
    with pytest.raises(ConfigError, match="dtype"):
        embedkit.embed(shapes_dir, tmp_path / "x", lite0, dtype="int8", progress=False)


def test_a_folder_of_only_bad_files_is_a_clear_error(tmp_path, lite0):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"")
    (tmp_path / "bad" / "b.jpg").write_text("nope")
    with pytest.raises(DataError, match="skipped.csv"):
        embedkit.embed(tmp_path / "bad", tmp_path / "out", lite0, progress=False)
    assert (tmp_path / "out" / "skipped.csv").exists()


@pytest.mark.slow
def test_a_kill_while_installing_the_final_files_is_completed_by_resume(tmp_path, shapes_dir, lite0, monkeypatch):
    import embedkit.store.writer as writer

    real = writer.write_json_atomic

    def dies_at_meta(path, obj):
        if str(path).endswith("meta.json"):
            raise Killed()
        return real(path, obj)

    monkeypatch.setattr(writer, "write_json_atomic", dies_at_meta)
    with pytest.raises(Killed):
        embedkit.embed(shapes_dir, tmp_path / "s", lite0, pca_whiten=4, progress=False)
    monkeypatch.setattr(writer, "write_json_atomic", real)
    assert (tmp_path / "s" / "pca.npz").exists() and not (tmp_path / "s" / "meta.json").exists()
    with pytest.raises(StoreError, match="--resume"):
        CodeStore.open(tmp_path / "s")
    res = embedkit.embed(shapes_dir, tmp_path / "s", lite0, resume=True, progress=False)
    assert res.embedded == 0 and len(res.store) == 24 and not (tmp_path / "s" / ".work").exists()
    assert res.store.labels.tolist()[0] == "circle" and res.store.dim == 4


@pytest.mark.slow
def test_an_append_killed_at_its_commit_keeps_the_old_store_and_resume_finishes_it(tmp_path, shapes_dir, lite0,
                                                                                    monkeypatch):
    import shutil

    import embedkit.store.writer as writer

    grow = tmp_path / "grow"
    (grow / "circle").mkdir(parents=True)
    for p in sorted((shapes_dir / "circle").iterdir())[:4]:
        shutil.copy(p, grow / "circle" / p.name)
    before = embedkit.embed(grow, tmp_path / "s", lite0, progress=False).store
    shutil.rmtree(grow)
    shutil.copytree(shapes_dir, grow)
    real = writer.write_json_atomic

    def dies_at_meta(path, obj):  # every new shard is written: the commit is all that is left
        if str(path).endswith("meta.json"):
            raise Killed()
        return real(path, obj)

    monkeypatch.setattr(writer, "write_json_atomic", dies_at_meta)
    with pytest.raises(Killed):
        embedkit.embed(grow, tmp_path / "s", lite0, append=True, shard_rows=8, progress=False)
    monkeypatch.setattr(writer, "write_json_atomic", real)
    old = CodeStore.open(tmp_path / "s")  # the store before the append, whole
    assert old.paths.tolist() == before.paths.tolist() and np.array_equal(np.asarray(old.codes), np.asarray(before.codes))
    res = embedkit.embed(grow, tmp_path / "s", lite0, resume=True, progress=False)
    assert res.embedded == 0 and len(res.store) == 24 and len(set(res.store.paths)) == 24
    assert res.store.paths.tolist()[:4] == before.paths.tolist()


@pytest.mark.slow
def test_device_decoding_of_jpegs_matches_pil_and_still_skips_bad_files(tmp_path, lite0):
    rng = np.random.default_rng(1)
    root = tmp_path / "jpgs"
    root.mkdir()
    for i in range(6):
        arr = np.clip(rng.normal(128, 60, (90 + 10 * i, 140, 3)), 0, 255).astype(np.uint8)
        arr[20:60, 30:100] = (i * 40, 200 - i * 30, 90)
        Image.fromarray(arr).resize((300, 200 + 20 * i)).save(root / f"photo{i}.jpg", quality=92)
    Image.new("L", (120, 80), 90).save(root / "grey.jpg")
    Image.new("RGB", (50, 50), (10, 200, 10)).convert("CMYK").save(root / "cmyk.jpg")  # falls back to PIL
    Image.new("RGB", (40, 40), (200, 10, 10)).save(root / "flat.png")
    buf = io.BytesIO()
    Image.effect_noise((400, 300), 60).convert("RGB").save(buf, "JPEG")
    (root / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "bad_middle.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(300) + b"\xff\xd9")
    cpu = embedkit.embed(root, tmp_path / "cpu", lite0, batch_size=4, progress=False).store
    dev = embedkit.embed(root, tmp_path / "dev", lite0, batch_size=4, progress=False, decode="device").store
    assert list(dev.paths) == list(cpu.paths) and len(cpu) == 9
    assert {r["path"] for r in dev.skipped} == {r["path"] for r in cpu.skipped} == {
        str(root / "truncated.jpg"), str(root / "bad_middle.jpg")}
    assert dev.column("sha1").tolist() == cpu.column("sha1").tolist()
    a, b = np.asarray(cpu.codes), np.asarray(dev.codes)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.98, cos  # torch vs PIL resampling differ a little, the images are the same
    with pytest.raises(ConfigError, match="decode"):
        embedkit.embed(root, tmp_path / "x", lite0, decode="gpu", progress=False)
