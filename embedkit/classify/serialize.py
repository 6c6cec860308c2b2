"""Fitted classifiers as JSON + NumPy arrays: a format that cannot run code when loaded (no pickle).

:func:`dump_estimator` turns a fitted estimator into a JSON-ready description (its class name out of a
fixed list, its constructor parameters, its fitted scalars) plus a dict of numeric arrays, written with
``np.savez`` and read back with ``np.load(allow_pickle=False)``. :func:`load_estimator` rebuilds it: the
class is looked up in :data:`ESTIMATORS` (never imported by name), constructed from its parameters, and
its fitted attributes are set from the JSON values and arrays. A scikit-learn ``SVC`` inside an
:class:`~embedkit.classify.svm.SVMClassifier` is re-assembled from its own fitted attributes (support
vectors, dual coefficients, intercepts...), so predictions are libsvm's, bit for bit.
"""

from __future__ import annotations

import numpy as np

from embedkit.errors import ConfigError, StoreError


def _registry() -> dict:
    from sklearn.svm import SVC

    from embedkit.classify.calibrate import CalibratedSVM
    from embedkit.classify.knn import KNNCodesClassifier
    from embedkit.classify.large import ApproxKernelSVM
    from embedkit.classify.svm import LogisticBaseline, SVMClassifier

    return {"SVMClassifier": SVMClassifier, "SVC": SVC, "ApproxKernelSVM": ApproxKernelSVM,
            "KNNCodesClassifier": KNNCodesClassifier, "LogisticBaseline": LogisticBaseline,
            "CalibratedSVM": CalibratedSVM}


#: attributes holding fitted sub-estimators (lists of them)
NESTED = ("estimators_",)


def _plain(v):
    """A JSON value of a scalar (NumPy scalars become Python numbers)."""
    return v.item() if isinstance(v, np.generic) else v


def _labels_out(a: np.ndarray) -> dict:
    vals = [_plain(v) for v in a.tolist()]
    if not all(isinstance(v, (str, int, float, bool)) for v in vals):
        raise ConfigError(f"labels of type {type(vals[0]).__name__} cannot be saved; use str or int labels")
    return {"labels": vals, "dtype": "object" if a.dtype == object else a.dtype.str}


def _labels_in(entry: dict) -> np.ndarray:
    vals = entry["labels"]
    if not all(isinstance(v, (str, int, float, bool)) for v in vals):
        raise StoreError("a saved label is not a string or number; the model folder is damaged or not embedkit's")
    if entry.get("dtype") == "object":
        return np.array(vals, dtype=object)
    return np.array(vals, dtype=np.dtype(entry.get("dtype") or None))


def dump_estimator(est, arrays: dict, prefix: str = "") -> dict:
    """JSON description of fitted ``est``; its numeric arrays are added to ``arrays`` under ``prefix``-ed keys."""
    name = type(est).__name__
    if name not in _registry():
        raise ConfigError(f"a {name} cannot be saved; embedkit saves {', '.join(_registry())}")
    from embedkit.device import Compute

    # an entry point's resolved device is saved as what was asked (``auto``...): it is resolved again on load
    params = {k: v.requested if isinstance(v, Compute) else v for k, v in est.get_params(deep=False).items()}
    for k, v in params.items():
        if not isinstance(v, (str, int, float, bool, type(None), dict)):
            raise ConfigError(f"parameter {k}={v!r} of {name} cannot be saved; use a plain value")
    state = {}
    skip = set(getattr(est, "_transient", ()))  # caches rebuilt on demand (e.g. a search index)
    for attr, v in vars(est).items():
        if attr in params or attr in skip or attr.startswith("__"):
            continue
        if attr in NESTED:
            state[attr] = {"list": [dump_estimator(e, arrays, f"{prefix}{attr}.{i}.") for i, e in enumerate(v)]}
        elif isinstance(v, np.ndarray) and (v.dtype == object or v.dtype.kind in "US"):
            state[attr] = _labels_out(v)
        elif isinstance(v, np.ndarray):
            arrays[prefix + attr] = v
            state[attr] = {"array": prefix + attr}
        elif isinstance(v, (bool, int, float, str, type(None), np.generic)):
            state[attr] = {"value": _plain(v)}
        elif isinstance(v, tuple) and all(isinstance(x, (int, float, np.generic)) for x in v):
            state[attr] = {"tuple": [_plain(x) for x in v]}
        else:
            raise ConfigError(f"the fitted {name} holds {attr} of type {type(v).__name__}, which cannot be saved "
                              "without pickle (a cuML model? train with --backend sklearn)")
    return {"type": name, "params": {k: v for k, v in params.items()}, "state": state}


def load_estimator(desc: dict, arrays) -> object:
    """Rebuild an estimator from :func:`dump_estimator`'s description and its arrays (an ``np.load`` result)."""
    reg = _registry()
    if not isinstance(desc, dict) or desc.get("type") not in reg:
        kind = desc.get("type") if isinstance(desc, dict) else type(desc).__name__
        raise StoreError(f"the saved classifier is of unknown type {kind!r}; embedkit loads {', '.join(reg)}")
    try:
        cls = reg[desc["type"]]
        est = cls(**desc["params"])
        for attr, entry in desc["state"].items():
            if "list" in entry:
                val = [load_estimator(d, arrays) for d in entry["list"]]
            elif "array" in entry:
                val = arrays[entry["array"]]
            elif "labels" in entry:
                val = _labels_in(entry)
            elif "tuple" in entry:
                val = tuple(entry["tuple"])
            else:
                val = entry["value"]
                if not isinstance(val, (bool, int, float, str, type(None))):
                    raise StoreError(f"saved value of {attr} is not a plain value")
            setattr(est, attr, val)
    except StoreError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"the saved classifier cannot be rebuilt ({type(exc).__name__}: {exc}); the model folder "
                         "is damaged or from another version: retrain it") from exc
    return est
