"""Classification metrics as the paper reports them: top-1 / top-k precision, globally and per class.

"Top-k precision" follows Lagunas & Garces: the fraction of items whose true
class is among the k classes with the highest scores. Per class it is the same
fraction over the items *of that true class*. The report also carries the
usual precision/recall of top-1 predictions and the confusion matrix, and can
be written as JSON and as a plain-text table.
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np

from embedkit.atomic import write_text_atomic
from embedkit.errors import DataError, invalid
from embedkit.stats import proportion_interval
from embedkit.words import plural

#: rows ranked at once by :func:`rank_classes` (bounds its temporaries)
RANK_BLOCK = 16384
#: level of the interval printed with every accuracy
INTERVAL_LEVEL = 0.95
#: a class with fewer test items than this gets a warning: its per-class figures are anecdotes
MIN_CLASS_ITEMS = 5


def rank_classes(scores: np.ndarray, k: int | None = None) -> np.ndarray:
    """Column indices of ``scores`` (N x K) from best to worst, ``k`` of them; ties keep class order."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise DataError(f"scores must be a 2-D array (items x classes), got shape {scores.shape}")
    if k is None or k >= scores.shape[1]:
        return np.argsort(-scores, axis=1, kind="stable")
    # the k best only, a block of rows at a time: a full argsort of 200k x 100 scores holds two N x K temporaries
    out = np.empty((scores.shape[0], k), np.int64)
    for i in range(0, scores.shape[0], RANK_BLOCK):
        out[i:i + RANK_BLOCK] = np.argsort(-scores[i:i + RANK_BLOCK], axis=1, kind="stable")[:, :k]
    return out


def _true_index(y_true, classes) -> np.ndarray:
    classes = list(classes)
    pos = {c: i for i, c in enumerate(classes)}
    unknown = sorted({str(y) for y in y_true if y not in pos})
    if unknown:
        raise DataError(f"labels {unknown[:5]} are not among the model's {len(classes)} classes {classes[:10]}")
    return np.array([pos[y] for y in y_true], dtype=np.int64)


def top_k_hits(y_true, scores: np.ndarray, classes: Sequence, k: int) -> np.ndarray:
    """Boolean per item: is its true class among the ``k`` best-scored classes?"""
    if k < 1:
        raise invalid("k", k, "an integer >= 1")
    scores = np.asarray(scores)
    if scores.shape[0] != len(y_true) or scores.shape[1] != len(classes):
        raise DataError(f"scores of shape {scores.shape} do not match {len(y_true)} items x {len(classes)} classes")
    t = _true_index(y_true, classes)
    return (rank_classes(scores, min(k, len(classes))) == t[:, None]).any(axis=1)


def top_k_precision(y_true, scores, classes, k: int = 1) -> float:
    """Fraction of items whose true class is among the ``k`` best-scored classes."""
    if len(y_true) == 0:
        raise DataError("cannot compute a precision over zero items")
    return float(top_k_hits(y_true, scores, classes, k).mean())


def per_class_top_k(y_true, scores, classes, k: int = 1) -> dict:
    """``{class: top-k precision over the items of that class}`` (classes with no items are left out)."""
    hits = top_k_hits(y_true, scores, classes, k)
    y = np.asarray(y_true, dtype=object)
    return {c: float(hits[y == c].mean()) for c in classes if (y == c).any()}


