"""`embedkit neighbors QUERIES... --codes codes/`: nearest stored images of query images, or near-duplicates."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from embedkit.cli.options import batch_size_option, device_option, verbosity_options, workers_option
from embedkit.errors import ConfigError, DataError
from embedkit.retrieve.constants import BACKENDS, KINDS, METRICS

__all__ = ["command", "cached_index"]

# The library pieces (NumPy, FAISS, scikit-learn) are imported inside the functions that use them, not
# when the CLI starts: `embedkit --help` and TAB completion stay fast.

DEFAULT_COSINE_THRESHOLD = 0.05


def _note(message: str) -> None:
    click.echo(f"note: {message}", err=True)


def format_distance(d, metric: str, digits: int = 4) -> str:
    """``d`` with ``digits`` decimals; a cosine/l2 distance below 0 (float rounding) is 0, and never "-0.0000"."""
    d = float(d)
    if metric != "ip" and d < 0:
        d = 0.0
    text = f"{d:.{digits}f}"
    return f"{0.0:.{digits}f}" if float(text) == 0 else text


def _csv_distance(d, metric: str) -> str:
    d = float(d)
    if metric != "ip" and d < 0:
        d = 0.0
    return f"{d + 0.0:.6g}"  # + 0.0: no "-0"


def _same_file(a: str, b: str) -> bool:
    if a == b:
        return True
    return os.path.basename(a) == os.path.basename(b) and os.path.realpath(a) == os.path.realpath(b)


def _store_rows_of(store, paths) -> dict:
    """Store row of each query path that is itself a stored image (by path; one pass over the paths)."""
    want = {os.path.basename(p): [] for p in paths}
    for r, sp in enumerate(store.paths):
        if os.path.basename(sp) in want:
            want[os.path.basename(sp)].append(r)
    out = {}
    for p in paths:
        for r in want[os.path.basename(p)]:
            if _same_file(p, store.paths[r]):
                out[p] = r
                break
    return out


def cached_index(store, metric: str, kind: str, backend: str, rebuild: bool = False, progress: bool = True,
                 device: str = "auto"):
    """The library's :func:`embedkit.retrieve.cache.cached_index`, with its notes printed as ``note:`` lines."""
    from embedkit.retrieve.cache import cached_index as _cached_index
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
              help="flat = exact; ivf / hnsw = approximate; auto = flat up to 200k codes, IVF beyond (--dedupe: IVF with 8-bit codes, pairs re-checked exactly).")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="Search library; auto = GPU FAISS when present, torch on CUDA without it, else CPU FAISS.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), default=None, help="Write a thumbnail gallery here.")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False), default=None, help="Write the results as CSV here.")
@click.option("--dedupe", is_flag=True, help="List groups of near-duplicate images of the store instead (no QUERIES).")
@click.option("--threshold", type=float, default=None,
              help=f"--dedupe: largest distance of a near-duplicate pair (default {DEFAULT_COSINE_THRESHOLD} for cosine; required otherwise).")
@click.option("--rebuild", is_flag=True, help="Rebuild the cached index in CODES/index/ even if it is up to date.")
@click.option("--exclude-self", is_flag=True,
              help="Leave out the query image itself when it is in the store (still -k results).")
@device_option
@workers_option
@batch_size_option
@verbosity_options
def command(queries, codes_dir, k, metric, kind, backend, html_out, csv_out, dedupe, threshold, rebuild, device,
            quiet, verbose=False, workers=None, batch_size=None, exclude_self=False):
    """Print the stored images nearest to each query image (files or folders of images), closest first.

    Queries are embedded with the store's backbone, layer and post-processing. Unreadable query images are
    listed and skipped. A query that is itself in the store shows its label; results with the same label are
    marked (green in --html). With --dedupe, list groups of store images closer than --threshold to each other.

    The --html gallery inlines a store image only if the file still has the sha1 recorded at embed time
    (else a placeholder); the --csv file is safe to open in a spreadsheet (no text starts a formula).
    """
    from embedkit.atomic import spreadsheet_safe
    from embedkit.retrieve.queries import check_embeddable, collect_queries, embed_queries
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
    D, ids = index.search(codes, min(k + 1, len(store)) if exclude_self else k)
    labels = store.labels
    sha1 = store.recorded_sha1() if html_out else None
    in_store = _store_rows_of(store, paths)
    rows, sections = [], []
    for qi, qpath in enumerate(paths):
        qrow = in_store.get(qpath)
        qlabel = labels[qrow] if qrow is not None else ""
        where_q = f"  [{qlabel}]" if qlabel else ("" if qrow is not None else "  (not in the store)")
        click.echo(f"query {qi + 1}/{len(paths)}: {qpath}{where_q}")
        items = [{"path": qpath, "caption": "query" + (f"\n[{qlabel}]" if qlabel else "") + "\n" + Path(qpath).name}]
        rank, same = 0, 0
        for d, r in zip(D[qi], ids[qi]):
            if r < 0 or rank == k:
                continue
            p, lab = index.paths_[r], labels[r]
            if exclude_self and qrow is not None and (r == qrow or _same_file(p, qpath)):
                continue
            rank += 1
            hit = bool(qlabel) and lab == qlabel
            same += hit
            dist = format_distance(d, metric)
            click.echo(f"  {rank:3d}  {dist}  {p}" + (f"  [{lab}]" if lab else "") + ("  *" if hit else ""))
            rows.append([spreadsheet_safe(qpath), rank, spreadsheet_safe(p), spreadsheet_safe(lab),
                         _csv_distance(d, metric), spreadsheet_safe(qlabel)])
            items.append({"path": p, "caption": f"#{rank} d={dist}\n{lab}\n{Path(p).name}",
                          "ok": True if hit else None, "sha1": sha1[r] if sha1 is not None else ""})
        title = f"query {qi + 1}: {qpath}" + (f" [{qlabel}]" if qlabel else "")
        note = f"{rank} nearest ({metric})" + (", the query itself left out" if exclude_self else "")
        if qlabel:
            note += f"; green: same label as the query ({same} of {rank})"
        sections.append({"title": title, "note": note, "items": items})
    where = _outputs(html_out, csv_out, f"neighbors in {store.path}", sections,
                     ("query", "rank", "path", "label", "distance", "query_label"), rows)
    dt = time.perf_counter() - t0
    click.echo(f"{len(paths)} quer{'y' if len(paths) == 1 else 'ies'} ({len(skipped)} skipped) x {k} neighbours from {index.describe()} "
               f"[{how}] in {dt:.1f}s{where}")


