"""The classification pipeline behind ``embedkit classify``: split, grid search, fit, save, evaluate, predict.

Training follows the paper: a stratified, seeded 64/16/20 train/val/test split
(or a hold-out of whole groups, or a split file), k-fold grid search of the SVM
over train+val, the best SVM refitted on train+val, and top-1/top-5 precision
on the untouched test part, next to a logistic-regression baseline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedkit.errors import ConfigError, DataError

DESIGN = "design"


def store_groups(store, column: str) -> np.ndarray:
    """Group of every item: ``design`` (file name without extension) or a column of the store's items."""
    from embedkit.splits import design_of

    if column == DESIGN:
        return np.array([design_of(p) for p in store.paths], dtype=object)
    if store.items and column not in store.items[0]:
        raise ConfigError(f"split column {column!r} is not in the store's items ({', '.join(store.items[0])}); "
                          f"use '{DESIGN}' (file name) or one of those")
    return np.array([it[column] for it in store.items], dtype=object)


def pick_groups(groups: np.ndarray, fraction: float, seed: int, exclude=()) -> list:
    """Seeded choice of whole groups holding about ``fraction`` of the items."""
    names = sorted(set(groups.tolist()) - set(exclude))
    rng = np.random.default_rng(seed)
    chosen, n = [], 0
    for g in [names[i] for i in rng.permutation(len(names))]:
        if n >= fraction * len(groups) or len(chosen) == len(names) - 1:
            break
        chosen.append(g)
        n += int((groups == g).sum())
    return chosen


def split_store(store, fractions=(0.64, 0.16, 0.20), seed: int = 0, split_by: str | None = None,
                test_groups=(), val_groups=(), split_file=None):
    """The train/val/test :class:`~embedkit.splits.Split` of a store's items (see ``embedkit classify train -h``)."""
    from embedkit.splits import group_split, split_from_file, stratified_split

    if split_file:
        return split_from_file(store.paths, split_file)
    if split_by:
        groups = store_groups(store, split_by)
        test_groups = list(test_groups) or pick_groups(groups, fractions[2], seed)
        val_groups = list(val_groups) or (pick_groups(groups, fractions[1], seed + 1, exclude=test_groups)
                                          if fractions[1] > 0 else [])
        return group_split(groups, test_groups, val_groups)
    return stratified_split(store.labels, fractions, seed)


def load_store_codes(store, rows=None):
    """Codes (float32, validated) and labels of a store's rows."""
    from embedkit.classify.svm import check_codes

    if len(store) == 0:
        raise DataError(f"store {str(store.path)!r} holds no codes; embed some images first")
    idx = np.arange(len(store)) if rows is None else np.asarray(rows)
    X = check_codes(np.asarray(store.codes[idx], dtype=np.float32), what=f"codes of store {str(store.path)!r}")
    return X, store.labels[idx], [store.paths[i] for i in idx]


@dataclass
class TrainResult:
    """What :func:`train` did, and where it wrote."""

    out: Path
    best_params: dict
    cv_score: float
    test: dict | None
    baseline: dict | None
    sizes: dict
    seconds: float
    grid_seconds: float
    files: dict = field(default_factory=dict)

    def summary(self) -> str:
        t = (f"test top-1 {self.test['top1']:.4f} top-5 {self.test['top5']:.4f}" if self.test else "no test items")
        b = (f"; logistic baseline top-1 {self.baseline['top1']:.4f} top-5 {self.baseline['top5']:.4f}"
             if self.baseline else "")
        s = self.sizes
        return (f"trained SVM on {s['train'] + s['val']} codes (train {s['train']} + val {s['val']}), tested on "
                f"{s['test']}: best {self.best_params} (CV {self.cv_score:.4f}, grid search {self.grid_seconds:.1f}s); "
                f"{t}{b}; {self.seconds:.1f}s -> {self.out}")


