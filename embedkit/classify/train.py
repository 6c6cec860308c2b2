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
from embedkit.classify.metrics import accuracy_line, repeats_line, small_class_notes
from embedkit.defaults import CV_FOLDS, SPLIT_FRACTIONS, SVM_CS, SVM_GAMMAS, SVM_KERNELS
from embedkit.errors import ConfigError, DataError, invalid
from embedkit.splits import DESIGN, designs, make_split
from embedkit.stats import summarize


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
    repeats: dict | None = None

    def summary(self) -> str:
        """One line: what was trained on what, how (exact kernel or fall-back), and the test scores."""
        t = f"test {accuracy_line(self.test)}" if self.test else "no test items"
        b = f"; logistic baseline {accuracy_line(self.baseline)}" if self.baseline else ""
        s = self.sizes
        how = {"exact": "exact kernel SVM", "approx": "fallback: Nystroem + linear SVM (grid search on "
               f"{self.plan.get('search_rows')} of {self.plan.get('n_fit')} rows)", "knn": "kNN"}[self.plan["mode"]]
        cv = f" (CV {self.cv_score:.4f}, grid search {self.grid_seconds:.1f}s)" if self.cv_score is not None else ""
        line = (f"trained {self.method.upper()} on {s['train'] + s['val']} codes (train {s['train']} + val {s['val']}), "
                f"tested on {s['test']}: {how}, best {self.best_params}{cv}; {t}{b}; {self.seconds:.1f}s -> {self.out}")
        if self.repeats:
            line += "\n" + repeats_line(self.repeats)
        return line


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


def _fit(store, labels, fit_rows, seed, progress, *, method, kernels, Cs, gammas, cv, decision, class_weight,
         backend, device, n_jobs, max_kernel_rows, memory_budget, n_neighbors, approx_params, calibrate):
    """Fit the classifier on ``fit_rows``: ``(clf, grid search or None, plan, notes, X_search, y_search)``."""
    from embedkit.classify.apply import read_rows
    from embedkit.classify.large import plan_training
    from embedkit.estimators import check_labels

    y_fit = check_labels(labels[fit_rows], len(fit_rows))
    notes, jobs = [], _jobs(n_jobs)
    # decide from sizes alone, before any code is read
    plan = (plan_training(len(fit_rows), store.dim, max_kernel_rows, memory_budget, jobs).to_dict()
            if method == "svm" else {"mode": "knn", "n_fit": len(fit_rows), "reason": f"{n_neighbors}-NN vote"})
    if method == "svm":
        clf, gs, X_search, y_search = _fit_svm(store, labels, fit_rows, y_fit, plan, notes, kernels, Cs, gammas, cv,
                                               seed, decision, class_weight, backend, device, n_jobs, progress,
                                               approx_params, calibrate)
        return clf, gs, plan, notes, X_search, y_search
    from embedkit.classify.knn import KNNCodesClassifier

    X_search, y_search = read_rows(store, fit_rows), y_fit
    clf = KNNCodesClassifier(n_neighbors=n_neighbors, device=device).fit(X_search, y_search)
    return clf, None, plan, notes, X_search, y_search


def _fit_svm(store, labels, fit_rows, y_fit, plan: dict, notes: list, kernels, Cs, gammas, cv, seed, decision,
             class_weight, backend, device, n_jobs, progress, approx_params, calibrate):
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
                            device=device, n_jobs=n_jobs)
        if calibrate:
            from embedkit.classify.calibrate import CalibratedSVM

            clf = CalibratedSVM(cv=folds).fit_from(clf, X_search, y_search, seed)
        else:
            clf.fit(X_search, y_search)
    else:
        clf = ApproxKernelSVM(**gs.best_params, seed=seed, **(approx_params or {})).fit_reader(
            lambda pos: read_rows(store, fit_rows[pos]), y_fit, store.dim)
        if calibrate:
            notes.append("--calibrate is for the exact kernel SVM: the Nystroem fall-back's scores stay decision "
                         "values")
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
    test = {"top1": rep["top1"], "top5": rep["top5"], "n": rep["n"], "failures": len(failures),
            "interval": rep["interval"]}
    base = None
    if baseline:
        lr = LogisticBaseline().fit(X_fit, y_fit)
        b = classification_report(labels[rows], score_rows(lr, store, rows), lr.classes_)
        base = {"top1": b["top1"], "top5": b["top5"], "n": b["n"], "interval": b["interval"], "fit_rows": len(y_fit)}
    return rep, failures, test, base


