"""`embedkit neighbors STORE QUERIES...`: nearest stored images of query images, or near-duplicates (--dedupe).

The decisions (which algorithm, which store row a query is, sha1 checks of the gallery) are the library's
:func:`embedkit.neighbors` / :func:`embedkit.dedupe`; this module parses options and prints the result.
"""

from __future__ import annotations

import click

from embedkit.cli.options import batch_size_option, device_option, verbosity_options, workers_option
from embedkit.cli.text import printable
from embedkit.errors import ConfigError
from embedkit.retrieve.constants import BACKENDS, DEFAULT_COSINE_THRESHOLD, KINDS, METRICS

__all__ = ["command", "echo_note", "print_dedupe", "print_neighbors"]

# The library pieces (NumPy, FAISS, scikit-learn) are imported inside the functions that use them, not
# when the CLI starts: `embedkit --help` and TAB completion stay fast.


def echo_note(message: str) -> None:
    """A library note (cache rebuilt, CPU fall-back) as a ``note:`` line on stderr."""
    click.echo(f"note: {message}", err=True)


@click.command(name="neighbors")
@click.argument("store", required=False, type=click.Path())
@click.argument("queries", nargs=-1, type=click.Path())
@click.option("--codes", "codes_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="Deprecated: give the store folder as the first argument instead.")
@click.option("-k", "--top-k", "k", type=click.IntRange(min=1), default=10, show_default=True,
              help="Neighbours listed per query (closest first).")
@click.option("--metric", type=click.Choice(METRICS), default="cosine", show_default=True,
              help="cosine: 1 - cos; l2: squared Euclidean; ip: -inner product (smaller is closer for all).")
@click.option("--kind", type=click.Choice(KINDS), default="auto", show_default=True,
              help="flat = exact; ivf / hnsw = approximate; auto = flat up to 200k codes, IVF beyond (--dedupe: IVF with 8-bit codes, pairs re-checked exactly).")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="Search library; auto = GPU FAISS when present, torch on CUDA without it, else CPU FAISS.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), default=None, help="Write a thumbnail gallery here.")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False), default=None, help="Write the results as CSV here.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write the results as JSON here (per query its neighbours; per group its images).")
@click.option("--parquet", "parquet_out", type=click.Path(dir_okay=False), default=None,
              help="Write the results as a Parquet table here (the CSV's columns, typed).")
@click.option("--dedupe", is_flag=True, help="List groups of near-duplicate images of the store instead (no QUERIES).")
@click.option("--threshold", type=float, default=None,
              help=f"--dedupe: largest distance of a near-duplicate pair (default {DEFAULT_COSINE_THRESHOLD} for cosine; required otherwise).")
@click.option("--rebuild", is_flag=True, help="Rebuild the cached index in STORE/index/ even if it is up to date.")
@click.option("--exclude-self", is_flag=True,
              help="Leave out the query image itself when it is in the store (still -k results).")
@device_option
@workers_option
@batch_size_option
@verbosity_options
def command(store, queries, codes_dir, k, metric, kind, backend, html_out, csv_out, json_out, parquet_out, dedupe,
            threshold, rebuild, device, quiet, verbose=False, workers=None, batch_size=None, exclude_self=False):
    """Print the images of STORE nearest to each query image (files or folders of images), closest first.

    Queries are embedded with the store's backbone, layer and post-processing. Unreadable query images are
    listed and skipped. A query that is itself in the store shows its label; results with the same label are
    marked (green in --html). With --dedupe, list groups of store images closer than --threshold to each other.

    The --html gallery inlines a store image only if the file still has the sha1 recorded at embed time
    (else a placeholder); the --csv file is safe to open in a spreadsheet (no text starts a formula).
    """
    import embedkit

    if codes_dir is not None:
        echo_note("--codes is deprecated; give the store first: embedkit neighbors STORE QUERY...")
        store, queries = codes_dir, ((store,) if store else ()) + tuple(queries)
    elif store is None:
        raise ConfigError("give the code store folder first: embedkit neighbors STORE QUERY... (or STORE --dedupe)")
    outputs = {"html": html_out, "csv": csv_out, "json": json_out, "parquet": parquet_out}
    if dedupe:
        if queries:
            raise ConfigError("--dedupe looks at the whole store and takes no QUERIES; drop them or drop --dedupe")
        res = embedkit.dedupe(store, threshold, metric=metric, kind=kind, backend=backend, rebuild=rebuild,
                              device=device, progress=not quiet, note=echo_note)
        print_dedupe(res, res.write(**outputs))
        return
    if threshold is not None:
        raise ConfigError("--threshold only applies with --dedupe")
    res = embedkit.neighbors(store, queries, k, metric=metric, kind=kind, backend=backend, exclude_self=exclude_self,
                             rebuild=rebuild, device=device, workers=workers, batch_size=batch_size,
                             progress=not quiet, note=echo_note)
    print_neighbors(res, res.write(**outputs))


def _where(written: dict) -> str:
    return "".join(f"; {kind} -> {path}" for kind, path in written.items())


def print_neighbors(res, written: dict | None = None) -> None:
    """Print a :class:`~embedkit.retrieve.search.NeighborsResult`: skipped queries, each query's list, a summary."""
    from embedkit.retrieve.search import format_distance

    for p, reason in res.skipped:
        click.echo(f"skipped query {printable(p)}: {printable(reason)}", err=True)
    for qi, q in enumerate(res.queries):
        where_q = f"  [{q.label}]" if q.label else ("" if q.row is not None else "  (not in the store)")
        click.echo(printable(f"query {qi + 1}/{len(res.queries)}: {q.path}{where_q}"))
        for n in q.neighbors:
            click.echo(printable(f"  {n.rank:3d}  {format_distance(n.distance, res.metric)}  {n.path}"
                                 + (f"  [{n.label}]" if n.label else "") + ("  *" if n.same_label else "")))
    nq = len(res.queries)
    click.echo(f"{nq} quer{'y' if nq == 1 else 'ies'} ({len(res.skipped)} skipped) x {res.k} neighbours from "
               f"{res.index} [{res.how}] in {res.seconds:.1f}s{_where(written or {})}")


def print_dedupe(res, written: dict | None = None) -> None:
    """Print a :class:`~embedkit.retrieve.search.DedupeResult`: each group's images, then a summary."""
    from embedkit.retrieve.search import format_distance

    paths, labels = res.store.paths, res.store.labels
    for gi, g in enumerate(res.groups, 1):
        click.echo(f"group {gi}: {len(g.rows)} images, max linking distance {format_distance(g.max_distance, res.metric)}")
        for r in g.rows:
            click.echo(printable(f"  {paths[r]}" + (f"  [{labels[r]}]" if labels[r] else "")))
    n_in = sum(len(g.rows) for g in res.groups)
    click.echo(f"{len(res.groups)} near-duplicate groups ({n_in} images) under {res.metric} distance {res.threshold:g} "
               f"among {len(res.store)} codes, {res.index}, in {res.seconds:.1f}s{_where(written or {})}")
