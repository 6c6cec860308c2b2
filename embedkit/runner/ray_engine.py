"""The Ray engine: the same plan and shards as the local engine, on one machine's GPUs or a whole cluster.

Ray Data's batch-inference shape (as in Ray's examples and NeMo Curator's image pipeline):
file rows -> ``map_batches(decode)`` in CPU tasks -> ``map_batches(EmbedActor)`` in an
actor pool (one actor per GPU with ``num_gpus=1``, CPU actors otherwise) -> the driver,
which streams the results in row order (``preserve_order``) and writes each shard with the
store writer as soon as its last row arrives. So the output is exactly the local engine's
store, shard by shard, with the same commit markers: a job killed and re-run with
``--resume`` (by either engine) redoes only the shards without a marker.

Decode tasks ask for half a CPU and the model actors for one CPU (and their GPU), so Ray Data keeps
the two stages apart (different resources are never fused) and decoding overlaps the forward passes.

Fault tolerance comes from Ray: a killed actor is restarted and its batch retried
(Ray Data's actor pools default to ``max_restarts=-1``, ``max_task_retries=-1``), and a
batch's rows reach the driver once. Inputs must be readable by every worker: a shared
filesystem, or URIs that pyarrow/fsspec read (``s3://...`` with s3fs installed).
"""

from __future__ import annotations

import logging
import os

import numpy as np

log = logging.getLogger(__name__)

#: test hook: when set to a file path that does not exist yet, the first actor batch creates it and
#: kills its own process (a real worker death that Ray must recover from)
FAULT_ENV = "EMBEDKIT_FAULT_KILL_ACTOR_ONCE"


def _exact(path, raw) -> str:
    """The file name exactly: the bytes kept for a name that is not UTF-8, else the path text.

    (Ray Data turns an all-null binary column into NaN floats, hence the type test.)
    """
    return os.fsdecode(bytes(raw)) if isinstance(raw, (bytes, bytearray)) else str(path)


def decode_batch(batch: dict, preprocessing: dict) -> dict:
    """CPU task: decode and preprocess a batch of files exactly as the local loader does.

    Bad files keep their row (``ok`` False, ``reason`` set), so rows never get out of step with paths.
    Each row carries its share of the batch's seconds (``decode_s``) for the driver's stage timing.
    """
    import time

    from embedkit.io.discover import Item
    from embedkit.io.loader import ImageDataset
    from embedkit.models.preprocessing import Preprocessing

    t0 = time.perf_counter()
    pre = Preprocessing.from_dict(preprocessing)
    raw = batch.get("path_bytes")
    paths = [_exact(p, raw[i] if raw is not None else None) for i, p in enumerate(batch["path"])]
    dataset = ImageDataset([Item(p) for p in paths], pre.transform_uint8(), want_sha1=True, svg_size=pre.resize)
    n, s = len(dataset), pre.input_size
    image = np.zeros((n, 3, s, s), np.uint8)
    ok = np.zeros(n, bool)
    reason, sha1 = [""] * n, [""] * n
    info = {"width": np.zeros(n, np.int64), "height": np.zeros(n, np.int64), "bytes": np.zeros(n, np.int64)}
    skips = batch.get("skip")
    for i in range(n):
        if skips is not None and skips[i]:
            reason[i] = str(skips[i])  # listed, never read (e.g. not an image extension)
            continue
        _, x, meta = dataset[i]
        if x is None:
            reason[i] = meta
            continue
        image[i], ok[i], sha1[i] = x.numpy(), True, meta.get("sha1", "")
        for k in info:
            info[k][i] = meta[k]
    return {**batch, "image": image, "ok": ok, "reason": np.array(reason, dtype=object),
            "sha1": np.array(sha1, dtype=object), **info,
            "decode_s": np.full(n, (time.perf_counter() - t0) / max(n, 1))}


