"""How well codes group by label: silhouette score and k-NN accuracy, on a bounded sample."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from embedkit.errors import DataError
from embedkit.view.project import Rows, _sample_indices


def code_metrics(codes, labels: Sequence, k: int = 5, max_points: int = 5000, seed: int = 0,
                 metric: str = "cosine", rows: np.ndarray | None = None) -> dict:
    """How well labels group in the codes: silhouette score and leave-one-out ``k``-NN accuracy.

    Both are computed on the codes (not on the 2-D view), on a seeded sample of at
    most ``max_points`` labelled rows (``n`` of ``n_labelled`` in the result), so
    memory and time stay bounded (the silhouette's pairwise distances are
    ``max_points`` squared at most). ``rows`` restricts the candidates (e.g. a test
    split). Unlabelled rows (empty label) are left out. Needs at least two classes.
    """
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import NearestNeighbors

    src = codes if isinstance(codes, Rows) else Rows(codes)
    labels = np.asarray(labels, dtype=object)
    if len(labels) != src.n:
        raise DataError(f"{len(labels)} labels for {src.n} codes; they must be in step")
    cand = np.arange(src.n, dtype=np.int64) if rows is None else np.unique(np.asarray(rows, np.int64))
    cand = cand[labels[cand] != ""]
    classes = np.unique(labels[cand].astype(str))
    if len(classes) < 2 or len(cand) < 3:
        raise DataError(f"silhouette and kNN accuracy need labelled codes of at least 2 classes; got "
                        f"{len(cand)} labelled rows in {len(classes)} class(es)")
    take = cand[_sample_indices(len(cand), max_points, seed)]  # sorted: sequential reads
    x = src.take(take)
    y = np.searchsorted(classes, labels[take].astype(str))
    sil = float(silhouette_score(x, y, metric=metric)) if len(np.unique(y)) < len(y) else float("nan")
    kk = int(min(k, len(x) - 1))
    # kneighbors on the fitted set returns each row itself first (barring exact duplicates): ask for k+1, drop self.
    nbr = NearestNeighbors(n_neighbors=kk + 1, metric=metric).fit(x).kneighbors(x, return_distance=False)
    pred = np.empty(len(x), np.int64)
    for i, row in enumerate(nbr):
        others = row[row != i][:kk]
        votes = np.bincount(y[others], minlength=len(classes))
        best = np.flatnonzero(votes == votes.max())
        pred[i] = next(y[j] for j in others if y[j] in best)  # ties go to the nearer neighbour
    return {"silhouette": sil, "knn_acc": float((pred == y).mean()), "k": kk, "metric": metric,
            "n": int(len(x)), "n_labelled": int(len(cand)), "classes": int(len(classes))}

