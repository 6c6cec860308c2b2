"""Does fine-tuning pay off on unseen styles? The paper's comparison over leave-designs-out folds, with intervals.

Methods, measured on the same test images in every fold (top-1 / top-5 precision):

- ImageNet softmax: the ImageNet classifier as it is, 1000-way, labels mapped to ImageNet classes by name
  (``embedkit.classify.baseline``; images of unmapped labels left out of this row);
- ImageNet codes + SVM: default-layer codes of the pretrained backbone, 3-fold CV grid search (rbf + sigmoid,
  default C/gamma grids) on train+val, best SVM refitted and tested (``embedkit.classify.train.train``);
- for each fine-tuning recipe (``embedkit.finetune.recipes``; ``small`` is the default, ``paper`` the
  published one): the fine-tuned network's own softmax (top-1), and its codes + the same SVM search.

Protocol (issue: "Fine-tuning that pays off on unseen styles"):

- ``design`` folds: the 14 designs (file names) are dealt into K folds with disjoint test designs
  (``embedkit.splits.group_folds``); each fold also names validation designs among the others. Fine-tuning
  trains on the remaining designs and chooses its epoch on the validation designs (never on the test ones);
  the SVM is fitted on train + validation designs. Every design is tested exactly once.
- ``stratified`` seeds: the paper's 64/16/20 split per class with several seeds (new images of known styles).

Reported: per method the mean and standard deviation over folds (seeds), and per recipe the paired difference
"fine-tuned codes + SVM minus ImageNet codes + SVM" fold by fold with a 95% t interval (and the bootstrap
one); an improvement is claimed only when the interval excludes 0.

    python benchmarks/paper_table.py                              # 7 design folds + 3 stratified seeds, small + paper
    python benchmarks/paper_table.py --recipes small --seeds ""   # design folds only, default recipe
    python benchmarks/paper_table.py --recipes small --set lr_low=3e-3 --name small-lr3e-3 --only-folds 0,1

Each (method, fold) result is cached in ``benchmarks/results/tmp/paper_table/cache/`` (git-ignored), so an
interrupted run continues and new recipes add to the same table; ``--report-only`` rewrites the report from
the cache. Writes ``benchmarks/results/paper_table.md`` and ``paper_table.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # paper_report, a sibling script
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/datasets/emoji-dev"
RESULTS = ROOT / "benchmarks" / "results"
WORK = RESULTS / "tmp" / "paper_table"
FRACTIONS = (0.64, 0.16, 0.20)
BASE = "imagenet"


def parse_value(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(v.lower(), v)


def embed_store(data, out, backbone, layer=None, weights="default", reuse=False):
    """The codes of ``data``; with ``reuse``, a finished store already in ``out`` (runs over other folds share it)."""
    from embedkit import CodeStore, embed

    if reuse and (Path(out) / "meta.json").is_file():
        return CodeStore.open(out)
    return embed(str(data), out, backbone=backbone, layer=layer, weights=str(weights), overwrite=True,
                 progress=False).store


def svm_row(store, out, split_kw) -> dict:
    """classify.train: 3-fold CV grid search (rbf + sigmoid, default grids) on train+val, tested on test."""
    from embedkit.classify.train import train

    t0 = time.perf_counter()
    r = train(store, out, kernels=("rbf", "sigmoid"), cv=3, seed=split_kw.get("seed", 0), progress=False,
              overwrite=True, baseline=False, fractions=FRACTIONS, **{k: v for k, v in split_kw.items() if k != "seed"})
    return {"top1": r.test["top1"], "top5": r.test["top5"], "n": r.test["n"], "best_params": r.best_params,
            "cv_score": r.cv_score, "seconds": round(time.perf_counter() - t0, 1)}


def imagenet_mapping(labels):
    """Labels -> ImageNet classes (``embedkit.classify.baseline.map_labels``); unmapped labels named in a note."""
    from embedkit.classify.baseline import map_labels

    m = map_labels(labels)
    for lab, why in m.unmapped.items():
        print(f"note: label {lab!r} is not in the softmax baseline: {why}")
    return m


def softmax_row(logits_store, split, mapping) -> dict | None:
    """The ImageNet classifier's own top-1/top-5 on the test images (None when no label is an ImageNet class)."""
    if not mapping.mapped:
        return None
    from embedkit.classify.baseline import baseline_report

    rep, _ = baseline_report(np.asarray(logits_store.codes, dtype=np.float64)[split.test],
                             logits_store.labels[split.test], mapping)
    b = rep["baseline"]["imagenet_1000way"]
    return {"top1": b["top1"], "top5": b["top5"], "n": rep["n"], "restricted_top1": rep["top1"]}


