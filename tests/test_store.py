"""The sharded code store (format 2): reading across shards, bring-your-own codes, old stores, hostile names."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import make_shape_image

import embedkit
from embedkit import CodeStore, DataError, StoreError
from embedkit.cli.main import app


@pytest.fixture
def codes():
    rng = np.random.default_rng(0)
    return rng.normal(size=(1000, 16)).astype(np.float32)


def test_one_logical_array_over_many_shards(tmp_path, codes):
    paths = [f"img{i}.png" for i in range(1000)]
    s = CodeStore.from_arrays(tmp_path / "s", codes, paths, labels=[str(i % 3) for i in range(1000)],
                              columns={"design": [f"d{i % 7}" for i in range(1000)]}, shard_rows=300)
    assert [sh["rows"] for sh in s.shards] == [300, 300, 300, 100] and len(s) == 1000 and s.dim == 16
    assert np.array_equal(np.asarray(s.codes), codes)
    assert np.array_equal(s.codes[250:701], codes[250:701])  # a slice across three shards
    assert np.array_equal(s.codes[-1], codes[-1]) and np.array_equal(s.codes[::97], codes[::97])
    idx = np.array([999, 0, 301, 301, 650, 299])  # any order, repeats
    assert np.array_equal(s.take(idx), codes[idx])
    chunks = list(s.iter_chunks(rows=128))
    assert [c[0] for c in chunks] == list(range(0, 1000, 128))
    assert np.array_equal(np.concatenate([c[1] for c in chunks]), codes)
    assert s.paths.tolist() == paths and s.labels[:4].tolist() == ["0", "1", "2", "0"]
    assert s.column("design")[8] == "d1" and "design" in s.columns
    assert s.identity is None
    with pytest.raises(StoreError, match="without a backbone identity"):
        s.backbone()


def test_from_arrays_refuses_what_cannot_be_a_store(tmp_path, codes):
    paths = [f"p{i}" for i in range(1000)]
    with pytest.raises(DataError, match="999 paths for 1000"):
        CodeStore.from_arrays(tmp_path / "a", codes, paths[:-1])
    bad = codes.copy()
    bad[[3, 500]] = np.nan
    with pytest.raises(DataError, match=r"NaN or infinity in 2 of 1000 rows \(first: \[3, 500\]\)"):
        CodeStore.from_arrays(tmp_path / "b", bad, paths)
    with pytest.raises(DataError, match="2-D"):
        CodeStore.from_arrays(tmp_path / "c", codes[0], paths[:1])
    with pytest.raises(DataError, match="labels"):
        CodeStore.from_arrays(tmp_path / "d", codes, paths, labels=["x"] * 10)
    CodeStore.from_arrays(tmp_path / "e", codes, paths)
    with pytest.raises(StoreError, match="--overwrite"):
        CodeStore.from_arrays(tmp_path / "e", codes, paths)
    assert len(CodeStore.from_arrays(tmp_path / "e", codes[:10], paths[:10], overwrite=True)) == 10
    for name in "abcd":
        assert not (tmp_path / name / "meta.json").exists()


def test_a_shard_without_its_commit_marker_does_not_exist(tmp_path, codes, monkeypatch):
    import embedkit.store.writer as writer

    real = writer.write_json_atomic

    def dies_at_marker(path, obj):
        if str(path).endswith("00002.json"):
            raise KeyboardInterrupt  # killed between the shard's files and its marker
        return real(path, obj)

    monkeypatch.setattr(writer, "write_json_atomic", dies_at_marker)
    with pytest.raises(KeyboardInterrupt):
        CodeStore.from_arrays(tmp_path / "s", codes, [f"p{i}" for i in range(1000)], shard_rows=300)
    monkeypatch.setattr(writer, "write_json_atomic", real)
    assert (tmp_path / "s" / "shards" / "00002.npy").exists()
    assert writer.shard_marker(tmp_path / "s", 2) is None and writer.shard_marker(tmp_path / "s", 1)["rows"] == 300
    with pytest.raises(StoreError, match="not committed"):
        writer.finalize(tmp_path / "s", [0, 1, 2], identity=None, dim=16, dtype="float32",
                        postprocess=writer.PostProcess())
    with pytest.raises(StoreError, match="not a code store"):
        CodeStore.open(tmp_path / "s")


def _v1_store(folder, codes, paths, labels):
    """A store as embedkit 0.1 wrote it: codes.npy, items.csv, skipped.csv, meta.json without a format."""
    import csv

    folder.mkdir()
    np.save(folder / "codes.npy", codes)
    with open(folder / "items.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "width", "height", "bytes", "sha1"])
        w.writerows([[p, lab, 64, 64, 100, "ab" * 20] for p, lab in zip(paths, labels)])
    with open(folder / "skipped.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "reason"], ["/x/broken.png", "empty file"]])
    ident = {"backbone": "efficientnet_lite0", "layer": "pool", "node": "global_pool.flatten", "spatial": "avg",
             "weights": {"kind": "package", "identity": "package:x", "sha256": "00"}, "preprocessing": {}}
    (folder / "meta.json").write_text(json.dumps({
        "embedkit_version": "0.1.0", "identity": ident, "backbone": "efficientnet_lite0", "layer": "pool",
        "dim": codes.shape[1], "code_dim": codes.shape[1], "dtype": "float32", "count": len(codes), "skipped": 1,
        "l2_normalize": False, "pca_whiten": None}))


def test_old_stores_open_read_only_and_upgrade_in_place(tmp_path, codes):
    paths = [f"/data/img{i}.png" for i in range(1000)]
    labels = [f"c{i % 4}" for i in range(1000)]
    _v1_store(tmp_path / "old", codes, paths, labels)
    old = CodeStore.open(tmp_path / "old")
    assert old.version == 1 and np.array_equal(np.asarray(old.codes), codes) and old.paths.tolist() == paths
    assert old.skipped == [{"path": "/x/broken.png", "reason": "empty file"}]
    with pytest.raises(StoreError, match="store upgrade"):
        embedkit.embed([paths[0]], tmp_path / "old", append=True, progress=False)
    r = CliRunner().invoke(app, ["store", "upgrade", str(tmp_path / "old"), "--shard-rows", "256"])
    assert r.exit_code == 0, r.output
    new = CodeStore.open(tmp_path / "old")
    assert new.version == 3 and len(new.shards) == 4 and np.array_equal(np.asarray(new.codes), codes)
    assert new.paths.tolist() == paths and new.labels.tolist() == labels and new.identity == old.identity
    assert new.column("width")[0] == 64 and new.skipped == [{"path": "/x/broken.png", "reason": "empty file"}]
    assert not (tmp_path / "old" / "codes.npy").exists() and not (tmp_path / "old" / "items.csv").exists()


def test_store_import_and_info_commands(tmp_path, codes):
    import pyarrow as pa
    import pyarrow.parquet as pq

    np.save(tmp_path / "codes.npy", codes)
    pq.write_table(pa.table({"path": [f"a/{i}.png" for i in range(1000)], "label": ["x", "y"] * 500,
                             "score": np.arange(1000.0)}), tmp_path / "items.parquet")
    r = CliRunner().invoke(app, ["store", "import", str(tmp_path / "codes.npy"), "--items",
                                 str(tmp_path / "items.parquet"), "-o", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    assert "imported 1000 x 16" in r.output and "no backbone identity" in r.output
    s = CodeStore.open(tmp_path / "s")
    assert s.labels[1] == "y" and s.column("score")[7] == 7.0
    r = CliRunner().invoke(app, ["store", "info", str(tmp_path / "s"), "--json"])
    info = json.loads(r.output)
    assert info["count"] == 1000 and info["dim"] == 16 and info["backbone"] is None and info["size_bytes"] > 64000
    r = CliRunner().invoke(app, ["store", "import", str(tmp_path / "items.parquet"), "--items",
                                 str(tmp_path / "items.parquet"), "-o", str(tmp_path / "t")])
    assert r.exit_code == 2 and r.output.startswith("error: ") and r.output.count("\n") == 1, r.output


def test_hostile_names_and_link_loops_keep_every_file_once(tmp_path, lite0):
    rng = np.random.default_rng(3)
    root = tmp_path / "imgs"
    (root / "cls").mkdir(parents=True)
    names = ["new\nline.png", "carriage\rreturn.png", "tab\tand =formula.png", "z\rprivate.png", "plain.png",
             "line\u2028sep.png"]
    for k, name in enumerate(names):
        make_shape_image(k, rng).save(root / "cls" / name, format="PNG")
    make_shape_image(0, rng).save(tmp_path / "private.png")  # must never be read: it is outside the source
    os.symlink(root, root / "cls" / "loop")  # a directory link to a parent
    os.symlink(root / "cls" / "a_link.png", root / "cls" / "b_link.png")  # a loop between two links
    os.symlink(root / "cls" / "b_link.png", root / "cls" / "a_link.png")
    (root / ".ipynb_checkpoints").mkdir()
    make_shape_image(1, rng).save(root / ".ipynb_checkpoints" / "copy.png")
    cwd = os.getcwd()
    os.chdir(tmp_path)  # where a crafted "z\rprivate.png" would have been read from
    try:
        res = embedkit.embed(root, tmp_path / "s", lite0, progress=False, workers=0)
    finally:
        os.chdir(cwd)
    s = res.store
    got = sorted(os.path.basename(p) for p in s.paths)
    assert got == sorted(names), got  # each real file once, names byte for byte, nothing from elsewhere
    assert set(s.labels.tolist()) == {"cls"}
    assert {os.path.basename(r["path"]) for r in s.skipped} == {"a_link.png", "b_link.png"}
    again = CodeStore.open(tmp_path / "s")
    assert again.paths.tolist() == s.paths.tolist()
    for i, p in enumerate(s.paths):  # rows in step with paths: the code of each row is that file's
        ref = lite0.embed_images([__import__("PIL.Image", fromlist=["open"]).open(p).convert("RGB")])[0]
        assert np.allclose(s.codes[i], ref, atol=1e-4)


def test_files_left_out_are_listed_not_ignored(tmp_path, lite0):
    rng = np.random.default_rng(4)
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    make_shape_image(0, rng).save(root / "a" / "one.png")
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "a" / ".DS_Store").write_bytes(b"\0\0")  # hidden: neither a class nor a skipped file
    res = embedkit.embed(root, tmp_path / "s", lite0, progress=False, workers=0)
    assert len(res.store) == 1 and res.skipped == 1
    assert res.store.skipped == [{"path": str(root / "a" / "notes.txt"), "reason": "not an image extension"}]
    assert "notes.txt,not an image extension" in (tmp_path / "s" / "skipped.csv").read_text()


def test_uris_in_a_manifest_are_read_through_fsspec(tmp_path, lite0):
    pytest.importorskip("fsspec")
    rng = np.random.default_rng(6)
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        make_shape_image(i, rng).save(tmp_path / "imgs" / f"u{i}.png")
    rows = [f"file://{tmp_path / 'imgs' / f'u{i}.png'},k{i}" for i in range(3)] + ["nosuch://bucket/x.png,k9"]
    (tmp_path / "m.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    s = embedkit.embed(tmp_path / "m.csv", tmp_path / "s", lite0, progress=False, workers=0).store
    assert s.paths.tolist() == [r.split(",")[0] for r in rows[:3]]  # URIs kept as given, not made local paths
    local = embedkit.embed(tmp_path / "imgs", tmp_path / "l", lite0, progress=False, workers=0).store
    assert np.allclose(np.asarray(s.codes), np.asarray(local.codes), atol=1e-5)
    assert [r["path"] for r in s.skipped] == ["nosuch://bucket/x.png"] and "cannot open" in s.skipped[0]["reason"]


def test_file_names_that_are_not_utf8_are_kept_byte_for_byte(tmp_path, lite0):
    rng = np.random.default_rng(7)
    root = tmp_path / "imgs"
    root.mkdir()
    raw_names = [b"caf\xe9.png", b"\xff\xfe\x01.png", "ok-\u00e9.png".encode()]
    for k, raw in enumerate(raw_names):
        make_shape_image(k, rng).save(os.path.join(os.fsencode(root), raw), format="PNG")
    bad = os.path.join(os.fsencode(root), b"broken\xfa.png")
    with open(bad, "wb") as f:
        f.write(b"")
    res = embedkit.embed(root, tmp_path / "s", lite0, progress=False, workers=0)
    s = CodeStore.open(tmp_path / "s")
    assert sorted(os.fsencode(os.path.basename(p)) for p in s.paths) == sorted(raw_names)
    assert [os.fsencode(r["path"]) for r in s.skipped] == [bad]
    assert all(os.path.exists(p) for p in s.paths) and res.skipped == 1
    assert "\ufffd" in " ".join(s.column("path"))  # the readable column shows them, the exact one keeps them
    assert "broken" in (tmp_path / "s" / "skipped.csv").read_bytes().decode("utf-8", "surrogateescape")


def test_a_work_folder_without_its_plan_is_not_started(tmp_path, lite0):
    """Killed between writing the queue and the plan: neither --resume nor a plain run may be stuck."""
    rng = np.random.default_rng(8)
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        make_shape_image(i, rng).save(tmp_path / "imgs" / f"w{i}.png")
    work = tmp_path / "s" / ".work"
    work.mkdir(parents=True)
    (work / "queue.parquet").write_bytes(b"PAR1 half written")  # no job.json: the plan was never committed
    res = embedkit.embed(tmp_path / "imgs", tmp_path / "s", lite0, progress=False, workers=0)
    assert len(res.store) == 3 and not work.exists()


def test_small_jobs_commit_in_small_shards():
    from embedkit.store.writer import default_shard_rows

    assert default_shard_rows(300) == 32 and default_shard_rows(10_000) == 157
    assert default_shard_rows(1_000_000) == 8192


def _mapped(folder) -> int:
    """How many of this process' memory mappings are files under ``folder`` (Linux /proc)."""
    with open("/proc/self/maps") as f:
        return sum(str(folder) in line for line in f)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads Linux /proc/self/maps")
