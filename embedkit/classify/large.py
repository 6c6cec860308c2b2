"""Training sets too large for an exact kernel SVM: the memory budget and the scalable fall-back model.

An exact kernel grid search holds an N x N Gram matrix (float64) and one fold kernel per thread:
about ``8 N^2 (1 + jobs)`` bytes, 7.5 GiB at 18,000 rows with 2 threads, 22 TiB at 1,000,000. So
:func:`plan_training` decides, *before any code is read*, whether the exact search fits; when it does
not, training falls back to what scales:

- the kernel grid search runs on a stated, stratified subsample of ``max_kernel_rows`` rows
  (to choose kernel, C and gamma), and
- the final model is :class:`ApproxKernelSVM`: the chosen kernel approximated by Nystroem features
  (scikit-learn's :class:`~sklearn.kernel_approximation.Nystroem`, fitted on a sample of
  ``n_components`` rows) and a linear SVM (hinge-loss :class:`~sklearn.linear_model.SGDClassifier`,
  ``alpha = 1 / (C N)``: the SVM objective with the same C) trained on *all* rows by streaming
  shuffled batches, so memory is bounded by the batch, not by N.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from embedkit.classify.constants import KERNELS
from embedkit.classify.svm import _as_2col, _TopKMixin, resolve_gamma
from embedkit.estimators import validated
from embedkit.errors import ConfigError, invalid

#: Nystroem components of the fall-back model (the kernel is approximated on this many sampled rows)
N_COMPONENTS = 2048
#: passes of the linear SVM over the training rows
EPOCHS = 3
#: rows per streamed batch
BATCH_ROWS = 8192
#: share of the available memory an exact search may use when no budget is given
BUDGET_SHARE = 0.5
_FALLBACK_BUDGET = 4 << 30
#: the automatic limit also bounds time: the grid search fits every (kernel, C, gamma) on k folds and its
#: cost grows with rows^2 (16,000 rows x 64-d took about 6 minutes on 2 cores), so "fits in memory" alone
#: would let a 40,000-row search run for hours. --max-kernel-rows raises it explicitly.
TIME_CAP_ROWS = 10_000


def available_memory() -> int | None:
    """Bytes of memory available now (Linux ``sysconf``), or None where unknown."""
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not Linux
        return None


def default_budget() -> int:
    """The memory budget of an exact kernel search: half the available memory (4 GiB where unknown)."""
    avail = available_memory()
    return int(avail * BUDGET_SHARE) if avail else _FALLBACK_BUDGET


def exact_bytes(n: int, dim: int, jobs: int = 1) -> int:
    """Estimated peak bytes of an exact grid search + fit on ``n`` codes of ``dim``: Gram + fold kernels + codes."""
    return int(8 * n * n * (1 + max(1, jobs)) + 24 * n * dim)


def rows_within(budget: int, dim: int, jobs: int = 1) -> int:
    """The most rows whose exact kernel search fits ``budget`` bytes (:func:`exact_bytes` inverted)."""
    a, b = 8.0 * (1 + max(1, jobs)), 24.0 * dim
    return max(0, int((-b + np.sqrt(b * b + 4 * a * budget)) / (2 * a)))


@dataclass
class TrainingPlan:
    """How :func:`~embedkit.classify.train.train` fits: ``exact`` kernel SVM, or ``approx`` fall-back."""

    mode: str  # "exact" or "approx"
    n_fit: int
    max_kernel_rows: int
    reason: str

    def to_dict(self) -> dict:
        return {"mode": self.mode, "n_fit": self.n_fit, "max_kernel_rows": self.max_kernel_rows, "reason": self.reason}


def plan_training(n_fit: int, dim: int, max_kernel_rows: int | None = None, memory_budget: int | None = None,
                  jobs: int = 1) -> TrainingPlan:
    """Exact kernel SVM when ``n_fit`` rows fit ``max_kernel_rows`` (default: what ``memory_budget`` allows),
    else the scalable fall-back; decided from sizes only, before any code is read."""
    if max_kernel_rows is not None:
        if int(max_kernel_rows) < 2:
            raise invalid("max_kernel_rows", max_kernel_rows, "an integer of at least 2")
        limit, why = int(max_kernel_rows), f"max_kernel_rows={int(max_kernel_rows)}"
    else:
        budget = int(memory_budget) if memory_budget else default_budget()
        limit = min(rows_within(budget, dim, jobs), TIME_CAP_ROWS)
        why = (f"a memory budget of {budget / 2**30:.1f} GiB ({jobs} threads) and the time cap allow about "
               f"{limit} rows; raise it with --max-kernel-rows")
    if n_fit <= limit:
        return TrainingPlan("exact", n_fit, limit, f"exact kernel SVM on {n_fit} rows ({why})")
    need = exact_bytes(n_fit, dim, jobs)
    return TrainingPlan("approx", n_fit, limit,
                        f"{n_fit} training rows are more than an exact kernel SVM may use ({why}; exact would need "
                        f"about {need / 2**30:.1f} GiB): grid search on a stratified subsample of {limit} rows "
                        f"({limit / n_fit:.1%}), final model = Nystroem kernel approximation + linear SVM on all rows")


def stratified_sample(y, n: int, seed: int = 0) -> np.ndarray:
    """Sorted positions of about ``n`` items of ``y``, every class in proportion (at least 2 where it has them)."""
    y = np.asarray(y)
    if n >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    _, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
    inv = inv.ravel()
    take = np.minimum(counts, np.maximum(2, np.floor(counts * n / len(y)).astype(int)))
    by_class = np.argsort(inv, kind="stable")  # one sort, not one scan per class
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out = [by_class[s + rng.choice(c, int(t), replace=False)] for s, c, t in zip(starts, counts, take)]
    return np.sort(np.concatenate(out))


def kernel_features(X, components, normalization, kernel, gamma, coef0=0.0, degree=3) -> np.ndarray:
    """Nystroem features of ``X``: ``kernel(X, components) @ normalization.T`` (float32)."""
    X = np.asarray(X, dtype=np.float32)
    G = X @ components.T
    if kernel == "rbf":
        # in place: one (rows x components) buffer, not four (the batch's peak memory is this array)
        G *= -2
        G += np.einsum("ij,ij->i", X, X)[:, None]
        G += np.einsum("ij,ij->i", components, components)[None, :]
        np.maximum(G, 0, out=G)
        G *= -gamma
        K = np.exp(G, out=G)
    elif kernel == "sigmoid":
        K = np.tanh(gamma * G + coef0)
    elif kernel == "poly":
        K = (gamma * G + coef0) ** degree
    else:
        K = G
    return np.asarray(K @ normalization.T, dtype=np.float32)


class ApproxKernelSVM(_TopKMixin, ClassifierMixin, BaseEstimator):
    """A kernel SVM that scales to millions of rows: Nystroem features + a linear SVM trained by streaming.

    Parameters
    ----------
    kernel, C, gamma, coef0, degree : as :class:`~embedkit.classify.svm.SVMClassifier` (``linear`` uses the codes
        themselves as features).
    n_components : rows sampled to approximate the kernel (Nystroem); more = closer to the exact SVM.
    epochs, batch_rows : passes over the training rows and rows per streamed batch.
    seed : seeds the sample, the batch order and the SGD.
    """

    def __init__(self, kernel="rbf", C=1.0, gamma="scale", coef0=0.0, degree=3, n_components=N_COMPONENTS,
                 epochs=EPOCHS, batch_rows=BATCH_ROWS, seed=0):
        self.kernel = kernel
        self.C = C
        self.gamma = gamma
        self.coef0 = coef0
        self.degree = degree
        self.n_components = n_components
        self.epochs = epochs
        self.batch_rows = batch_rows
        self.seed = seed

    def fit(self, X, y):
        """Fit on in-memory codes ``X`` and labels ``y``; returns self."""
        X, y = validated(self, X, y, reset=True)
        return self.fit_reader(lambda rows: X[rows], y, X.shape[1])

    def fit_reader(self, read, y, dim: int):
        """Fit on rows fetched by ``read(sorted positions) -> float32 codes``, labels ``y`` (one per position).

        Memory is bounded by ``batch_rows`` x ``n_components``: the codes are never all in memory.
        """
        from sklearn.kernel_approximation import Nystroem
        from sklearn.linear_model import SGDClassifier

        if self.kernel not in KERNELS:
            raise invalid("kernel", self.kernel, KERNELS)
        if not float(self.C) > 0:
            raise invalid("C", self.C, "a positive number")
        y = np.asarray(y)
        n = len(y)
        self.classes_, yi = np.unique(y, return_inverse=True)
        yi = yi.ravel()
        if len(self.classes_) < 2:
            raise ConfigError("classification needs at least 2 classes")
        rng = np.random.default_rng(self.seed)
        self.n_features_in_ = int(dim)
        sample = np.sort(rng.choice(n, min(n, int(self.n_components)), replace=False))
        Xs = np.asarray(read(sample), dtype=np.float32)
        self.gamma_ = resolve_gamma(self.gamma, Xs) if self.kernel != "linear" else None
        if self.kernel == "linear":
            self.components_ = np.zeros((0, dim), np.float32)
            self.normalization_ = np.zeros((0, 0), np.float32)
        else:
            ny = Nystroem(kernel=self.kernel, gamma=self.gamma_, coef0=self.coef0 if self.kernel != "rbf" else None,
                          degree=self.degree if self.kernel == "poly" else None, n_components=len(sample),
                          random_state=self.seed).fit(Xs)
            self.components_ = np.asarray(ny.components_, np.float32)
            self.normalization_ = np.asarray(ny.normalization_, np.float32)
        sgd = SGDClassifier(loss="hinge", alpha=1.0 / (float(self.C) * n), average=True, random_state=self.seed)
        classes = np.arange(len(self.classes_))
        for _ in range(int(self.epochs)):
            order = rng.permutation(n)
            for i in range(0, n, int(self.batch_rows)):
                rows = np.sort(order[i:i + int(self.batch_rows)])
                sgd.partial_fit(self._features(read(rows)), yi[rows], classes=classes)
        self.coef_ = np.asarray(sgd.coef_, np.float32)
        self.intercept_ = np.asarray(sgd.intercept_, np.float64)
        self.n_iter_ = int(self.epochs)
        return self

    def _features(self, X) -> np.ndarray:
        if self.kernel == "linear":
            return np.asarray(X, dtype=np.float32)
        return kernel_features(X, self.components_, self.normalization_, self.kernel, self.gamma_, float(self.coef0),
                               int(self.degree))

    def class_scores(self, X) -> np.ndarray:
        """Per-class decision values, N x n_classes (``classes_`` order), larger = more likely."""
        X = validated(self, X)[0]
        coef = self.coef_.T.astype(np.float64)
        d = np.empty((X.shape[0], coef.shape[1]), np.float64)
        step = max(1, int(self.batch_rows))
        for i in range(0, X.shape[0], step):  # features of a 65k-row chunk x 2048 components would be ~1.5 GB
            d[i:i + step] = self._features(X[i:i + step]).astype(np.float64) @ coef + self.intercept_
        return _as_2col(d[:, 0]) if len(self.classes_) == 2 else d

    def decision_function(self, X) -> np.ndarray:
        """Decision values: (N,) for two classes (positive = ``classes_[1]``), else N x n_classes."""
        s = self.class_scores(X)
        return s[:, 1] if len(self.classes_) == 2 else s

    def predict(self, X) -> np.ndarray:
        """The class of the largest decision value."""
        return self.classes_[np.argmax(self.class_scores(X), axis=1)]
