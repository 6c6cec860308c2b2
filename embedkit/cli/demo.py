"""`embedkit demo`: the whole pipeline on the bundled demo set (or any labelled folder), in one command.

embed -> classify train (grid search, test report) -> view (t-SNE map) -> neighbors (gallery),
each step printing its own summary; outputs land in one folder.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from embedkit.cli.options import device_option
from embedkit.errors import ConfigError


@click.command(name="demo")
@click.argument("source", type=click.Path(), default="demo/images")
@click.option("-o", "--out", type=click.Path(file_okay=False), default="demo-out", show_default=True,
              help="Folder for the store, model, map and gallery.")
@click.option("--backbone", default="efficientnet_lite0", show_default=True, help="Backbone to embed with.")
@device_option
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
def command(ctx, source, out, backbone, device, quiet):
    """Run the main job on SOURCE (default: the demo images shipped in demo/images).

    Embeds the images, trains and tests an SVM on the codes, draws a t-SNE map and writes a
    nearest-neighbour gallery for one image per class. Re-running reuses the store.
    """
    from embedkit.classify.train import train
    from embedkit.cli.neighbors import command as neighbors
    from embedkit.runner.embed import embed
    from embedkit.store.codestore import CodeStore
    from embedkit.view.project import view

    src = Path(source)
    if not src.is_dir():
        raise ConfigError(f"demo images {str(src)!r} not found; run from the embedkit checkout (demo/images) "
                          "or give a folder with one sub-folder per class")
    t0 = time.perf_counter()
    out = Path(out)
    codes = out / "codes"
    click.echo(f"[1/4] embed {src} with {backbone}")
    exists = (codes / "meta.json").exists()
    res = embed(src, codes, backbone, device=device, append=exists, resume=(codes / ".work").exists(),
                progress=not quiet)
    click.echo(res.summary())
    store = CodeStore.open(codes)
    click.echo("[2/4] classify: SVM grid search (3-fold CV) on train+val, report on test")
    tr = train(store, out / "model", device=device, progress=not quiet)
    click.echo(tr.summary())
    click.echo("[3/4] view: t-SNE map of the codes")
    vr = view([store], out / "map.png", method="tsne", seed=0, thumbnails=40, progress=not quiet)
    click.echo(vr.summary())
    click.echo("[4/4] neighbors: the 8 nearest images to one image per class")
    first = {}
    for p, lab in zip(store.paths, store.labels):
        first.setdefault(lab, p)
    queries = tuple(list(first.values())[:4])
    ctx.invoke(neighbors, queries=queries, codes_dir=str(codes), k=8, html_out=str(out / "neighbors.html"),
               device=device, quiet=quiet)
    click.echo(f"demo done in {time.perf_counter() - t0:.1f}s: store {codes}, model and report {out / 'model'} "
               f"(report.txt, confusion.png, failures.html), map {out / 'map.png'}, gallery {out / 'neighbors.html'}")
