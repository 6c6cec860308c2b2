"""`embedkit classify train|eval|predict|baseline`: SVM classification of neural codes, as in the paper."""

from __future__ import annotations

import time

import click

from embedkit import defaults
from embedkit.classify.constants import DECISIONS, KERNELS, METHODS
from embedkit.classify.metrics import accuracy_line, small_class_notes
from embedkit.cli.options import (
    backbone_option,
    batch_size_option,
    device_option,
    floats,
    overwrite_option,
    seed_option,
    split_options,
    verbosity_options,
    weights_option,
    words,
    workers_option,
)
from embedkit.cli.text import printable
from embedkit.words import plural


@click.group(name="classify")
def command():
    """Train, evaluate and apply SVM classifiers of neural codes."""


def _gamma_values(text: str) -> list:
    out = []
    for g in words(text):
        try:
            out.append(float(g))
        except ValueError:
            out.append(g)
    if not out:
        raise click.BadParameter("is empty; give numbers, scale, auto or F*scale", param_hint="--gamma")
    return out


def _csv(values) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


@command.command(name="train")
@click.argument("codes", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Model folder to write.")
@click.option("--method", type=click.Choice(METHODS), default="svm", show_default=True,
              help="svm: the paper's kernel SVM with a grid search; knn: a vote of the nearest training codes.")
@click.option("--kernels", default=_csv(defaults.SVM_KERNELS), show_default=True,
              help=f"Kernels to search: {', '.join(KERNELS)}.")
@click.option("--C", "cs", default=_csv(defaults.SVM_CS), show_default=True, help="Values of C to search.")
@click.option("--gamma", "gammas", default=_csv(defaults.SVM_GAMMAS), show_default=True,
              help="Values of gamma: numbers, 'scale' (= 1/(D*var) of the codes), 'auto' (= 1/D) or 'F*scale'; "
                   f"{defaults.PAPER_GAMMA:g} is the paper's.")
@click.option("--decision", type=click.Choice(DECISIONS), default="ovr", show_default=True,
              help="One-vs-rest (the paper's) or one-vs-one.")
@click.option("--cv", type=click.IntRange(min=2), default=defaults.CV_FOLDS, show_default=True,
              help="Stratified folds of the grid search (fewer, with a warning, where a class has fewer items).")
@click.option("--max-kernel-rows", type=click.IntRange(min=2), default=None,
              help="Most train+val rows for an exact kernel SVM (default: what half the available memory allows); "
                   "above it, grid search on a stratified subsample of this size and a Nystroem + linear SVM on all rows.")
@click.option("--components", type=click.IntRange(min=16), default=None,
              help="Fall-back above --max-kernel-rows: Nystroem components approximating the kernel (default 2048).")
@click.option("--neighbors", "n_neighbors", type=click.IntRange(min=1), default=5, show_default=True,
              help="--method knn: neighbours that vote.")
@seed_option
@split_options
@click.option("--class-weight", type=click.Choice(["none", "balanced"]), default="none", show_default=True,
              help="balanced: weigh classes inversely to their frequency.")
@click.option("--backend", type=click.Choice(["auto", "sklearn", "cuml"]), default="auto", show_default=True,
              help="SVM library: auto = cuML on a CUDA machine with cuML, else scikit-learn (always with --device cpu).")
@device_option
@click.option("--jobs", type=int, default=None, help="Threads for the grid search (default: all cores).")
@click.option("--no-baseline", is_flag=True, help="Skip the logistic-regression baseline.")
@click.option("--calibrate", is_flag=True,
              help="Make the SVM's scores probabilities: Platt sigmoids fitted by scikit-learn's "
                   "CalibratedClassifierCV on out-of-fold decision values (the SVM is fitted once per fold more).")
@click.option("--repeats", type=click.IntRange(min=1), default=1, show_default=True,
              help="Repeat the training on the splits of seeds SEED..SEED+N-1 and report test top-1/top-5 as mean "
                   "+- std over them (the saved model is the first split's); for small sets.")
@overwrite_option
@verbosity_options
def train_cmd(codes, out, method, kernels, cs, gammas, decision, cv, max_kernel_rows, components, n_neighbors, seed,
              fractions,
              split_by, test_groups, val_groups, split_file, class_weight, backend, device, jobs, no_baseline,
              calibrate, repeats, overwrite, quiet, verbose):
    """Fit and save a classifier on the code store CODES; report test top-1/top-5 into OUT."""
    from embedkit.classify.train import train
    from embedkit.store.codestore import CodeStore

    store = CodeStore.open(codes)
    res = train(store, out, kernels=words(kernels), Cs=floats(cs, "--C"), gammas=_gamma_values(gammas), cv=cv,
                seed=seed, decision=decision, class_weight=None if class_weight == "none" else class_weight,
                backend=backend, device=device, n_jobs=jobs if jobs is not None else -1, fractions=fractions,
                split_by=split_by, test_groups=words(test_groups), val_groups=words(val_groups),
                split_file=split_file, baseline=not no_baseline, progress=not quiet, method=method,
                max_kernel_rows=max_kernel_rows, n_neighbors=n_neighbors, overwrite=overwrite,
                approx_params={"n_components": components} if components else None, calibrate=calibrate,
                repeats=repeats)
    for note in res.notes:
        click.echo(f"warning: {note}", err=True)
    click.echo(res.summary())
    if res.files:
        click.echo(f"report: {res.files['table']}, failures: {res.files['failures_html']}, "
                   f"plots: {res.files['confusion'].name}, {res.files['per_class'].name}")


def _finetuned(model) -> bool:
    from embedkit.classify.predict import finetuned_checkpoint

    return finetuned_checkpoint(model) is not None


@command.command(name="eval")
@click.argument("model", type=click.Path(exists=True))
@click.argument("codes", type=click.Path(exists=True))
@click.option("-o", "--out", type=click.Path(file_okay=False), default=None,
              help="Folder for report.json/.txt, plots and failure cases (default: MODEL/eval-<store name>).")
@click.option("--part", type=click.Choice(["all", "test", "val", "train"]), default="all", show_default=True,
              help="All items of CODES, or one part of the model's own split.")
@device_option
@batch_size_option
@workers_option
@verbosity_options
def eval_cmd(model, codes, out, part, device, batch_size, workers, quiet=False, verbose=False):
    """Evaluate the model in MODEL on the code store CODES (same backbone/layer).

    MODEL may also be a fine-tuning run folder (or its best.pt): its own softmax classifier is evaluated on the
    labelled images CODES (class folders or a path,label manifest).
    """
    from pathlib import Path

    t0 = time.perf_counter()
    if _finetuned(model):
        from embedkit.classify.predict import evaluate_finetuned

        if part != "all":
            raise click.UsageError("--part needs a model folder of `classify train` (a fine-tuning run is evaluated "
                                   "on all the images given)")
        base = Path(model) if Path(model).is_dir() else Path(model).parent
        out = Path(out) if out else base / f"eval-{Path(codes).name}"
        rep, failures, files = evaluate_finetuned(model, [codes], out, device=device, batch_size=batch_size,
                                                  workers=workers, progress=not quiet)
    else:
        from embedkit.classify.apply import evaluate_store
        from embedkit.store.codestore import CodeStore

        store = CodeStore.open(codes)
        out = Path(out) if out else Path(model) / f"eval-{store.path.name}"
        rep, failures, files = evaluate_store(model, store, out, part)
    for note in small_class_notes(rep):
        click.echo(f"warning: {note}", err=True)
    click.echo(f"evaluated {plural(rep['n'], 'item')}: {accuracy_line(rep)}, {len(failures)} misclassified; "
               f"{time.perf_counter() - t0:.1f}s -> {files['table']}, {files['failures_html']}")


@command.command(name="predict")
@click.argument("model", type=click.Path(exists=True))
@click.argument("sources", metavar="SOURCE...", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-o", "--out", type=click.Path(dir_okay=False), default="predictions.csv", show_default=True,
              help="Predictions (path, pred, top-k labels and scores); the suffix picks the format: .csv, .json "
                   "(with what a score is) or .parquet.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the predictions as JSON here.")
@click.option("--parquet", "parquet_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the predictions as Parquet here.")
@click.option("-k", "--top-k", type=click.IntRange(min=1), default=defaults.TOP_K, show_default=True,
              help="Classes listed per image, best first.")
@click.option("--show", type=click.IntRange(min=0), default=5, show_default=True,
              help="Images whose top-k is printed.")
@device_option
@batch_size_option
@workers_option
@verbosity_options
def predict_cmd(model, sources, out, json_out, parquet_out, top_k, show, device, batch_size, workers, quiet=False,
                verbose=False):
    """Rank the classes of MODEL for the images of each SOURCE (folders, manifests, list files, image files or code
    stores) and write the top-k per image.

    MODEL is a model folder of `classify train` (images are embedded with its backbone; code stores are read as
    they are) or a fine-tuning run folder / its best.pt (the fine-tuned network's own classifier: softmax
    probabilities). The output and the terminal say what a score is.
    """
    t0 = time.perf_counter()
    if _finetuned(model):
        from embedkit.classify.predict import predict_finetuned

        pred = predict_finetuned(model, sources, top_k, device=device, batch_size=batch_size, workers=workers,
                                 progress=not quiet)
    else:
        from embedkit.classify.apply import predict_sources

        pred = predict_sources(model, sources, k=top_k, device=device, batch_size=batch_size, workers=workers,
                               progress=not quiet)
    written = [str(pred.write(p)) for p in (out, json_out, parquet_out) if p]
    dt = time.perf_counter() - t0
    click.echo(f"predicted {plural(len(pred.paths), 'image')} ({len(pred.skipped)} skipped) in {dt:.1f}s -> "
               f"{', '.join(written)}")
    if show and not quiet:
        click.echo(f"score = {pred.score}")
        for line in pred.preview(show):
            click.echo(line)
        if len(pred.paths) > show:
            click.echo(f"  ... {len(pred.paths) - show} more in {written[0]}")
    for path, reason in pred.skipped[:10]:
        click.echo(f"  skipped {printable(path)}: {printable(reason)}")


@command.command(name="baseline")
@click.argument("images", type=click.Path(exists=True))
@backbone_option
@weights_option
@click.option("--map", "map_csv", type=click.Path(exists=True, dir_okay=False), default=None,
              help="CSV of label,imagenet[,reason] overrides (an exact ImageNet class name, wnid or index; empty = "
                   "unmapped), applied before the exact name/synonym matching.")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False),
              help="Folder for report.json/.txt, plots and failure cases.")
@device_option
@batch_size_option
@workers_option
@verbosity_options
def baseline_cmd(images, backbone, weights, map_csv, out, device, batch_size, workers, quiet=False, verbose=False):
    """The paper's softmax baseline: the ImageNet classifier of the backbone restricted to the ImageNet classes that
    the labels of IMAGES (class folders or a path,label manifest) map to, by exact name or WordNet synonym.

    Images of classes that map to no ImageNet class are excluded from top-1/top-5 and listed as unmapped in
    the output and in report.json (which also gives the figures with them counted as errors).
    """
    from embedkit.classify.baseline import run_baseline

    t0 = time.perf_counter()
    res = run_baseline(images, out, backbone, weights=weights, overrides=map_csv, device=device,
                       batch_size=batch_size, workers=workers, progress=not quiet)
    if not quiet:
        for line in res.label_map.describe()[:len(res.label_map.mapped)]:
            click.echo(f"  {line}")
    click.echo(res.summary())
    if res.skipped:
        click.echo(f"{plural(len(res.skipped), 'image')} skipped (unreadable), e.g. {res.skipped[0][0]}: {res.skipped[0][1]}")
    click.echo(f"{time.perf_counter() - t0:.1f}s -> {res.files['report']}, {res.files['table']}")