def manifest_columns(data: Path) -> list:
    """The header of the data's ``manifest.csv`` (none without one)."""
    m = data / "manifest.csv"
    return m.read_text(encoding="utf-8").split("\n", 1)[0].strip().split(",") if m.is_file() else []


def group_column(data: Path, paths, by: str) -> np.ndarray:
    """One group per path: its design (file name), or a column of the data's ``manifest.csv`` (e.g. ``family``)."""
    import csv

    from embedkit.splits import designs

    if by == "design":
        return designs(paths)
    with open(data / "manifest.csv", newline="", encoding="utf-8") as f:
        of = {row["file"]: row[by] for row in csv.DictReader(f)}
    return np.array([of[str(Path(p).relative_to(data))] for p in paths], dtype=object)


def units(folds, seeds, paths=(), groups=()):
    """Every evaluation unit: ("design", fold) and ("stratified", seed), with its classify/finetune split options.

    Folds over a coarser group than the design (icon families: sets that share drawings) are given to
    classify and finetune as the designs (file names) of their groups: both split by design.
    """
    from embedkit.splits import designs

    sets = designs(paths) if len(paths) else None

    def members(gs):
        return tuple(gs) if sets is None else tuple(sorted(set(sets[np.isin(groups, list(gs))].tolist())))

    out = []
    for f in folds:
        out.append((f"design-{f.index}", {"split_by": "design", "test_groups": members(f.test),
                                          "val_groups": members(f.val), "seed": 0}))
    for s in seeds:
        out.append((f"stratified-{s}", {"seed": s}))
    return out


def cached(path: Path, fn):
    if path.is_file():
        return json.loads(path.read_text())
    row = fn()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(row, indent=1))
    tmp.replace(path)
    return row


