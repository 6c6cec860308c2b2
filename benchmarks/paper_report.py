"""The report of ``paper_table.py``: means, standard deviations and paired intervals from its per-fold cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from embedkit.stats import paired_difference

BASE = "imagenet"


def load(cache: Path) -> dict:
    """``{method name: {unit: row}}`` for every cached result."""
    out = {}
    for d in sorted(p for p in cache.iterdir() if p.is_dir()) if cache.is_dir() else []:
        out[d.name] = {f.stem: json.loads(f.read_text()) for f in sorted(d.glob("*.json"))}
    return out


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def mean_std(values) -> str:
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return "-"
    return f"{100 * v.mean():.1f} ± {100 * v.std(ddof=1):.1f}" if len(v) > 1 else f"{100 * v[0]:.1f}"


def section(kind: str, units: list, res: dict, recipes: list) -> tuple[list, dict]:
    """One table (design folds or stratified seeds) and its numbers."""
    base = res.get(BASE, {})
    have = [u for u in units if u in base]
    L = [f"| method | top-1 mean ± std | top-5 mean | per {('fold' if kind == 'design' else 'seed')} top-1 "
         f"({', '.join(u.split('-')[1] for u in have)}) | minus ImageNet codes + SVM: mean (95% t CI) | "
         "bootstrap 95% CI | claim |", "|---|---:|---:|---|---:|---:|---|"]
    nums = {}

    def row(label, top1, top5, diff=None):
        cells = [label, mean_std(top1), pct(np.mean(top5)) if top5 else "-",
                 " ".join(pct(v) for v in top1)]
        if diff is not None and len(diff[0]) >= 2:
            t = paired_difference(*diff)
            b = paired_difference(*diff, method="bootstrap")
            claim = ("improvement" if t.low > 0 else "worse" if t.high < 0 else "no difference shown")
            cells += [t.format(), f"{100 * b.low:+.1f} to {100 * b.high:+.1f}", claim + f" (n={t.n})"]
            nums[label] = {"t": t.to_dict(), "bootstrap": b.to_dict()}
        else:
            cells += ["", "", ""]
        L.append("| " + " | ".join(cells) + " |")

    if not have:
        return [], {}
    b1 = [base[u]["top1"] for u in have]
    if all(base[u].get("softmax") for u in have):  # no softmax row where no label is an ImageNet class
        row("ImageNet softmax (1000-way)", [base[u]["softmax"]["top1"] for u in have],
            [base[u]["softmax"]["top5"] for u in have])
    row("ImageNet codes + SVM", b1, [base[u]["top5"] for u in have])
    for name in recipes:
        r = res[name]
        us = [u for u in have if u in r]
        if not us:
            continue
        b = [base[u]["top1"] for u in us]
        row(f"{name}: fine-tuned softmax", [r[u]["softmax_top1"] for u in us], [],
            ([r[u]["softmax_top1"] for u in us], b))
        row(f"{name}: fine-tuned codes + SVM", [r[u]["top1"] for u in us], [r[u]["top5"] for u in us],
            ([r[u]["top1"] for u in us], b))
    return L, nums


def write_report(cache: Path, folds, seeds, out: Path, meta: dict) -> None:
    res = load(cache)
    recipes = [n for n in res if n != BASE]
    design_units = [f"design-{f.index}" for f in folds]
    strat_units = [f"stratified-{s}" for s in seeds] or sorted(
        {u for r in res.values() for u in r if u.startswith("stratified-")})
    data, by = meta.get("data", "emoji-dev"), meta.get("group_by", "design")
    L = [f"# Fine-tuned vs ImageNet codes on {data}, leave-{by}-out folds", "",
         f"Command (last): `{meta['command']}`  ", f"Date: {meta['date']}  ", f"Machine: {meta['machine']}  ",
         f"Backbone: {meta['backbone']}; data: {data}; folds hold out whole groups by {by}", "",
         "Top-1 / top-5 precision in %, on the test images of each fold (the same images for every method of a fold; "
         "asserted). Codes + SVM: 3-fold CV grid search over rbf + sigmoid x C x gamma on train + validation, refitted, "
         f"tested. Fine-tuning chooses its epoch on the validation {by} groups only. The paired difference is taken fold by "
         "fold against ImageNet codes + SVM; an improvement is claimed only when its 95% interval excludes 0.", ""]
    numbers = {"meta": meta, "folds": [f.to_dict() for f in folds]}
    for kind, units, title in (("design", design_units, f"## Leave-{by}-out ({len(folds)} folds, disjoint test {by} groups)"),
                               ("stratified", strat_units, "## Stratified 64/16/20 split, several seeds (new images of known designs)")):
        table, nums = section(kind, units, res, recipes)
        if table:
            L += [title, ""] + table + [""]
            numbers[kind] = nums
    L += ["## Folds", "", f"| fold | test {by} groups | validation {by} groups | test images |", "|---|---|---|---:|"]
    base = res.get(BASE, {})
    for f in folds:
        n = base.get(f"design-{f.index}", {}).get("n", "-")
        L.append(f"| {f.index} | {', '.join(f.test)} | {', '.join(f.val)} | {n} |")
    L += ["", "## Fine-tuning runs", "", "| recipe | options changed | units | best epoch (per unit) | "
          "mix chosen on validation (per unit; 1 = fine-tuned) | minutes per run (mean) | training images/s |",
          "|---|---|---:|---|---|---:|---:|"]
    for name in recipes:
        rows = list(res[name].values())
        mixes = [json.loads(p.read_text())["alpha"] if p.is_file() else "-"
                 for p in (cache.parent / "runs" / name / u / "average.json" for u in res[name])]
        L.append(f"| {name} | {rows[0].get('overrides') or ''} | {len(rows)} | "
                 f"{' '.join(str(r['best_epoch']) + '/' + str(r['epochs']) for r in rows)} | "
                 f"{' '.join(str(m) for m in mixes)} | "
                 f"{np.mean([r['finetune_seconds'] for r in rows]) / 60:.1f} | "
                 f"{np.mean([r['images_per_s'] for r in rows]):.1f} |")
    numbers["results"] = res
    notes = out.parent / f"{out.name}_notes.md"  # written by hand (what a table cannot say): kept across rewrites
    if notes.is_file():
        L += ["", notes.read_text().rstrip()]
    out.with_suffix(".md").write_text("\n".join(L) + "\n")
    out.with_suffix(".json").write_text(json.dumps(numbers, indent=1, default=str))
    print("\n".join(L))
    print(f"\nwrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")

