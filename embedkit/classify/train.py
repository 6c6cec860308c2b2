"""The training pipeline behind ``embedkit classify train``: split, plan, grid search, fit, save, evaluate.

Training follows the paper: a stratified, seeded 64/16/20 train/val/test split (or a hold-out of whole
groups, or a split file: :func:`embedkit.splits.make_split`), k-fold grid search of the SVM over
train+val, the best SVM refitted on train+val, and top-1/top-5 precision on the untouched test part,
next to a logistic-regression baseline.

Memory stays bounded whatever the store's size: the training plan (:mod:`embedkit.classify.large`) is
decided from the row count before any code is read; sets too large for an exact N x N kernel get the
grid search on a stated subsample and a Nystroem + linear SVM fitted by streaming. Test codes are
scored chunk by chunk (:mod:`embedkit.classify.apply`). The model is saved before any plot is drawn.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedkit.classify.constants import METHODS
from embedkit.defaults import CV_FOLDS, SPLIT_FRACTIONS, SVM_CS, SVM_GAMMAS, SVM_KERNELS
from embedkit.errors import DataError, invalid
from embedkit.splits import DESIGN, designs, make_split


def store_groups(store, column: str) -> np.ndarray:
    """Group of every item: ``design`` (file name without extension) or a column of the store's items."""
    if column == DESIGN:
        return designs(store.paths)
    if column not in store.columns:
        raise invalid("split column", column, f"'{DESIGN}' (file name) or a column of the store's items: "
                      f"{', '.join(store.columns)}")
    return store.column(column)


def split_store(store, fractions=SPLIT_FRACTIONS, seed: int = 0, split_by: str | None = None, test_groups=(),
                val_groups=(), split_file=None):
    """The train/val/test :class:`~embedkit.splits.Split` of a store's items (:func:`embedkit.splits.make_split`)."""
    groups = store_groups(store, split_by) if split_by and not split_file else None
    return make_split(store.paths, store.labels, groups, fractions, seed, test_groups, val_groups, split_file)


@dataclass
class TrainResult:
    """What :func:`train` did, and where it wrote."""

    out: Path
    best_params: dict
    cv_score: float | None
    test: dict | None
    baseline: dict | None
    sizes: dict
    seconds: float
    grid_seconds: float
    files: dict = field(default_factory=dict)
    method: str = "svm"
    plan: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def summary(self) -> str:
        """One line: what was trained on what, how (exact kernel or fall-back), and the test scores."""
        t = (f"test top-1 {self.test['top1']:.4f} top-5 {self.test['top5']:.4f}" if self.test else "no test items")
        b = (f"; logistic baseline top-1 {self.baseline['top1']:.4f} top-5 {self.baseline['top5']:.4f}"
             if self.baseline else "")
        s = self.sizes
        how = {"exact": "exact kernel SVM", "approx": "fallback: Nystroem + linear SVM (grid search on "
               f"{self.plan.get('search_rows')} of {self.plan.get('n_fit')} rows)", "knn": "kNN"}[self.plan["mode"]]
        cv = f" (CV {self.cv_score:.4f}, grid search {self.grid_seconds:.1f}s)" if self.cv_score is not None else ""
        return (f"trained {self.method.upper()} on {s['train'] + s['val']} codes (train {s['train']} + val {s['val']}), "
                f"tested on {s['test']}: {how}, best {self.best_params}{cv}; {t}{b}; {self.seconds:.1f}s -> {self.out}")


def _jobs(n_jobs) -> int:
    import os

    return os.cpu_count() or 1 if n_jobs in (None, -1) else max(1, int(n_jobs))


def _fitted_params(method: str, mode: str, best: dict, decision: str, class_weight) -> dict:
    """The parameters of the model really fitted, for its report: the fall-back (SGD, one-vs-rest) takes
    neither ``decision`` nor ``class_weight``."""
    if method != "svm":
        return best
    if mode == "approx":
        return {**best, "decision": "ovr", "class_weight": None}
    return {**best, "decision": decision, "class_weight": class_weight}


