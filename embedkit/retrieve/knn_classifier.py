"""A k-nearest-neighbour classifier on a :class:`~embedkit.retrieve.index.KNNIndex`, to compare with the SVMs.

A scikit-learn classifier (``BaseEstimator`` + ``ClassifierMixin``: ``fit``
returns self, fitted attributes end in ``_``, ``classes_``, ``predict``,
``predict_proba``, ``score``, ``clone``/``GridSearchCV`` work, and
``check_estimator`` passes), plus :meth:`KNNClassifier.predict_topk`, named and
shaped like the SVMs' (labels and scores, best first).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from embedkit.errors import DataError, invalid
from embedkit.estimators import EstimatorNotFittedError, check_positive_int
from embedkit.retrieve.constants import METRICS
from embedkit.retrieve.index import KNNIndex

WEIGHTS = ("uniform", "distance")


def _validate(est, X, reset: bool) -> np.ndarray:
    """scikit-learn's validation (dense, numeric, 2-D, ``n_features_in_``) then embedkit's code check.

    scikit-learn's ValueErrors become :class:`DataError` (also a ValueError) with its message kept, so its
    "X has 3 features, but ... is expecting 4" and "Complex data not supported" read the same.
    """
    from sklearn.utils.validation import validate_data

    from embedkit.checks import check_codes

    try:
        X = validate_data(est, X, reset=reset, ensure_all_finite=False, dtype=[np.float32, np.float64])
    except ValueError as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"codes cannot be used: {exc}") from exc
    return check_codes(X, "training codes" if reset else "codes")


class KNNClassifier(ClassifierMixin, BaseEstimator):
    """Vote of the ``n_neighbors`` nearest training codes.

    Parameters
    ----------
    n_neighbors : neighbours that vote (capped at the number of training codes).
    weights : ``"uniform"`` (majority) or ``"distance"`` (each vote weighs 1 / distance;
        Euclidean distance for ``l2``, ``1 - cos`` for ``cosine``; an exact match takes all the weight).
    metric, kind, backend, index_params : passed to :class:`~embedkit.retrieve.index.KNNIndex`.
    device : ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``: where the index searches (passed to ``KNNIndex``).

    Fitted attributes: ``classes_``, ``n_features_in_``, ``index_`` (the fitted KNNIndex), ``y_``
    (training labels as positions in ``classes_``).
    """

    def __init__(self, n_neighbors=5, weights="uniform", metric="cosine", kind="flat", backend="auto", index_params=None,
                 device="auto"):
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.metric = metric
        self.kind = kind
        self.backend = backend
        self.index_params = index_params
        self.device = device

    def fit(self, X, y) -> "KNNClassifier":
        """Index the training codes ``X`` (N x D) with labels ``y`` (N); returns self."""
        from sklearn.utils.multiclass import check_classification_targets
        from sklearn.utils.validation import column_or_1d

        if self.weights not in WEIGHTS:
            raise invalid("weights", self.weights, WEIGHTS)
        if self.metric not in METRICS:
            raise invalid("metric", self.metric, METRICS)
        check_positive_int("n_neighbors", self.n_neighbors)
        if self.weights == "distance" and self.metric == "ip":
            raise invalid("metric", "ip", "'cosine' or 'l2' with weights='distance' (metric='ip' gives "
                          "similarities, not distances), or weights='uniform'")
        if y is None:
            raise DataError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        X = _validate(self, X, reset=True)
        y = np.asarray(y)
        if len(y) != X.shape[0] or y.ndim not in (1, 2) or (y.ndim == 2 and y.shape[1] != 1):
            raise DataError(f"y must hold one label per row of X: got {y.shape} labels for {X.shape[0]} rows")
        y = column_or_1d(y, warn=True)  # a column vector works, with scikit-learn's DataConversionWarning
        try:
            check_classification_targets(y)
        except ValueError as exc:
            raise DataError(f"labels cannot be used for classification: {exc}") from exc
        self.classes_, self.y_ = np.unique(y, return_inverse=True)
        self.index_ = KNNIndex(metric=self.metric, kind=self.kind, backend=self.backend, device=self.device,
                               **(self.index_params or {})).fit(X)
        return self

    def _check_fitted(self, X) -> np.ndarray:
        if not hasattr(self, "index_"):
            raise EstimatorNotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(X, y) first")
        return _validate(self, X, reset=False)

    def predict_proba(self, X) -> np.ndarray:
        """Vote shares per class (n x n_classes, columns in ``classes_`` order, rows sum to 1)."""
        X = self._check_fitted(X)
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
        P = self.predict_proba(X)  # checks fitted before classes_ is touched
        return self.classes_[np.argmax(P, axis=1)]

    def predict_topk(self, X, k: int = 5):
        """``(labels, scores)``, each n x min(k, n_classes): the most voted classes per row, best first,
        and their vote shares (the SVMs' ``predict_topk`` returns the same shapes)."""
        check_positive_int("k", k)
        P = self.predict_proba(X)
        order = np.argsort(-P, axis=1, kind="stable")[:, :min(int(k), P.shape[1])]
        return self.classes_[order], np.take_along_axis(P, order, axis=1)
