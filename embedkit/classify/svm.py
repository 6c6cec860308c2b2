"""Classifiers of neural codes: the paper's SVM (cuML on GPU, scikit-learn on CPU) and a logistic baseline.

:class:`SVMClassifier` follows scikit-learn's estimator contract (it works in
``GridSearchCV``), with rbf/sigmoid/linear/poly kernels, one-vs-rest decisions
(as in the paper) or one-vs-one, class weights and top-k prediction by ranking
the per-class decision values. The library doing the work is resolved once, in
``fit``, through :func:`embedkit.device.resolve_backend`.

Model selection (the fast grid search) lives in :mod:`embedkit.classify.gridsearch`;
saving/loading a trained model folder in :mod:`embedkit.classify.model_folder`.
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from embedkit.classify.constants import DECISIONS, KERNELS
from embedkit.errors import ConfigError, DataError, invalid
from embedkit.estimators import validated

log = logging.getLogger(__name__)


def check_C(C) -> float:
    """The SVM's C as a float, or a :class:`ConfigError`: a positive number (checked before any kernel is built)."""
    try:
        c = float(C)
    except (TypeError, ValueError):
        c = float("nan")
    if not c > 0 or c == float("inf"):
        raise invalid("C", C, "a positive number")
    return c


def resolve_gamma(gamma, X) -> float:
    """A numeric gamma: ``"scale"`` = 1 / (D * X.var()) (scikit-learn's), ``"auto"`` = 1 / D, or a number."""
    if isinstance(gamma, str):
        if gamma == "scale":
            var = np.asarray(X, dtype=np.float64).var()
            return 1.0 / (X.shape[1] * var) if var != 0 else 1.0
        if gamma == "auto":
            return 1.0 / X.shape[1]
        raise invalid("gamma", gamma, "a positive number, 'scale' or 'auto'")
    g = float(gamma)
    if not g > 0:
        raise invalid("gamma", gamma, "a positive number, 'scale' or 'auto'")
    return g


def svm_backend(backend="auto", device="auto") -> str:
    """The SVM library for ``backend`` on ``device``: the user's device reaches the choice.

    ``device="cpu"`` means scikit-learn (asking for ``backend="cuml"`` with it is an error); otherwise
    :func:`embedkit.device.resolve_backend` picks cuML on a CUDA machine that has it, else scikit-learn.
    """
    from embedkit.device import DEVICE_CHOICES, Compute, requested_device, resolve_backend

    dev = requested_device(device)
    if dev.split(":")[0] not in DEVICE_CHOICES:
        raise invalid("device", dev, DEVICE_CHOICES)
    if dev == "cpu":
        if backend not in (None, "auto", "sklearn"):
            raise ConfigError(f"backend {backend!r} runs on a GPU but device 'cpu' was asked for; use backend "
                              "'sklearn' (or auto) with --device cpu, or --device cuda")
        return "sklearn"
    if isinstance(device, Compute) and backend in (None, "auto"):
        return device.svm  # resolved once by the entry point
    return resolve_backend(backend, gpu="cuml", cpu="sklearn", purpose="SVM classification")


def _as_2col(d: np.ndarray) -> np.ndarray:
    """Binary decision values (N,) as per-class scores (N, 2)."""
    d = np.asarray(d, dtype=np.float64)
    return d if d.ndim == 2 else np.column_stack([-d, d])


class _TopKMixin:
    """Top-k prediction by ranking the per-class scores of :meth:`class_scores`."""

    def predict_topk(self, X, k: int = 5):
        """``(labels, scores)``, each N x k: the k best classes per item, best first, and their scores."""
        from embedkit.classify.metrics import rank_classes

        s = self.class_scores(X)
        order = rank_classes(s, min(int(k), s.shape[1]))
        return self.classes_[order], np.take_along_axis(s, order, axis=1)