def test_reads_leave_no_shard_pages_mapped(tmp_path, codes):
    # a full pass over a million-row store must not keep every page it read mapped (RSS would hold the store)
    s = CodeStore.from_arrays(tmp_path / "s", codes, [f"p{i}" for i in range(1000)], shard_rows=300)
    for _, block in s.iter_chunks(rows=256):
        assert block.flags.owndata and _mapped(tmp_path / "s") == 0  # an ordinary buffer, not a memmap view
    rows = s.codes[100:900]
    picked = s.take([999, 5, 5, 640])
    assert _mapped(tmp_path / "s") == 0 and np.array_equal(picked, codes[[999, 5, 5, 640]])
    assert np.array_equal(rows, codes[100:900]) and np.array_equal(np.asarray(s.codes, dtype=np.float64), codes)


def test_a_short_shard_is_reported_not_read_as_garbage(tmp_path, codes):
    s = CodeStore.from_arrays(tmp_path / "s", codes, [f"p{i}" for i in range(1000)], shard_rows=300)
    f = s.codes.files[1]
    np.save(f, codes[:5])  # the manifest says 300 rows
    with pytest.raises(StoreError, match="damaged"):
        list(CodeStore.open(tmp_path / "s").iter_chunks(rows=256))
    with pytest.raises(StoreError, match="damaged"):
        CodeStore.open(tmp_path / "s").take([400])
