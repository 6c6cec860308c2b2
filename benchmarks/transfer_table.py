"""The paper's transfer setting: adapt the network on some classes, classify *other* classes with its codes.

Lagunas & Garces fine-tune on one large labelled illustration set and classify another set's classes with
the tuned network's codes + SVM. This measures that on one data set with class-disjoint folds:

- the classes are dealt into ``--class-folds`` halves (seeded); for each, the network is fine-tuned with a
  recipe (``small`` by default) on the images of the *other* classes only, its epoch chosen on validation
  icon families of those classes;
- the held-out classes' images are embedded with the tuned backbone and with the ImageNet backbone, and an SVM
  (3-fold CV grid search over rbf + sigmoid, as ``paper_table.py``) is fitted and tested on leave-family-out
  folds of them (``--folds``), the same test images for both codes;
- reported: mean top-1 of both, and the paired difference over every (class fold, family fold) unit with a
  95% t interval and the bootstrap one; a gain is claimed only where the interval excludes 0.

The adapting images share icon families (drawing styles) with the evaluated ones, as in a user's own collection:
the classes are new, the styles are not all new.

    python benchmarks/transfer_table.py                    # icons-dev, 2 class folds x 5 family folds
    python benchmarks/transfer_table.py --report-only

Each unit is cached in ``benchmarks/results/tmp/transfer_table/`` (git-ignored): an interrupted run continues.
Writes ``benchmarks/results/transfer_table.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_table import cached, embed_store, group_column, parse_value, svm_row  # noqa: E402 (a sibling script)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/datasets/icons-dev"
RESULTS = ROOT / "benchmarks" / "results"
WORK = RESULTS / "tmp" / "transfer_table"


def write_manifest(path: Path, paths, labels) -> Path:
    """A ``path,label`` CSV: what ``finetune`` and ``embed`` read as a labelled image list."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows(zip(paths, labels))
    return path


def class_folds(classes, k: int, seed: int = 0) -> list[list]:
    order = [classes[i] for i in np.random.default_rng(seed).permutation(len(classes))]
    return [sorted(order[i::k]) for i in range(k)]


def adapt(manifest: Path, run: Path, recipe: str, val_sets, backbone: str, overrides: dict) -> dict:
    """Fine-tune on the adapting classes; validation = whole icon families of those classes."""
    from embedkit.finetune.train import finetune

    t0 = time.perf_counter()
    ft = finetune(str(manifest), run, overwrite=True, progress=False, log=lambda m: None, recipe=recipe,
                  backbone=backbone, split=(0.84, 0.16, 0.0), split_by="design", val_groups=tuple(val_sets), **overrides)
    return {"best_path": str(ft.best_path), "best_epoch": ft.best_epoch, "epochs": len(ft.history),
            "backbone_change": ft.backbone_change, "minutes": round((time.perf_counter() - t0) / 60, 1)}


def report(cache: Path, out: Path, meta: dict) -> None:
    from embedkit.stats import paired_difference, summarize

    def ci(values) -> str:
        m = summarize(values)
        return f"{100 * m.mean:.1f} ({100 * m.low:.1f} to {100 * m.high:.1f})"

    rows = {f.stem: json.loads(f.read_text()) for f in sorted(cache.glob("*.json"))}
    units = sorted(rows)
    L = [f"# Transfer: codes of a network adapted on other classes ({meta['data']})", "",
         f"Command: `{meta['command']}`  ", f"Date: {meta['date']}  ", f"Machine: {meta['machine']}  ",
         f"Backbone: {meta['backbone']}; recipe: {meta['recipe']}; {meta['class_folds']} class folds x "
         f"{meta['folds']} leave-family-out folds", "",
         "Each unit: the network is fine-tuned on the classes of the other class folds, then the held-out classes "
         "are embedded with it and with the ImageNet network; an SVM (3-fold CV grid search, rbf + sigmoid) is "
         "fitted on the unit's train + validation families and tested on its test families (the same test images "
         "for both). Top-1 in %.", ""]
    if units:
        tuned = [rows[u]["tuned"]["top1"] for u in units]
        base = [rows[u]["imagenet"]["top1"] for u in units]
        t, b = paired_difference(tuned, base), paired_difference(tuned, base, method="bootstrap")
        claim = "improvement" if t.low > 0 else "worse" if t.high < 0 else "no difference shown"
        L += ["| codes | top-1 mean (95% t CI over units) | per unit |", "|---|---:|---|",
              f"| ImageNet codes + SVM | {ci(base)} | {' '.join(f'{100 * v:.1f}' for v in base)} |",
              f"| adapted codes + SVM | {ci(tuned)} | {' '.join(f'{100 * v:.1f}' for v in tuned)} |",
              "", f"Paired difference (adapted minus ImageNet), {len(units)} units: {t.format()}; bootstrap "
              f"{100 * b.low:+.1f} to {100 * b.high:+.1f}; **{claim}**.", "",
              "| unit | held-out classes | test images | ImageNet | adapted | best epoch |", "|---|---|---:|---:|---:|---|"]
        for u in units:
            r = rows[u]
            L.append(f"| {u} | {', '.join(r['classes'])} | {r['imagenet']['n']} | {100 * r['imagenet']['top1']:.1f} "
                     f"| {100 * r['tuned']['top1']:.1f} | {r['adapt']['best_epoch']}/{r['adapt']['epochs']} |")
    out.with_suffix(".md").write_text("\n".join(L) + "\n")
    kept = {u: {**r, "adapt": {k: v for k, v in r["adapt"].items() if k != "best_path"}} for u, r in rows.items()}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "units": kept}, indent=1, default=str))
    print("\n".join(L))


