"""Applying classifiers to code stores in bounded memory: reading rows, scoring, evaluating, predicting.

Codes are read from a store through its chunked API (``iter_chunks`` for every row, ``take`` for a
selection), ``CHUNK_ROWS`` at a time, checked chunk by chunk (:func:`embedkit.checks.check_codes`),
and scored chunk by chunk: only the N x n_classes scores are kept, never all the codes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedkit.checks import check_codes
from embedkit.defaults import CHUNK_ROWS, TOP_K
from embedkit.errors import ConfigError, DataError


def _what(store) -> str:
    return f"codes of store {str(store.path)!r}"


def iter_rows(store, rows=None, chunk: int = CHUNK_ROWS):
    """Yield ``(start, block)``: float32 codes of ``rows`` (all rows when None) in order, checked, ``chunk`` at a time;
    ``start`` is the position of the block's first row within ``rows``."""
    if rows is None:
        for first, block in store.iter_chunks(chunk):
            yield first, check_codes(block, _what(store), store.dim, copy=False)
        return
    rows = np.asarray(rows, dtype=np.int64)
    for i in range(0, len(rows), chunk):
        yield i, check_codes(store.take(rows[i:i + chunk]), _what(store), store.dim, copy=False)


def read_rows(store, rows=None, chunk: int = CHUNK_ROWS) -> np.ndarray:
    """Codes of ``rows`` (all when None) as one checked float32 array: for sets already known to fit in memory."""
    n = len(store) if rows is None else len(rows)
    out = np.empty((n, store.dim), np.float32)
    for i, block in iter_rows(store, rows, chunk):
        out[i:i + len(block)] = block
    return out


def score_rows(clf, store, rows=None, chunk: int = CHUNK_ROWS) -> np.ndarray:
    """Per-class scores (N x n_classes, float64) of ``rows`` of a store, streamed."""
    n = len(store) if rows is None else len(rows)
    out = np.empty((n, len(clf.classes_)), np.float64)
    for i, block in iter_rows(store, rows, chunk):
        out[i:i + len(block)] = clf.class_scores(block)
    return out


def evaluate_store(model_path, store, out=None, part: str = "all", chunk: int = CHUNK_ROWS) -> tuple[dict, list, dict]:
    """Evaluate a saved model on a store (``part``: ``all`` items or the model's own ``test``/``val``/``train``)."""
    from embedkit.classify.evaluate import evaluate_scores, model_extra, write_evaluation
    from embedkit.classify.model_folder import check_store_matches, load_classifier
    from embedkit.splits import SPLITS, split_from_file

    if part not in ("all", *SPLITS):
        from embedkit.errors import invalid

        raise invalid("part", part, ("all", *SPLITS))
    clf, meta = load_classifier(model_path)
    check_store_matches(meta, store, model_path)
    if len(store) == 0:
        raise DataError(f"store {str(store.path)!r} holds no codes; embed some images first")
    rows = None
    if part != "all":
        split = split_from_file(store.paths, Path(model_path) / "split.csv")
        rows = getattr(split, part)
        if len(rows) == 0:
            raise DataError(f"the model's split has no {part} items")
    idx = slice(None) if rows is None else rows
    rep, failures = evaluate_scores(score_rows(clf, store, rows, chunk), clf.classes_, store.labels[idx],
                                    store.paths[idx], sha1=store.recorded_sha1(rows))
    files = write_evaluation(out, rep, failures, title=f"{part} of {store.path.name}",
                             extra=model_extra(meta)) if out else {}
    return rep, failures, files


def _topk_rows(clf, X, paths, k):
    labels, scores = clf.predict_topk(X, k)
    return [[p, labels[i, 0]] + [v for j in range(labels.shape[1]) for v in (labels[i, j], f"{scores[i, j]:.6g}")]
            for i, p in enumerate(paths)]


def predict_paths(model_path, source, k: int = TOP_K, device="auto", batch_size=None, chunk: int = CHUNK_ROWS,
                  workers=None, progress: bool = False):
    """Embed the images of ``source`` with the model's backbone and rank classes: ``(rows, skipped)``.

    ``rows`` are ``[path, pred, label1, score1, ... labelk, scorek]``; a code store as ``source`` is read in
    chunks as is. Images need a model trained on codes of a known backbone.
    """
    from embedkit.classify.model_folder import (
        check_store_matches,
        load_classifier,
        postprocess_of,
    )
    from embedkit.store.codestore import CodeStore

    clf, meta = load_classifier(model_path)
    if (Path(source) / "meta.json").exists():
        store = CodeStore.open(source)
        check_store_matches(meta, store, model_path)
        rows = []
        for i, block in iter_rows(store, None, chunk):
            rows.extend(_topk_rows(clf, block, store.paths[i:i + len(block)].tolist(), k))
        return rows, []
    if meta.get("identity") is None:
        raise ConfigError(f"model {str(model_path)!r} was trained on codes imported without a backbone, so embedkit "
                          "cannot embed images for it; embed them the same way yourself and predict on that code store")
    from embedkit.io.discover import discover
    from embedkit.models.backbone import Backbone

    items = discover(source, labels=False)
    pp = postprocess_of(meta, model_path)
    bb = Backbone.from_identity(meta["identity"], device=device)
    from embedkit.runner.local import embed_files

    raw, kept, bad = embed_files(bb, [it.path for it in items], batch_size=batch_size, workers=workers,
                                 progress=progress)
    paths = [items[i].path for i in kept]
    skipped = [(items[i].path, reason) for i, reason in bad]
    if not paths:
        raise DataError(f"none of the {len(items)} images in {str(source)!r} could be read")
    X = check_codes(pp.apply(raw), "codes of the new images", meta["dim"], copy=False)
    return _topk_rows(clf, X, paths, k), skipped
