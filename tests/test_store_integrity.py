"""The store's commit and its own files: an append is one rename (for a crash and for a reader), and a
crafted or damaged store is refused in one line before anything is read or allocated from it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from embedkit import CodeStore, StoreError
from embedkit.cli.main import app

ROWS, DIM = 10, 4

# A real process appending shards of ROWS rows to the store at argv[1], one at a time, the way an embed
# --append finishes (new shard files, then finalize). Row i holds the value i everywhere and path p{i}.
# argv[2]: "loop N" appends N shards with every rename slowed down (a reader gets time to look between any
# two renames), "kill-before" / "kill-after" SIGKILLs itself just before / just after meta.json is renamed.
APPENDER = textwrap.dedent("""
    import os, signal, sys, time
    import numpy as np
    import embedkit.atomic as atomic
    from embedkit.store import writer
    from embedkit.store.codestore import CodeStore
    from embedkit.store.postprocess import PostProcess

    folder, mode = sys.argv[1], sys.argv[2]
    real = os.replace

    def replace(src, dst):
        last = str(dst).endswith("meta.json")
        if mode == "kill-before" and last:
            os.kill(os.getpid(), signal.SIGKILL)
        real(src, dst)
        if mode == "kill-after" and last:
            os.kill(os.getpid(), signal.SIGKILL)
        if mode == "loop":
            time.sleep(0.01)

    atomic.os.replace = replace
    ids = [s["id"] for s in CodeStore.open(folder).shards]
    for _ in range(int(sys.argv[3]) if mode == "loop" else 1):
        n = len(CodeStore.open(folder))
        sid = max(ids) + 1
        rows = np.arange(n, n + %(rows)d)
        writer.write_shard(folder, sid, np.repeat(rows[:, None], %(dim)d, 1).astype(np.float32),
                           {"path": [f"p{i}" for i in rows]}, [(f"bad{sid}.png", "empty file")])
        ids.append(sid)
        writer.finalize(folder, ids, identity=None, dim=%(dim)d, dtype="float32", postprocess=PostProcess())