def classification_report(y_true, scores, classes, ks: Sequence[int] = (1, 5)) -> dict:
    """Everything the paper reports, as a JSON-ready dict.

    Keys: ``n``, ``classes``, ``top{k}`` (global, i.e. micro: over all items), ``interval`` (``{method,
    top{k}: [low, high]}``: the Wilson interval of each ``top{k}`` over its ``n`` items), ``per_class``
    (``{class: {n, top1, top5, precision, recall}}``; precision/recall are of the top-1 predictions),
    ``macro`` (``{precision, recall, f1, classes}``: unweighted means over the ``classes`` classes that
    have items, so every class counts the same whatever its size), ``confusion`` (rows = true, columns =
    predicted, in ``classes`` order).
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    classes = [str(c) for c in classes]
    y_true = np.asarray([str(y) for y in y_true], dtype=object)
    scores = np.asarray(scores, dtype=np.float64)
    if len(y_true) == 0:
        raise DataError("cannot report on zero items")
    pred = np.asarray(classes, dtype=object)[rank_classes(scores, 1)[:, 0]]
    rep = {"n": int(len(y_true)), "classes": classes}
    for k in ks:
        rep[f"top{k}"] = top_k_precision(y_true, scores, classes, k)
    rep["interval"] = {"method": f"Wilson score, {INTERVAL_LEVEL:.0%}", **{
        f"top{k}": list(proportion_interval(round(rep[f"top{k}"] * rep["n"]), rep["n"], INTERVAL_LEVEL)) for k in ks}}
    per_k = {k: per_class_top_k(y_true, scores, classes, k) for k in ks}
    prec, rec, f1, support = precision_recall_fscore_support(y_true, pred, labels=classes, zero_division=0)
    rep["per_class"] = {
        c: {"n": int(support[i]), **{f"top{k}": per_k[k].get(c) for k in ks},
            "precision": float(prec[i]), "recall": float(rec[i])}
        for i, c in enumerate(classes)
    }
    present = support > 0
    rep["macro"] = {"precision": float(prec[present].mean()), "recall": float(rec[present].mean()),
                    "f1": float(f1[present].mean()), "classes": int(present.sum())}
    rep["confusion"] = confusion_matrix(y_true, pred, labels=classes).tolist()
    return rep


def accuracy_line(rep: dict, ks=(1, 5)) -> str:
    """``top-1 0.917 (95% CI 0.65-0.99) top-5 1.000 (95% CI 0.76-1.00), n=12``: every figure with its interval."""
    ci = rep.get("interval") or {}
    parts = []
    for k in ks:
        if f"top{k}" not in rep:
            continue
        low_high = ci.get(f"top{k}")
        band = f" ({INTERVAL_LEVEL:.0%} CI {low_high[0]:.3f}-{low_high[1]:.3f})" if low_high else ""
        parts.append(f"top-{k} {rep[f'top{k}']:.3f}{band}")
    return " ".join(parts) + f", n={rep['n']}"


def repeats_line(rep: dict) -> str:
    """``over 5 splits (seeds 0-4, 69 test items each): top-1 0.912 +- 0.031 (std; 95% CI of the mean ...)``."""
    runs = rep["runs"]
    ns = sorted({r["n"] for r in runs})
    each = str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
    figures = "  ".join(f"top-{k[3:]} {rep[k]['mean']:.3f} +- {rep[k]['std']:.3f} (std; 95% CI of the mean "
                        f"{rep[k]['low']:.3f}-{rep[k]['high']:.3f})" for k in ("top1", "top5"))
    return f"over {len(runs)} splits (seeds {runs[0]['seed']}-{runs[-1]['seed']}, {each} test items each): {figures}"


def small_class_notes(rep: dict, min_items: int = MIN_CLASS_ITEMS) -> list:
    """One warning when some classes have fewer than ``min_items`` test items (their figures are anecdotes)."""
    small = {c: r["n"] for c, r in rep.get("per_class", {}).items() if 0 < r["n"] < min_items}
    if not small:
        return []
    listed = ", ".join(f"{c} ({n})" for c, n in list(small.items())[:8]) + (" ..." if len(small) > 8 else "")
    return [f"{plural(len(small), 'class', 'classes')} of {len(rep['per_class'])} have fewer than {min_items} test "
            f"items: {listed}; their per-class figures are anecdotes and the overall figure is uncertain (see the "
            "interval); more images per class, or --repeats N, tell more"]


def _fmt_param(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def report_table(rep: dict, title: str = "") -> str:
    """A readable fixed-width table of a :func:`classification_report`.

    Below the per-class rows: ``ALL`` (global, micro: over all items) and, when present, ``MACRO``
    (unweighted mean over classes), then the ``classifier`` parameters and the ``logistic_baseline``
    figures a report may carry (see :func:`embedkit.classify.evaluate.write_evaluation`).
    """
    ks = [int(k[3:]) for k in rep if k.startswith("top") and k[3:].isdigit()]
    width = max([len("class")] + [len(c) for c in rep["classes"]])
    head = f"{'class':<{width}}  {'n':>5}  " + "  ".join(f"{'top' + str(k):>6}" for k in ks) + f"  {'prec':>6}  {'recall':>6}"
    lines = [title] if title else []
    lines += [head, "-" * len(head)]
    fmt = lambda v: f"{v:6.3f}" if v is not None else f"{'-':>6}"  # noqa: E731
    for c in rep["classes"]:
        r = rep["per_class"][c]
        lines.append(f"{c:<{width}}  {r['n']:>5}  " + "  ".join(fmt(r[f'top{k}']) for k in ks)
                     + f"  {fmt(r['precision'])}  {fmt(r['recall'])}")
    lines.append("-" * len(head))
    lines.append(f"{'ALL':<{width}}  {rep['n']:>5}  " + "  ".join(fmt(rep[f'top{k}']) for k in ks)
                 + "  (global, micro: over all items)")
    if rep.get("interval"):
        lines.append(f"interval ({rep['interval']['method']}) over the {plural(rep['n'], 'item')}: " + "  ".join(
            f"top-{k} {rep['interval'][f'top{k}'][0]:.3f}-{rep['interval'][f'top{k}'][1]:.3f}" for k in ks))
    macro = rep.get("macro")
    if macro:
        lines.append(f"{'MACRO':<{width}}  {'':>5}  " + "  ".join(f"{'':>6}" for _ in ks)
                     + f"  {fmt(macro['precision'])}  {fmt(macro['recall'])}  f1 {macro['f1']:.3f}"
                     + f"  (unweighted mean over {macro.get('classes', len(rep['classes']))} classes)")
    if rep.get("repeats"):
        lines += ["", repeats_line(rep["repeats"])]
    clf = rep.get("classifier")
    if clf:
        lines += ["", "classifier: " + ", ".join(f"{k} {_fmt_param(v)}" for k, v in clf.items() if v is not None)]
    if "logistic_baseline" in rep:
        b = rep.get("logistic_baseline")
        where = f" ({b['where']})" if b and b.get("where") else ""
        lines.append(f"logistic-regression baseline{where}: " + (
            "  ".join(f"top-{k[3:]} {b[k]:.4f}" for k in b if k.startswith("top") and k[3:].isdigit())
            if b else "not computed"))
    return "\n".join(lines) + "\n"


def write_report(rep: dict, json_path, table_path=None, title: str = "") -> None:
    """Write a report as JSON (and as a text table when ``table_path`` is given), atomically."""
    write_text_atomic(json_path, json.dumps(rep, indent=2, default=float))
    if table_path is not None:
        write_text_atomic(table_path, report_table(rep, title))