def train(store, out, kernels=SVM_KERNELS, Cs=None, gammas=None, cv: int = CV_FOLDS, seed: int = 0,
          decision: str = "ovr", class_weight=None, backend="auto", device="auto", n_jobs=None,
          fractions=SPLIT_FRACTIONS, split_by=None, test_groups=(), val_groups=(), split_file=None,
          baseline: bool = True, progress: bool = True, method: str = "svm", max_kernel_rows: int | None = None,
          memory_budget: int | None = None, n_neighbors: int = 5, overwrite: bool = False,
          approx_params: dict | None = None, calibrate: bool = False, repeats: int = 1) -> TrainResult:
    """Split the store, fit the classifier on train+val, save it to ``out`` and evaluate it on test.

    ``method="svm"``: grid search of kernel x C x gamma (``cv`` folds, fewer where a class is too small),
    exact when the train+val rows fit ``max_kernel_rows`` (default: what ``memory_budget`` bytes allow,
    half the available memory when None), else the scalable fall-back of :mod:`embedkit.classify.large`
    (``approx_params``: ``n_components``, ``epochs``, ``batch_rows`` of its :class:`ApproxKernelSVM`).
    ``method="knn"``: a vote of ``n_neighbors`` nearest training codes. ``out`` must be new or empty unless
    ``overwrite``. ``device="cpu"`` keeps every step (Gram matrix, final SVM) on the CPU. ``calibrate``: the
    exact SVM's scores become probabilities (:mod:`embedkit.classify.calibrate`, the grid search's folds).
    ``repeats`` > 1: the whole fit is repeated on the splits of seeds ``seed+1 ... seed+repeats-1`` and the
    test figures over all ``repeats`` splits are summarised (mean, std, interval; :func:`repeated_splits`);
    the saved model is the first split's.
    """
    from embedkit.classify.evaluate import model_extra, write_evaluation
    from embedkit.classify.model_folder import check_out_folder, save_classifier
    from embedkit.device import resolve_compute

    t0 = time.perf_counter()
    if method not in METHODS:
        raise invalid("method", method, METHODS)
    compute = resolve_compute(device)  # once: the Gram matrices and the SVM library follow it
    out = check_out_folder(out, overwrite)
    if calibrate and method != "svm":
        raise ConfigError(f"--calibrate calibrates an SVM's decision values; --method {method} has none: "
                          "drop --calibrate or use --method svm")
    if repeats > 1 and (split_file or test_groups or val_groups):
        raise ConfigError("--repeats draws a new split per seed; --split-file, --test-groups and --val-groups fix "
                          "one split: drop one or the other")
    if len(store) == 0:
        raise DataError(f"store {str(store.path)!r} holds no codes; embed some images first")
    labels = np.asarray(store.labels, dtype=object)  # unlabelled rows are left out by the split (splits.py)
    split = split_store(store, fractions, seed, split_by, test_groups, val_groups, split_file)
    fit_rows = np.sort(np.concatenate([split.train, split.val]))
    if len(fit_rows) == 0:
        raise DataError("the split leaves no items to train on; change --split-by/--fractions/--split-file")
    opts = dict(method=method, kernels=kernels, Cs=Cs, gammas=gammas, cv=cv, decision=decision,
                class_weight=class_weight, backend=backend, device=compute, n_jobs=n_jobs,
                max_kernel_rows=max_kernel_rows, memory_budget=memory_budget, n_neighbors=n_neighbors,
                approx_params=approx_params, calibrate=calibrate)
    clf, gs, plan, notes, X_search, y_search = _fit(store, labels, fit_rows, seed, progress, **opts)
    best, cv_score = (gs.best_params, gs.best_score) if gs is not None else ({"n_neighbors": int(n_neighbors)}, None)
    sizes = split.sizes()
    extra = {"method": method, "training": plan, "notes": notes, "split": sizes}
    if gs is not None:
        extra["grid_search"] = {**gs.to_dict(), "kernels": list(kernels), "cv": len(gs.folds), "cv_asked": cv,
                                "seed": seed, "decision": decision}
    test = base = rep = failures = None
    if len(split.test):
        rep, failures, test, base = _test(clf, store, labels, split.test, X_search, y_search, baseline)
        notes += small_class_notes(rep)
    del X_search
    rep_runs = None
    if repeats > 1 and test is not None:
        runs = [{"seed": seed, "top1": test["top1"], "top5": test["top5"], "n": test["n"]}] + repeated_splits(
            store, labels, range(seed + 1, seed + repeats), dict(fractions=fractions, split_by=split_by), opts)
        rep_runs = {"runs": runs, **{k: summarize([r[k] for r in runs]).to_dict() for k in ("top1", "top5")}}
    extra.update(test=test, baseline=base, repeats=rep_runs)
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
                                 extra={"training": plan, "method": method, "repeats": rep_runs, **model_extra(
                                     {"method": method, "params": chosen, "gamma": getattr(clf, "gamma_", None),
                                      "estimator": type(clf).__name__, "baseline": base})})
    return TrainResult(out, best, cv_score, test, base, sizes, time.perf_counter() - t0,
                       gs.seconds if gs else 0.0, files, method, plan, notes, rep_runs)


def repeated_splits(store, labels, seeds, split_kw: dict, opts: dict) -> list:
    """Test top-1/top-5 of the same training (:func:`_fit` with ``opts``) on the split of each seed."""
    from embedkit.classify.apply import score_rows
    from embedkit.classify.metrics import classification_report

    runs = []
    for s in seeds:
        split = split_store(store, seed=s, **split_kw)
        clf = _fit(store, labels, np.sort(np.concatenate([split.train, split.val])), s, False, **opts)[0]
        r = classification_report(labels[split.test], score_rows(clf, store, split.test), clf.classes_)
        runs.append({"seed": int(s), "top1": r["top1"], "top5": r["top5"], "n": r["n"]})
    return runs
