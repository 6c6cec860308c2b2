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


def predict_sources(model_path, sources, k: int = TOP_K, device="auto", batch_size=None, chunk: int = CHUNK_ROWS,
                    workers=None, progress: bool = False):
    """Rank the classes of a model folder for the items of ``sources``: a :class:`~embedkit.classify.predict.Predictions`.

    Each source is a code store (read in chunks as it is) or images (a folder, manifest, list or file),
    embedded together with the model's backbone (which needs a model trained on codes of a known backbone).
    The stores' rows come first, in SOURCE order, then the images.
    """
    from embedkit.classify.model_folder import check_store_matches, load_classifier, postprocess_of
    from embedkit.classify.predict import Predictions, score_meaning
    from embedkit.io.discover import discover
    from embedkit.store.codestore import CodeStore

    clf, meta = load_classifier(model_path)
    paths, labels, scores, skipped, items = [], [], [], [], []
    for src in sources:
        if (Path(src) / "meta.json").exists():
            store = CodeStore.open(src)
            check_store_matches(meta, store, model_path)
            for i, block in iter_rows(store, None, chunk):
                lab, sc = clf.predict_topk(block, k)
                paths += store.paths[i:i + len(block)].tolist()
                labels.append(lab)
                scores.append(sc)
        elif meta.get("identity") is None:
            raise ConfigError(f"model {str(model_path)!r} was trained on codes imported without a backbone, so "
                              f"embedkit cannot embed the images of {str(src)!r} for it; embed them the same way "
                              "yourself and predict on that code store")
        else:
            items += [it for it in discover(src, labels=False) if not it.skip]
    if items:
        from embedkit.models.backbone import Backbone
        from embedkit.runner.local import embed_files

        bb = Backbone.from_identity(meta["identity"], device=device)
        raw, kept, bad = embed_files(bb, [it.path for it in items], batch_size=batch_size, workers=workers,
                                     progress=progress)
        skipped = [(items[i].path, reason) for i, reason in bad]
        if kept:
            X = check_codes(postprocess_of(meta, model_path).apply(raw), "codes of the new images", meta["dim"],
                            copy=False)
            lab, sc = clf.predict_topk(X, k)
            paths += [items[i].path for i in kept]
            labels.append(lab)
            scores.append(sc)
    if not paths:
        raise DataError(f"none of the {len(items)} images in {', '.join(map(str, sources))} could be read")
    return Predictions(paths, np.concatenate(labels), np.concatenate(scores),
                       score_meaning(meta.get("estimator", "")), str(model_path), skipped)