""" % {"rows": ROWS, "dim": DIM})


def _store(folder, shards: int = 2) -> CodeStore:
    n = shards * ROWS
    codes = np.repeat(np.arange(n, dtype=np.float32)[:, None], DIM, 1)
    return CodeStore.from_arrays(folder, codes, [f"p{i}" for i in range(n)], shard_rows=ROWS)


def _append(folder, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", APPENDER, str(folder), *args], env=dict(os.environ))


def _whole(store: CodeStore) -> int:
    """Check that an opened store is one consistent state (rows, items, skipped list); returns its count."""
    n = len(store)
    codes = np.asarray(store.codes)
    assert codes.shape == (n, DIM) and np.array_equal(codes[:, 0], np.arange(n))
    assert store.paths.tolist() == [f"p{i}" for i in range(n)]
    assert len(store.skipped) == n // ROWS - 2  # one skipped file per appended shard
    return n


@pytest.mark.parametrize("when", ["kill-before", "kill-after"])
def test_an_append_killed_at_its_commit_leaves_the_old_or_the_new_store_whole(tmp_path, when):
    _store(tmp_path / "s")
    proc = _append(tmp_path / "s", when)
    assert proc.wait(60) == -signal.SIGKILL
    n = _whole(CodeStore.open(tmp_path / "s"))
    assert n == (2 * ROWS if when == "kill-before" else 3 * ROWS)
    assert not (tmp_path / "s" / "manifest.json").exists()  # the count and the shard list live in one file


def test_a_reader_looping_during_appends_never_sees_a_half_store(tmp_path):
    _store(tmp_path / "s")
    proc = _append(tmp_path / "s", "loop", "12")
    seen, errors = [], []
    try:
        while proc.poll() is None:
            try:
                seen.append(_whole(CodeStore.open(tmp_path / "s")))
            except StoreError as exc:
                errors.append(str(exc))
    finally:
        proc.wait(60)
    assert proc.returncode == 0 and errors == []
    seen.append(_whole(CodeStore.open(tmp_path / "s")))
    assert seen == sorted(seen) and seen[-1] == 14 * ROWS
    assert len(set(seen)) >= 4  # the reader really looked while the store grew


# ---- crafted stores: refused in one line, without reading or allocating what they claim


def _meta(folder) -> dict:
    return json.loads((folder / "meta.json").read_text())


def _set_meta(folder, **changes) -> None:
    (folder / "meta.json").write_text(json.dumps({**_meta(folder), **changes}))


def _refused(folder, match: str) -> None:
    """Opening and reading the store raises one StoreError; the CLI prints one line, no traceback."""
    with pytest.raises(StoreError, match=match):
        s = CodeStore.open(folder)
        s.items, s.skipped, s.postprocess  # noqa: B018 - reading is what is checked
    r = CliRunner().invoke(app, ["store", "info", str(folder)])
    assert r.exit_code != 0 and "Traceback" not in r.output, r.output
    assert r.output.count("\n") == 1 and r.output.startswith("error:"), r.output


def _shards_with(folder, **changes) -> list:
    shards = _meta(folder)["shards"]
    shards[0] = {**shards[0], **changes}
    return shards


CRAFTED_META = {
    "a shard id that is a path": (lambda f: {"shards": _shards_with(f, id="../../etc/hostname")}, "id"),
    "a negative shard id": (lambda f: {"shards": _shards_with(f, id=-3)}, "id"),
    "a shard id beyond any name": (lambda f: {"shards": _shards_with(f, id=10**30)}, "id"),
    "shards that are not a list": (lambda f: {"shards": "oops"}, "not a list"),
    "a shard that is not an object": (lambda f: {"shards": [7, 8]}, "not an object"),
    "a shard listed twice": (lambda f: {"shards": _meta(f)["shards"][:1] * 2, "count": 2 * ROWS}, "twice"),
    "a huge count": (lambda f: {"count": 10**11, "shards": _shards_with(f, rows=10**11 - ROWS)}, "codes"),
    "a count beyond any store": (lambda f: {"count": 10**30}, "count"),
    "a count that is not a number": (lambda f: {"count": "many"}, "count"),
    "a dim of zero": (lambda f: {"dim": 0}, "dim"),
    "an unknown dtype": (lambda f: {"dtype": "object"}, "dtype"),
    "an unknown format": (lambda f: {"format": "embedkit-store/9"}, "newer embedkit"),
}


@pytest.mark.parametrize("case", list(CRAFTED_META))
def test_a_crafted_meta_json_is_refused_in_one_line(tmp_path, case):
    _store(tmp_path / "s")
    change, match = CRAFTED_META[case]
    _set_meta(tmp_path / "s", **change(tmp_path / "s"))
    _refused(tmp_path / "s", match)


def test_meta_json_that_is_not_a_small_json_object_is_refused(tmp_path):
    _store(tmp_path / "s")
    meta = tmp_path / "s" / "meta.json"
    meta.write_text("[1, 2]")
    _refused(tmp_path / "s", "not an object")
    meta.unlink()
    meta.symlink_to("/dev/zero")  # would be read until memory runs out
    _refused(tmp_path / "s", "not a regular file")


def _replace(path, make) -> None:
    path.unlink()
    make(path)


CRAFTED_FILES = {
    "an object-dtype shard": ("npy", lambda p: np.save(p, np.array([{"a": 1}] * ROWS * DIM, object).reshape(ROWS, DIM),
                                                       allow_pickle=True), "object"),
    "a /dev/zero shard": ("npy", lambda p: p.symlink_to("/dev/zero"), "not a regular file"),
    "a FIFO shard": ("npy", lambda p: os.mkfifo(p), "not a regular file"),
    "a float64 shard": ("npy", lambda p: np.save(p, np.zeros((ROWS, DIM))), "float64"),
    "a shard shorter than its header says": ("npy", lambda p: p.write_bytes(_npy_header((ROWS, DIM)) + b"\0" * 64),
                                             "bytes"),
    "a shard header claiming a billion rows": ("npy", lambda p: p.write_bytes(_npy_header((10**9, DIM))), "codes"),
    "a shard that is not an array file": ("npy", lambda p: p.write_text("hello"), "not a NumPy"),
    "items of another row count": ("parquet", lambda p: _parquet(p, ROWS - 1), "rows"),
    "items that are not Parquet": ("parquet", lambda p: p.write_text("path\nx\n"), "Parquet"),
    "a /dev/zero item table": ("parquet", lambda p: p.symlink_to("/dev/zero"), "not a regular file"),
}


def _npy_header(shape) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _parquet(path, rows) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"path": [f"x{i}" for i in range(rows)]}), path)


@pytest.mark.parametrize("case", list(CRAFTED_FILES))
def test_a_crafted_shard_file_is_refused_in_one_line(tmp_path, case):
    from embedkit.store.layout import shard_file

    _store(tmp_path / "s")
    kind, make, match = CRAFTED_FILES[case]
    _replace(shard_file(tmp_path / "s", 1, kind), make)
    _refused(tmp_path / "s", match)


def _whitened(folder) -> CodeStore:
    rng = np.random.default_rng(0)
    from embedkit.store.postprocess import PostProcess
    from embedkit.store.writer import finalize, write_shard

    pp = PostProcess(pca_whiten=3)
    for k in range(2):
        write_shard(folder, k, rng.normal(size=(ROWS, DIM)), {"path": [f"p{k}{i}" for i in range(ROWS)]},
                    postprocess=pp)
    finalize(folder, [0, 1], identity=None, dim=DIM, dtype="float32", postprocess=pp)
    return CodeStore.open(folder)


CRAFTED_PCA = {
    "object arrays": (dict(mean=np.array([None] * DIM, object), components=np.zeros((3, DIM), object),
                           scale=np.ones(3, object)), "not floats"),
    "components of another width": (dict(mean=np.zeros(DIM + 1), components=np.zeros((3, DIM + 1)),
                                         scale=np.ones(3)), "expected"),
    "NaN in the transform": (dict(mean=np.full(DIM, np.nan), components=np.zeros((3, DIM)), scale=np.ones(3)),
                             "not finite"),
    "a member missing": (dict(mean=np.zeros(DIM), scale=np.ones(3)), "not a whitening file"),
}


@pytest.mark.parametrize("case", list(CRAFTED_PCA))
def test_a_crafted_pca_npz_is_refused_in_one_line(tmp_path, case):
    s = _whitened(tmp_path / "s")
    assert s.postprocess.components.shape == (3, DIM)
    arrays, match = CRAFTED_PCA[case]
    np.savez(tmp_path / "s" / "pca.npz", allow_pickle=True, **arrays)
    _refused(tmp_path / "s", match)


def test_a_pca_npz_declaring_a_huge_matrix_is_refused_before_it_is_read(tmp_path):
    import zipfile

    _whitened(tmp_path / "s")
    with zipfile.ZipFile(tmp_path / "s" / "pca.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("mean.npy", _npy_header((DIM,)) + b"\0" * 16)
        z.writestr("scale.npy", _npy_header((60000,)) + b"\0" * 16)
        z.writestr("components.npy", _npy_header((60000, 60000)) + b"\0" * (1 << 20))  # 14 GB if it were read
    _refused(tmp_path / "s", "more than any embedkit writes")
