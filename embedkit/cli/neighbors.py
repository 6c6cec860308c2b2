"""`embedkit neighbors QUERIES... --codes codes/`: nearest stored images of query images, or near-duplicates."""

from __future__ import annotations

import time
from pathlib import Path

import click

from embedkit.atomic import write_csv_atomic
from embedkit.cli.options import batch_size_option, device_option, verbosity_options, workers_option
from embedkit.errors import ConfigError, DataError
from embedkit.retrieve.cache import cached_index as _cached_index
from embedkit.retrieve.common import BACKENDS, KINDS, METRICS
from embedkit.retrieve.queries import check_embeddable, collect_queries, embed_queries

__all__ = ["command", "cached_index", "collect_queries"]

DEFAULT_COSINE_THRESHOLD = 0.05


def _note(message: str) -> None:
    click.echo(f"note: {message}", err=True)


def cached_index(store, metric: str, kind: str, backend: str, rebuild: bool = False, progress: bool = True,
                 device: str = "auto"):
    """The library's :func:`embedkit.retrieve.cache.cached_index`, with its notes printed as ``note:`` lines."""
    return _cached_index(store, metric, kind, backend, rebuild=rebuild, progress=progress, device=device, note=_note)


@click.command(name="neighbors")
@click.argument("queries", nargs=-1, type=click.Path())
@click.option("--codes", "codes_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Code store folder (from `embedkit embed`).")
@click.option("-k", "--top-k", "k", type=click.IntRange(min=1), default=10, show_default=True,
              help="Neighbours listed per query (closest first).")
@click.option("--metric", type=click.Choice(METRICS), default="cosine", show_default=True,
              help="cosine: 1 - cos; l2: squared Euclidean; ip: -inner product (smaller is closer for all).")
@click.option("--kind", type=click.Choice(KINDS), default="auto", show_default=True,
              help="flat = exact; ivf / hnsw = approximate; auto = flat up to 200k codes, IVF beyond.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="Search library; auto = GPU FAISS when present, torch on CUDA without it, else CPU FAISS.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), default=None, help="Write a thumbnail gallery here.")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False), default=None, help="Write the results as CSV here.")
@click.option("--dedupe", is_flag=True, help="List groups of near-duplicate images of the store instead (no QUERIES).")
@click.option("--threshold", type=float, default=None,
              help=f"--dedupe: largest distance of a near-duplicate pair (default {DEFAULT_COSINE_THRESHOLD} for cosine; required otherwise).")
