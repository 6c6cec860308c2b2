"""`embedkit demo`: the whole pipeline on the demo images shipped in the package (or any labelled folder).

embed -> classify train (grid search, test report) -> view (t-SNE map, PNG and interactive HTML) ->
neighbors (gallery), each step printing its own summary; outputs land in one folder. The demo images
(84 emoji illustrations, 12 classes; sources and licences in ``embedkit/data/demo/LICENSE.md``) are
package data, found with :mod:`importlib.resources`, so the command works from any folder.
"""

from __future__ import annotations

import shutil
import time
from contextlib import ExitStack
from importlib import resources
from pathlib import Path

import click

from embedkit import defaults
from embedkit.cli.options import backbone_name, device_option, verbosity_options
from embedkit.errors import ConfigError

DEMO_PACKAGE, DEMO_IMAGES = "embedkit", ("data", "demo", "images")


def demo_images():
    """The shipped demo images folder as an :mod:`importlib.resources` traversable (use with ``as_file``)."""
    res = resources.files(DEMO_PACKAGE)
    for part in DEMO_IMAGES:
        res = res / part
    return res


@click.command(name="demo")
@click.argument("source", type=click.Path(), required=False, default=None)
@click.option("-o", "--out", type=click.Path(file_okay=False), default="demo-out", show_default=True,
              help="Folder for the store, model, maps and gallery.")
@click.option("--backbone", default=defaults.BACKBONE, show_default=True, callback=backbone_name,
              help="Backbone to embed with.")
@device_option
@verbosity_options
def command(source, out, backbone, device, quiet, verbose):
    """Run the whole pipeline on the demo images shipped with embedkit, or on SOURCE.

    With no SOURCE, uses the 84 emoji illustrations (12 classes) installed with the package, from any
    folder. SOURCE is a folder with one sub-folder per class. Steps: embed the images into a code store
    (OUT/codes), train and test an SVM on the codes (OUT/model: report, confusion matrix, failure cases),
    draw a t-SNE map (OUT/map.png and the interactive OUT/map.html), and write a nearest-neighbour gallery
    for one image per class (OUT/neighbors.html). Re-running reuses the store.
    """
    with ExitStack() as stack:
        if source is None:
            src = stack.enter_context(resources.as_file(demo_images()))
            if not Path(src).is_dir():
                raise ConfigError(f"the demo images are missing from this installation (looked in {str(src)!r}); "
                                  "reinstall embedkit, or give a folder with one sub-folder per class as SOURCE")
        else:
            src = Path(source)
            if not src.is_dir():
                raise ConfigError(f"SOURCE {str(src)!r} is not a folder; give a folder with one sub-folder per class, "
                                  "or no SOURCE to use the demo images shipped with embedkit")
        _run(Path(src), Path(out), backbone, device, quiet)


def _run(src: Path, out: Path, backbone, device, quiet):
    from embedkit.classify.train import train
    from embedkit.cli.neighbors import echo_note, print_neighbors
    from embedkit.retrieve.search import neighbors
    from embedkit.runner.embed import embed
    from embedkit.store.codestore import CodeStore
    from embedkit.view.pipeline import view

    t0 = time.perf_counter()
    codes = out / "codes"
    click.echo(f"[1/4] embed {src} with {backbone}")
    exists = (codes / "meta.json").exists()
    res = embed(src, codes, backbone, device=device, append=exists, resume=(codes / ".work").exists(),
                progress=not quiet)
    click.echo(res.summary())
    store = CodeStore.open(codes)
    click.echo("[2/4] classify: SVM grid search (3-fold CV) on train+val, report on test")
    tr = train(store, out / "model", device=device, progress=not quiet, overwrite=True)  # the demo's own folder
    click.echo(tr.summary())
    click.echo("[3/4] view: t-SNE map of the codes (PNG, and an interactive HTML page from the same projection)")
    proj_dir = out / "map.proj"
    shutil.rmtree(proj_dir, ignore_errors=True)  # the demo's own folder: a re-run maps the store as it is now
    vr = view([store], out / "map.png", method="tsne", seed=0, thumbnails=40, proj_dir=proj_dir, progress=not quiet)
    click.echo(vr.summary())
    hr = view([store], out / "map.html", method="tsne", seed=0, proj_dir=proj_dir, reuse=True, progress=not quiet)
    click.echo(hr.summary())
    click.echo("[4/4] neighbors: the 8 nearest images to one image per class (the query itself left out)")
    first = {}
    for p, lab in zip(store.paths, store.labels):
        first.setdefault(lab, p)
    queries = tuple(list(first.values())[:4])
    nr = neighbors(store, queries, 8, exclude_self=True, device=device, progress=not quiet, note=echo_note)
    print_neighbors(nr, nr.write(html=str(out / "neighbors.html")))
    click.echo(f"demo done in {time.perf_counter() - t0:.1f}s: store {codes}, model and report {out / 'model'} "
               f"(report.txt, confusion.png, failures.html), map {out / 'map.png'} and {out / 'map.html'}, "
               f"gallery {out / 'neighbors.html'}")
