"""A k-nearest-neighbour classifier on a :class:`~embedkit.retrieve.KNNIndex`, to compare with the SVMs.

Follows the scikit-learn estimator contract (``fit`` returns self, fitted
attributes end in ``_``, ``classes_``, ``predict``, ``predict_proba``,
``score``), plus :meth:`KNNClassifier.top_k` for top-5 style precision.
"""

from __future__ import annotations

import numpy as np

from embedkit.errors import ConfigError, DataError, NotFittedError
from embedkit.retrieve.index import KNNIndex, _as_2d

WEIGHTS = ("uniform", "distance")


class KNNClassifier:
    """Vote of the ``n_neighbors`` nearest training codes.

    Parameters
    ----------
    n_neighbors : neighbours that vote (capped at the number of training codes).
    weights : ``"uniform"`` (majority) or ``"distance"`` (each vote weighs 1 / distance;
        Euclidean distance for ``l2``, ``1 - cos`` for ``cosine``; an exact match takes all the weight).
    metric, kind, backend, index_params : passed to :class:`~embedkit.retrieve.KNNIndex`.
    """

    def __init__(self, n_neighbors=5, weights="uniform", metric="cosine", kind="flat", backend="auto", index_params=None):
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.metric = metric
        self.kind = kind
        self.backend = backend
        self.index_params = index_params

    def fit(self, X, y) -> "KNNClassifier":
        """Index the training codes ``X`` (N x D) with labels ``y`` (N); returns self."""
        if self.weights not in WEIGHTS:
            raise ConfigError(f"weights {self.weights!r} is not valid; use one of {', '.join(WEIGHTS)}")
        if not isinstance(self.n_neighbors, (int, np.integer)) or self.n_neighbors < 1:
            raise ConfigError(f"n_neighbors={self.n_neighbors!r} is not valid; give a positive integer")
        if self.weights == "distance" and self.metric == "ip":
            raise ConfigError("weights='distance' needs a distance metric; metric='ip' gives similarities: "
                              "use metric='cosine' or 'l2', or weights='uniform'")
        X = _as_2d(X, "training codes")
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != X.shape[0]:
            raise DataError(f"y must hold one label per row of X: got {y.shape} labels for {X.shape[0]} rows")
        if X.shape[0] == 0:
            raise DataError("cannot fit a kNN classifier on 0 training codes")
        self.classes_, self.y_ = np.unique(y, return_inverse=True)
        self.index_ = KNNIndex(metric=self.metric, kind=self.kind, backend=self.backend,
                               **(self.index_params or {})).fit(X)
        self.n_features_in_ = X.shape[1]
        return self

    def _check_fitted(self):
        if not hasattr(self, "index_"):
            raise NotFittedError("this KNNClassifier is not fitted yet; call fit(X, y) first")

    def predict_proba(self, X) -> np.ndarray:
        """Vote shares per class (n x n_classes, columns in ``classes_`` order, rows sum to 1)."""
        self._check_fitted()
        X = _as_2d(X, "codes")
        k = min(int(self.n_neighbors), self.index_.n_)
        D, ids = self.index_.search(X, k)
        valid = ids >= 0
        labels = self.y_[np.maximum(ids, 0)]
        if self.weights == "uniform":
            w = valid.astype(np.float64)
        else:
            d = np.sqrt(np.maximum(D, 0)) if self.metric == "l2" else np.maximum(D, 0).astype(np.float64)
            exact = (d <= 1e-12) & valid
            with np.errstate(divide="ignore"):
                w = np.where(valid, 1.0 / np.maximum(d, 1e-12), 0.0)
            # like scikit-learn: where a neighbour matches exactly, only exact matches vote
            has_exact = exact.any(axis=1)
            w[has_exact] = exact[has_exact].astype(np.float64)
        P = np.zeros((X.shape[0], len(self.classes_)))
        np.add.at(P, (np.repeat(np.arange(X.shape[0]), k), labels.ravel()), w.ravel())
        tot = P.sum(axis=1, keepdims=True)
        return P / np.where(tot > 0, tot, 1.0)

    def predict(self, X) -> np.ndarray:
        """The class with most votes (ties go to the first class in ``classes_``)."""
        self._check_fitted()
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def top_k(self, X, k: int = 5) -> np.ndarray:
        """The ``k`` most voted classes per row, best first (n x min(k, n_classes))."""
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"k={k!r} is not valid; give a positive integer")
        self._check_fitted()
        P = self.predict_proba(X)
        order = np.argsort(-P, axis=1, kind="stable")[:, :min(k, P.shape[1])]
        return self.classes_[order]

    def score(self, X, y) -> float:
        """Top-1 accuracy on ``(X, y)``."""
        return float(np.mean(self.predict(X) == np.asarray(y)))

    def get_params(self, deep=True) -> dict:
        return {k: getattr(self, k) for k in ("n_neighbors", "weights", "metric", "kind", "backend", "index_params")}

    def set_params(self, **params) -> "KNNClassifier":
        for k, v in params.items():
            setattr(self, k, v)
        return self
