"""`embedkit store info|import|upgrade`: look at a code store, bring your own codes, convert old stores."""

from __future__ import annotations

import click

from embedkit.cli.options import overwrite_option, verbosity_options


@click.group(name="store")
def command():
    """Inspect, import and upgrade code stores."""


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@command.command(name="info")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the information as JSON.")
@verbosity_options
def info_cmd(store, as_json, quiet, verbose):
    """Print count, dim, dtype, identity, shards, size on disk and skipped count of STORE."""
    import json
    import time

    from embedkit.store.codestore import CodeStore

    t0 = time.perf_counter()
    s = CodeStore.open(store)
    info = s.info()
    info["open_seconds"] = round(time.perf_counter() - t0, 4)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    who = f"{info['backbone']}/{info['layer']} ({info['weights']})" if info["backbone"] else "none (imported codes)"
    pp = ", ".join(k for k in ("l2_normalize",) if info[k]) or "none"
    if info["pca_whiten"]:
        pp = f"PCA-whitened to {info['pca_whiten']}" + (" + L2" if info["l2_normalize"] else "")
    click.echo(f"store     {info['path']} ({info['format']})\n"
               f"codes     {info['count']} x {info['dim']} {info['dtype']} in {info['shards']} shard(s)\n"
               f"identity  {who}\n"
               f"post      {pp}\n"
               f"skipped   {info['skipped']}\n"
               f"on disk   {_human(info['size_bytes'])}\n"
               f"created   {info['created']}")


@command.command(name="import")
@click.argument("codes", type=click.Path(exists=True, dir_okay=False))
@click.option("--items", "items_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Parquet or CSV file with a 'path' column (and optionally 'label' and any other columns), "
                   "one row per code row.")
@click.option("-o", "--out", required=True, type=click.Path(), help="Store folder to write.")
@click.option("--identity-from", type=click.Path(exists=True, file_okay=False), default=None,
              help="A store whose backbone identity these codes share (then queries can be embedded to match them).")
@overwrite_option
@verbosity_options
def import_cmd(codes, items_file, out, identity_from, overwrite, quiet, verbose):
    """Write a store at OUT from CODES (a .npy array, N x D) and the items of each row."""
    import numpy as np

    from embedkit.errors import DataError
    from embedkit.store.codestore import CodeStore

    from embedkit.io.decode import open_file

    try:
        with open_file(codes) as f:  # non-blocking: a FIFO named codes.npy is refused, not waited on
            head = f.read(64)
    except ValueError as exc:
        raise DataError(f"{codes!r} is {exc}; give a .npy file") from exc
    if not head.startswith(b"\x93NUMPY"):  # say what it is: NumPy's message would call any file pickled data
        from embedkit.models.checkpoint import describe_file_start

        raise DataError(f"{codes!r} is not a .npy array file (found {describe_file_start(head)}); save the codes "
                        "with numpy.save(path, codes), an N x D numeric array")
    try:
        arr = np.load(codes, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{codes!r} is not a numeric .npy array ({exc})") from exc
    table = _read_items(items_file)
    if "path" not in table.column_names:
        raise DataError(f"{items_file!r} has no 'path' column (columns: {', '.join(table.column_names)})")
    cols = {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names if c not in ("path", "label")}
    labels = table.column("label").to_pylist() if "label" in table.column_names else None
    identity = CodeStore.open(identity_from).identity if identity_from else None
    store = CodeStore.from_arrays(out, arr, table.column("path").to_pylist(), labels, identity, columns=cols,
                                  overwrite=overwrite)
    click.echo(f"imported {len(store)} x {store.dim} codes -> {store.path} ({len(store.shards)} shards"
               f"{', no backbone identity' if identity is None else ''})")


def _read_items(path: str):
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from embedkit.errors import DataError

    try:
        if path.lower().endswith(".csv"):
            return pcsv.read_csv(path)
        return pq.read_table(path)
    except Exception as exc:  # pyarrow raises many types for unreadable input; all mean the same here
        raise DataError(f"could not read items file {path!r}: {exc}; give a Parquet or CSV file with a path column") from exc


@command.command(name="upgrade")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--shard-rows", type=click.IntRange(min=1), default=None, help="Rows per shard (default: from the count).")
@verbosity_options
def upgrade_cmd(store, shard_rows, quiet, verbose):
    """Convert a store of an older format in place to the current one (embedkit 0.1's codes.npy + items.csv,
    or format 2's manifest.json with every shard file in shards/)."""
    from embedkit.store.codestore import CodeStore
    from embedkit.store.convert import upgrade_store

    before = CodeStore.open(store).version
    s = upgrade_store(store, shard_rows)
    if before == s.version:
        click.echo(f"{store} is already in the current format; nothing to do")
        return
    click.echo(f"upgraded {store} (format {before} -> {s.version}): {len(s)} x {s.dim} codes in "
               f"{len(s.shards)} shard(s)")
