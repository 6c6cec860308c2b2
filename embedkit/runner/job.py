"""An embed job's plan: the file list split deterministically into shards, and its state on disk.

Both engines (local and Ray) run the same plan: ``.work/queue.parquet`` holds the
files to embed in row order, one Parquet row group per shard, and
``.work/job.json`` the identity, dtype, post-processing and shard ids. A shard is
done when its commit marker exists (:func:`embedkit.store.writer.write_shard`),
so a resumed job redoes only the shards without one, whichever engine ran them.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from embedkit.atomic import atomic_path, write_json_atomic
from embedkit.errors import ConfigError, DataError, MismatchError, StoreError, invalid
from embedkit.models.identity import identity_mismatch, numerics_mismatch
from embedkit.store import writer
from embedkit.store.items import items_table
from embedkit.store.layout import DTYPES, FOLDERS, ITEM_FIELDS, META, SHARDS, WORK
from embedkit.store.postprocess import PostProcess
from embedkit.store.writer import default_shard_rows, finalize, remove_store_files, shard_marker

QUEUE = "queue.parquet"
JOB = "job.json"


@dataclass
class Job:
    """The plan of one embed job into the store at ``folder``."""

    folder: str
    identity: dict
    dim: int
    dtype: str
    l2_normalize: bool
    pca_whiten: int | None
    shard_rows: int
    files: int  # files to embed in this job
    new_shards: list = field(default_factory=list)  # shard ids this job writes, in row order
    base_shards: list = field(default_factory=list)  # shards already in the store (append)
    base_rows: int = 0  # their rows

    @property
    def work(self) -> Path:
        return Path(self.folder) / WORK

    def save(self) -> None:
        write_json_atomic(self.work / JOB, asdict(self))

    @classmethod
    def load(cls, folder) -> "Job":
        try:
            return cls(**json.loads((Path(folder) / WORK / JOB).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise StoreError(f"the interrupted run in {str(folder)!r} cannot be read ({exc}); "
                             "start over with --overwrite (overwrite=True)") from exc

    def postprocess(self) -> PostProcess:
        """The store's post-processing; with --append, the existing store's fitted PCA."""
        pp = PostProcess(self.l2_normalize, self.pca_whiten)
        if self.base_shards and self.pca_whiten:
            pp = PostProcess.load({"l2_normalize": self.l2_normalize, "pca_whiten": self.pca_whiten}, self.folder)
        return pp

    def pending(self) -> list[int]:
        """Shard ids of this job without a commit marker."""
        return [s for s in self.new_shards if shard_marker(self.folder, s) is None]

    def shard_items(self, shard_id: int):
        """The (path, label) rows of one of this job's shards, as an Arrow table."""
        import pyarrow.parquet as pq

        return pq.ParquetFile(self.work / QUEUE).read_row_group(self.new_shards.index(shard_id))

    def finish(self):
        """Install the store (PCA, then meta.json: the commit) and remove the plan."""
        from embedkit.store.codestore import CodeStore

        try:
            finalize(self.folder, self.base_shards + self.new_shards, identity=self.identity, dim=self.dim,
                     dtype=self.dtype, postprocess=self.postprocess())
        except DataError:
            if not self.base_shards:  # nothing readable: no store, only skipped.csv saying why
                for sub in FOLDERS:
                    shutil.rmtree(Path(self.folder) / sub, ignore_errors=True)
                shutil.rmtree(self.work, ignore_errors=True)
            raise
        shutil.rmtree(self.work, ignore_errors=True)
        return CodeStore.open(self.folder)


class ShardBuffer:
    """The rows of the shard in progress, as the model stage delivers them; :meth:`commit` writes the shard.

    Both engines fill one: the local loop batch by batch, the Ray driver row by row.
    """

    def __init__(self, job: Job):
        self.job, self.postprocess = job, job.postprocess()
        self.codes, self.rows, self.skipped = [], [], []

    def add(self, codes, rows) -> None:
        """``codes`` (n x dim) of ``rows`` ``(path, label, width, height, bytes, sha1)``, in row order."""
        self.codes.append(codes)
        self.rows.extend(rows)

    def skip(self, path: str, reason: str) -> None:
        self.skipped.append((path, reason))

    def commit(self, shard_id: int, files: int) -> tuple[int, int]:
        """Write shard ``shard_id`` (files + marker) and start the next one empty; returns ``(rows, skipped)``."""
        cols = {name: [r[i] for r in self.rows] for i, name in enumerate(ITEM_FIELDS)}
        block = np.concatenate(self.codes) if self.codes else np.zeros((0, self.job.dim), np.float32)
        # through the module, at call time: the one writer function, whoever patched or wrapped it
        writer.write_shard(self.job.folder, shard_id, block, items_table(cols), self.skipped, dtype=self.job.dtype,
                           postprocess=self.postprocess, files=files)
        done = (len(self.rows), len(self.skipped))
        self.codes, self.rows, self.skipped = [], [], []
        return done


