"""Fast k-fold grid search of SVM hyper-parameters (kernel x C x gamma), as in the paper.

Every kernel of the grid is a cheap element-wise function of one Gram matrix:
rbf ``exp(-gamma * D2)`` with ``D2 = |xi|^2 + |xj|^2 - 2 <xi, xj>``, sigmoid
``tanh(gamma * G + coef0)``, poly ``(gamma * G + coef0) ** degree``, linear ``G``.
So the Gram matrix of all items is computed once (BLAS through torch on the
resolved device, on mean-centred codes so that distances do not lose digits;
float64 by default, see ``gram_dtype``), each fold/kernel/gamma derives its train and validation kernels from
it in float64, and libsvm fits every C on the precomputed kernel. libsvm then
solves the very problems ``GridSearchCV(SVC(kernel="rbf"))`` solves, without
recomputing a 1,280-d dot product per kernel entry: the same CV scores (the
one exception measured: a non-PSD sigmoid kernel at C=1000, where libsvm's
tol-1e-3 solution moves with 1e-16 kernel rounding), 15-30x faster on CPU
(benchmarks/bench_classify.py). Grid points run in threads (libsvm and NumPy
release the GIL).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from embedkit.checks import check_codes
from embedkit.classify.constants import DECISIONS, KERNELS
from embedkit.classify.svm import SVMClassifier, check_C, resolve_gamma
from embedkit.defaults import CV_FOLDS, SVM_CS, SVM_GAMMAS, SVM_KERNELS
from embedkit.errors import ConfigError, DataError, invalid
from embedkit.estimators import check_labels


def effective_folds(y, cv: int = CV_FOLDS) -> tuple[int, str | None]:
    """``(folds, note)``: the stratified folds a grid search on labels ``y`` can use.

    ``cv`` folds need ``cv`` items in every class; with fewer, the whole search runs on fewer
    folds (at least 2; a class with a single item is then tested in one fold only) and ``note``
    says so. A trainable set is never refused for its fold count.
    """
    cv = int(cv)
    if cv < 2:
        raise invalid("cv", cv, "at least 2 folds")
    classes, counts = np.unique(np.asarray(y), return_counts=True)
    if len(counts) and counts.min() < cv:
        k = max(2, int(counts.min()))
        if k < cv:
            small = classes[counts == counts.min()][:3].tolist()
            return k, (f"{cv}-fold CV needs at least {cv} training items per class and the smallest class "
                       f"({', '.join(map(str, small))}) has {counts.min()}; the grid search uses {k}-fold CV")
    return cv, None


def resolve_gammas(gammas, X) -> list[float]:
    """Numeric gammas from numbers, ``"scale"``, ``"auto"`` or ``"F*scale"`` (F times scikit-learn's scale)."""
    out = []
    for g in gammas:
        if isinstance(g, str) and "*" in g:
            f, base = g.split("*", 1)
            try:
                val = float(f) * resolve_gamma(base.strip(), X)
            except ValueError as exc:
                raise invalid("gamma", g, "a positive number, scale, auto or F*scale (e.g. 0.1*scale)") from exc
        else:
            try:
                val = resolve_gamma(g if isinstance(g, str) and g in ("scale", "auto") else float(g), X)
            except (TypeError, ValueError) as exc:
                raise invalid("gamma", g, "a positive number, scale, auto or F*scale (e.g. 0.1*scale)") from exc
        if val not in out:
            out.append(val)
    return out


def param_grid(kernels, Cs, gammas) -> list[dict]:
    """The grid as scikit-learn's ``param_grid`` (linear takes no gamma), in GridSearchCV's order."""
    grid = []
    for k in kernels:
        if k not in KERNELS:
            raise invalid("kernel", k, KERNELS)
        d = {"kernel": [k], "C": [check_C(c) for c in Cs]}
        if k != "linear":
            d["gamma"] = [float(g) for g in gammas]
        grid.append(d)
    return grid


def centred_gram(X: np.ndarray, device="auto", chunk: int = 4096, dtype: str = "float64"):
    """``(Gc, sq, a, c)``: Gram of mean-centred rows (``dtype``, N x N), their squared norms, and the terms that
    give back the raw Gram: ``G = Gc + a_i + a_j - c`` (``a = X @ mean``, ``c = |mean|^2``, float64)."""
    import torch

    from embedkit.device import resolve_device

    dev = resolve_device(device)
    x64 = np.asarray(X, dtype=np.float64)
    mean = x64.mean(0)
    xc = torch.from_numpy((x64 - mean).astype(dtype)).to(dev)
    n = xc.shape[0]
    gram = np.empty((n, n), dtype=dtype)
    for i in range(0, n, chunk):  # row blocks bound the device memory
        gram[i:i + chunk] = (xc[i:i + chunk] @ xc.T).cpu().numpy()
    sq = ((x64 - mean) ** 2).sum(1)
    return gram, sq, x64 @ mean, float(mean @ mean)


def _kernel(kind, gamma, coef0, degree, base):
    """Element-wise kernel from ``base`` (D2 for rbf, raw Gram otherwise; float64), computed in place."""
    if kind == "rbf":
        return np.exp(np.multiply(base, -gamma, out=base), out=base)
    if kind == "sigmoid":
        return np.tanh(np.add(np.multiply(base, gamma, out=base), coef0, out=base), out=base)
    if kind == "poly":
        return np.power(np.add(np.multiply(base, gamma, out=base), coef0, out=base), degree, out=base)
    return base


@dataclass
class GridSearchResult:
    """Outcome of :func:`grid_search_svm`: best parameters, the CV score table, the folds used."""

    best_params: dict
    best_score: float
    rows: list = field(default_factory=list)
    folds: list = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"best_params": self.best_params, "best_score": self.best_score, "seconds": self.seconds,
                "n_folds": len(self.folds), "rows": self.rows}

    def table(self) -> str:
        lines = [f"{'rank':>4}  {'kernel':<8} {'C':>8} {'gamma':>10}  {'mean':>6}  {'std':>6}"]
        for r in sorted(self.rows, key=lambda r: (r["rank"], r["index"])):
            p = r["params"]
            g = f"{p['gamma']:.3g}" if "gamma" in p else "-"
            lines.append(f"{r['rank']:>4}  {p['kernel']:<8} {p['C']:>8.3g} {g:>10}  {r['mean_score']:.4f}  {r['std_score']:.4f}")
        return "\n".join(lines) + "\n"


