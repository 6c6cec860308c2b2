"""Evaluation outputs of a trained classifier: report, confusion matrix, per-class plot, failure gallery.

An evaluation writes ``report.json``, ``report.txt``, ``confusion.png``, ``per_class.png``,
``failures.csv`` and ``failures.html`` (the paper's failure cases: misclassified
items with their top-5 classes and scores).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedkit.atomic import write_bytes_atomic, write_csv_atomic, write_text_atomic  # noqa: F401 - re-exported
from embedkit.classify.metrics import classification_report, rank_classes, write_report
from embedkit.defaults import TOP_K


def evaluate(clf, X, y, paths, k: int = TOP_K):
    """``(report, failures)``: the metrics report and one row per misclassified item with its top-k."""
    return evaluate_scores(clf.class_scores(X), clf.classes_, y, paths, k)


def evaluate_scores(scores, classes, y, paths, k: int = TOP_K):
    """``(report, failures)`` from per-class ``scores`` (N x K, columns in ``classes`` order) of items ``y``."""
    classes = [str(c) for c in classes]
    y = np.asarray([str(v) for v in np.asarray(y, dtype=object).tolist()], dtype=object)
    rep = classification_report(y, scores, classes, ks=(1, k))
    order = rank_classes(scores, min(k, scores.shape[1]))
    failures = []
    for i in np.flatnonzero(np.asarray(classes, dtype=object)[order[:, 0]] != y):
        ranked = [(classes[j], float(scores[i, j])) for j in order[i]]
        failures.append({"path": paths[i], "true": str(y[i]), "pred": ranked[0][0], "top": ranked,
                         "true_rank": next((r + 1 for r, (c, _) in enumerate(ranked) if c == str(y[i])), None)})
    return rep, failures


def write_evaluation(out, rep: dict, failures: list, title: str = "evaluation", gallery_limit: int = 300,
                     extra: dict | None = None) -> dict:
    """Write report.json/.txt, failures.csv/.html, then confusion.png and per_class.png into ``out``; returns
    the paths. ``extra`` entries (e.g. the training plan) are added to report.json. The plots come last."""
    from embedkit.render.gallery import write_gallery
    from embedkit.render.plots import confusion_matrix_png, per_class_bar_png

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"report": out / "report.json", "table": out / "report.txt", "confusion": out / "confusion.png",
             "per_class": out / "per_class.png", "failures_csv": out / "failures.csv", "failures_html": out / "failures.html"}
    head = f"{title}: top-1 {rep['top1']:.4f}  top-{TOP_K} {rep[f'top{TOP_K}']:.4f}  ({rep['n']} items)"
    write_report({**rep, **(extra or {})}, paths["report"], paths["table"], title=head)
    k = max((len(f["top"]) for f in failures), default=TOP_K)
    rows = [[f["path"], f["true"], f["pred"], f["true_rank"] or ""]
            + [v for j in range(k) for v in (f["top"][j] if j < len(f["top"]) else ("", ""))] for f in failures]
    write_csv_atomic(paths["failures_csv"], ["path", "true", "pred", "true_rank"]
                     + [c for j in range(1, k + 1) for c in (f"top{j}", f"score{j}")], rows, spreadsheet=True)
    items = [{"path": f["path"], "ok": False,
              "caption": f"true: {f['true']}\n" + "\n".join(f"{j + 1}. {c} ({s:.3f})" for j, (c, s) in enumerate(f["top"]))}
             for f in failures[:gallery_limit]]
    more = f" (first {gallery_limit} of {len(failures)})" if len(failures) > gallery_limit else ""
    write_gallery(paths["failures_html"], f"Failure cases: {title}",
                  [{"title": f"{len(failures)} misclassified of {rep['n']}{more}", "items": items}])
    confusion_matrix_png(np.asarray(rep["confusion"]), rep["classes"], paths["confusion"], title=f"Confusion matrix ({title})")
    per_class_bar_png({c: r["top1"] for c, r in rep["per_class"].items() if r["top1"] is not None}, paths["per_class"],
                      title=f"Per-class top-1 precision ({title})")
    return paths
