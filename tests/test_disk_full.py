"""A full disk, injected where each writer meets it: one line saying what happened and what to free, the data safe.

Libraries lose the errno on the way: NumPy reports a short write as ``40960 requested and 14304 written``,
torch.save and faiss.write_index raise RuntimeError. The shared atomic writers recognise all of them.
"""

from __future__ import annotations

import errno

import numpy as np
import pytest
from click.testing import CliRunner

import embedkit.atomic as atomic
from embedkit import CodeStore
from embedkit.cli.main import app
from embedkit.errors import DiskFullError


def _disk_almost_full(monkeypatch):
    monkeypatch.setattr(atomic, "_free_bytes", lambda path: 4096)


def test_embed_short_write_without_errno_gets_the_advice(tmp_path, shapes_dir, monkeypatch):
    out = tmp_path / "s"
    r = CliRunner().invoke(app, ["embed", str(shapes_dir / "circle"), "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    before = np.asarray(CodeStore.open(out).codes).copy()
    real_save = np.save

    def short_write(f, arr, **kw):  # what np.save does when the disk fills mid-array
        f.write(b"\x93NUMPY" + b"\0" * 100)
        raise OSError(f"{arr.nbytes} requested and 106 written")

    monkeypatch.setattr(np, "save", short_write)
    r = CliRunner().invoke(app, ["embed", str(shapes_dir), "-o", str(out), "-q", "--append"])
    monkeypatch.setattr(np, "save", real_save)
    assert r.exit_code == 2 and len(r.output.splitlines()) == 1, r.output
    assert r.output.startswith("error: no space left") and "--resume" in r.output
    assert np.array_equal(np.asarray(CodeStore.open(out).codes), before)  # the previous store is intact
    assert not list(out.rglob(".*.tmp"))  # no partial file left behind


def test_index_cache_save_on_a_full_disk_is_a_note_and_the_search_goes_on(tmp_path, monkeypatch):
    faiss = pytest.importorskip("faiss")
    from embedkit.retrieve.cache import cached_index

    rng = np.random.default_rng(0)
    store = CodeStore.from_arrays(tmp_path / "s", rng.normal(size=(20, 8)).astype(np.float32),
                                  [f"/x/{i}.png" for i in range(20)])

    def fwrite_failed(index, name):
        open(name, "wb").write(b"IxF2")
        raise RuntimeError("Error in void faiss::write_index(...) at impl/index_write.cpp:555: "
                           "Error: 'ret == (n)' failed: write error in index.faiss: 4 != 64 (No space left)")

    monkeypatch.setattr(faiss, "write_index", fwrite_failed)
    _disk_almost_full(monkeypatch)
    notes = []
    index, how = cached_index(store, kind="hnsw", backend="faiss", note=notes.append)
    assert how == "built" and index.search(np.asarray(store.codes[:2]), 3)[1][:, 0].tolist() == [0, 1]
    assert len(notes) == 1 and "could not cache the index" in notes[0]
    assert "no space left on the device holding" in notes[0] and "4,096 bytes left" in notes[0]
    assert not (tmp_path / "s" / "index" / "cosine-hnsw").exists()  # no half-written cache to trip over later
    assert not [p for p in (tmp_path / "s" / "index").iterdir()]


def test_torch_save_on_a_full_disk_says_what_to_free_and_keeps_the_old_file(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    last = tmp_path / "run" / "last.pt"
    atomic.torch_save_atomic({"epoch": 1}, last)

    def write_failed(obj, f):
        open(f, "wb").write(b"PK\x03\x04")
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", write_failed)
    with pytest.raises(RuntimeError, match="unexpected pos"):  # a disk with room: the library's error as it is
        atomic.torch_save_atomic({"epoch": 2}, last)
    _disk_almost_full(monkeypatch)
    with pytest.raises(DiskFullError, match=r"no space left on the device holding .*run.* \(4,096 bytes left; the "
                                            r"write failed with: \[enforce fail.*free space on that device"):
        atomic.torch_save_atomic({"epoch": 2}, last)
    assert torch.load(last)["epoch"] == 1 and sorted(p.name for p in last.parent.iterdir()) == ["last.pt"]


def test_enospc_from_any_atomic_writer_is_one_error(tmp_path, monkeypatch):
    def no_space(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.Path, "write_bytes", no_space)
    with pytest.raises(DiskFullError) as info:
        atomic.write_json_atomic(tmp_path / "a.json", {"x": 1})
    assert info.value.errno == errno.ENOSPC and "No space left on device" in str(info.value)
