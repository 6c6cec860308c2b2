"""Trained classifier folders: the on-disk format and its checks.

A model folder holds::

    model.npz    the fitted classifier's numeric arrays (support vectors, coefficients...), read with
                 np.load(allow_pickle=False): loading a folder from someone else cannot run code
    model.json   format, the classifier (type, parameters, fitted scalars; see classify.serialize), identity of
                 the codes (backbone/layer/weights/preprocessing), dim, post-processing (L2, PCA), classes,
                 grid-search summary and training plan; written last
    pca.npz      only when the training store was PCA-whitened (to transform new codes)
    split.csv    path,split rows of the train/val/test split used (a valid --split-file)

Every file is written to a temporary name and renamed, ``model.json`` last, so a folder without
``model.json`` is never taken for a model. Folders of the old pickle format (``model.pkl``) are refused.
"""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import numpy as np

from embedkit.atomic import write_bytes_atomic, write_csv_atomic, write_text_atomic
from embedkit.errors import ConfigError, MismatchError, StoreError
from embedkit.models.identity import numerics_mismatch

log = logging.getLogger(__name__)

MODEL_FORMAT = "embedkit-classifier/2"
#: files a model folder may hold (checked before training into an existing folder)
MODEL_FILES = ("model.json", "model.npz", "model.pkl", "split.csv", "report.json", "grid_search.txt")


def check_out_folder(out, overwrite: bool = False) -> Path:
    """Refuse to train into a folder that already holds a model (or anything else) unless ``overwrite``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{str(out)!r} is a file; give a folder for the model")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        what = "a model" if any((out / f).exists() for f in MODEL_FILES) else "files"
        raise ConfigError(f"{str(out)!r} already holds {what}; choose another folder or replace it with --overwrite "
                          "(overwrite=True)")
    return out


def save_classifier(out, clf, store, extra: dict | None = None, split_rows=None) -> Path:
    """Save a fitted classifier trained on codes of ``store`` into folder ``out`` (atomically, model.json last)."""
    from embedkit import __version__
    from embedkit.classify.serialize import dump_estimator

    if getattr(clf, "backend_", None) == "cuml":  # checked before the folder is touched
        raise ConfigError(f"a {type(clf).__name__} fitted with cuML cannot be saved (model folders hold "
                          "scikit-learn's SVM, which loads on any machine); fit it with backend='sklearn' "
                          "(or device='cpu') before saving it")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.json").unlink(missing_ok=True)  # the folder is not a model until the new model.json lands
    (out / "model.pkl").unlink(missing_ok=True)  # never leave a pickle of an older version next to a new model
    arrays = {}
    desc = dump_estimator(clf, arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_bytes_atomic(out / "model.npz", buf.getvalue())
    pp = store.postprocess
    pp.copy_to(out, store.path)
    if split_rows is not None:
        write_csv_atomic(out / "split.csv", ("path", "split"), split_rows)
    meta = {
        "format": MODEL_FORMAT, "embedkit_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "estimator": type(clf).__name__, "params": desc["params"], "gamma": getattr(clf, "gamma_", None),
        "backend": getattr(clf, "backend_", "sklearn"), "classes": [str(c) for c in clf.classes_],
        "dim": int(clf.n_features_in_), "identity": store.identity, "postprocess": pp.identity,
        "store": str(store.path), **(extra or {}), "classifier": desc,
    }
    write_text_atomic(out / "model.json", json.dumps(meta, indent=2, default=str))
    return out


def load_classifier(path):
    """``(estimator, meta)`` of a model folder written by :func:`save_classifier`; never unpickles anything."""
    from embedkit.classify.checks import check_fitted, read_npz
    from embedkit.classify.serialize import load_estimator

    path = Path(path)
    if not (path / "model.json").exists():
        from embedkit.store.folders import not_a_model

        raise StoreError(f"{str(path)!r} is not a classifier model: {not_a_model(path)}")
    try:
        meta = json.loads((path / "model.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoreError(f"{str(path / 'model.json')!r} is not valid JSON ({exc}); retrain the model") from exc
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        old = " (a pickle, model.pkl, which could run any code when loaded: embedkit no longer loads pickles)" \
            if fmt == "embedkit-classifier/1" else ""
        raise StoreError(f"{str(path)!r} holds format {fmt!r}, not {MODEL_FORMAT!r}{old}; retrain the model with "
                         "`embedkit classify train`")
    if not (path / "model.npz").exists():
        raise StoreError(f"{str(path / 'model.npz')!r} is missing; the model folder is incomplete: retrain it")
    dim = meta.get("dim")
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise StoreError(f"{str(path / 'model.json')!r} gives dim {dim!r}, not a positive integer; retrain the model")
    clf = load_estimator(meta.get("classifier"), read_npz(path / "model.npz"))
    check_fitted(clf, dim, repr(str(path / "model.npz")))
    return clf, meta


def check_store_matches(meta: dict, store, model_path="the model") -> None:
    """Refuse codes from another backbone/layer/dim/post-processing than the model's (MismatchError)."""
    model_id, store_id = meta.get("identity"), store.identity
    if (model_id is None) != (store_id is None):
        raise MismatchError(f"model {str(model_path)!r} was trained on codes {'without' if model_id is None else 'with'} "
                            f"a known backbone and store {str(store.path)!r} holds codes "
                            f"{'without' if store_id is None else 'with'} one; use codes made the same way")
    if model_id is not None:
        store.check_compatible(model_id, what=f"the codes model {str(model_path)!r} was trained on")
        mix = numerics_mismatch(model_id, store_id)
        if mix:  # comparable codes, slightly off: a note, not a refusal
            log.warning("model %r was trained on codes computed another way than store %r's (%s)", str(model_path),
                        str(store.path), "; ".join(mix))
    pp = store.postprocess.identity
    if store.dim != meta["dim"] or pp != meta["postprocess"]:
        raise MismatchError(f"store {str(store.path)!r} has {store.dim}-d codes with post-processing {pp}, model "
                            f"{str(model_path)!r} expects {meta['dim']}-d with {meta['postprocess']}; embed with the "
                            "same options as the training store")


def postprocess_of(meta: dict, model_path):
    """The :class:`~embedkit.store.postprocess.PostProcess` the model's training codes went through."""
    from embedkit.store.postprocess import PostProcess

    return PostProcess.load(meta["postprocess"], model_path)
