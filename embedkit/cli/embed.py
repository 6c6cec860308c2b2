"""`embedkit embed IMAGES -o codes/`: images to a memory-mapped code store."""

from __future__ import annotations

import click

from embedkit.cli.options import backbone_options, device_option
from embedkit.runner.local import embed
from embedkit.store.codestore import DTYPES


@click.command(name="embed")
@click.argument("source", type=click.Path(exists=True))
@click.option("-o", "--out", required=True, type=click.Path(), help="Store folder to write (codes.npy, items.csv, meta.json, skipped.csv).")
@backbone_options
@device_option
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Images per batch (default 32 on CPU, 128 on CUDA; halves on CUDA OOM).")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="Decoding processes (default: half the cores).")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True, help="Stored code dtype.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True,
              help="Compute precision; auto = bf16/fp16 autocast on CUDA, fp32 on CPU.")
@click.option("--spatial", type=click.Choice(["avg", "max", "flatten"]), default="avg", show_default=True,
              help="How a spatial (conv) layer becomes a vector.")
@click.option("--l2", "l2_normalize", is_flag=True, help="L2-normalise the stored codes.")
@click.option("--pca-whiten", type=click.IntRange(min=1), default=None, help="PCA-whiten the codes to this many dims (raw codes are kept).")
@click.option("--decode", type=click.Choice(["cpu", "device"]), default="cpu", show_default=True,
              help="device: decode JPEGs with torchvision.io on the compute device (nvJPEG on CUDA).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in OUT.")
@click.option("--append", is_flag=True, help="Add only images not yet in the store at OUT.")
@click.option("--overwrite", is_flag=True, help="Replace whatever is at OUT.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(source, out, backbone, layer, weights, device, batch_size, workers, dtype, precision, spatial,
            l2_normalize, pca_whiten, decode, resume, append, overwrite, quiet):
    """Embed the images of SOURCE (folder, .csv manifest path[,label], or list file) into a code store.

    Sub-folders of a folder are the labels. Unreadable images are skipped and listed in skipped.csv.
    """
    res = embed(source, out, backbone, layer, weights, device=device, batch_size=batch_size, workers=workers,
                dtype=dtype, precision=precision, spatial=spatial, l2_normalize=l2_normalize, pca_whiten=pca_whiten,
                resume=resume, append=append, overwrite=overwrite, progress=not quiet, decode=decode)
    click.echo(res.summary())
    for row in res.store.skipped[:10]:
        click.echo(f"  skipped {row['path']}: {row['reason']}")
    if len(res.store.skipped) > 10:
        click.echo(f"  ... {len(res.store.skipped) - 10} more in {res.store.path / 'skipped.csv'}")
