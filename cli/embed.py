"""`embedkit embed IMAGES -o codes/`: images to a sharded code store, on this machine or on a Ray cluster."""

from __future__ import annotations

import click

from embedkit.cli.options import (
    backbone_options, batch_size_option, device_option, overwrite_option, verbosity_options, workers_option,
)
from embedkit.defaults import DECODES, ENGINES, PRECISIONS
from embedkit.defaults import SPATIAL_REDUCTIONS as SPATIAL
from embedkit.store.layout import DTYPES


@click.command(name="embed")
@click.argument("source", type=click.Path(exists=True))
@click.option("-o", "--out", required=True, type=click.Path(),
              help="Store folder to write (meta.json, shards/, items/, skipped/, skipped.csv).")
@backbone_options
@device_option
@batch_size_option
@workers_option
@click.option("--micro-batch", type=click.IntRange(min=1), default=None,
              help="Rows per forward call (default 8 on CPU, the whole batch on CUDA; halves on CUDA out-of-memory).")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True, help="Stored code dtype.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="Compute precision; auto = bf16/fp16 autocast on CUDA, fp32 on CPU.")
@click.option("--spatial", type=click.Choice(SPATIAL), default="avg", show_default=True,
              help="How a spatial (conv) or token (ViT) layer becomes a vector: avg/max pool (patch tokens only), cls = the class token, flatten.")
@click.option("--l2", "l2_normalize", is_flag=True, help="L2-normalise the stored codes.")
@click.option("--pca-whiten", type=click.IntRange(min=1), default=None,
              help="PCA-whiten the codes to this many dims (raw codes are kept).")
@click.option("--decode", type=click.Choice(DECODES), default="cpu", show_default=True,
              help="device: decode JPEGs with torchvision.io on the compute device (nvJPEG on CUDA).")
@click.option("--shard-rows", type=click.IntRange(min=1), default=None,
              help="Images per shard, the unit of commit and resume (default: from the number of files, 128-8192).")
@click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
              help="local: this process and its loader workers; ray: decoding tasks and one model actor per GPU "
                   "(or CPU actors) on a Ray cluster (pip install \"embedkit[ray]\").")
@click.option("--ray-address", default=None,
              help="With --engine ray: 'auto' joins a running cluster (ray start --head), an address joins that one; "
                   "default: start a local cluster.")
@click.option("--num-workers", type=click.IntRange(min=1), default=None,
              help="With --engine ray: model actors (default: one per GPU, else 1).")
@click.option("--num-gpus", type=click.FloatRange(min=0), default=None,
              help="With --engine ray: GPUs per model actor (default 1 where the cluster has GPUs, else 0).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in OUT (redoes only unfinished shards).")
@click.option("--append", is_flag=True, help="Add only images not yet in the store at OUT.")
@overwrite_option
@verbosity_options
def command(source, out, backbone, layer, weights, device, batch_size, workers, micro_batch, dtype, precision,
            spatial, l2_normalize, pca_whiten, decode, shard_rows, engine, ray_address, num_workers, num_gpus,
            resume, append, overwrite, quiet, verbose):
    """Embed the images of SOURCE (folder, .csv manifest path[,label], or list file) into a code store.

    Sub-folders of a folder are the labels. Unreadable images are skipped and listed in skipped.csv.
    """
    from embedkit.runner.embed import embed

    res = embed(source, out, backbone, layer=layer, weights=weights, device=device, precision=precision,
                spatial=spatial, micro_batch=micro_batch, batch_size=batch_size, workers=workers, dtype=dtype, l2_normalize=l2_normalize, pca_whiten=pca_whiten,
                decode=decode, shard_rows=shard_rows, resume=resume, append=append, overwrite=overwrite,
                engine=engine, ray_address=ray_address, num_workers=num_workers, num_gpus=num_gpus,
                progress=not quiet)
    click.echo(res.summary())
    if res.embedded + res.skipped:
        click.echo(res.stages.line())
    skipped = res.store.skipped
    for row in skipped[:10]:
        click.echo(f"  skipped {row['path']!r}: {row['reason']}")
    if len(skipped) > 10:
        click.echo(f"  ... {len(skipped) - 10} more in {res.store.path / 'skipped.csv'}")