def _fit_svm(store, labels, fit_rows, y_fit, plan: dict, notes: list, kernels, Cs, gammas, cv, seed, decision,
             class_weight, backend, device, n_jobs, progress, approx_params):
    """Grid search then the final SVM on the training rows: exact, or the fall-back with its search on a
    stratified subsample (``plan["mode"]``). Returns ``(classifier, grid search, search codes, their labels)``."""
    from embedkit.classify.apply import read_rows
    from embedkit.classify.gridsearch import effective_folds, grid_search_svm
    from embedkit.classify.large import ApproxKernelSVM, stratified_sample
    from embedkit.classify.svm import SVMClassifier, svm_backend

    final_backend = svm_backend(backend, device)
    if final_backend == "cuml":
        notes.append("the final SVM is fitted with scikit-learn: cuML models cannot be saved without pickle yet")
        final_backend = "sklearn"
    search_rows = fit_rows
    if plan["mode"] == "approx":
        notes.append(plan["reason"])
        if decision != "ovr" or class_weight is not None:
            notes.append(f"the fall-back is one-vs-rest without class weights: decision {decision!r} and "
                         f"class_weight {class_weight!r} applied to the grid search only")
        search_rows = fit_rows[stratified_sample(y_fit, plan["max_kernel_rows"], seed)]
    plan["search_rows"] = len(search_rows)
    X_search = read_rows(store, search_rows)
    y_search = labels[search_rows]
    folds, note = effective_folds(y_search, cv)
    if note:
        notes.append(note)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the fold note is in `notes`
        gs = grid_search_svm(X_search, y_search, kernels, Cs or SVM_CS, gammas or SVM_GAMMAS, cv=folds, seed=seed,
                             decision=decision, class_weight=class_weight, device=device, n_jobs=n_jobs,
                             max_gram_bytes=1 << 62, progress=progress)
    if plan["mode"] == "exact":
        clf = SVMClassifier(**gs.best_params, decision=decision, class_weight=class_weight, backend=final_backend,
                            device=device, n_jobs=n_jobs).fit(X_search, y_search)
    else:
        clf = ApproxKernelSVM(**gs.best_params, seed=seed, **(approx_params or {})).fit_reader(
            lambda pos: read_rows(store, fit_rows[pos]), y_fit, store.dim)
    return clf, gs, X_search, y_search


def _test(clf, store, labels, rows, X_fit, y_fit, baseline: bool):
    """``(report, failures, test figures, logistic baseline figures or None)`` of ``clf`` on the test ``rows``;
    the baseline is fitted on the same training codes as the classifier's final fit."""
    from embedkit.classify.apply import score_rows
    from embedkit.classify.evaluate import evaluate_scores
    from embedkit.classify.metrics import classification_report
    from embedkit.classify.svm import LogisticBaseline

    rep, failures = evaluate_scores(score_rows(clf, store, rows), clf.classes_, labels[rows], store.paths[rows],
                                    sha1=store.recorded_sha1(rows))
    test = {"top1": rep["top1"], "top5": rep["top5"], "n": rep["n"], "failures": len(failures)}
    base = None
    if baseline:
        lr = LogisticBaseline().fit(X_fit, y_fit)
        b = classification_report(labels[rows], score_rows(lr, store, rows), lr.classes_)
        base = {"top1": b["top1"], "top5": b["top5"], "n": b["n"], "fit_rows": len(y_fit)}
    return rep, failures, test, base


