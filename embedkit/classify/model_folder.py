"""Trained classifier folders: the on-disk format and its checks.

A model folder holds::

    model.pkl    the fitted estimator (pickle)
    model.json   format, identity of the codes (backbone/layer/weights/preprocessing), dim,
                 post-processing (L2, PCA), classes, parameters, grid-search summary; written last
    pca.npz      only when the training store was PCA-whitened (to transform new codes)
    split.csv    path,split rows of the train/val/test split used (a valid --split-file)

Every file is written to a temporary name and renamed, ``model.json`` last, so a
folder without ``model.json`` is never taken for a model.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import time
from pathlib import Path

import numpy as np

from embedkit.atomic import write_bytes_atomic, write_csv_atomic, write_text_atomic  # noqa: F401 - re-exported
from embedkit.errors import MismatchError, StoreError

MODEL_FORMAT = "embedkit-classifier/1"


def save_model(out, clf, store, extra: dict | None = None, split_rows=None) -> Path:
    """Save a fitted classifier trained on codes of ``store`` into folder ``out`` (atomically, model.json last)."""
    from embedkit import __version__

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.json").unlink(missing_ok=True)  # the folder is not a model until the new model.json lands
    write_bytes_atomic(out / "model.pkl", pickle.dumps(clf, protocol=pickle.HIGHEST_PROTOCOL))
    if store.meta.get("pca_whiten"):
        tmp = out / "pca.npz.tmp"
        shutil.copyfile(store.path / "pca.npz", tmp)
        os.replace(tmp, out / "pca.npz")
    if split_rows is not None:
        write_csv_atomic(out / "split.csv", ("path", "split"), split_rows)
    params = {k: v for k, v in clf.get_params().items() if isinstance(v, (str, int, float, bool, type(None)))}
    meta = {
        "format": MODEL_FORMAT, "embedkit_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "estimator": type(clf).__name__, "params": params, "gamma": getattr(clf, "gamma_", None),
        "backend": getattr(clf, "backend_", "sklearn"), "classes": [str(c) for c in clf.classes_],
        "dim": int(clf.n_features_in_), "identity": store.identity,
        "postprocess": {"l2_normalize": bool(store.meta.get("l2_normalize")), "pca_whiten": store.meta.get("pca_whiten")},
        "store": str(store.path), **(extra or {}),
    }
    write_text_atomic(out / "model.json", json.dumps(meta, indent=2, default=str))
    return out


def load_model(path):
    """``(estimator, meta)`` of a model folder written by :func:`save_model`."""
    path = Path(path)
    if not (path / "model.json").exists():
        raise StoreError(f"{str(path)!r} is not a classifier model: model.json is missing; "
                         f"train one with `embedkit classify train CODES -o {path}`")
    meta = json.loads((path / "model.json").read_text(encoding="utf-8"))
    if meta.get("format") != MODEL_FORMAT:
        raise StoreError(f"{str(path)!r} holds format {meta.get('format')!r}, not {MODEL_FORMAT!r}; retrain the model")
    with open(path / "model.pkl", "rb") as f:
        clf = pickle.load(f)
    return clf, meta


def check_store_matches(meta: dict, store, model_path="the model") -> None:
    """Refuse codes from another backbone/layer/dim/post-processing than the model's (MismatchError)."""
    store.check_compatible(meta["identity"], what=f"the codes model {str(model_path)!r} was trained on")
    pp = {"l2_normalize": bool(store.meta.get("l2_normalize")), "pca_whiten": store.meta.get("pca_whiten")}
    if store.dim != meta["dim"] or pp != meta["postprocess"]:
        raise MismatchError(f"store {str(store.path)!r} has {store.dim}-d codes with post-processing {pp}, model "
                            f"{str(model_path)!r} expects {meta['dim']}-d with {meta['postprocess']}; embed with the "
                            "same options as the training store")


def postprocess(meta: dict, model_path, raw: np.ndarray) -> np.ndarray:
    """Apply the training store's PCA-whitening / L2 normalisation to raw codes of new images."""
    from embedkit.store.postprocess import l2_normalize

    x = np.asarray(raw, dtype=np.float32)
    if meta["postprocess"].get("pca_whiten"):
        with np.load(Path(model_path) / "pca.npz") as p:
            x = (x - p["mean"]) @ p["components"].T / p["scale"]
    if meta["postprocess"].get("l2_normalize"):
        x = l2_normalize(x)
    return x.astype(np.float32)
