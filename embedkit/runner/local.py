"""The embed job on one machine: discover -> loader -> backbone -> store writer.

It writes into a ``.work/`` folder in chunks (bounded memory: codes go straight
into a pre-allocated memmap, items are appended to a CSV), committing a small
``state.json`` after each chunk so that a killed run resumes from the last commit
with ``resume=True``. Final files appear by rename, ``meta.json`` last.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedkit.atomic import write_json_atomic
from embedkit.errors import ConfigError, MismatchError, StoreError
from embedkit.models.identity import identity_mismatch
from embedkit.store.codestore import DTYPES, ITEM_FIELDS, CodeStore, read_csv_rows
from embedkit.store.postprocess import _fit_whitening, l2_normalize


@dataclass
class EmbedResult:
    """What :func:`embed` did: counts, time, throughput and where the store is."""

    store: CodeStore
    embedded: int
    skipped: int
    kept: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return (self.embedded + self.skipped) / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (f"embedded {self.embedded} images ({self.skipped} skipped, {self.kept} already in the store) in "
                f"{self.seconds:.1f}s, {self.images_per_s:.1f} images/s -> {self.store.path} "
                f"({len(self.store)} x {self.store.dim} {self.store.meta['dtype']})")


def embed(source, out, backbone="efficientnet_lite0", layer=None, weights="default", *, device="auto",
          batch_size=None, workers=None, dtype="float32", precision="auto", spatial="avg", l2_normalize=False,
          pca_whiten=None, resume=False, append=False, overwrite=False, commit_every=2048, progress=True,
          on_commit=None, decode="cpu") -> EmbedResult:
    """Embed the images of ``source`` (folder, list file, CSV manifest or list of paths) into a store at ``out``.

    ``backbone`` is a name or an already built :class:`~embedkit.extract.Backbone`.
    ``resume`` continues an interrupted run, ``append`` adds only images not yet in an
    existing store (which must have the same backbone/layer), ``overwrite`` starts over.
    ``on_commit(rows, files_done)`` is called after each committed chunk. ``decode="device"`` decodes
    JPEGs with torchvision.io on the model's device (nvJPEG on CUDA) instead of PIL in the workers.
    """
    from embedkit.io.discover import discover
    from embedkit.models.backbone import Backbone

    t0 = time.perf_counter()
    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not valid; use one of {', '.join(DTYPES)}")
    if pca_whiten is not None and int(pca_whiten) < 1:
        raise ConfigError(f"pca_whiten={pca_whiten} is not valid; give the number of components (>= 1)")
    out = Path(out)
    work = out / ".work"
    exists = (out / "meta.json").exists()
    if overwrite:
        for name in ("codes.npy", "items.csv", "meta.json", "skipped.csv", "raw.npy", "pca.npz"):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
        exists = False
    if work.exists() and not resume:
        raise StoreError(f"{str(out)!r} holds an interrupted run; continue it with --resume (resume=True) "
                         "or start over with --overwrite")
    if exists and not (append or resume):
        raise StoreError(f"{str(out)!r} is already a code store; add new images with --append or replace it with --overwrite")

    bb = backbone if isinstance(backbone, Backbone) else Backbone(backbone, layer, weights, device=device,
                                                                    precision=precision, spatial=spatial)
    ident = bb.identity()
    old = CodeStore.open(out) if exists else None
    if old is not None:
        old.check_compatible(ident, what=f"the new codes ({bb.name}/{bb.layer})")

    if work.exists():
        state = json.loads((work / "state.json").read_text())
        diffs = identity_mismatch(state["identity"], ident)
        if diffs:
            raise MismatchError(f"the interrupted run in {str(out)!r} used another backbone/layer ({'; '.join(diffs)}); "
                                "resume with the same options or --overwrite")
    else:
        # the folder is listed only for a new job: a resumed one works from its saved queue
        state = _start_job(work, discover(source), old, bb, dtype, l2_normalize, pca_whiten)
    result = (0, 0)
    if not state.get("moves"):  # not yet killed while installing the final files
        result = _run_job(work, state, _read_queue(work), bb, batch_size, workers, commit_every, progress, on_commit,
                          decode)
    store = _finalize(out, work, state)
    kept = state["base_rows"]
    return EmbedResult(store, result[0], result[1], kept, time.perf_counter() - t0)


def _start_job(work: Path, items, old: CodeStore | None, bb, dtype, l2, pca_whiten) -> dict:
    """Create ``.work/``: the queue of new images, a pre-allocated memmap, and old rows copied in (append)."""
    if old is not None:
        done = set(old.paths) | {s["path"] for s in old.skipped}
        items = [it for it in items if it.path not in done]
        l2 = bool(old.meta.get("l2_normalize"))
        pca_whiten = old.meta.get("pca_whiten")
        dtype = old.meta["dtype"]
    work.mkdir(parents=True, exist_ok=True)
    with open(work / "queue.tsv", "w", encoding="utf-8") as f:
        for it in items:
            f.write(f"{it.path}\t{it.label}\n")
    base = len(old) if old is not None else 0
    raw_dtype = "float32" if pca_whiten else dtype
    codes = np.lib.format.open_memmap(work / "codes.npy", mode="w+", dtype=raw_dtype, shape=(base + len(items), bb.dim))
    with open(work / "items.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerow(ITEM_FIELDS)
        if old is not None:
            src = np.load(old.path / "raw.npy", mmap_mode="r") if pca_whiten else old.codes
            for i in range(0, base, 65536):  # chunked copy keeps memory bounded
                codes[i:min(i + 65536, base)] = src[i:min(i + 65536, base)]
            csv.writer(f).writerows([[it[k] for k in ITEM_FIELDS] for it in old.items])
    codes.flush()
    del codes
    skipped_rows = old.skipped if old is not None else []
    with open(work / "skipped.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(("path", "reason"))
        w.writerows([[s["path"], s["reason"]] for s in skipped_rows])
    state = {"identity": bb.identity(), "dim": bb.dim, "dtype": dtype, "l2_normalize": bool(l2),
             "pca_whiten": int(pca_whiten) if pca_whiten else None, "base_rows": base, "rows": base,
             "files_done": 0, "files_total": len(items), "embedded": 0, "skipped": 0,
             "items_bytes": (work / "items.csv").stat().st_size, "skipped_bytes": (work / "skipped.csv").stat().st_size,
             "finished": False}
    write_json_atomic(work / "state.json", state)
    return state


def _read_queue(work: Path):
    from embedkit.io.discover import Item

    with open(work / "queue.tsv", encoding="utf-8") as f:
        return [Item(*line.rstrip("\n").split("\t", 1)) for line in f]


def _run_job(work, state, queue, bb, batch_size, workers, commit_every, progress, on_commit, decode="cpu"):
    """Embed ``queue[files_done:]`` into the memmap, committing every ``commit_every`` rows."""
    from tqdm.auto import tqdm

    # Anything written after the last commit is discarded: the files are cut back to the committed size.
    for name, key in (("items.csv", "items_bytes"), ("skipped.csv", "skipped_bytes")):
        with open(work / name, "r+b") as f:
            f.truncate(state[key])
    codes = np.load(work / "codes.npy", mmap_mode="r+")
    n_embedded = n_skipped = 0
    pending_items, pending_skipped, rows = [], [], state["rows"]
    bar = tqdm(total=state["files_total"], initial=state["files_done"], unit="img", disable=not progress,
               desc=f"embed {bb.name}/{bb.layer}")
    files_done = state["files_done"]

    def commit():
        codes.flush()
        for name, key, rows_ in (("items.csv", "items_bytes", pending_items), ("skipped.csv", "skipped_bytes", pending_skipped)):
            with open(work / name, "a", newline="", encoding="utf-8") as f:
                csv.writer(f).writerows(rows_)
                f.flush()
                os.fsync(f.fileno())
            state[key] = (work / name).stat().st_size
        pending_items.clear()
        pending_skipped.clear()
        state.update(rows=rows, files_done=files_done)
        write_json_atomic(work / "state.json", state)
        if on_commit is not None:
            on_commit(rows, files_done)

    last_commit = rows
    for idx, x, infos, bad in bb.iter_batches(queue, batch_size, workers, start=files_done, decode=decode):
        if len(idx):
            c = x.numpy()
            if state["l2_normalize"] and not state["pca_whiten"]:
                c = l2_normalize(c)
            codes[rows:rows + len(idx)] = c
            rows += len(idx)
            for i, info in zip(idx, infos):
                it = queue[i]
                pending_items.append([it.path, it.label, info["width"], info["height"], info["bytes"], info.get("sha1", "")])
        for i, reason in bad:
            pending_skipped.append([queue[i].path, reason])
        n_embedded += len(idx)
        n_skipped += len(bad)
        files_done += len(idx) + len(bad)
        state["embedded"] += len(idx)
        state["skipped"] += len(bad)
        bar.update(len(idx) + len(bad))
        bar.set_postfix(skipped=state["skipped"])
        if rows - last_commit >= commit_every:
            commit()
            last_commit = rows
    commit()
    bar.close()
    return n_embedded, n_skipped


def _finalize(out: Path, work: Path, state: dict) -> CodeStore:
    """Turn ``.work/`` into the final store files and remove it.

    Two phases, each safe to repeat after a kill: first the final arrays are
    written inside ``.work/`` (nothing is renamed), and the list of renames is
    committed to ``state.json``; then the renames are applied (skipping those
    already done) and ``meta.json`` is written last, so a half-installed store
    never opens and ``--resume`` completes it.
    """
    rows = state["rows"]
    if rows == 0:
        os.replace(work / "skipped.csv", out / "skipped.csv")
        shutil.rmtree(work)
        from embedkit.errors import DataError

        raise DataError(f"none of the {state['files_total']} files could be read as an image; "
                        f"see {out / 'skipped.csv'} for the reasons")
    if not state.get("moves"):
        _write_final_arrays(work, state)
        write_json_atomic(work / "state.json", state)
    (out / "meta.json").unlink(missing_ok=True)
    for src, dest in state["moves"]:
        if (work / src).exists():
            os.replace(work / src, out / dest)
    _write_meta(out, state)
    shutil.rmtree(work)
    return CodeStore.open(out)


def _write_final_arrays(work: Path, state: dict) -> None:
    """Cut the memmap to the rows written (and PCA-whiten); record in ``state`` the renames to install them."""
    rows, dim, pca = state["rows"], state["dim"], state["pca_whiten"]
    src = np.load(work / "codes.npy", mmap_mode="r")
    full = rows == src.shape[0]  # no skipped files: the memmap is installed as is, without a copy
    if pca:
        if rows < 2:
            raise ConfigError(f"PCA-whitening needs at least 2 codes, the store has {rows}; drop --pca-whiten")
        k = min(int(pca), dim, rows)
        mean, comps, scale = _fit_whitening(src[:rows], k)
        np.savez(work / "pca.npz", mean=mean, components=comps, scale=scale)
        final = np.lib.format.open_memmap(work / "final.npy", mode="w+", dtype=state["dtype"], shape=(rows, k))
        for i in range(0, rows, 65536):
            y = (np.asarray(src[i:min(i + 65536, rows)], np.float32) - mean) @ comps.T / scale
            final[i:i + 65536] = l2_normalize(y) if state["l2_normalize"] else y
        final.flush()
        del final
        if not full:
            _copy_rows(src, rows, work / "raw.npy")
        moves = [("final.npy", "codes.npy"), ("codes.npy" if full else "raw.npy", "raw.npy"), ("pca.npz", "pca.npz")]
        state["final_dim"] = k
    else:
        if not full:
            _copy_rows(src, rows, work / "final.npy")
        moves = [("codes.npy" if full else "final.npy", "codes.npy")]
        state["final_dim"] = dim
    state["moves"] = moves + [("items.csv", "items.csv"), ("skipped.csv", "skipped.csv")]


def _write_meta(out: Path, state: dict) -> None:
    from embedkit import __version__

    meta = {
        "embedkit_version": __version__,
        "identity": state["identity"],
        "backbone": state["identity"]["backbone"],
        "layer": state["identity"]["layer"],
        "dim": int(state["final_dim"]),
        "code_dim": int(state["dim"]),
        "dtype": state["dtype"],
        "count": int(state["rows"]),
        "skipped": sum(1 for _ in read_csv_rows(out / "skipped.csv")),
        "l2_normalize": state["l2_normalize"],
        "pca_whiten": state["pca_whiten"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomic(out / "meta.json", meta)


def _copy_rows(src: np.ndarray, rows: int, dest: Path) -> None:
    """Copy the first ``rows`` rows of ``src`` into a new .npy at ``dest``, in chunks."""
    out = np.lib.format.open_memmap(dest, mode="w+", dtype=src.dtype, shape=(rows, src.shape[1]))
    for i in range(0, rows, 65536):
        out[i:i + 65536] = src[i:min(i + 65536, rows)]
    out.flush()
    del out
