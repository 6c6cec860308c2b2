"""Checks of a model folder's contents before they are trusted: sizes before allocation, shapes against the JSON,
finite values.

A model folder may come from someone else. ``np.load(allow_pickle=False)`` already keeps code from running;
what is left is numbers that do not fit together: a 7 MB ``model.npz`` that inflates to GBs (a zip bomb), a
support-vector matrix of another width than the codes (libsvm then reads past or short of each row and
predicts silently wrong classes), NaN coefficients (every score NaN, every prediction the first class).
Each is refused as a :class:`~embedkit.errors.StoreError` naming the file and what is wrong.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from embedkit.errors import StoreError

#: ``model.npz`` is written uncompressed (``np.savez``): its arrays take about the file's size. More than
#: this many times the file's size (plus headroom for tiny files) is a compressed bomb, refused unread.
MAX_EXPANSION = 4
SLACK_BYTES = 1 << 20


def read_npz(path) -> dict:
    """The arrays of an ``.npz``, each header checked (numeric dtype, declared size within the file's own
    size) before any array is allocated; :class:`StoreError` otherwise."""
    path = Path(path)
    where = repr(str(path))
    if not path.is_file():  # a FIFO would be waited on, a link to /dev/zero read for ever
        raise StoreError(f"{where} is not a regular file; retrain the model")
    budget = MAX_EXPANSION * path.stat().st_size + SLACK_BYTES
    try:
        with zipfile.ZipFile(path) as zf:
            total = 0
            for info in zf.infolist():
                total += max(info.file_size, _declared_bytes(zf, info, where))
                if total > budget:
                    raise StoreError(f"{where} would take over {total:,} bytes in memory from a "
                                     f"{path.stat().st_size:,}-byte file (a compressed bomb?); refused unread: "
                                     "retrain the model")
        with np.load(path, allow_pickle=False) as arrays:
            return {k: arrays[k] for k in arrays.files}
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise StoreError(f"{where} cannot be read ({type(exc).__name__}: {exc}); retrain the model") from exc
    except ValueError as exc:  # object arrays need pickle, or a header that does not match its data
        raise StoreError(f"{where} holds data that cannot be loaded without pickle or is damaged ({exc}); embedkit "
                         "refuses it (unpickling can run any code): retrain the model") from exc


def _declared_bytes(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> int:
    """Bytes the ``.npy`` member declares in its header (shape x itemsize), read without its data."""
    with zf.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
            shape, _, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                               else np.lib.format.read_array_header_2_0(f))
        except ValueError as exc:
            raise StoreError(f"{where}: {info.filename} is not a NumPy array ({exc}); retrain the model") from exc
    if dtype.hasobject:
        raise StoreError(f"{where}: {info.filename} holds Python objects, which only pickle could load; embedkit "
                         "refuses it (unpickling can run any code): retrain the model")
    return int(np.prod(shape, dtype=object)) * dtype.itemsize


def check_fitted(est, dim: int, what: str) -> None:
    """Refuse a rebuilt classifier whose arrays do not fit ``dim``-d codes and its classes, or are not finite."""
    _check(est, int(dim), len(getattr(est, "classes_", ())), what)
    for sub in getattr(est, "estimators_", None) or ():
        _check(sub, int(dim), len(getattr(sub, "classes_", ())), what)


def _fail(what: str, problem: str) -> StoreError:
    return StoreError(f"{what}: {problem}; the model folder is damaged or was altered: retrain it")


def _check(est, dim: int, n_classes: int, what: str) -> None:
    for attr, v in vars(est).items():
        if isinstance(v, np.ndarray) and v.dtype.kind in "fc" and not np.isfinite(v).all():
            raise _fail(what, f"{attr} holds NaN or infinite values")
    n_in = getattr(est, "n_features_in_", dim)
    if n_in != dim:
        raise _fail(what, f"it takes {n_in}-d codes but model.json says {dim}")
    for attr in WIDTH_ARRAYS:  # rows of code width
        v = getattr(est, attr, None)
        if isinstance(v, np.ndarray) and (v.ndim != 2 or v.shape[1] != dim):
            raise _fail(what, f"{attr} has shape {v.shape}, expected (rows, {dim}) for {dim}-d codes")
    if hasattr(est, "support_vectors_"):
        _check_svc(est, dim, what)
    if hasattr(est, "components_") and hasattr(est, "coef_"):
        m, k = len(est.components_), est.coef_.shape
        if est.normalization_.shape != (m, m) or k[1:] != (m,) or len(est.intercept_) != k[0]:
            raise _fail(what, f"components {est.components_.shape}, normalization {est.normalization_.shape}, "
                              f"coef {k} and intercept {est.intercept_.shape} do not fit together")
    if hasattr(est, "fit_y_"):
        y = est.fit_y_
        if y.shape != (len(est.fit_X_),) or y.dtype.kind not in "iu" or (len(y) and not 0 <= y.min() <= y.max() < n_classes):
            raise _fail(what, f"fit_y_ ({y.shape}, {y.dtype}) is not one class number below {n_classes} per code row")


#: fitted arrays whose rows are codes
WIDTH_ARRAYS = ("support_vectors_", "components_", "fit_X_")


def _check_svc(svc, dim: int, what: str) -> None:
    n_sv, k = len(svc.support_vectors_), len(svc.classes_)
    n_support = np.asarray(svc._n_support)
    checks = {
        "dual_coef_": (svc.dual_coef_.shape, (k - 1, n_sv)),
        "_dual_coef_": (svc._dual_coef_.shape, (k - 1, n_sv)),
        "support_": (svc.support_.shape, (n_sv,)),
        "_n_support": ((n_support.shape, int(n_support.sum())), ((k,), n_sv)),
        "intercept_": (svc.intercept_.shape, (k * (k - 1) // 2,)),
        "shape_fit_": (tuple(getattr(svc, "shape_fit_", (0, dim)))[1:], (dim,)),
    }
    for name, (have, want) in checks.items():
        if have != want:
            raise _fail(what, f"{name} is {have}, expected {want} for {n_sv} support vectors of {k} classes")