def train(store, out, kernels=("rbf", "sigmoid"), Cs=None, gammas=None, cv: int = 3, seed: int = 0,
          decision: str = "ovr", class_weight=None, backend="auto", device="auto", n_jobs=None,
          fractions=(0.64, 0.16, 0.20), split_by=None, test_groups=(), val_groups=(), split_file=None,
          baseline: bool = True, progress: bool = True) -> TrainResult:
    """Split the store, grid-search the SVM on train+val, refit the best, save it to ``out`` and evaluate on test."""
    from embedkit.classify.evaluate import evaluate, write_evaluation
    from embedkit.classify.gridsearch import DEFAULT_CS, DEFAULT_GAMMAS, grid_search_svm
    from embedkit.classify.model_folder import save_model
    from embedkit.classify.svm import LogisticBaseline, SVMClassifier
    from embedkit.splits import SPLITS

    t0 = time.perf_counter()
    out = Path(out)
    X, y, paths = load_store_codes(store)
    split = split_store(store, fractions, seed, split_by, test_groups, val_groups, split_file)
    fit_rows = np.sort(np.concatenate([split.train, split.val]))
    if len(fit_rows) == 0:
        raise DataError("the split leaves no items to train on; change --split-by/--fractions/--split-file")
    gs = grid_search_svm(X[fit_rows], y[fit_rows], kernels, Cs or DEFAULT_CS, gammas or DEFAULT_GAMMAS, cv=cv,
                         seed=seed, decision=decision, class_weight=class_weight, device=device, n_jobs=n_jobs,
                         progress=progress)
    clf = SVMClassifier(**gs.best_params, decision=decision, class_weight=class_weight, backend=backend,
                        n_jobs=n_jobs).fit(X[fit_rows], y[fit_rows])
    where = np.empty(len(paths), dtype=object)
    for name in SPLITS:
        where[getattr(split, name)] = name
    sizes = split.sizes()
    extra = {"grid_search": {**gs.to_dict(), "kernels": list(kernels), "cv": cv, "seed": seed, "decision": decision},
             "split": sizes}
    test = base = None
    files = {}
    if len(split.test):
        rep, failures = evaluate(clf, X[split.test], y[split.test], [paths[i] for i in split.test])
        files = write_evaluation(out, rep, failures, title="SVM on test")
        test = {"top1": rep["top1"], "top5": rep["top5"], "n": rep["n"], "failures": len(failures)}
        if baseline:
            lr = LogisticBaseline().fit(X[fit_rows], y[fit_rows])
            from embedkit.classify.metrics import classification_report

            b = classification_report(y[split.test], lr.class_scores(X[split.test]), [str(c) for c in lr.classes_])
            base = {"top1": b["top1"], "top5": b["top5"], "n": b["n"]}
    extra.update(test=test, baseline=base)
    from embedkit.atomic import write_text_atomic

    write_text_atomic(out / "grid_search.txt", gs.table())
    save_model(out, clf, store, extra, split_rows=[[p, where[i]] for i, p in enumerate(paths)])
    return TrainResult(out, gs.best_params, gs.best_score, test, base, sizes, time.perf_counter() - t0,
                       gs.seconds, files)


def evaluate_store(model_path, store, out=None, part: str = "all") -> tuple[dict, list, dict]:
    """Evaluate a saved model on a store (``part``: ``all`` items or the model's own ``test``/``val``/``train``)."""
    from embedkit.classify.evaluate import evaluate, write_evaluation
    from embedkit.classify.model_folder import check_store_matches, load_model
    from embedkit.splits import split_from_file

    clf, meta = load_model(model_path)
    check_store_matches(meta, store, model_path)
    rows = None
    if part != "all":
        split = split_from_file(store.paths, Path(model_path) / "split.csv")
        rows = getattr(split, part)
        if len(rows) == 0:
            raise DataError(f"the model's split has no {part} items")
    X, y, paths = load_store_codes(store, rows)
    rep, failures = evaluate(clf, X, y, paths)
    files = write_evaluation(out, rep, failures, title=f"{part} of {store.path.name}") if out else {}
    return rep, failures, files


def predict_paths(model_path, source, k: int = 5, device="auto", batch_size=None):
    """Embed the images of ``source`` with the model's backbone and rank classes: ``(rows, skipped)``.

    ``rows`` are ``[path, pred, label1, score1, ... labelk, scorek]``; a code store as ``source`` is used as is.
    """
    from embedkit.classify.model_folder import (
        check_store_matches,
        load_model,
        postprocess,
    )
    from embedkit.io.discover import discover
    from embedkit.models.backbone import Backbone
    from embedkit.store.codestore import CodeStore

    clf, meta = load_model(model_path)
    if (Path(source) / "meta.json").exists():
        store = CodeStore.open(source)
        check_store_matches(meta, store, model_path)
        X, _, paths = load_store_codes(store)
        skipped = []
    else:
        items = discover(source, labels=False)
        bb = Backbone.from_identity(meta["identity"], device=device)
        raw, kept, bad = bb.embed_paths([it.path for it in items], batch_size=batch_size)
        paths = [items[i].path for i in kept]
        skipped = [(items[i].path, reason) for i, reason in bad]
        if not paths:
            raise DataError(f"none of the {len(items)} images in {str(source)!r} could be read")
        X = postprocess(meta, model_path, raw)
    labels, scores = clf.predict_topk(X, k)
    rows = [[p, labels[i, 0]] + [v for j in range(labels.shape[1]) for v in (labels[i, j], f"{scores[i, j]:.6g}")]
            for i, p in enumerate(paths)]
    return rows, skipped
