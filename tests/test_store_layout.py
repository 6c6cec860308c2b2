"""The store's folders are read by other tools as they come (duckdb, polars, pyarrow.dataset, embedding-reader;
Ray Data in test_ray_engine.py, beside its cluster), even when files were skipped; stores of format 2 open
read-only and upgrade in place."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from embedkit import CodeStore, StoreError
from embedkit.cli.main import app
from embedkit.runner.job import prepare
from embedkit.store.layout import MANIFEST, shard_file
from embedkit.store.postprocess import PostProcess
from embedkit.store.writer import finalize, write_shard

DIM = 6
SHARDS = [(5, 1), (0, 3), (4, 0), (3, 2)]  # (rows, skipped) per shard; shard 1 is nothing but skipped files


@pytest.fixture
def store(tmp_path) -> CodeStore:
    """A store as an embed with skipped files and PCA-whitening writes it (raw codes kept beside the codes)."""
    rng = np.random.default_rng(3)
    pp, n = PostProcess(pca_whiten=4), 0
    for sid, (rows, skipped) in enumerate(SHARDS):
        paths = [f"img/{n + i:03d}.png" for i in range(rows)]
        write_shard(tmp_path / "codes", sid, rng.normal(size=(rows, DIM)),
                    {"path": paths, "label": ["a", "b"] * (rows // 2) + ["a"] * (rows % 2),
                     "width": [64] * rows, "height": [48] * rows, "bytes": [999] * rows, "sha1": ["0" * 40] * rows},
                    [(f"bad/{sid}-{k}.png", "not an image") for k in range(skipped)], postprocess=pp)
        n += rows
    finalize(tmp_path / "codes", list(range(len(SHARDS))), identity=None, dim=DIM, dtype="float32", postprocess=pp)
    return CodeStore.open(tmp_path / "codes")


def _paths(store) -> list:
    return store.paths.tolist()


def test_duckdb_reads_the_natural_globs(store):
    duckdb = pytest.importorskip("duckdb")
    rows = duckdb.sql(f"select path, label, width from '{store.path}/items/*.parquet' order by path").fetchall()
    assert [r[0] for r in rows] == _paths(store) and rows[0][1:] == ("a", 64)
    skipped = duckdb.sql(f"select path, reason from '{store.path}/skipped/*.parquet'").fetchall()
    assert sorted(skipped) == sorted((s["path"], s["reason"]) for s in store.skipped) and len(skipped) == 6


def test_polars_and_pyarrow_dataset_read_the_item_folder(store):
    import pyarrow.dataset as ds

    pl = pytest.importorskip("polars")
    assert pl.read_parquet(f"{store.path}/items/*.parquet")["path"].to_list() == _paths(store)
    assert pl.scan_parquet(f"{store.path}/skipped/*.parquet").select(pl.len()).collect().item() == 6
    table = ds.dataset(store.path / "items", format="parquet").to_table()
    assert sorted(table.column("path").to_pylist()) == _paths(store)
    assert ds.dataset(store.path / "skipped", format="parquet").count_rows() == 6


def test_embedding_reader_reads_codes_with_their_items(store):
    er = pytest.importorskip("embedding_reader")
    reader = er.EmbeddingReader(str(store.path / "shards"), file_format="parquet_npy",
                                metadata_folder=str(store.path / "items"), meta_columns=["path"])
    assert reader.count == len(store) and reader.dimension == store.dim == 4
    blocks = list(reader(batch_size=4, start=0, end=reader.count, show_progress=False))
    codes = np.concatenate([b[0] for b in blocks])
    paths = [p for b in blocks for p in b[1]["path"]]
    assert paths == _paths(store) and np.allclose(codes, np.asarray(store.codes))  # the final codes, not raw/


def _as_format_2(folder) -> None:
    """Put a store back as format 2 wrote it: every shard file in shards/, the shard list in manifest.json."""
    import pyarrow.parquet as pq

    meta = json.loads((folder / "meta.json").read_text())
    schema = pq.read_schema(shard_file(folder, 0, "parquet"))
    for s in meta["shards"]:
        if not s["rows"]:  # format 2 wrote empty codes and items files for a shard of only skipped files
            np.save(shard_file(folder, s["id"], "npy"), np.zeros((0, meta["dim"]), np.float32))
            pq.write_table(schema.empty_table(), shard_file(folder, s["id"], "parquet", version=2))
        for kind in ("parquet", "skipped.parquet", "raw.npy"):
            if shard_file(folder, s["id"], kind).exists():
                shard_file(folder, s["id"], kind).rename(shard_file(folder, s["id"], kind, version=2))
    for sub in ("items", "skipped", "raw"):
        shutil.rmtree(folder / sub, ignore_errors=True)
    (folder / MANIFEST).write_text(json.dumps({"format": "embedkit-store/2", "shards": meta["shards"]}))
    (folder / "meta.json").write_text(json.dumps({**meta, "format": "embedkit-store/2",
                                                  "shards": len(meta["shards"])}))


def test_a_format_2_store_opens_read_only_and_upgrades_in_place(store, tmp_path, monkeypatch):
    import embedkit.store.convert as convert

    codes, paths, skipped = np.asarray(store.codes), _paths(store), store.skipped
    _as_format_2(store.path)
    old = CodeStore.open(store.path)
    assert old.version == 2 and np.array_equal(np.asarray(old.codes), codes) and _paths(old) == paths
    assert old.skipped == skipped and np.allclose(old.transform(np.load(
        shard_file(store.path, 0, "raw.npy", version=2))), codes[:5], atol=1e-5)
    with pytest.raises(StoreError, match="store upgrade"):  # what `embed --append` meets before any work
        prepare(["img/new.png"], store.path, identity={}, dim=DIM, append=True)

    def killed(path, obj):  # the upgrade dies at its commit: the format-2 store is still whole
        raise KeyboardInterrupt

    monkeypatch.setattr(convert, "write_json_atomic", killed)
    with pytest.raises(KeyboardInterrupt):
        convert.upgrade_store(store.path)
    monkeypatch.undo()
    assert CodeStore.open(store.path).version == 2 and _paths(CodeStore.open(store.path)) == paths

    r = CliRunner().invoke(app, ["store", "upgrade", str(store.path)])
    assert r.exit_code == 0 and "format 2 -> 3" in r.output, r.output
    new = CodeStore.open(store.path)
    assert new.version == 3 and np.array_equal(np.asarray(new.codes), codes) and _paths(new) == paths
    assert new.skipped == skipped and new.meta["upgraded_from"] == "embedkit-store/2"
    assert not (store.path / MANIFEST).exists() and sorted(p.suffix for p in (store.path / "shards").iterdir()) == \
        [".json"] * 4 + [".npy"] * 3  # every .npy pairs with an items file again
    assert sorted(p.stem for p in (store.path / "items").iterdir()) == ["00000", "00002", "00003"]
    r = CliRunner().invoke(app, ["store", "upgrade", str(store.path)])
    assert r.exit_code == 0 and "nothing to do" in r.output