class EmbedActor:
    """Model stage: one backbone per actor on ``device`` (``cpu``, ``cuda``: the GPU Ray gave it, or ``auto``),
    codes for the decoded rows."""

    def __init__(self, backbone: str, layer, weights: str, device: str, precision: str, spatial: str,
                 identity: dict, threads: int):
        import torch

        from embedkit.models.backbone import Backbone
        from embedkit.models.identity import identity_mismatch, numerics_mismatch

        torch.set_num_threads(max(1, threads))
        self.bb = Backbone(backbone, layer, weights, device=device, precision=precision, spatial=spatial)
        diffs = identity_mismatch(identity, self.bb.identity()) + numerics_mismatch(identity, self.bb.identity())
        if diffs:  # a worker with other weights or library versions must not mix its codes in
            from embedkit.errors import MismatchError

            raise MismatchError(f"the backbone built on this worker differs from the job's: {'; '.join(diffs)}")

    def __call__(self, batch: dict) -> dict:
        import time

        import torch

        fault = os.environ.get(FAULT_ENV)
        if fault and not os.path.exists(fault):
            open(fault, "w").close()
            os._exit(1)  # noqa: SLF001 - simulate a worker killed mid-run
        ok = np.asarray(batch["ok"], bool)
        t0 = time.perf_counter()
        codes = np.zeros((len(ok), self.bb.dim), np.float32)
        if ok.any():
            codes[ok] = self.bb.forward(torch.from_numpy(np.ascontiguousarray(batch["image"][ok]))).numpy()
        out = {k: v for k, v in batch.items() if k != "image"}
        out["code"] = codes
        out["forward_s"] = np.full(len(ok), (time.perf_counter() - t0) / max(len(ok), 1))
        return out