class SVMClassifier(_TopKMixin, ClassifierMixin, BaseEstimator):
    """Support vector classifier of codes.

    Parameters
    ----------
    kernel : ``"rbf"``, ``"sigmoid"``, ``"linear"``, ``"poly"`` (or ``"precomputed"``, scikit-learn backend only).
    C, gamma, coef0, degree : as in scikit-learn's ``SVC`` (gamma: number, ``"scale"`` or ``"auto"``).
    decision : ``"ovr"`` one binary SVM per class against the rest (the paper's), or ``"ovo"``
        libsvm's one-vs-one voting (scores are scikit-learn's ovr-shaped vote confidences).
    class_weight : None, ``"balanced"`` or ``{class: weight}``. With ``ovr``, ``"balanced"`` balances each
        binary problem; a dict weights each item by its true class in every binary problem.
    backend : ``"auto"`` (cuML when CUDA and cuML are there, else scikit-learn), ``"cuml"`` or ``"sklearn"``.
    device : ``"auto"``, ``"cpu"`` (always scikit-learn), ``"cuda"`` or an entry point's
        :class:`~embedkit.device.Compute`: reaches the backend choice.
    n_jobs : threads for the binary problems of ``ovr`` (libsvm releases the GIL).
    """

    def __init__(self, kernel="rbf", C=1.0, gamma="scale", coef0=0.0, degree=3, decision="ovr",
                 class_weight=None, backend="auto", tol=1e-3, cache_size=500, max_iter=-1, n_jobs=None,
                 device="auto"):
        self.kernel = kernel
        self.C = C
        self.gamma = gamma
        self.coef0 = coef0
        self.degree = degree
        self.decision = decision
        self.class_weight = class_weight
        self.backend = backend
        self.tol = tol
        self.cache_size = cache_size
        self.max_iter = max_iter
        self.n_jobs = n_jobs
        self.device = device

    def _check_params(self):
        if self.kernel not in (*KERNELS, "precomputed"):
            raise invalid("kernel", self.kernel, KERNELS)
        if self.decision not in DECISIONS:
            raise invalid("decision", self.decision, DECISIONS, "ovr = one-vs-rest, ovo = one-vs-one")
        check_C(self.C)
        backend = svm_backend(self.backend, self.device)
        if backend == "cuml" and self.kernel == "precomputed":
            raise ConfigError("kernel='precomputed' works only with backend='sklearn'")
        return backend

    def fit(self, X, y, sample_weight=None):
        """Fit on codes ``X`` (N x D) and labels ``y``; returns self."""
        backend = self._check_params()
        X, y = validated(self, X, y, reset=True)
        if self.kernel == "precomputed" and X.shape[0] != X.shape[1]:
            raise DataError(f"a precomputed train kernel must be square, got shape {X.shape}")
        self.classes_, yi = np.unique(y, return_inverse=True)
        self.backend_ = backend
        self.gamma_ = resolve_gamma(self.gamma, X) if self.kernel != "precomputed" else None
        sw = None
        if isinstance(self.class_weight, dict) or sample_weight is not None:
            from sklearn.utils.class_weight import compute_sample_weight

            sw = np.ones(len(yi)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
            if isinstance(self.class_weight, dict):
                sw = sw * compute_sample_weight({i: self.class_weight.get(c, 1.0) for i, c in enumerate(self.classes_)}, yi)
        if backend == "cuml" and sw is not None and len(self.classes_) > 2:
            # cuML's multiclass fit only warns that it ignores sample weights: the weights would be lost on
            # the GPU while the CPU honours them, so these fits go to scikit-learn
            backend = self.backend_ = "sklearn"
            log.warning("cuML ignores sample weights with more than 2 classes: fitting this SVM with scikit-learn "
                        "on the CPU instead (the weights are honoured)")
        if backend == "cuml":
            self._fit_cuml(X, yi, sw)
        elif self.decision == "ovo":
            cw = self.class_weight if not isinstance(self.class_weight, dict) else None
            self.estimators_ = [self._svc(cw, "ovr").fit(X, yi, sample_weight=sw)]
        else:
            self._fit_ovr(X, yi, sw)
        self.n_iter_ = int(np.max([np.max(getattr(e, "n_iter_", 0)) for e in self.estimators_]))
        return self

    def _svc(self, class_weight, shape="ovr"):
        from sklearn.svm import SVC

        return SVC(kernel=self.kernel, C=float(self.C), gamma=self.gamma_ if self.gamma_ is not None else "scale",
                   coef0=float(self.coef0), degree=int(self.degree), class_weight=class_weight, tol=self.tol,
                   cache_size=self.cache_size, max_iter=self.max_iter, decision_function_shape=shape)

    def _fit_ovr(self, X, yi, sw):
        """One binary SVM per class (one for two classes), in threads: libsvm runs without the GIL."""
        from joblib import Parallel, delayed

        cw = "balanced" if self.class_weight == "balanced" else None
        positives = [1] if len(self.classes_) == 2 else range(len(self.classes_))

        def one(k):
            return self._svc(cw).fit(X, (yi == k).astype(np.int64), sample_weight=sw)

        self.estimators_ = Parallel(n_jobs=self.n_jobs, prefer="threads")(delayed(one)(k) for k in positives)

    def _fit_cuml(self, X, yi, sw):
        from embedkit.device import optional_import

        svm = optional_import("cuml", "SVM classification with backend='cuml'").svm
        cw = self.class_weight if self.class_weight in (None, "balanced") else None
        # cuML's SVC (25.06+) is keyword-only without **kwargs; decision_function_shape picks ovr/ovo
        model = svm.SVC(kernel=self.kernel, C=float(self.C), gamma=self.gamma_, coef0=float(self.coef0),
                        degree=int(self.degree), class_weight=cw, tol=self.tol, cache_size=self.cache_size,
                        max_iter=self.max_iter, decision_function_shape=self.decision, output_type="numpy")
        model.fit(X.astype(np.float32), yi, sample_weight=sw)
        self.estimators_ = [model]

    def _check_fitted(self, X):
        return validated(self, X)[0]

    def class_scores(self, X) -> np.ndarray:
        """Per-class decision values, N x n_classes (columns in ``classes_`` order), larger = more likely."""
        X = self._check_fitted(X)
        if self.decision == "ovr" and self.backend_ == "sklearn":
            d = np.column_stack([e.decision_function(X) for e in self.estimators_])
            return _as_2col(d[:, 0]) if len(self.classes_) == 2 else d
        d = np.asarray(self.estimators_[0].decision_function(X), dtype=np.float64)
        k = len(self.classes_)
        if self.backend_ == "cuml" and d.ndim == 2 and k > 2 and d.shape[1] != k:  # pragma: no cover - cuML ovo
            # pairwise values in libsvm's (0,1), (0,2)... order -> votes + confidences, as scikit-learn's SVC does
            from sklearn.utils.multiclass import _ovr_decision_function

            d = _ovr_decision_function(d < 0, -d, k)
        return _as_2col(d)

    def decision_function(self, X) -> np.ndarray:
        """Decision values: (N,) for two classes (positive = ``classes_[1]``), else N x n_classes."""
        s = self.class_scores(X)
        return s[:, 1] if s.shape[1] == 2 and len(self.classes_) == 2 else s

    def predict(self, X) -> np.ndarray:
        """Best class of each item: one-vs-rest by the largest decision value, one-vs-one by libsvm's votes."""
        X = self._check_fitted(X)
        if self.decision == "ovo" or self.backend_ == "cuml":
            return self.classes_[np.asarray(self.estimators_[0].predict(X)).astype(np.int64)]
        return self.classes_[np.argmax(self.class_scores(X), axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.pairwise = self.kernel == "precomputed"
        return tags


class LogisticBaseline(_TopKMixin, ClassifierMixin, BaseEstimator):
    """Standardised codes + multinomial logistic regression: the baseline to compare the SVM with."""

    def __init__(self, C=1.0, max_iter=2000, class_weight=None):
        self.C = C
        self.max_iter = max_iter
        self.class_weight = class_weight

    def fit(self, X, y):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        X, y = validated(self, X, y, reset=True)
        self.classes_ = np.unique(y)
        self.model_ = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=self.max_iter,
                                                                         class_weight=self.class_weight))
        self.model_.fit(X, y)  # its classes_ are np.unique(y), the same order as ours
        self.n_iter_ = int(np.max(self.model_[-1].n_iter_))
        return self

    def class_scores(self, X) -> np.ndarray:
        """Per-class log-probabilities, N x n_classes."""
        X = validated(self, X)[0]
        return self.model_.predict_log_proba(X)

    def decision_function(self, X):
        s = self.class_scores(X)
        return s[:, 1] - s[:, 0] if len(self.classes_) == 2 else s

    def predict(self, X):
        s = self.class_scores(X)  # checks fitted before classes_ is touched
        return self.classes_[np.argmax(s, axis=1)]
