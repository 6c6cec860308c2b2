"""`embedkit view CODES [CODES2] -o map.png|map.html`: 2-D maps of code stores, side by side, with how well classes group."""

from __future__ import annotations

import click

from embedkit.view.pipeline import COLOR_BY
from embedkit.view.project import METHODS


@click.command(name="view")
@click.argument("codes", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False),
              help="map.png (figure) or map.html (interactive page, self-contained).")
@click.option("--method", type=click.Choice(METHODS), default="umap", show_default=True, help="2-D projection.")
@click.option("--backend", default="auto", show_default=True,
              help="auto (cuML on CUDA machines), cuml, umap-learn (umap), opentsne or sklearn (tsne), sklearn (pca).")
@click.option("--thumbnails", type=click.IntRange(min=0), default=None,
              help="Images drawn at their points (PNG, default 0) or shown on hover (HTML, default 300), per store.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of sampling and projection.")
@click.option("--max-points", type=click.IntRange(min=3), default=None,
              help="Project at most this many codes (a seeded sample above it; PCA: fit on the sample, apply to all). "
                   "Default: 200000 umap/pca, 50000 tsne.")
@click.option("--pca-dims", type=click.IntRange(min=2), default=50, show_default=True,
              help="Reduce wider codes to this many PCA dims before UMAP/t-SNE.")
@click.option("--color-by", type=click.Choice(COLOR_BY), default="label", show_default=True,
              help="Colour points by class label, by design (file name), or not at all.")
@click.option("--reuse", is_flag=True, help="Redraw from the saved projection (<out>.proj/) instead of recomputing.")
@click.option("--proj-dir", type=click.Path(file_okay=False), default=None,
              help="Where proj.npy + proj.json go (default: <out stem>.proj/ next to OUT).")
@click.option("--title", default=None, help="Figure title.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(codes, out, method, backend, thumbnails, seed, max_points, pca_dims, color_by, reuse, proj_dir, title,
            quiet):
    """Project the code store CODES (and CODES2... to compare, side by side) to 2-D and draw it.

    Prints the silhouette score and 5-NN leave-one-out accuracy of each store's codes
    (by label, on the codes themselves): higher means classes group better.
    """
    from embedkit.view.project import view

    res = view(list(codes), out, method=method, backend=backend, seed=seed, max_points=max_points,
               pca_dims=pca_dims, thumbnails=thumbnails, color_by=color_by, reuse=reuse, proj_dir=proj_dir,
               title=title, progress=not quiet)
    click.echo(res.summary())
