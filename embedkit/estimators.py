"""scikit-learn estimator conventions shared by the classify and retrieve stages.

One not-fitted error that embedkit and scikit-learn both recognise, the label check and
the input validation every estimator's ``fit``/``predict`` starts with, and the
positive-integer parameter check. Below both stages, so neither imports the other for them.
"""

from __future__ import annotations

import numpy as np
from sklearn.exceptions import NotFittedError as _SkNotFitted
from sklearn.utils.multiclass import check_classification_targets

from embedkit.checks import check_codes
from embedkit.errors import DataError, NotFittedError, invalid


def check_labels(y, n: int, min_classes: int = 2) -> np.ndarray:
    """Labels for ``n`` items with at least ``min_classes`` classes, or a :class:`DataError`."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"got {len(y) if y.ndim else 'no'} labels of shape {y.shape} for {n} items; give one label per item")
    try:
        check_classification_targets(y)
    except ValueError as exc:
        raise DataError(f"labels cannot be used for classification: {exc}") from exc
    if y.dtype == object and ((y == "") | np.equal(y, None)).any():
        raise DataError("some items have no label; put each image in a class sub-folder (or give a label column)")
    k = len(np.unique(y))
    if k < min_classes:
        raise DataError(f"classification needs at least {min_classes} classes, got {k} "
                        f"({'one class' if k == 1 else 'classes'} {np.unique(y)[:3].tolist()}); add images of other classes")
    return y


class EstimatorNotFittedError(NotFittedError, _SkNotFitted):
    """Not fitted yet: embedkit's error that scikit-learn (``GridSearchCV``, ``check_is_fitted``) recognises too."""


def validated(est, X, y="no_validation", reset: bool = False):
    """scikit-learn's input validation (2-D, numeric, dense, ``n_features_in_``) with our errors and NaN check.

    ``reset=True`` (in ``fit``) records ``n_features_in_``; otherwise X must match it.
    """
    from sklearn.utils.validation import check_is_fitted, validate_data

    if not reset:
        try:
            check_is_fitted(est)
        except _SkNotFitted as exc:
            raise EstimatorNotFittedError(f"this {type(est).__name__} is not fitted yet; call fit(X, y) first") from exc
    try:
        out = validate_data(est, X, y, reset=reset, ensure_all_finite=False)
    except ValueError as exc:
        raise DataError(f"codes cannot be used: {exc}") from exc
    X, y = out if isinstance(out, tuple) else (out, None)
    X = check_codes(X, copy=False)
    if y is not None:
        y = check_labels(y, X.shape[0])
    return X, y


def check_positive_int(name: str, value) -> int:
    """``value`` as an int, or a :class:`ConfigError` in the standard "not valid" shape."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise invalid(name, value, "a positive integer")
    return int(value)
