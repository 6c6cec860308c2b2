"""`embedkit classify train|eval|predict`: SVM classification of neural codes, as in the paper."""

from __future__ import annotations

import time

import click

from embedkit.cli.options import device_option
from embedkit.errors import ConfigError


def _floats(text: str, what: str) -> tuple:
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise ConfigError(f"{what} {text!r} is not valid; give comma-separated numbers, e.g. 0.1,1,10") from exc
    if not vals:
        raise ConfigError(f"{what} is empty; give comma-separated numbers")
    return vals


def _words(text: str) -> tuple:
    return tuple(v.strip() for v in text.split(",") if v.strip())


@click.group(name="classify")
def command():
    """Train, evaluate and apply SVM classifiers of neural codes."""


@command.command(name="train")
@click.argument("codes", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Model folder to write.")
@click.option("--kernels", default="rbf,sigmoid", show_default=True, help="Kernels to search: rbf, sigmoid, linear, poly.")
@click.option("--C", "cs", default="0.1,1,10,100", show_default=True, help="Values of C to search.")
@click.option("--gamma", "gammas", default="0.1*scale,scale,10*scale,1e-4", show_default=True,
              help="Values of gamma: numbers, 'scale' (= 1/(D*var) of the codes), 'auto' (= 1/D) or 'F*scale'; "
                   "1e-4 is the paper's.")
@click.option("--decision", type=click.Choice(["ovr", "ovo"]), default="ovr", show_default=True,
              help="One-vs-rest (the paper's) or one-vs-one.")
@click.option("--cv", type=click.IntRange(min=2), default=3, show_default=True, help="Stratified folds of the grid search.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split and the folds.")
@click.option("--fractions", default="0.64,0.16,0.20", show_default=True, help="Train,val,test fractions (CV runs on train+val).")
@click.option("--split-by", default=None, help="Hold out whole groups: 'design' (file name) or a column of the store's items.csv.")
@click.option("--test-groups", default="", help="With --split-by: the groups to test on (default: seeded pick of ~test fraction).")
@click.option("--val-groups", default="", help="With --split-by: the validation groups.")
@click.option("--split-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="CSV of path,split rows (train/val/test) for every item.")
@click.option("--class-weight", type=click.Choice(["none", "balanced"]), default="none", show_default=True)
@click.option("--backend", type=click.Choice(["auto", "sklearn", "cuml"]), default="auto", show_default=True,
              help="SVM library of the final model: auto = cuML on a CUDA machine with cuML, else scikit-learn.")
@device_option
@click.option("--jobs", type=int, default=None, help="Threads for the grid search (default: all cores).")
@click.option("--no-baseline", is_flag=True, help="Skip the logistic-regression baseline.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_cmd(codes, out, kernels, cs, gammas, decision, cv, seed, fractions, split_by, test_groups, val_groups,
              split_file, class_weight, backend, device, jobs, no_baseline, quiet):
    """Grid-search, fit and save an SVM on the code store CODES; report test top-1/top-5 into OUT."""
    from embedkit.classify.train import train
    from embedkit.store.codestore import CodeStore

    store = CodeStore.open(codes)
    gam = []
    for g in _words(gammas):
        try:
            gam.append(float(g))
        except ValueError:
            gam.append(g)
    res = train(store, out, kernels=_words(kernels), Cs=_floats(cs, "--C"), gammas=gam, cv=cv, seed=seed,
                decision=decision, class_weight=None if class_weight == "none" else class_weight, backend=backend,
                device=device, n_jobs=jobs if jobs is not None else -1, fractions=_floats(fractions, "--fractions"),
                split_by=split_by, test_groups=_words(test_groups), val_groups=_words(val_groups),
                split_file=split_file, baseline=not no_baseline, progress=not quiet)
    click.echo(res.summary())
    if res.files:
        click.echo(f"report: {res.files['table']}, failures: {res.files['failures_html']}, "
                   f"plots: {res.files['confusion'].name}, {res.files['per_class'].name}")


@command.command(name="eval")
@click.argument("model", type=click.Path(exists=True, file_okay=False))
@click.argument("codes", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", type=click.Path(file_okay=False), default=None,
              help="Folder for report.json/.txt, plots and failure cases (default: MODEL/eval-<store name>).")
@click.option("--part", type=click.Choice(["all", "test", "val", "train"]), default="all", show_default=True,
              help="All items of CODES, or one part of the model's own split.")
def eval_cmd(model, codes, out, part):
    """Evaluate the model in MODEL on the code store CODES (same backbone/layer)."""
    from pathlib import Path

    from embedkit.classify.train import evaluate_store
    from embedkit.store.codestore import CodeStore

    t0 = time.perf_counter()
    store = CodeStore.open(codes)
    out = Path(out) if out else Path(model) / f"eval-{store.path.name}"
    rep, failures, files = evaluate_store(model, store, out, part)
    click.echo(f"evaluated {rep['n']} items: top-1 {rep['top1']:.4f} top-5 {rep['top5']:.4f}, "
               f"{len(failures)} misclassified; {time.perf_counter() - t0:.1f}s -> {files['table']}, {files['failures_html']}")


@command.command(name="predict")
@click.argument("model", type=click.Path(exists=True, file_okay=False))
@click.argument("source", type=click.Path(exists=True))
@click.option("-o", "--out", type=click.Path(dir_okay=False), default="predictions.csv", show_default=True,
              help="CSV of path, pred, top-k labels and scores.")
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True)
@device_option
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
def predict_cmd(model, source, out, top_k, device, batch_size):
    """Embed the images of SOURCE with the model's backbone (or read a code store) and write top-k predictions."""
    from embedkit.atomic import write_csv_atomic
    from embedkit.classify.train import predict_paths

    t0 = time.perf_counter()
    rows, skipped = predict_paths(model, source, k=top_k, device=device, batch_size=batch_size)
    k = (len(rows[0]) - 2) // 2
    write_csv_atomic(out, ["path", "pred"] + [c for j in range(1, k + 1) for c in (f"top{j}", f"score{j}")], rows)
    dt = time.perf_counter() - t0
    click.echo(f"predicted {len(rows)} images ({len(skipped)} skipped) in {dt:.1f}s -> {out}")
    for path, reason in skipped[:10]:
        click.echo(f"  skipped {path}: {reason}")
