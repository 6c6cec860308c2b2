"""Where each file of a code store lives (format 3), in one place; and where formats 1 and 2 kept them.

A store is a folder::

    meta.json                 the store's one commit point: identity (backbone, layer, weights, preprocessing;
                              null for imported codes), dim, dtype, count, skipped, post-processing, format and
                              the finished shards in row order, "shards": [{"id", "rows", "skipped"}]
    shards/NNNNN.npy          codes of shard NNNNN (rows x dim), final (post-processed) values
    shards/NNNNN.json         the shard's commit marker, written after its files: a shard without it does not exist
    items/NNNNN.parquet       one row per code: path, label, width, height, bytes, sha1 (+ manifest columns)
    skipped/NNNNN.parquet     files of that shard that could not be read: path, reason (empty when none)
    raw/NNNNN.npy             only with PCA-whitening: the raw codes (the whitening is refitted from them)
    pca.npz                   only with PCA-whitening: the fitted transform
    skipped.csv               every skipped file with its reason, for people (the parquet files are the truth)
    .work/                    only while a job runs: job.json (the plan) and queue.parquet (the file list)

A shard of nothing but skipped files has only its marker and its skipped list (no empty codes or items
file), so ``shards/*.npy`` and ``items/*.parquet`` pair up file for file.

Each folder holds files of one kind and one schema, so other tools read a folder or its natural glob
as one table: ``duckdb "select * from 'codes/items/*.parquet'"``, ``polars.scan_parquet``,
``pyarrow.dataset.dataset("codes/items")``, Ray Data's ``read_parquet``, and embedding-reader (autofaiss,
clip-retrieval) on ``codes/shards`` with ``codes/items`` as its metadata folder (the file names sort alike).

Every file is written to a temporary name and renamed; a shard's marker comes after its files and
``meta.json`` after everything. An append writes new shards only and then replaces ``meta.json``: the
shard list and the count change in one rename, so neither a crash nor a reader ever sees a half store.

Format 2 kept every shard file in ``shards/`` (``NNNNN.parquet``, ``NNNNN.skipped.parquet``,
``NNNNN.raw.npy``) and the shard list in ``manifest.json``; format 1 was ``codes.npy`` + ``items.csv``
(+ ``raw.npy``). Both open read-only; ``embedkit store upgrade`` converts them.
"""

from __future__ import annotations

from pathlib import Path

STORE_FORMAT = "embedkit-store/3"
FORMATS = {"embedkit-store/3": 3, "embedkit-store/2": 2, None: 1}  # meta.json's "format" -> version
META = "meta.json"
MANIFEST = "manifest.json"  # format 2 only
SHARDS = "shards"
WORK = ".work"
SKIPPED_CSV = "skipped.csv"
ITEM_FIELDS = ("path", "label", "width", "height", "bytes", "sha1")
DTYPES = ("float32", "float16")
MAX_SHARD_ID = 10**8 - 1  # shard names are 5 digits, up to 8; an id beyond is a crafted manifest

# kind -> (folder, suffix): format 3, and format 2 (everything in shards/)
KINDS = {"npy": (SHARDS, ".npy"), "json": (SHARDS, ".json"), "parquet": ("items", ".parquet"),
         "skipped.parquet": ("skipped", ".parquet"), "raw.npy": ("raw", ".npy")}
ROW_KINDS = ("npy", "parquet", "raw.npy")  # the files a shard has only when it has rows
FOLDERS = tuple(dict.fromkeys(folder for folder, _ in KINDS.values()))
V1_FILES = ("codes.npy", "items.csv", "raw.npy")


def shard_name(shard_id: int) -> str:
    return f"{int(shard_id):05d}"


def shard_file(folder, shard_id: int, kind: str, version: int = 3) -> Path:
    """Path of one file of a shard; ``kind`` is ``npy``, ``raw.npy``, ``parquet``, ``skipped.parquet`` or ``json``.

    ``version`` 2 gives the place a format-2 store kept it (``shards/NNNNN.<kind>``).
    """
    if version == 2:
        return Path(folder) / SHARDS / f"{shard_name(shard_id)}.{kind}"
    sub, suffix = KINDS[kind]
    return Path(folder) / sub / f"{shard_name(shard_id)}{suffix}"