def check_output(out, *, dtype: str = "float32", pca_whiten: int | None = None, shard_rows: int | None = None,
                 resume: bool = False, append: bool = False, overwrite: bool = False) -> None:
    """The refusals of :func:`prepare` that need no model or images: :func:`embedkit.embed` runs them before the
    backbone is built (seconds of torch imports), and :func:`prepare` again under the store's lock."""
    if dtype not in DTYPES:
        raise invalid("dtype", dtype, DTYPES)
    if pca_whiten is not None and int(pca_whiten) < 1:
        raise invalid("pca_whiten", pca_whiten, "the number of components (>= 1)")
    if shard_rows is not None and int(shard_rows) < 1:
        raise invalid("shard_rows", shard_rows, "a positive number of rows")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {str(out)!r} is a file, not a folder; give a folder path for the store")
    if overwrite:
        return
    if (out / WORK / JOB).exists():  # a work folder without its plan was never started: prepare removes it
        if not resume:
            raise StoreError(f"{str(out)!r} holds an interrupted run; continue it with --resume (resume=True) "
                             "or start over with --overwrite (overwrite=True)")
    elif (out / META).exists() and not (append or resume):
        raise StoreError(f"{str(out)!r} is already a code store; add new images with --append (append=True) or "
                         "replace it with --overwrite (overwrite=True)")


def prepare(source, out, identity: dict, dim: int, *, dtype: str = "float32", l2_normalize: bool = False,
            pca_whiten: int | None = None, resume: bool = False, append: bool = False, overwrite: bool = False,
            shard_rows: int | None = None) -> tuple[Job, bool]:
    """The job to run into ``out``: a resumed one, or a new plan. Returns ``(job, resumed)``.

    ``resume`` continues an interrupted run (an error if its identity differs; a note and a new run
    if there is none), ``append`` adds only files not yet in the store, ``overwrite`` starts over.
    """
    from embedkit.store.codestore import CodeStore

    check_output(out, dtype=dtype, pca_whiten=pca_whiten, shard_rows=shard_rows, resume=resume, append=append,
                 overwrite=overwrite)
    out = Path(out)
    work = out / WORK
    if work.exists() and not (work / JOB).exists():
        shutil.rmtree(work)  # killed before its plan was written: nothing of it was started
    if overwrite:
        remove_store_files(out)
    exists = (out / META).exists()
    if work.exists():  # with resume (check_output refused it otherwise)
        job = Job.load(out)
        diffs = identity_mismatch(job.identity, identity)
        if diffs:
            raise MismatchError(f"the interrupted run in {str(out)!r} used another backbone/layer "
                                f"({'; '.join(diffs)}); resume with the same options or --overwrite (overwrite=True)")
        _refuse_numerics_mix(job.identity, identity, f"the interrupted run in {str(out)!r}")
        return job, True
    old = CodeStore.open(out) if exists else None
    if old is not None:
        if old.version < 3:
            raise StoreError(f"{str(out)!r} is a store of an older format (read-only); convert it with "
                             f"`embedkit store upgrade {out}` and append again")
        old.check_compatible(identity, what="the new codes")
        _refuse_numerics_mix(old.identity, identity, f"store {str(out)!r}")
        dtype, l2_normalize, pca_whiten = old.meta["dtype"], bool(old.meta.get("l2_normalize")), old.meta.get("pca_whiten")
    return _plan(source, out, old, identity, dim, dtype, l2_normalize, pca_whiten, shard_rows), False


def _refuse_numerics_mix(made: dict | None, new: dict | None, where: str) -> None:
    """One store holds codes computed one way: refuse new codes of another precision or decoder."""
    diffs = numerics_mismatch(made, new)
    if diffs:
        raise MismatchError(f"{where} holds codes computed another way ({'; '.join(diffs)}); adding these would mix "
                            "the two in one store: match its options, or start over with --overwrite")


def _plan(source, out: Path, old, identity, dim, dtype, l2, pca, shard_rows) -> Job:
    """List the files (streaming), drop those already in the store, write the queue and the plan."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from embedkit.io.discover import IMAGE_EXTENSIONS, iter_items
    from embedkit.io.svg import check_svg_support

    paths, labels, skips = [], [], []
    for it in iter_items(source, others=True):
        paths.append(it.path)
        labels.append(it.label)
        skips.append(it.skip)
    if not any(s == "" for s in skips):
        raise DataError(f"{str(source)!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    check_svg_support((p for p, s in zip(paths, skips) if not s), source)
    queue = items_table({"path": paths, "label": labels, "skip": skips})  # any file name survives
    del paths, labels, skips
    base, start = [], 0
    if old is not None:
        # compared in Arrow: no Python object per already-embedded file
        done = pa.concat_arrays([old.items.column("path").combine_chunks().cast(pa.string()),
                                 pa.array([s["path"] for s in old.skipped], pa.string())])
        queue = queue.filter(pc.invert(pc.is_in(queue.column("path"), value_set=done)))
        base = [int(s["id"]) for s in old.shards]
        start = max(base) + 1 if base else 0
    rows = int(shard_rows or default_shard_rows(queue.num_rows))
    n_shards = -(-queue.num_rows // rows)
    work = out / WORK
    work.mkdir(parents=True, exist_ok=True)
    (out / SHARDS).mkdir(exist_ok=True)
    with atomic_path(work / QUEUE) as tmp:
        pq.write_table(queue, tmp, row_group_size=rows)
    job = Job(str(out), identity, int(dim), dtype, bool(l2), int(pca) if pca else None, rows, queue.num_rows,
              list(range(start, start + n_shards)), base, len(old) if old is not None else 0)
    job.save()  # the plan is committed last: a .work/ without job.json is "not started"
    return job