@click.option("--rebuild", is_flag=True, help="Rebuild the cached index in CODES/index/ even if it is up to date.")
@device_option
@workers_option
@batch_size_option
@verbosity_options
def command(queries, codes_dir, k, metric, kind, backend, html_out, csv_out, dedupe, threshold, rebuild, device,
            quiet, verbose=False, workers=None, batch_size=None):
    """Print the stored images nearest to each query image (files or folders of images), closest first.

    Queries are embedded with the store's backbone, layer and post-processing. Unreadable query images are
    listed and skipped. With --dedupe, list groups of store images closer than --threshold to each other.
    """
    from embedkit.store.codestore import CodeStore

    t0 = time.perf_counter()
    store = CodeStore.open(codes_dir)
    if dedupe:
        if queries:
            raise ConfigError("--dedupe looks at the whole store and takes no QUERIES; drop them or drop --dedupe")
        return _dedupe(store, metric, kind, backend, threshold, rebuild, html_out, csv_out, quiet, t0, device)
    if threshold is not None:
        raise ConfigError("--threshold only applies with --dedupe")
    if not queries:
        raise ConfigError("give at least one query image or folder of images (or --dedupe)")
    if k > len(store):
        raise ConfigError(f"-k {k} is larger than the {len(store)} images in store {codes_dir}; use -k {len(store)} or less")
    check_embeddable(store)  # before any image is read: a store of imported codes cannot embed queries
    paths, skipped = collect_queries(queries)
    codes, paths, bad = embed_queries(store, paths, device=device, workers=workers, batch_size=batch_size,
                                      progress=not quiet)
    skipped += bad
    for p, reason in skipped:
        click.echo(f"skipped query {p}: {reason}", err=True)
    if codes is None:
        raise DataError(f"none of the {len(skipped)} queries could be read as an image (reasons above)")
    index, how = cached_index(store, metric, kind, backend, rebuild, progress=not quiet, device=device)
    D, ids = index.search(codes, k)
    labels = store.labels
    rows, sections = [], []
    for qi, qpath in enumerate(paths):
        click.echo(f"query {qi + 1}/{len(paths)}: {qpath}")
        items = [{"path": qpath, "caption": "query\n" + Path(qpath).name}]
        for rank, (d, r) in enumerate(zip(D[qi], ids[qi]), 1):
            if r < 0:
                continue
            p, lab = index.paths_[r], labels[r]
            click.echo(f"  {rank:3d}  {d:.4f}  {p}" + (f"  [{lab}]" if lab else ""))
            rows.append([qpath, rank, p, lab, f"{d:.6g}"])
            items.append({"path": p, "caption": f"#{rank} d={d:.4f}\n{lab}\n{Path(p).name}"})
        sections.append({"title": f"{Path(qpath).name}: {k} nearest ({metric})", "items": items})
    where = _outputs(html_out, csv_out, f"neighbors in {store.path}", sections,
                     ("query", "rank", "path", "label", "distance"), rows)
    dt = time.perf_counter() - t0
    click.echo(f"{len(paths)} quer{'y' if len(paths) == 1 else 'ies'} ({len(skipped)} skipped) x {k} neighbours from {index.describe()} "
               f"[{how}] in {dt:.1f}s{where}")


def _outputs(html_out, csv_out, title, sections, header, rows) -> str:
    where = ""
    if html_out:
        from embedkit.render.gallery import write_gallery

        write_gallery(html_out, title, sections)
        where += f"; html -> {html_out}"
    if csv_out:
        write_csv_atomic(csv_out, header, rows)
        where += f"; csv -> {csv_out}"
    return where


def _dedupe(store, metric, kind, backend, threshold, rebuild, html_out, csv_out, quiet, t0, device):
    from embedkit.retrieve.dedupe import near_duplicate_groups

    if threshold is None:
        if metric != "cosine":
            raise ConfigError(f"--dedupe with --metric {metric} needs --threshold (a {metric} distance); "
                              f"or use --metric cosine (default threshold {DEFAULT_COSINE_THRESHOLD})")
        threshold = DEFAULT_COSINE_THRESHOLD
    index, how = cached_index(store, metric, kind, backend, rebuild, progress=not quiet, device=device)
    groups = near_duplicate_groups(index, store, threshold, progress=not quiet)  # streamed: never N x N
    labels = store.labels
    rows, sections = [], []
    for gi, g in enumerate(groups, 1):
        click.echo(f"group {gi}: {len(g.rows)} images, max linking distance {g.max_distance:.4f}")
        items = []
        for r in g.rows:
            p = index.paths_[r]
            click.echo(f"  {p}" + (f"  [{labels[r]}]" if labels[r] else ""))
            rows.append([gi, p, labels[r]])
            items.append({"path": p, "caption": f"{labels[r]}\n{Path(p).name}"})
        sections.append({"title": f"group {gi}: {len(g.rows)} images (max distance {g.max_distance:.4f})", "items": items})
    where = _outputs(html_out, csv_out, f"near-duplicates in {store.path}", sections, ("group", "path", "label"), rows)
    n_in = sum(len(g.rows) for g in groups)
    click.echo(f"{len(groups)} near-duplicate groups ({n_in} images) under {metric} distance {threshold:g} among "
               f"{len(store)} codes, {index.describe()} [{how}], in {time.perf_counter() - t0:.1f}s{where}")