def grid_search_svm(X, y, kernels=SVM_KERNELS, Cs=SVM_CS, gammas=SVM_GAMMAS, cv=CV_FOLDS, seed: int = 0,
                    decision: str = "ovr", class_weight=None, coef0: float = 0.0, degree: int = 3,
                    device="auto", n_jobs: int | None = None, gram_dtype: str = "float64", max_gram_bytes: int = 8 << 30,
                    progress: bool = False) -> GridSearchResult:
    """k-fold grid search of SVM kernel x C x gamma scored by accuracy, on precomputed kernels.

    ``cv`` is a number of stratified, shuffled folds (seeded by ``seed``; lowered, with a warning, where
    a class has fewer items: :func:`effective_folds`) or a list of ``(train_idx, test_idx)`` pairs. Scores, ranks and the best parameters follow
    ``GridSearchCV(SVMClassifier(decision=...), param_grid(kernels, Cs, gammas), cv=folds)``
    (for ``decision="ovo"``: ``GridSearchCV(SVC(...))``); ties go to the first grid point.
    ``gram_dtype="float64"`` (default) reproduces libsvm's double-precision kernels, hence its CV
    scores exactly; ``"float32"`` halves Gram memory and BLAS time but was measured to flip about
    one prediction in a thousand near decision ties (1,500 x 1,280 codes: 5 of 96 fold scores off
    by one item).
    """
    from sklearn.model_selection import ParameterGrid

    t0 = time.perf_counter()
    if decision not in DECISIONS:
        raise invalid("decision", decision, DECISIONS)
    X = check_codes(X, copy=False)
    y = check_labels(y, X.shape[0])
    n = X.shape[0]
    grid = list(ParameterGrid(param_grid(kernels, Cs, resolve_gammas(gammas, X))))  # C checked before the Gram
    if gram_dtype not in ("float32", "float64"):
        raise invalid("gram_dtype", gram_dtype, ("float64", "float32"), "float64 is exact, float32 faster but may flip near-ties")
    need = n * n * np.dtype(gram_dtype).itemsize
    if need > max_gram_bytes:
        raise ConfigError(f"a grid search over {n} items needs a {n}x{n} Gram matrix ({need / 2**30:.1f} GiB), more than "
                          f"max_gram_bytes={max_gram_bytes / 2**30:.1f} GiB; search on a stratified subsample")
    folds = _folds(y, cv, seed)
    gram = centred_gram(X, device, dtype=gram_dtype)
    scores = _fold_scores(gram, y, folds, grid, decision, class_weight, coef0, degree, n_jobs, progress)
    means = np.average(scores, axis=1)
    stds = np.sqrt(np.average((scores - means[:, None]) ** 2, axis=1))
    from scipy.stats import rankdata

    ranks = rankdata(-means, method="min").astype(int)
    best = int(np.argmin(ranks))
    rows = [{"index": i, "params": grid[i], "mean_score": float(means[i]), "std_score": float(stds[i]),
             "split_scores": scores[i].tolist(), "rank": int(ranks[i])} for i in range(len(grid))]
    return GridSearchResult(dict(grid[best]), float(means[best]), rows, folds, time.perf_counter() - t0)


