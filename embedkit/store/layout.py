"""Where each file of a code store lives (format v2), in one place.

A store is a folder::

    meta.json                 identity (backbone, layer, weights, preprocessing; null for imported codes),
                              dim, dtype, count, skipped, post-processing, format; written last
    manifest.json             the finished shards in row order: [{"id", "rows", "skipped"}]
    shards/NNNNN.npy          codes of shard NNNNN (rows x dim), final (post-processed) values
    shards/NNNNN.parquet      one row per code: path, label, width, height, bytes, sha1 (+ manifest columns)
    shards/NNNNN.skipped.parquet   files of that shard that could not be read: path, reason
    shards/NNNNN.raw.npy      only with PCA-whitening: the raw codes (the whitening is refitted from them)
    shards/NNNNN.json         the shard's commit marker, written last: a shard without it does not exist
    pca.npz                   only with PCA-whitening: the fitted transform
    skipped.csv               every skipped file with its reason, for people (the parquet files are the truth)
    .work/                    only while a job runs: job.json (the plan) and queue.parquet (the file list)

Every file is written to a temporary name and renamed; a shard's marker comes
after its files and ``meta.json`` after everything, so a crash never leaves a
half shard or a half store visible.
"""

from __future__ import annotations

from pathlib import Path

STORE_FORMAT = "embedkit-store/2"
META = "meta.json"
MANIFEST = "manifest.json"
SHARDS = "shards"
WORK = ".work"
SKIPPED_CSV = "skipped.csv"
ITEM_FIELDS = ("path", "label", "width", "height", "bytes", "sha1")
DTYPES = ("float32", "float16")


def shard_name(shard_id: int) -> str:
    return f"{int(shard_id):05d}"


def shard_file(folder, shard_id: int, kind: str) -> Path:
    """Path of one file of a shard; ``kind`` is ``npy``, ``raw.npy``, ``parquet``, ``skipped.parquet`` or ``json``."""
    return Path(folder) / SHARDS / f"{shard_name(shard_id)}.{kind}"
