"""The local engine: reader (DataLoader workers decode) -> model (one Backbone) -> writer (one shard at a time).

Batches never cross a shard boundary, so each shard is written and committed as
soon as its last batch is embedded; a killed job loses at most the shard in
progress. Memory is one shard of codes plus the loader's prefetched batches.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np

from embedkit.defaults import DECODES
from embedkit.io.discover import Item
from embedkit.io.loader import ImageDataset, TableItems, batches_within, default_batch_size, make_loader
from embedkit.runner.stages import StageTimes

log = logging.getLogger(__name__)



def backbone_batches(bb, loader, times: StageTimes | None = None):
    """The model stage: ``(indices, float32 codes, infos, skipped)`` for each loader batch.

    Undecoded JPEGs (``decode="device"``) are decoded on the backbone's device here. ``times`` adds the
    wait for each decoded batch (and the device decoding) to ``decode``, the forward passes to ``forward``.
    """
    from embedkit.io.decode import decode_on_device

    times = times if times is not None else StageTimes()
    batches = iter(loader)
    while True:
        with times.timing("decode"):
            batch = next(batches, None)
            if batch is None:
                return
            idx, x, infos, bad = batch
            if isinstance(x, list):
                x, keep, failed = decode_on_device(x, bb.preprocessing, bb.device)
                bad = bad + [(idx[k], reason) for k, reason in failed]
                idx, infos = [idx[k] for k in keep], [infos[k] for k in keep]
        with times.timing("forward"):
            codes = bb.forward(x).numpy() if x is not None else np.zeros((0, 0), np.float32)
        yield idx, codes, infos, bad


class _Skipping:
    """A dataset whose rows flagged in the queue (``skip``) are reported bad without being read."""

    def __init__(self, dataset, skips):
        self.dataset, self.skips = dataset, skips

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        reason = self.skips[i] if self.skips is not None else ""
        return (i, None, reason) if reason else self.dataset[i]


def _loader(bb, items, bounds, batch_size, workers, want_sha1, decode, skips=None):
    from embedkit.errors import invalid

    if decode not in DECODES:
        raise invalid("decode", decode, DECODES)
    bs = int(batch_size or default_batch_size(bb.device))
    if bs < 1:
        raise invalid("batch size", bs, "a positive integer")
    ds = ImageDataset(items, bb.preprocessing.transform_uint8(), want_sha1, raw_jpeg=decode == "device",
                      svg_size=bb.preprocessing.resize)
    ds = _Skipping(ds, skips) if skips is not None else ds
    return make_loader(ds, batches_within(bounds, bs), workers, pin_memory=bb.device.type == "cuda")


def run_local(job, bb, *, batch_size: int | None = None, workers: int | None = None, decode: str = "cpu",
              progress: bool = True, on_shard: Callable | None = None,
              times: StageTimes | None = None) -> tuple[int, int]:
    """Embed every pending shard of ``job`` with backbone ``bb``; returns ``(embedded, skipped)``.

    ``times`` receives the seconds of each stage (decode, forward, write)."""
    import pyarrow as pa
    from tqdm.auto import tqdm

    from embedkit.runner.job import ShardBuffer

    pending = job.pending()
    if not pending:
        return 0, 0
    tables = [job.shard_items(s) for s in pending]
    bounds = np.cumsum([t.num_rows for t in tables]).tolist()
    queue = pa.concat_tables(tables)
    items = TableItems(queue)
    skips = queue.column("skip").to_pylist() if "skip" in queue.column_names else None
    loader = _loader(bb, items, bounds, batch_size, workers, True, decode, skips)
    done_before = job.files - queue.num_rows
    bar = tqdm(total=job.files, initial=done_before, unit="img", disable=not progress,
               desc=f"embed {bb.name}/{bb.layer}")
    n_emb = n_skip = 0
    k, seen, shard = 0, 0, ShardBuffer(job)
    times = times if times is not None else StageTimes()
    for idx, c, infos, bad in backbone_batches(bb, loader, times):
        with times.timing("write"):
            if len(idx):
                shard.add(c, [(items[i].path, items[i].label, info["width"], info["height"], info["bytes"],
                               info.get("sha1", "")) for i, info in zip(idx, infos)])
            for i, reason in bad:
                shard.skip(items[i].path, reason)
            last = seen + len(idx) + len(bad) == bounds[k]
            if last:  # the shard's last batch: write and commit it
                rows, skipped = shard.commit(pending[k], tables[k].num_rows)
        seen += len(idx) + len(bad)
        n_emb += len(idx)
        n_skip += len(bad)
        bar.update(len(idx) + len(bad))
        bar.set_postfix(skipped=n_skip)
        if last:
            if on_shard is not None:
                on_shard(pending[k], rows, skipped)
            k += 1
    bar.close()
    return n_emb, n_skip


def embed_files(bb, paths: Sequence[str], batch_size: int | None = None, workers: int | None = None,
                decode: str = "cpu", progress: bool = False):
    """Codes of image files, in memory (for queries and predictions of a few files).

    Returns ``(codes float32 N x D, kept indices, skipped [(index, reason)])``.
    """
    from tqdm.auto import tqdm

    items = [Item(str(p)) for p in paths]
    loader = _loader(bb, items, [len(items)], batch_size, workers, False, decode)
    out, kept, skipped = [], [], []
    with tqdm(total=len(items), unit="img", disable=not progress, desc=f"embed {bb.name}/{bb.layer}") as bar:
        for idx, c, _infos, bad in backbone_batches(bb, loader):
            if len(idx):
                out.append(c)
                kept.extend(idx)
            skipped.extend(bad)
            bar.update(len(idx) + len(bad))
    arr = np.concatenate(out) if out else np.zeros((0, bb.dim), np.float32)
    return arr, kept, skipped
