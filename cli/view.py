"""`embedkit view CODES [CODES2] -o map.png|map.html`: 2-D maps of code stores, side by side, with how well classes group."""

from __future__ import annotations


import click

from embedkit.cli.options import device_option, overwrite_option, seed_option, verbosity_options
from embedkit.view.pipeline import COLOR_BY, DEFAULT_MAX_DRAW, METRICS_POINTS
from embedkit.view.project import BACKEND_CHOICES, DEFAULT_MAX_POINTS, DEFAULT_REST, METHODS, REST_CHOICES


@click.command(name="view")
@click.argument("codes", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False),
              help="map.png (figure) or map.html (interactive page, self-contained).")
@click.option("--method", type=click.Choice(METHODS), default=None,
              help="2-D projection (default: umap; pca where umap-learn is not installed, with a note).")
@click.option("--backend", type=click.Choice(BACKEND_CHOICES), default="auto", show_default=True,
              help="auto (cuML on CUDA machines, unless --device cpu), cuml, umap-learn (umap), opentsne or "
                   "sklearn (tsne), sklearn (pca).")
@device_option
@click.option("--thumbnails", type=click.IntRange(min=0), default=None,
              help="Images drawn at their points (PNG, default 0) or shown on hover (HTML, default 300), per store.")
@seed_option
@click.option("--max-points", type=click.IntRange(min=3), default=None,
              help="Fit the projection on at most this many codes (a seeded sample above it). Default: "
                   + ", ".join(f"{v} {k}" for k, v in DEFAULT_MAX_POINTS.items()) + ".")
@click.option("--rest", type=click.Choice(REST_CHOICES), default=None,
              help="Codes outside the fit sample: 'transform' places them on the fitted map (in chunks, bounded "
                   "memory), 'drop' projects the sample only. Default: "
                   + ", ".join(f"{v} ({k})" for k, v in DEFAULT_REST.items()) + "; PCA always transforms.")
@click.option("--max-draw", type=click.IntRange(min=1), default=None,
              help="Draw at most this many points per store (a seeded sample of the projected ones). Default: "
                   + ", ".join(f"{v} ({k[1:]})" for k, v in DEFAULT_MAX_DRAW.items()) + ".")
@click.option("--metrics-points", type=click.IntRange(min=3), default=METRICS_POINTS, show_default=True,
              help="Silhouette and 5-NN accuracy are computed on a seeded sample of at most this many labelled codes.")
@click.option("--pca-dims", type=click.IntRange(min=2), default=50, show_default=True,
              help="Reduce wider codes to this many PCA dims before UMAP/t-SNE.")
@click.option("--color-by", type=click.Choice(COLOR_BY), default="label", show_default=True,
              help="Colour points by class label, by design (file name), or not at all.")
@click.option("--split-json", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A fine-tuning run's split.json: also report silhouette / 5-NN on its test images only (default: "
                   "the split.json next to the fine-tuned weights the codes were made with, when there is one).")
@click.option("--reuse", is_flag=True,
              help="Redraw from the saved projection of this method (<out stem>.proj/projection-METHOD/).")
@overwrite_option
@click.option("--proj-dir", type=click.Path(file_okay=False), default=None,
              help="Where the projection-METHOD/ folders go (default: <out stem>.proj/ next to OUT).")
@click.option("--title", default=None, help="Figure title.")
@verbosity_options
def command(codes, out, method, backend, device, thumbnails, seed, max_points, rest, max_draw, metrics_points,
            pca_dims, color_by, split_json, reuse, overwrite, proj_dir, title, quiet, verbose):
    """Project the code store CODES (and CODES2... to compare, side by side) to 2-D and draw it.

    Prints the silhouette score and 5-NN leave-one-out accuracy of each store's codes
    (by label, on the codes themselves): higher means classes group better. With a
    fine-tuning split (--split-json, or found next to the weights) the same figures
    are also given on the test images only, which the network was not trained on.
    """
    from embedkit.view.pipeline import view

    res = view(list(codes), out, method=method, backend=backend, seed=seed, max_points=max_points,
               pca_dims=pca_dims, thumbnails=thumbnails, color_by=color_by, reuse=reuse, proj_dir=proj_dir,
               title=title, progress=not quiet, device=device, overwrite=overwrite, rest=rest, max_draw=max_draw,
               metrics_points=metrics_points, split_json=split_json)
    click.echo(res.summary())