def run_recipe(data, name, recipe, overrides, unit, split_kw, backbone, test_paths) -> dict:
    """Fine-tune with ``recipe`` on one unit's split, then embed with the best epoch and fit the SVM."""
    from embedkit.finetune.train import finetune

    run = WORK / "runs" / name / unit
    t0 = time.perf_counter()
    ft = finetune(str(data), run, overwrite=True, progress=False, eval_test=True, log=lambda m: None,
                  recipe=recipe, backbone=backbone, split=FRACTIONS, **split_kw, **overrides)
    ft_s = time.perf_counter() - t0
    sp = json.loads((run / "split.json").read_text())
    got = sorted(str(Path(r["path"]).resolve()) for r in sp["test"])
    assert got == test_paths, f"finetune and classify test on different images ({unit})"
    store = embed_store(data, run / "codes", backbone, None, ft.best_path)
    row = svm_row(store, run / "svm", split_kw)
    row.update({"softmax_top1": ft.test["test_acc"], "best_epoch": ft.best_epoch, "best_val_acc": ft.best_metric,
                "epochs": len(ft.history), "finetune_seconds": round(ft_s, 1),
                "images_per_s": round(float(np.mean([h["images_per_s"] for h in ft.history])), 1)})
    for f in ("best.pt", "last.pt"):  # 18 MB each; the numbers are what is kept
        (run / f).unlink(missing_ok=True)
    shutil.rmtree(run / "codes", ignore_errors=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--folds", type=int, default=7, help="leave-groups-out folds (disjoint test groups)")
    ap.add_argument("--group-by", default=None, help="the groups held out: 'design' (file name) or a column of "
                    "the data's manifest.csv, e.g. 'family' (default: family where the manifest has it)")
    ap.add_argument("--only-folds", default="", help="run only these fold numbers (e.g. 0,1: a quick screen)")
    ap.add_argument("--seeds", default="0,1,2", help="seeds of the stratified split ('' = none)")
    ap.add_argument("--recipes", default="small,paper", help="fine-tuning recipes (embedkit.finetune.recipes)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a recipe option (with --name: a variant measured under its own name)")
    ap.add_argument("--name", default=None, help="name of the variant made by --set (one recipe)")
    ap.add_argument("--report-only", action="store_true", help="rewrite the report from the cache")
    ap.add_argument("--work", default=None, help="cache and run folder (default: benchmarks/results/tmp/paper_table)")
    ap.add_argument("--out", default=None, help="report path without suffix (default: benchmarks/results/"
                    "paper_table for emoji-dev, paper_table_<data> otherwise)")
    args = ap.parse_args(argv)

    from embedkit.classify.train import split_store
    from embedkit.splits import group_folds

    t_start = time.perf_counter()
    data = Path(args.data)
    overrides = dict(kv.split("=", 1) for kv in args.set)
    overrides = {k.replace("-", "_"): parse_value(v) for k, v in overrides.items()}
    recipes = [r for r in args.recipes.split(",") if r]
    names = {r: (args.name if args.name and len(recipes) == 1 else r if not overrides else
                 r + "+" + ",".join(f"{k}={v}" for k, v in overrides.items())) for r in recipes}
    global WORK
    if args.work:
        WORK = Path(args.work)
    elif data.resolve() != DEFAULT_DATA.resolve():
        WORK = WORK / data.name  # one cache per data set
    out = Path(args.out) if args.out else RESULTS / ("paper_table" if data.resolve() == DEFAULT_DATA.resolve()
                                                     else f"paper_table_{data.name}")
    by = args.group_by or ("family" if "family" in manifest_columns(data) else "design")
    cache = WORK / "cache"
    base_codes = embed_store(data, WORK / "imagenet-codes", args.backbone, reuse=True) if not args.report_only else None
    paths = sorted(str(p) for p in data.glob("*/*.png"))
    groups = group_column(data, paths, by)
    folds = group_folds(groups, args.folds, seed=0)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    only = {int(s) for s in args.only_folds.split(",") if s.strip()}
    todo = [(u, kw) for u, kw in units(folds, seeds, paths if by != "design" else (), groups) if not only or not u.startswith("design-")
            or int(u.split("-")[1]) in only]
    if not args.report_only:
        logits = embed_store(data, WORK / "imagenet-logits", args.backbone, "logits", reuse=True)
        mapping = imagenet_mapping(sorted(set(base_codes.labels.tolist())))
        for unit, kw in todo:
            s = split_store(base_codes, FRACTIONS, kw["seed"], kw.get("split_by"), kw.get("test_groups", ()),
                            kw.get("val_groups", ()))
            test_paths = sorted(str(Path(base_codes.paths[i]).resolve()) for i in s.test)
            print(f"== {unit}: train {len(s.train)} / val {len(s.val)} / test {len(s.test)} images"
                  + (f"; test designs {', '.join(kw['test_groups'])}; val designs {', '.join(kw['val_groups'])}"
                     if "test_groups" in kw else ""), flush=True)
            r = cached(cache / BASE / f"{unit}.json", lambda: {**svm_row(base_codes, WORK / "svm" / unit, kw),
                                                             "softmax": softmax_row(logits, s, mapping)})
            print(f"  ImageNet codes + SVM top-1 {r['top1']:.3f}"
                  + (f"; softmax {r['softmax']['top1']:.3f}" if r["softmax"] else ""), flush=True)
            for recipe in recipes:
                name = names[recipe]
                r = cached(cache / name / f"{unit}.json", lambda: {
                    **run_recipe(data, name, recipe, overrides, unit, kw, args.backbone, test_paths),
                    "recipe": recipe, "overrides": overrides})
                print(f"  {name}: codes + SVM top-1 {r['top1']:.3f}, softmax {r['softmax_top1']:.3f} (best epoch "
                      f"{r['best_epoch']}/{r['epochs']}, {r['finetune_seconds'] / 60:.1f} min)", flush=True)
    from paper_report import write_report  # noqa: E402 (a sibling script)

    write_report(cache, folds, seeds, out, {"data": data.name, "group_by": by,
        "command": "python " + " ".join(shlex.quote(a) for a in [f"benchmarks/{Path(__file__).name}", *sys.argv[1:]]),
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "backbone": args.backbone,
        "machine": f"{__import__('os').cpu_count()} CPU cores, no GPU ({platform.machine()}, Python {platform.python_version()})",
        "seconds": round(time.perf_counter() - t_start, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
