"""``embed()``: images to a code store, on the local engine or on Ray. The one entry point of the embed job.

discover -> plan (shards) -> engine (reader -> model -> writer per shard) -> finish (meta.json, the commit).
Each parameter goes to the one piece that uses it: ``batch_size``/``workers``/``decode``
to the loader, ``layer``/``weights``/``device``/``precision``/``spatial`` to the
backbone, ``dtype``/``l2_normalize``/``pca_whiten``/``shard_rows`` to the store.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from embedkit.defaults import BACKBONE, DECODES, ENGINES
from embedkit.errors import ConfigError, invalid
from embedkit.runner.stages import StageTimes


log = logging.getLogger(__name__)


@dataclass
class EmbedResult:
    """What :func:`embed` did: counts, time, throughput, where the store is, and the seconds of each stage
    (``stages``: decode / forward / write, :meth:`StageTimes.line` says which one bounds the run)."""

    store: object  # CodeStore
    embedded: int
    skipped: int
    kept: int
    seconds: float
    resumed: bool = False
    engine: str = "local"
    stages: StageTimes = field(default_factory=StageTimes)

    @property
    def images_per_s(self) -> float:
        return (self.embedded + self.skipped) / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        how = " (resumed)" if self.resumed else ""
        return (f"embedded {self.embedded} images{how} ({self.skipped} skipped, {self.kept} already in the store) in "
                f"{self.seconds:.1f}s, {self.images_per_s:.1f} images/s on {self.engine} -> {self.store.path} "
                f"({len(self.store)} x {self.store.dim} {self.store.meta['dtype']}, {len(self.store.shards)} shards)")


def embed(source: str | os.PathLike | Sequence[str], out: str | os.PathLike, backbone=BACKBONE, *,
          layer: str | None = None, weights: str | None = None, device: str | None = None,
          precision: str | None = None, spatial: str | None = None, micro_batch: int | None = None,
          batch_size: int | None = None, workers: int | None = None, decode: str = "cpu",
          dtype: str = "float32", l2_normalize: bool = False, pca_whiten: int | None = None,
          shard_rows: int | None = None, resume: bool = False, append: bool = False, overwrite: bool = False,
          engine: str = "local", ray_address: str | None = None, num_workers: int | None = None,
          num_gpus: float | None = None, progress: bool = True, on_shard: Callable | None = None):
    """Embed the images of ``source`` (folder, list file, CSV manifest or list of paths) into a store at ``out``.

    ``backbone`` is a registered name or an already built :class:`~embedkit.models.backbone.Backbone`
    (then ``layer``/``weights``/``device``/``precision``/``spatial``/``micro_batch`` must not be given: they
    are the backbone's). ``resume`` continues an interrupted run, ``append`` adds only images not yet in an
    existing store (same backbone/layer), ``overwrite`` starts over. ``engine="ray"`` runs the shards
    on a Ray cluster (``ray_address``: None starts a local one, ``"auto"`` joins a running one).
    ``on_shard(shard_id, rows, skipped)`` is called after each committed shard (local engine).
    Returns an :class:`EmbedResult`.
    """
    from embedkit.device import DEVICE_CHOICES, requested_device, resolve_compute
    from embedkit.runner.job import check_output, prepare

    t0 = time.perf_counter()
    if engine not in ENGINES:
        raise invalid("engine", engine, ENGINES)
    if overwrite and (resume or append):
        raise ConfigError("--overwrite starts the store over and --resume/--append continue it (overwrite=True with "
                          "resume/append=True); give only one of them")
    given = {k: v for k, v in dict(layer=layer, weights=weights, device=device, precision=precision,
                                     spatial=spatial, micro_batch=micro_batch).items() if v is not None}
    if engine == "ray" and micro_batch is not None:
        raise ConfigError("micro_batch (--micro-batch) is not used by engine='ray' (--engine ray); leave it out")
    if decode not in DECODES:  # before it is recorded in the store's identity
        raise invalid("decode", decode, DECODES)
    asked = requested_device(device)
    if asked.split(":")[0] not in DEVICE_CHOICES:
        raise invalid("device", asked, (*DEVICE_CHOICES, "cuda:N"))
    ray_only = [f"{k}={v!r}" for k, v in dict(num_workers=num_workers, num_gpus=num_gpus,
                                               ray_address=ray_address).items() if v is not None]
    if engine != "ray" and ray_only:  # never silently ignored
        raise ConfigError(f"{', '.join(ray_only)}: only used with engine='ray'; add engine='ray' or leave "
                          f"{'it' if len(ray_only) == 1 else 'them'} out")
    # what needs no model is refused before the backbone is built (torch and timm take seconds to import)
    check_output(out, dtype=dtype, pca_whiten=pca_whiten, shard_rows=shard_rows, resume=resume, append=append,
                 overwrite=overwrite)
    from embedkit.models.backbone import Backbone

    if isinstance(backbone, Backbone):
        if given:
            raise ConfigError(f"{', '.join(given)} given with an already built Backbone, which has its own; "
                              "pass a backbone name instead, or build the Backbone with those arguments")
        if engine == "ray":
            raise ConfigError("engine='ray' builds the backbone on each worker: pass the backbone's name, not a "
                              "built Backbone")
        bb = backbone
    elif engine == "ray":
        from embedkit.runner.ray_engine import check_ray_options

        check_ray_options(asked, decode, num_gpus)
        # the driver's backbone, built once on the CPU: preprocessing, code size and identity (workers build theirs)
        bb = Backbone(backbone, layer, weights or "default", device="cpu", precision="fp32", spatial=spatial or "avg")
    else:
        bb = Backbone(backbone, layer, weights or "default", device=resolve_compute(device),
                      precision=precision or "auto", spatial=spatial or "avg", micro_batch=micro_batch)
    identity = {**bb.identity(), "decode": decode}
    if engine == "ray":
        identity.pop("precision")  # the workers' precision, known here only when it does not depend on their GPU
        if precision not in (None, "auto") or asked == "cpu":
            identity["precision"] = precision if precision not in (None, "auto") else "fp32"
    from embedkit.store.lock import FolderLock

    with FolderLock(out, "embed"):
        job, resumed = prepare(source, out, identity, bb.dim, dtype=dtype, l2_normalize=l2_normalize,
                               pca_whiten=pca_whiten, resume=resume, append=append, overwrite=overwrite,
                               shard_rows=shard_rows)
        if resume and not resumed:
            log.warning("nothing to resume in %s: %s", out, "appending to the store" if job.base_shards
                        else "starting a new run")
        times = StageTimes()
        if engine == "ray":
            from embedkit.runner.ray_engine import run_ray

            n_emb, n_skip = run_ray(job, backbone=backbone, layer=layer, weights=weights or "default", device=asked,
                                    precision=precision or "auto", spatial=spatial or "avg",
                                    preprocessing=bb.preprocessing.to_dict(), batch_size=batch_size,
                                    address=ray_address, num_workers=num_workers, num_gpus=num_gpus,
                                    progress=progress, times=times)
        else:
            from embedkit.runner.local import run_local

            n_emb, n_skip = run_local(job, bb, batch_size=batch_size, workers=workers, decode=decode,
                                      progress=progress, on_shard=on_shard, times=times)
        store = job.finish()
    return EmbedResult(store, n_emb, n_skip, job.base_rows, time.perf_counter() - t0, resumed, engine, times)
