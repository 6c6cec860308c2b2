"""`embedkit inspect filters|patches`: what a network has learned, before and after fine-tuning."""

from __future__ import annotations

import click

from embedkit.cli.options import (
    backbone_option,
    batch_size_option,
    device_option,
    verbosity_options,
    weights_option,
    workers_option,
)
from embedkit.cli.text import printable

COMPARE_HELP = ("A second set of weights (e.g. run/best.pt from `embedkit finetune`) drawn beside --weights, "
                "same layer and images.")


@click.group(name="inspect")
def command():
    """See what a network has learned: its filters and its top-9 activating patches."""


@command.command(name="filters")
@backbone_option
@weights_option
@click.option("--layer", default=None,
              help="A later convolution (module name, e.g. features.5 or blocks.1.0.conv_pw), drawn as per-channel "
                   "mean images; default: the first convolution as RGB filters.")
@click.option("--compare-weights", default=None, help=COMPARE_HELP)
@click.option("--max-filters", type=click.IntRange(min=1), default=256, show_default=True,
              help="Draw at most this many filters per network.")
@click.option("--cell", type=click.IntRange(min=4), default=24, show_default=True, help="Pixels per filter.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="PNG file to write.")
@verbosity_options
def filters_cmd(backbone, weights, layer, compare_weights, max_filters, cell, out, quiet, verbose):
    """Draw a backbone's first-layer filters (or a later conv layer's) as a normalised grid."""
    from embedkit.inspect.filters import inspect_filters

    res = inspect_filters(backbone, out, weights=weights, layer=layer, compare_weights=compare_weights,
                          max_filters=max_filters, cell=cell)
    click.echo(res.summary())


@command.command(name="patches")
@click.argument("source", type=click.Path(exists=True))
@backbone_option
@weights_option
@click.option("--layer", required=True,
              help="Spatial layer to inspect: a module name (features.14, blocks.2, layer2) or a graph node.")
@click.option("--channels", default="16", show_default=True,
              help="How many channels (those with the highest mean activation), 'all', or indices such as 3,7,12.")
@click.option("--compare-weights", default=None, help=COMPARE_HELP)
@click.option("--cell", type=click.IntRange(min=8), default=64, show_default=True,
              help="Pixels per patch in the PNG grid.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False),
              help="patches.html; the PNG grid is written beside it (patches.png).")
@device_option
@batch_size_option
@workers_option
@verbosity_options
def patches_cmd(source, backbone, weights, layer, channels, compare_weights, cell, out, device, batch_size, workers,
                quiet, verbose):
    """Top-9 image patches of each channel of --layer over the images of SOURCE.

    SOURCE is a folder, a .csv manifest, a list file or a code store (its images are read again).
    The images go through the network once; unreadable ones are skipped and listed.
    """
    from embedkit.inspect.patches import inspect_patches

    run = inspect_patches(source, out, backbone=backbone, layer=layer, weights=weights,
                          compare_weights=compare_weights, channels=channels, device=device, batch_size=batch_size,
                          workers=workers, progress=not quiet, cell=cell)
    for path, reason in run.skipped[:10]:
        click.echo(f"  skipped {printable(path)}: {printable(reason)}")
    if len(run.skipped) > 10:
        click.echo(f"  ... {len(run.skipped) - 10} more listed in {run.outputs[1]}")
    click.echo(run.summary())