def main(argv=None) -> int:
    from embedkit.splits import designs, group_folds

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--recipe", default="small")
    ap.add_argument("--class-folds", type=int, default=2)
    ap.add_argument("--folds", type=int, default=5, help="leave-family-out folds of the held-out classes")
    ap.add_argument("--group-by", default="family", help="manifest.csv column of the held-out groups")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe option")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--work", default=None, help="cache and run folder (default: benchmarks/results/tmp/transfer_table)")
    ap.add_argument("--out", default=str(RESULTS / "transfer_table"))
    args = ap.parse_args(argv)

    data, t_start = Path(args.data), time.perf_counter()
    work = Path(args.work) if args.work else WORK / f"{data.name}-{args.recipe}"
    overrides = {k.replace("-", "_"): parse_value(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    paths = sorted(str(p) for p in data.glob("*/*.png"))
    labels = np.array([Path(p).parent.name for p in paths], dtype=object)
    groups, sets = group_column(data, paths, args.group_by), designs(paths)
    if not args.report_only:
        for c, held in enumerate(class_folds(sorted(set(labels.tolist())), args.class_folds)):
            src, tgt = ~np.isin(labels, held), np.isin(labels, held)
            val_fams = group_folds(groups[src], args.folds, seed=c)[0].val
            val_sets = sorted(set(sets[src][np.isin(groups[src], val_fams)].tolist()))
            run = work / f"adapt-{c}"
            info = cached(work / f"adapt-{c}.json", lambda: adapt(
                write_manifest(run / "adapt.csv", np.array(paths)[src], labels[src]), run / "run", args.recipe,
                val_sets, args.backbone, overrides))
            target = write_manifest(work / f"target-{c}.csv", np.array(paths)[tgt], labels[tgt])
            stores = {"imagenet": embed_store(target, work / f"codes-imagenet-{c}", args.backbone, reuse=True),
                      "tuned": embed_store(target, work / f"codes-tuned-{c}", args.backbone, weights=info["best_path"],
                                           reuse=True)}
            tp, tg = np.array(paths)[tgt], groups[tgt]
            for f in group_folds(tg, args.folds, seed=0):
                kw = {"split_by": "design", "seed": 0,
                      "test_groups": tuple(sorted(set(designs(tp[np.isin(tg, f.test)]).tolist()))),
                      "val_groups": tuple(sorted(set(designs(tp[np.isin(tg, f.val)]).tolist())))}
                unit = f"class{c}-fold{f.index}"
                r = cached(work / "cache" / f"{unit}.json", lambda: {
                    "classes": held, "adapt": info,
                    **{k: svm_row(s, work / "svm" / unit / k, kw) for k, s in stores.items()}})
                print(f"{unit}: ImageNet {r['imagenet']['top1']:.3f}, adapted {r['tuned']['top1']:.3f} "
                      f"({r['imagenet']['n']} test images)", flush=True)
            (run / "run" / "last.pt").unlink(missing_ok=True)  # 18 MB; best.pt is kept for the codes
    report(work / "cache", Path(args.out), {
        "command": "python " + " ".join(["benchmarks/transfer_table.py", *sys.argv[1:]]), "data": data.name,
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "backbone": args.backbone, "recipe": args.recipe,
        "class_folds": args.class_folds, "folds": args.folds,
        "machine": f"{__import__('os').cpu_count()} CPU cores, no GPU ({platform.machine()}, Python {platform.python_version()})",
        "seconds": round(time.perf_counter() - t_start, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
