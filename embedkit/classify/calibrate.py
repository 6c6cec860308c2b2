"""Calibrated probabilities for an SVM: ``classify train --calibrate``.

An SVM's scores are decision values (signed distances to its class boundaries), not probabilities.
:func:`calibrate_svm` hands the chosen SVM to scikit-learn's ``CalibratedClassifierCV`` (Platt's sigmoid
per class, fitted on out-of-fold decision values, then the SVM refitted on all rows: ``ensemble=False``)
and keeps what it learnt as plain arrays, so that the model folder stays pickle-free
(:mod:`embedkit.classify.serialize`): :class:`CalibratedSVM` holds the refitted SVM and the sigmoids'
``a``/``b`` and gives the same probabilities as scikit-learn's ``predict_proba``.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from embedkit.classify.svm import _TopKMixin

#: what a calibrated score is, in words (printed by `classify predict`, written into its outputs)
METHOD = "probability: Platt sigmoids fitted by scikit-learn's CalibratedClassifierCV on out-of-fold SVM decision values"


class CalibratedSVM(_TopKMixin, ClassifierMixin, BaseEstimator):
    """An SVM plus one Platt sigmoid per class; :meth:`class_scores` are probabilities (rows sum to 1)."""

    def __init__(self, cv: int = 5):
        self.cv = cv

    @property
    def svm(self):
        return self.estimators_[0]

    @property
    def n_features_in_(self):
        return self.svm.n_features_in_

    @property
    def gamma_(self):
        return getattr(self.svm, "gamma_", None)

    def fit_from(self, svm, X, y, seed: int = 0):
        """Calibrate a copy of the unfitted-or-fitted ``svm`` (its parameters) on ``X``, ``y``; returns self."""
        from sklearn.base import clone
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.model_selection import StratifiedKFold

        folds = StratifiedKFold(self.cv, shuffle=True, random_state=seed)
        cal = CalibratedClassifierCV(clone(svm), method="sigmoid", cv=folds, ensemble=False).fit(X, y)
        inner = cal.calibrated_classifiers_[0]
        self.estimators_ = [inner.estimator]
        self.classes_ = np.asarray(cal.classes_)
        self.a_ = np.array([c.a_ for c in inner.calibrators], dtype=np.float64)
        self.b_ = np.array([c.b_ for c in inner.calibrators], dtype=np.float64)
        return self

    def class_scores(self, X) -> np.ndarray:
        """Probabilities, N x n_classes: what ``CalibratedClassifierCV.predict_proba`` gives (its
        ``_CalibratedClassifier``: a sigmoid of each class's decision value, normalised over classes)."""
        d = np.asarray(self.svm.decision_function(X), dtype=np.float64)
        if d.ndim == 1:  # two classes: one sigmoid for the positive class
            p1 = 1.0 / (1.0 + np.exp(self.a_[0] * d + self.b_[0]))
            return np.column_stack([1.0 - p1, p1])
        p = 1.0 / (1.0 + np.exp(self.a_ * d + self.b_))
        total = p.sum(axis=1, keepdims=True)
        uniform = np.full_like(p, 1.0 / p.shape[1])
        return np.where(total > 0, p / np.where(total > 0, total, 1.0), uniform)

    def decision_function(self, X):
        return self.svm.decision_function(X)

    def predict(self, X):
        return self.classes_[np.argmax(self.class_scores(X), axis=1)]

    def predict_proba(self, X):
        return self.class_scores(X)