def _outputs(html_out, csv_out, title, sections, header, rows) -> str:
    from embedkit.atomic import write_csv_atomic

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
    from embedkit.atomic import spreadsheet_safe

    if threshold is None:
        if metric != "cosine":
            raise ConfigError(f"--dedupe with --metric {metric} needs --threshold (a {metric} distance); "
                              f"or use --metric cosine (default threshold {DEFAULT_COSINE_THRESHOLD})")
        threshold = DEFAULT_COSINE_THRESHOLD
    groups, described = _find_duplicates(store, metric, kind, backend, threshold, rebuild, quiet, device)
    labels, paths = store.labels, store.paths
    sha1 = store.recorded_sha1() if html_out else None
    rows, sections = [], []
    for gi, g in enumerate(groups, 1):
        dmax = format_distance(g.max_distance, metric)
        click.echo(f"group {gi}: {len(g.rows)} images, max linking distance {dmax}")
        items = []
        for r in g.rows:
            p = paths[r]
            click.echo(f"  {p}" + (f"  [{labels[r]}]" if labels[r] else ""))
            rows.append([gi, spreadsheet_safe(p), spreadsheet_safe(labels[r])])
            items.append({"path": p, "caption": f"{labels[r]}\n{Path(p).name}",
                          "sha1": sha1[r] if sha1 is not None else ""})
        sections.append({"title": f"group {gi}: {len(g.rows)} images (max distance {dmax})", "items": items})
    where = _outputs(html_out, csv_out, f"near-duplicates in {store.path}", sections, ("group", "path", "label"), rows)
    n_in = sum(len(g.rows) for g in groups)
    click.echo(f"{len(groups)} near-duplicate groups ({n_in} images) under {metric} distance {threshold:g} among "
               f"{len(store)} codes, {described}, in {time.perf_counter() - t0:.1f}s{where}")


def _find_duplicates(store, metric, kind, backend, threshold, rebuild, quiet, device):
    """``(groups, description of the index used)``: exact/HNSW through the cached index, IVF quantised.

    IVF (``--kind ivf``, and ``auto`` above 200k codes) is the one-pass IVF + 8-bit index of
    :mod:`embedkit.retrieve.dedupe_quantized`, with exact re-checks: an IVF-Flat index would hold every
    code in RAM. It is built for this search only (not cached) and runs on CPU FAISS.
    """
    from embedkit.retrieve.common import FLAT_MAX, resolve_knn_backend
    from embedkit.retrieve.dedupe import near_duplicate_groups
    from embedkit.retrieve.dedupe_quantized import describe, quantized_duplicate_groups

    kind_ = kind if kind != "auto" else ("flat" if len(store) <= FLAT_MAX else "ivf")
    if kind_ != "ivf":
        index, how = cached_index(store, metric, kind, backend, rebuild, progress=not quiet, device=device)
        return near_duplicate_groups(index, store, threshold, progress=not quiet), f"{index.describe()} [{how}]"
    if resolve_knn_backend(backend, "ivf", device) == "faiss-gpu":
        _note("the quantised near-duplicate search runs on CPU FAISS")
    stats = {}
    groups = quantized_duplicate_groups(store, threshold, metric, progress=not quiet, stats=stats)
    return groups, (f"{describe(len(store), store.dim, metric, stats['nlist'], stats['nprobe'], stats['dim'])}: "
                    f"{stats['candidates']} candidate pairs, {stats['pairs']} under the threshold [built]")