def _init_ray(ray, address: str | None):
    """Join or start a cluster; returns True when this call started it (and so must shut it down)."""
    if ray.is_initialized():
        return False
    kwargs = {"include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True}
    ray.init(address=address, **kwargs) if address else ray.init(**kwargs)
    return True


def check_ray_options(device: str, decode: str, num_gpus: float | None) -> None:
    """What can be refused before a cluster is joined: a device Ray cannot honour, ``--decode device``."""
    from embedkit.errors import ConfigError

    if decode != "cpu":
        raise ConfigError("--decode device is not available with --engine ray (decoding runs in Ray CPU tasks); "
                          "use --decode cpu")
    if device.startswith("cuda:"):
        raise ConfigError(f"--device {device} picks one GPU of this machine; Ray gives each worker its own GPU: use "
                          "--device cuda (or auto) with --engine ray")
    if device == "cpu" and num_gpus:
        raise ConfigError(f"--num-gpus {num_gpus:g} asks GPUs for workers that --device cpu keeps on the CPU; leave "
                          "--num-gpus out (or use --device cuda)")


def worker_plan(device: str, num_gpus: float | None, cluster_gpus: float, num_workers: int | None,
                cluster_cpus: float) -> tuple[float, int, str, int]:
    """``(GPUs per actor, actors, actor device, torch threads per actor)`` for ``--device`` on this cluster.

    ``cpu``: CPU actors that ask Ray for no GPU; ``cuda``: GPU actors (an error on a cluster without GPUs);
    ``auto``: GPU actors when the cluster has GPUs, else CPU actors.
    """
    from embedkit.errors import ConfigError

    if device == "cpu":
        per_actor = 0.0
    else:
        per_actor = float(num_gpus) if num_gpus is not None else (1.0 if cluster_gpus >= 1 else 0.0)
        if per_actor > cluster_gpus:
            raise ConfigError(f"--num-gpus {per_actor:g} per worker, but the cluster has {cluster_gpus:g} GPUs; "
                              "use --num-gpus 0 (or --device cpu) for CPU workers")
        if device == "cuda" and not per_actor:
            raise ConfigError(f"--device cuda, but {'--num-gpus 0 was given' if cluster_gpus else 'the Ray cluster has no GPUs'}; "
                              "use --device cpu (or auto) for CPU workers")
    actors = int(num_workers or (max(1, int(cluster_gpus // per_actor)) if per_actor else 1))
    # CPU actors: torch uses the cores left to each actor (the decode tasks are light, 0.5 CPU each, and
    # run beside it); GPU actors need one thread to feed the GPU
    threads = 1 if per_actor else max(1, int(cluster_cpus // actors))
    return per_actor, actors, ("cpu" if not per_actor else device), threads


def run_ray(job, *, backbone: str, layer, weights: str, device: str, precision: str, spatial: str,
            preprocessing: dict, batch_size: int | None, address: str | None, num_workers: int | None,
            num_gpus: float | None, progress: bool, times=None) -> tuple[int, int]:
    """Embed every pending shard of ``job`` on Ray with actors on ``device`` (see :func:`worker_plan`);
    ``preprocessing`` is the driver's backbone's. Returns ``(embedded, skipped)``; ``times`` (a
    :class:`~embedkit.runner.stages.StageTimes`) receives the workers' decode and forward seconds and the
    driver's write seconds."""
    from embedkit.runner.stages import StageTimes

    import pyarrow as pa
    from tqdm.auto import tqdm

    from embedkit.device import optional_import
    from embedkit.io.loader import default_batch_size

    ray = optional_import("ray", "--engine ray")
    optional_import("ray.data", "--engine ray")
    pending = job.pending()
    if not pending:
        return 0, 0
    tables = [job.shard_items(s) for s in pending]
    sizes = [t.num_rows for t in tables]
    queue = pa.concat_tables([t.append_column("shard", pa.array([s] * t.num_rows, pa.int64()))
                              for s, t in zip(pending, tables)])
    if "path_bytes" in queue.column_names and queue.column("path_bytes").null_count == queue.num_rows:
        queue = queue.drop_columns(["path_bytes"])  # every name is UTF-8: nothing exact to carry
    if not log.isEnabledFor(logging.DEBUG):  # Ray Data's INFO lines would bury the one progress bar
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.WARNING)
    started = _init_ray(ray, address)
    try:
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.execution_options.preserve_order = True  # rows reach the writer in shard order
        ctx.enable_progress_bars = False  # one bar: ours, below
        resources = ray.cluster_resources()
        per_actor, actors, actor_device, threads = worker_plan(device, num_gpus, float(resources.get("GPU", 0)),
                                                               num_workers, float(resources.get("CPU", 1)))
        bs = int(batch_size or default_batch_size("cuda" if per_actor else "cpu"))
        ds = ray.data.from_arrow(queue)
        ds = ds.map_batches(decode_batch, fn_kwargs={"preprocessing": preprocessing}, batch_size=bs,
                            batch_format="numpy", num_cpus=0.5)  # plain tasks (Ray retries one), not fused
        ds = ds.map_batches(EmbedActor, fn_constructor_args=(backbone, layer, weights, actor_device, precision,
                                                             spatial, job.identity, threads),
                            batch_size=bs, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
                            num_gpus=per_actor, num_cpus=0 if per_actor else 1)
        return _write_stream(ds, job, pending, sizes, bs, progress, tqdm, times if times is not None else StageTimes())
    finally:
        if started:
            ray.shutdown()


def _write_stream(ds, job, pending, sizes, bs, progress, tqdm, times) -> tuple[int, int]:
    """The writer: cut the ordered stream of rows into shards and commit each with the store writer."""
    bar = tqdm(total=job.files, initial=job.files - sum(sizes), unit="img", disable=not progress,
               desc="embed (ray)")
    stream = iter(ds.iter_batches(batch_size=bs, batch_format="numpy"))
    try:
        return _consume(stream, job, pending, sizes, bar, times)
    finally:
        # a writer that stops (a kill, a full disk) shuts the pipeline down now, freeing its actors' CPUs
        # and GPUs for the next job, instead of leaving it to the garbage collector
        close = getattr(stream, "close", None)
        if close is not None:
            close()
        bar.close()


def _consume(stream, job, pending, sizes, bar, times) -> tuple[int, int]:
    from embedkit.runner.job import ShardBuffer

    k, seen, n_emb, n_skip, shard = 0, 0, 0, 0, ShardBuffer(job)
    for batch in stream:
        times.decode += float(np.sum(batch["decode_s"]))
        times.forward += float(np.sum(batch["forward_s"]))
        with times.timing("write"):
            k, seen, n_emb, n_skip = _write_rows(batch, pending, sizes, shard, k, seen, n_emb, n_skip)
        bar.update(len(batch["path"]))
    return n_emb, n_skip


def _write_rows(batch, pending, sizes, shard, k, seen, n_emb, n_skip):
    """Add one batch's rows to the shard in progress, committing each shard whose last row it holds."""
    for i in range(len(batch["path"])):
        if int(batch["shard"][i]) != pending[k]:
            raise RuntimeError("rows arrived out of shard order")  # preserve_order guarantees this
        path = _exact(batch["path"][i], batch["path_bytes"][i] if "path_bytes" in batch else None)
        if batch["ok"][i]:
            shard.add(batch["code"][i:i + 1], [(path, str(batch["label"][i] or ""), int(batch["width"][i]),
                                                 int(batch["height"][i]), int(batch["bytes"][i]),
                                                 str(batch["sha1"][i]))])
        else:
            shard.skip(path, str(batch["reason"][i]))
        seen += 1
        if seen == sizes[k]:
            rows, skipped = shard.commit(pending[k], sizes[k])
            n_emb, n_skip = n_emb + rows, n_skip + skipped
            k, seen = k + 1, 0
    return k, seen, n_emb, n_skip