def _folds(y: np.ndarray, cv, seed: int) -> list:
    """``(train_idx, test_idx)`` pairs: ``cv`` stratified, shuffled, seeded folds (fewer where a class is too
    small, with a warning), or the pairs given."""
    from sklearn.model_selection import StratifiedKFold

    n = len(y)
    if not isinstance(cv, (int, np.integer)):
        return [(np.asarray(a), np.asarray(b)) for a, b in cv]
    cv, note = effective_folds(y, cv)
    if note:
        warnings.warn(note, stacklevel=3)
    if n < cv:
        raise DataError(f"a {cv}-fold grid search needs at least {cv} items, got {n}; add images")
    with warnings.catch_warnings():  # "least populated class has only 1 member": said in the note
        warnings.simplefilter("ignore", UserWarning)
        return list(StratifiedKFold(cv, shuffle=True, random_state=seed).split(np.zeros(n), y))


def _fold_scores(centred, y, folds, grid, decision, class_weight, coef0, degree, n_jobs, progress) -> np.ndarray:
    """Accuracy of every grid point (rows) on every fold (columns), each kernel derived from the one Gram."""
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    gram, sq, a, c = centred

    def base(kind, rows, cols):
        g = gram[np.ix_(rows, cols)].astype(np.float64)
        if kind == "rbf":  # distances from the centred Gram: no cancellation of large norms
            g *= -2.0
            g += sq[rows, None]
            g += sq[None, cols]
        else:
            g += a[rows, None]
            g += a[None, cols]
            g -= c
        return g

    # One task per (fold, kernel, gamma): derive its kernels once, fit every C on them.
    tasks = {}
    for i, p in enumerate(grid):
        tasks.setdefault((p["kernel"], p.get("gamma")), []).append(i)
    jobs = [(f, key, idx) for f in range(len(folds)) for key, idx in tasks.items()]

    def run(f, key, idx):
        tr, te = folds[f]
        kind, gamma = key
        k_tr = _kernel(kind, gamma, coef0, degree, base(kind, tr, tr))
        k_te = _kernel(kind, gamma, coef0, degree, base(kind, te, tr))
        if kind == "rbf":  # libsvm's own diagonal is exactly exp(0)
            np.fill_diagonal(k_tr, 1.0)
        out = []
        for i in idx:
            clf = SVMClassifier(kernel="precomputed", C=grid[i]["C"], decision=decision, class_weight=class_weight,
                                backend="sklearn", n_jobs=1).fit(k_tr, y[tr])
            out.append((i, f, float(np.mean(clf.predict(k_te) == y[te]))))
        return out

    bar = tqdm(total=len(jobs), desc="grid search", unit="task", disable=not progress)
    scores = np.zeros((len(grid), len(folds)))
    for res in Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")(delayed(run)(*j) for j in jobs):
        for i, f, s in res:
            scores[i, f] = s
        bar.update(1)
    bar.close()
    return scores