def train(store, out, kernels=SVM_KERNELS, Cs=None, gammas=None, cv: int = CV_FOLDS, seed: int = 0,
          decision: str = "ovr", class_weight=None, backend="auto", device="auto", n_jobs=None,
          fractions=SPLIT_FRACTIONS, split_by=None, test_groups=(), val_groups=(), split_file=None,
          baseline: bool = True, progress: bool = True, method: str = "svm", max_kernel_rows: int | None = None,
          memory_budget: int | None = None, n_neighbors: int = 5, overwrite: bool = False,
          approx_params: dict | None = None) -> TrainResult:
    """Split the store, fit the classifier on train+val, save it to ``out`` and evaluate it on test.

    ``method="svm"``: grid search of kernel x C x gamma (``cv`` folds, fewer where a class is too small),
    exact when the train+val rows fit ``max_kernel_rows`` (default: what ``memory_budget`` bytes allow,
    half the available memory when None), else the scalable fall-back of :mod:`embedkit.classify.large`
    (``approx_params``: ``n_components``, ``epochs``, ``batch_rows`` of its :class:`ApproxKernelSVM`).
    ``method="knn"``: a vote of ``n_neighbors`` nearest training codes. ``out`` must be new or empty unless
    ``overwrite``. ``device="cpu"`` keeps every step (Gram matrix, final SVM) on the CPU.
    """
    from embedkit.classify.apply import read_rows
    from embedkit.classify.evaluate import model_extra, write_evaluation
    from embedkit.classify.large import plan_training
    from embedkit.classify.model_folder import check_out_folder, save_classifier
    from embedkit.estimators import check_labels

    t0 = time.perf_counter()
    if method not in METHODS:
        raise invalid("method", method, METHODS)
    out = check_out_folder(out, overwrite)
    if len(store) == 0:
        raise DataError(f"store {str(store.path)!r} holds no codes; embed some images first")
    labels = np.asarray(store.labels, dtype=object)  # unlabelled rows are left out by the split (splits.py)
    split = split_store(store, fractions, seed, split_by, test_groups, val_groups, split_file)
    fit_rows = np.sort(np.concatenate([split.train, split.val]))
    if len(fit_rows) == 0:
        raise DataError("the split leaves no items to train on; change --split-by/--fractions/--split-file")
    y_fit = check_labels(labels[fit_rows], len(fit_rows))
    notes, jobs = [], _jobs(n_jobs)
    # decide from sizes alone, before any code is read
    plan = (plan_training(len(fit_rows), store.dim, max_kernel_rows, memory_budget, jobs).to_dict()
            if method == "svm" else {"mode": "knn", "n_fit": len(fit_rows), "reason": f"{n_neighbors}-NN vote"})
    gs = None
    if method == "svm":
        clf, gs, X_search, y_search = _fit_svm(store, labels, fit_rows, y_fit, plan, notes, kernels, Cs, gammas, cv,
                                               seed, decision, class_weight, backend, device, n_jobs, progress,
                                               approx_params)
        best, cv_score = gs.best_params, gs.best_score
    else:
        from embedkit.classify.knn import KNNCodesClassifier

        X_search, y_search = read_rows(store, fit_rows), y_fit
        clf = KNNCodesClassifier(n_neighbors=n_neighbors, device=device).fit(X_search, y_search)
        best, cv_score = {"n_neighbors": int(n_neighbors)}, None
    sizes = split.sizes()
    extra = {"method": method, "training": plan, "notes": notes, "split": sizes}
    if gs is not None:
        extra["grid_search"] = {**gs.to_dict(), "kernels": list(kernels), "cv": len(gs.folds), "cv_asked": cv,
                                "seed": seed, "decision": decision}
    test = base = rep = failures = None
    if len(split.test):
        rep, failures, test, base = _test(clf, store, labels, split.test, X_search, y_search, baseline)
    del X_search
    extra.update(test=test, baseline=base)
    # the model first: drawing plots can fail (odd labels, fonts) and must never lose a trained model
    # rows as a generator of (path, part): a million two-item lists would cost ~100 MB for one CSV
    save_classifier(out, clf, store, extra, split_rows=zip(store.paths, split.part_of(len(store))))
    files = {}
    if gs is not None:
        from embedkit.atomic import write_text_atomic

        write_text_atomic(out / "grid_search.txt", gs.table())
    if rep is not None:
        chosen = _fitted_params(method, plan["mode"], best, decision, class_weight)
        files = write_evaluation(out, rep, failures, title=f"{method.upper()} on test",
                                 extra={"training": plan, "method": method, **model_extra(
                                     {"method": method, "params": chosen, "gamma": getattr(clf, "gamma_", None),
                                      "estimator": type(clf).__name__, "baseline": base})})
    return TrainResult(out, best, cv_score, test, base, sizes, time.perf_counter() - t0,
                       gs.seconds if gs else 0.0, files, method, plan, notes)
