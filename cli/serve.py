"""`embedkit serve STORE`: a search service and a browser app over a code store."""

from __future__ import annotations

import click

from embedkit.cli.options import device_option
from embedkit.retrieve.constants import BACKENDS, KINDS, METRICS

__all__ = ["command"]


@click.command(name="serve")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--model", type=click.Path(exists=True, file_okay=False), default=None,
              help="A classifier folder (`embedkit classify train`): predicted labels for uploaded images.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 makes the service reachable from other machines.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.option("--metric", type=click.Choice(METRICS), default="cosine", show_default=True,
              help="Distance of the searches (the index cache is shared with `embedkit neighbors`).")
@click.option("--kind", type=click.Choice(KINDS), default="auto", show_default=True,
              help="flat = exact; ivf / hnsw = approximate; auto = flat up to 200k codes, IVF beyond.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True, help="Search library.")
@click.option("--projection", type=click.Path(exists=True, file_okay=False), default=None,
              help="A saved map of this store (the projection-<method>/ folder `embedkit view` writes); "
                   "default: a PCA map computed at start-up.")
@click.option("--max-points", type=click.IntRange(min=3), default=20_000, show_default=True,
              help="Most points on the map (a seeded sample beyond).")
@device_option
def command(store, model, host, port, metric, kind, backend, projection, max_points, device):
    """Serve STORE: a JSON API (neighbours by row, path or uploaded image; items; thumbnails; the map;
    duplicate groups; predicted labels with --model) and a browser page at http://HOST:PORT/.

    The store, its index (from the cache `embedkit neighbors` uses, built if missing) and the map are loaded
    once. Only files whose bytes still have the sha1 recorded at embed time are shown. Needs the `serve`
    extra: pip install 'embedkit[serve]'.
    """
    from embedkit.serve.app import require_server_packages, run
    from embedkit.serve.service import SearchService

    require_server_packages()  # before the store and the index are loaded
    service = SearchService.open(store, model=model, metric=metric, kind=kind, backend=backend, device=device,
                                 projection=projection, max_points=max_points,
                                 note=lambda m: click.echo(f"note: {m}", err=True))
    info = service.info()
    click.echo(f"serving {info['store']} ({info['count']} x {info['dim']}; {info['index']}; map: {info['map']}, "
               f"{info['map_points']} points" + (f"; model: {len(info['model'])} classes" if info["model"] else "")
               + f") on http://{host}:{port}/  (Ctrl-C stops)", err=True)
    run(service, host=host, port=port)
