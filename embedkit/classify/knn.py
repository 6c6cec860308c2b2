"""The k-nearest-neighbour classifier as a classify method (``embedkit classify train --method knn``).

:class:`KNNCodesClassifier` gives :class:`embedkit.retrieve.knn_classifier.KNNClassifier` the surface the
classify pipeline uses (``class_scores`` = vote shares, ``predict_topk``) and a saveable state: the
training codes and labels as arrays; the search index is rebuilt from them when first needed.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from embedkit.classify.svm import _TopKMixin
from embedkit.estimators import validated


class KNNCodesClassifier(_TopKMixin, ClassifierMixin, BaseEstimator):
    """Vote of the ``n_neighbors`` nearest training codes (``weights``/``metric``/``device`` as ``KNNClassifier``)."""

    _transient = ("_knn",)

    def __init__(self, n_neighbors=5, weights="uniform", metric="cosine", device="auto"):
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.metric = metric
        self.device = device

    def fit(self, X, y):
        """Keep the training codes ``X`` and labels ``y`` and index them; returns self."""
        X, y = validated(self, X, y, reset=True)
        self.fit_X_ = np.ascontiguousarray(X, dtype=np.float32)
        self.classes_, inv = np.unique(y, return_inverse=True)
        self.fit_y_ = inv.ravel().astype(np.int64)
        self._knn = None
        self._index()
        return self

    def _index(self):
        knn = getattr(self, "_knn", None)
        if knn is None:
            from embedkit.retrieve.knn_classifier import KNNClassifier

            knn = KNNClassifier(n_neighbors=int(self.n_neighbors), weights=self.weights, metric=self.metric,
                                kind="flat", device=self.device).fit(self.fit_X_, self.fit_y_)
            self._knn = knn
        return knn

    def class_scores(self, X) -> np.ndarray:
        """Vote shares per class, N x n_classes (``classes_`` order)."""
        X = validated(self, X)[0]
        knn = self._index()
        P = np.zeros((X.shape[0], len(self.classes_)))
        P[:, knn.classes_] = knn.predict_proba(X)  # the inner classes are indices into ours
        return P

    def predict_proba(self, X) -> np.ndarray:
        """Vote shares per class (rows sum to 1)."""
        return self.class_scores(X)

    def predict(self, X) -> np.ndarray:
        """The most voted class (ties go to the first class)."""
        return self.classes_[np.argmax(self.class_scores(X), axis=1)]
