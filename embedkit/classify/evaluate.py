"""Evaluation outputs of a trained classifier: report, confusion matrix, per-class plot, failure gallery.

An evaluation writes ``report.json``, ``report.txt``, ``confusion.png``, ``per_class.png``,
``failures.csv`` and ``failures.html`` (the paper's failure cases: misclassified
items with their top-5 classes and scores).

``failures.html`` inlines the picture of a failure only when the file still has the sha1 recorded
for that store row at embed time (:func:`embedkit.render.gallery.checked_thumbnail_data_uri`): pass
the store's :meth:`~embedkit.store.codestore.CodeStore.recorded_sha1` to :func:`evaluate_scores`. A row without a recorded sha1
(imported codes, or a caller that passed none) gets a placeholder, never an unchecked file.

``report.json``/``report.txt`` carry the macro precision/recall/F1 next to the global (micro) figures,
and, when the caller gives them (:func:`model_extra`), the classifier's parameters and the
logistic-regression baseline's figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedkit.atomic import write_csv_atomic
from embedkit.classify.metrics import accuracy_line, classification_report, rank_classes, write_report
from embedkit.defaults import TOP_K
from embedkit.words import plural


def model_extra(meta: dict) -> dict:
    """What a report says about the model that made it, from its ``model.json`` (or the same keys): the
    classifier's parameters (``classifier``: method, kernel, C, gamma, decision, ...) and the
    logistic-regression baseline's figures (``logistic_baseline``, on the model's own test split; not
    ``baseline``, which a softmax baseline's report uses for its own summary)."""
    params = dict(meta.get("params") or {})
    method = meta.get("method") or ("knn" if "n_neighbors" in params else "svm")
    if method == "knn":
        clf = {"method": "knn", "n_neighbors": params.get("n_neighbors")}
    else:
        clf = {"method": method, "kernel": params.get("kernel"), "C": params.get("C"), "gamma": params.get("gamma"),
               "decision": params.get("decision"), "class_weight": params.get("class_weight")}
        if meta.get("gamma") is not None and meta.get("gamma") != clf["gamma"]:
            clf["gamma_value"] = meta["gamma"]
        if meta.get("estimator"):
            clf["estimator"] = meta["estimator"]
    base = meta.get("baseline")
    if base:
        base = {**base, "where": "on the model's own test split, fitted on its training codes"}
    return {"classifier": clf, "logistic_baseline": base}


def evaluate(clf, X, y, paths, k: int = TOP_K, sha1=None):
    """``(report, failures)``: the metrics report and one row per misclassified item with its top-k."""
    return evaluate_scores(clf.class_scores(X), clf.classes_, y, paths, k, sha1=sha1)


def evaluate_scores(scores, classes, y, paths, k: int = TOP_K, sha1=None):
    """``(report, failures)`` from per-class ``scores`` (N x K, columns in ``classes`` order) of items ``y``.

    ``sha1``: the sha1 recorded for each item's store row (``store.recorded_sha1(rows)``), kept with its failure
    row so that ``failures.html`` inlines only files that still have it; None: no picture is inlined.
    """
    classes = [str(c) for c in classes]
    y = np.asarray([str(v) for v in np.asarray(y, dtype=object).tolist()], dtype=object)
    rep = classification_report(y, scores, classes, ks=(1, k))
    order = rank_classes(scores, min(k, scores.shape[1]))
    failures = []
    for i in np.flatnonzero(np.asarray(classes, dtype=object)[order[:, 0]] != y):
        ranked = [(classes[j], float(scores[i, j])) for j in order[i]]
        failures.append({"path": paths[i], "sha1": "" if sha1 is None or sha1[i] is None else str(sha1[i]),
                         "true": str(y[i]), "pred": ranked[0][0], "top": ranked,
                         "true_rank": next((r + 1 for r, (c, _) in enumerate(ranked) if c == str(y[i])), None)})
    return rep, failures


def write_evaluation(out, rep: dict, failures: list, title: str = "evaluation", gallery_limit: int = 300,
                     extra: dict | None = None) -> dict:
    """Write report.json/.txt, failures.csv/.html, then confusion.png and per_class.png into ``out``; returns
    the paths. ``extra`` entries (e.g. the training plan, :func:`model_extra`) are added to report.json and the
    ``classifier``/``baseline`` ones to report.txt. The plots come last."""
    from embedkit.render.gallery import write_gallery
    from embedkit.render.plots import confusion_matrix_png, per_class_precision_recall_png

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"report": out / "report.json", "table": out / "report.txt", "confusion": out / "confusion.png",
             "per_class": out / "per_class.png", "failures_csv": out / "failures.csv", "failures_html": out / "failures.html"}
    head = f"{title}: {accuracy_line(rep, (1, TOP_K))} ({plural(rep['n'], 'item')})"
    if rep.get("macro"):
        m = rep["macro"]
        head += (f"\nmacro (mean over classes): precision {m['precision']:.4f}  recall {m['recall']:.4f}  "
                 f"f1 {m['f1']:.4f}")
    write_report({**rep, **(extra or {})}, paths["report"], paths["table"], title=head)
    k = max((len(f["top"]) for f in failures), default=TOP_K)
    rows = [[f["path"], f["true"], f["pred"], f["true_rank"] or ""]
            + [v for j in range(k) for v in (f["top"][j] if j < len(f["top"]) else ("", ""))] for f in failures]
    write_csv_atomic(paths["failures_csv"], ["path", "true", "pred", "true_rank"]
                     + [c for j in range(1, k + 1) for c in (f"top{j}", f"score{j}")], rows, spreadsheet=True)
    items = [{"path": f["path"], "ok": False, "sha1": f.get("sha1") or "",
              "caption": f"true: {f['true']}\n" + "\n".join(f"{j + 1}. {c} ({s:.3f})" for j, (c, s) in enumerate(f["top"]))}
             for f in failures[:gallery_limit]]
    more = f" (first {gallery_limit} of {len(failures)})" if len(failures) > gallery_limit else ""
    write_gallery(paths["failures_html"], f"Failure cases: {title}",
                  [{"title": f"{len(failures)} misclassified of {rep['n']}{more}", "items": items}])
    confusion_matrix_png(np.asarray(rep["confusion"]), rep["classes"], paths["confusion"], title=f"Confusion matrix ({title})")
    per_class_precision_recall_png({c: r for c, r in rep["per_class"].items() if r["n"]}, paths["per_class"],
                                   title=f"Per-class precision and recall of top-1 predictions ({title})",
                                   micro=rep["top1"], macro=rep.get("macro"))
    return paths
