"""Top-k predictions for images or code stores, and what their scores mean, as CSV, JSON or Parquet.

Two kinds of model predict:

- a model folder of ``classify train`` (codes + SVM/kNN): images are embedded with the model's backbone,
  code stores are read as they are (:func:`embedkit.classify.apply.predict_sources`);
- a fine-tuning run folder or its ``best.pt`` (an ``embedkit-backbone/1`` checkpoint, which carries the
  class names and the trained head): the fine-tuned network's own classifier, softmax probabilities
  (:func:`predict_finetuned`, :func:`evaluate_finetuned`).

Every output says what a score is (:data:`SCORE_MEANINGS`): an SVM's decision value is not a probability.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedkit.errors import ConfigError, DataError

SOFTMAX = "probability: softmax of the fine-tuned network's own classifier"

#: what a score is, by estimator (model.json's ``estimator``)
SCORE_MEANINGS = {
    "SVMClassifier": "SVM decision value: signed distance to the class's boundary, larger = more confident; not a "
                     "probability (train with --calibrate for probabilities)",
    "ApproxKernelSVM": "decision value of a Nystroem + linear SVM, larger = more confident; not a probability",
    "KNNCodesClassifier": "share of the nearest training codes that vote for the class",
}


def score_meaning(estimator: str) -> str:
    if estimator == "CalibratedSVM":
        from embedkit.classify.calibrate import METHOD

        return METHOD
    return SCORE_MEANINGS.get(estimator) or "classifier score, larger = more likely"


@dataclass
class Predictions:
    """Top-k classes per item, best first (``labels`` and ``scores``: N x k), and what a score is."""

    paths: list
    labels: np.ndarray
    scores: np.ndarray
    score: str
    model: str
    skipped: list = field(default_factory=list)

    @property
    def k(self) -> int:
        return int(self.labels.shape[1]) if len(self.paths) else 0

    def header(self) -> list:
        return ["path", "pred"] + [c for j in range(1, self.k + 1) for c in (f"top{j}", f"score{j}")]

    def rows(self) -> list:
        return [[p, str(self.labels[i, 0])] + [v for j in range(self.k) for v in (str(self.labels[i, j]),
                                                                                   float(self.scores[i, j]))]
                for i, p in enumerate(self.paths)]

    def preview(self, n: int = 5) -> list:
        """A few lines for the terminal: ``path: label (score), label (score), ...``."""
        return [f"  {p}: " + ", ".join(f"{self.labels[i, j]} ({self.scores[i, j]:.3f})" for j in range(self.k))
                for i, p in enumerate(self.paths[:n])]

    def write(self, path) -> Path:
        """Write to ``path`` in the format its suffix names: ``.csv`` (spreadsheet-safe text, numbers as
        numbers), ``.json`` (with the score's meaning and the skipped files) or ``.parquet``."""
        from embedkit.atomic import write_csv_atomic, write_text_atomic

        path = Path(path)
        kind = path.suffix.lower()
        if kind == ".csv":
            return write_csv_atomic(path, self.header(), self.rows(), spreadsheet=True)
        if kind == ".json":
            doc = {"model": self.model, "score": self.score, "k": self.k,
                   "predictions": [{"path": p, "pred": str(self.labels[i, 0]),
                                    "top": [{"label": str(self.labels[i, j]), "score": float(self.scores[i, j])}
                                            for j in range(self.k)]} for i, p in enumerate(self.paths)],
                   "skipped": [{"path": p, "reason": r} for p, r in self.skipped]}
            return write_text_atomic(path, json.dumps(doc, indent=2))
        if kind == ".parquet":
            return self._write_parquet(path)
        from embedkit.errors import invalid

        raise invalid("output", str(path), "a file ending in .csv, .json or .parquet")

    def _write_parquet(self, path: Path) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from embedkit.atomic import atomic_path

        cols = {"path": pa.array(self.paths, pa.string()), "pred": pa.array(self.labels[:, 0].tolist() if self.k else [],
                                                                            pa.string())}
        for j in range(self.k):
            cols[f"top{j + 1}"] = pa.array(self.labels[:, j].tolist(), pa.string())
            cols[f"score{j + 1}"] = pa.array(self.scores[:, j], pa.float64())
        table = pa.table(cols).replace_schema_metadata({"model": self.model, "score": self.score})
        with atomic_path(path, ".parquet") as tmp:
            pq.write_table(table, tmp)
        return path


def topk(scores: np.ndarray, classes, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, scores)`` of the ``k`` best columns of ``scores``, best first."""
    from embedkit.classify.metrics import rank_classes

    order = rank_classes(scores, min(int(k), scores.shape[1]))
    return np.asarray(classes, dtype=object)[order], np.take_along_axis(scores, order, axis=1)


# --------------------------------------------------------------------------- the fine-tuned network's classifier


def finetuned_checkpoint(path) -> Path | None:
    """The ``best.pt`` a fine-tuning run folder (or the path itself) names; None when ``path`` is neither."""
    path = Path(path)
    if path.is_dir():
        return path / "best.pt" if (path / "best.pt").is_file() and not (path / "model.json").exists() else None
    return path if path.suffix in (".pt", ".pth") else None


def _softmax_model(ckpt_path, device):
    """``(Backbone at the logits layer, class names)`` of an ``embedkit-backbone/1`` checkpoint with its head."""
    from embedkit.models.backbone import Backbone
    from embedkit.models.checkpoint import CHECKPOINT_FORMAT, read_checkpoint

    ckpt = read_checkpoint(ckpt_path)
    names = list(ckpt.get("class_names") or [])
    if ckpt.get("format") != CHECKPOINT_FORMAT or not names:
        raise ConfigError(f"{str(ckpt_path)!r} is not an `embedkit finetune` checkpoint with class names, so it has no "
                          "classifier of its own; give a fine-tuning run folder (or its best.pt), or a model folder "
                          "of `embedkit classify train`")
    bb = Backbone(ckpt["backbone"], layer="logits", weights=ckpt_path, device=device)
    return bb, names


def _softmax_scores(bb, names, paths, batch_size, workers, progress):
    from scipy.special import softmax

    from embedkit.runner.local import embed_files

    logits, kept, bad = embed_files(bb, paths, batch_size=batch_size, workers=workers, progress=progress)
    if logits.shape[1] != len(names):
        raise DataError(f"the checkpoint's head gives {logits.shape[1]} scores for {len(names)} class names; "
                        "it is damaged or not from `embedkit finetune`")
    return softmax(np.asarray(logits, np.float64), axis=1), kept, bad


def _image_items(sources, labels: bool):
    from embedkit.io.discover import discover

    items = []
    for src in sources:
        if (Path(src) / "meta.json").exists():
            raise ConfigError(f"{str(src)!r} is a code store; the fine-tuned network's classifier needs the images "
                              "themselves: give the image folder (or files)")
        items += [it for it in discover(src, labels=labels) if not it.skip]
    return items


def predict_finetuned(model, sources, k: int, device="auto", batch_size=None, workers=None,
                      progress: bool = False) -> Predictions:
    """Top-k labels of the images of ``sources`` by the softmax of fine-tuning run ``model`` (folder or best.pt)."""
    ckpt = finetuned_checkpoint(model)
    bb, names = _softmax_model(ckpt, device)
    items = _image_items(sources, labels=False)
    probs, kept, bad = _softmax_scores(bb, names, [it.path for it in items], batch_size, workers, progress)
    if not kept:
        raise DataError(f"none of the {len(items)} images could be read")
    labels, scores = topk(probs, names, k)
    return Predictions([items[i].path for i in kept], labels, scores, SOFTMAX, str(ckpt),
                       [(items[i].path, r) for i, r in bad])


def evaluate_finetuned(model, sources, out, device="auto", batch_size=None, workers=None,
                       progress: bool = False) -> tuple[dict, list, dict]:
    """``classify eval`` for a fine-tuning run: its softmax on labelled images (class folders or a manifest)."""
    from embedkit.classify.evaluate import evaluate_scores, write_evaluation

    ckpt = finetuned_checkpoint(model)
    bb, names = _softmax_model(ckpt, device)
    items = _image_items(sources, labels=True)
    unknown = sorted({it.label for it in items} - set(names))
    if not items or unknown:
        raise DataError(f"the images need labels among the run's {len(names)} classes ({', '.join(names[:8])}...); "
                        f"found {', '.join(repr(u) for u in unknown[:5]) or 'no labelled image'}")
    probs, kept, bad = _softmax_scores(bb, names, [it.path for it in items], batch_size, workers, progress)
    if not kept:
        raise DataError(f"none of the {len(items)} images could be read")
    rep, failures = evaluate_scores(probs, names, [items[i].label for i in kept], [items[i].path for i in kept])
    rep["classifier"] = {"method": "softmax of the fine-tuned network", "checkpoint": str(ckpt)}
    rep["skipped"] = [{"path": items[i].path, "reason": r} for i, r in bad]
    files = write_evaluation(out, rep, failures, title=f"softmax of {Path(ckpt).parent.name}/{Path(ckpt).name}")
    return rep, failures, files
