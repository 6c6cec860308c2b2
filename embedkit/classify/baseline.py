"""The method's softmax baseline: the ImageNet classifier itself, restricted to the dataset's classes.

Lagunas & Garces (Table 3, first row) measure the pretrained network's own 1000-way softmax on an
illustration set whose labels are ImageNet classes. Here each dataset label is mapped to one ImageNet
class, the logits are restricted to the mapped classes' columns (the softmax over those columns ranks
them as the logits do) and the usual report is written: top-1/top-5 globally and per class.

Mapping (:func:`map_labels`) is exact, never fuzzy: a label is normalised (``label.lower()``, ``_`` and
``-`` to spaces, runs of blanks to one) and must equal the normalised name (torchvision's class names)
or a WordNet synonym (timm's ImageNet synset descriptions) of exactly one ImageNet class; a name shared
by two classes (e.g. "crane": the bird and the machine) is ambiguous and left unmapped. An override table comes first: :data:`HOMONYMS` (labels whose usual meaning is *not* the
ImageNet class of the same name, such as the toy "kite" vs ImageNet's bird) and a user's CSV
(:func:`read_overrides`). Labels that do not map are listed with the reason.

Unmapped classes: their images are EXCLUDED from the restricted report (a restricted classifier cannot
name them); report.json lists them under ``baseline.unmapped`` with their image counts, and
``baseline.top1_all`` / ``top5_all`` give the figures over every image with those counted as errors.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from embedkit.errors import ConfigError, DataError, MismatchError, invalid
from embedkit.words import plural

log = logging.getLogger(__name__)

N_IMAGENET = 1000
UNMAPPED_WORDS = ("", "none", "-", "unmapped")

# label -> (ImageNet class or None, reason). Labels whose everyday meaning differs from the ImageNet class
# of the same name; a --map CSV row for the same label replaces the entry.
HOMONYMS: dict[str, tuple[str | None, str]] = {
    "kite": (None, "ImageNet's 'kite' (n01608432) is the bird of prey; the toy kite is not an ImageNet class"),
    "ear": (None, "ImageNet's 'ear' (n13133613) is an ear of corn; the body part is not an ImageNet class"),
    "sewing needle": (None, "'sewing needle' is a WordNet folk name of the dragonfly (n02268443); the sewing tool "
                            "is not an ImageNet class"),
    "mouse": (None, "ImageNet's 'mouse' (n03793489) is the computer mouse; the animal is not an ImageNet-1k class "
                    "(map it with a --map row 'mouse,computer mouse' where the dataset means the device)"),
    # WordNet folk names that put another animal in the class: a near-but-wrong animal is not a match
    "hedgehog": (None, "'hedgehog' is a WordNet folk name of the porcupine (n02346627), a different animal; the "
                       "hedgehog is not an ImageNet-1k class"),
    "maned wolf": (None, "'maned wolf' is a WordNet name of the red wolf (n02114712), a different animal; the maned "
                         "wolf is not an ImageNet-1k class"),
}


def norm(name: str) -> str:
    """The normalised form both sides are compared in: lower case, ``_``/``-`` as spaces, single blanks."""
    return re.sub(r"\s+", " ", str(name).lower().replace("_", " ").replace("-", " ")).strip()


@dataclass(frozen=True)
class ImageNetClasses:
    """The 1000 ImageNet-1k classes in the networks' output order: names, WordNet synonyms, wnids."""

    names: tuple
    synonyms: tuple  # per class, a tuple of lemmas (the name included)
    wnids: tuple  # "" where unknown

    def by_name(self) -> dict:
        out: dict[str, set] = {}
        for i, n in enumerate(self.names):
            out.setdefault(norm(n), set()).add(i)
        return out

    def by_synonym(self) -> dict:
        out: dict[str, set] = {}
        for i, lemmas in enumerate(self.synonyms):
            for lemma in lemmas:
                out.setdefault(norm(lemma), set()).add(i)
        return out


@lru_cache(maxsize=1)
def imagenet_classes() -> ImageNetClasses:
    """Class names shipped with torchvision, synonyms and wnids from timm's ImageNet info (both offline)."""
    import torchvision

    names = tuple(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    try:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        synonyms = tuple(tuple(s.strip() for s in info.index_to_description(i).split(",") if s.strip()) + (names[i],)
                         for i in range(N_IMAGENET))
        wnids = tuple(info.index_to_label_name(i) for i in range(N_IMAGENET))
    except Exception as exc:  # noqa: BLE001 - synonyms only widen exact matching; names still work
        log.warning("no WordNet synonyms from timm (%s); mapping by torchvision's class names only", exc)
        synonyms, wnids = tuple((n,) for n in names), ("",) * N_IMAGENET
    return ImageNetClasses(names, synonyms, wnids)


@dataclass
class LabelMap:
    """Dataset labels -> ImageNet indices; ``unmapped`` gives each other label's reason."""

    mapped: dict = field(default_factory=dict)  # label -> ImageNet index
    how: dict = field(default_factory=dict)  # label -> "name" | "synonym" | "override"
    unmapped: dict = field(default_factory=dict)  # label -> reason

    def describe(self) -> list:
        """One line per label, mapped ones first."""
        cls = imagenet_classes()
        lines = [f"{lab} -> {i}: {cls.names[i]} ({cls.wnids[i] or '?'}, by {self.how[lab]})"
                 for lab, i in self.mapped.items()]
        return lines + [f"{lab}: unmapped, {why}" for lab, why in self.unmapped.items()]

    def to_json(self) -> dict:
        cls = imagenet_classes()
        return {"mapped": {lab: {"index": i, "imagenet": cls.names[i], "wnid": cls.wnids[i], "by": self.how[lab]}
                           for lab, i in self.mapped.items()},
                "unmapped": dict(self.unmapped)}


def resolve_class(target) -> tuple[int | None, str]:
    """``(index, "")`` for an ImageNet class given as index, wnid or exact name/synonym; else ``(None, reason)``."""
    cls = imagenet_classes()
    t = str(target).strip()
    if t.isdigit():
        i = int(t)
        return (i, "") if 0 <= i < N_IMAGENET else (None, f"index {i} is not in 0..{N_IMAGENET - 1}")
    if re.fullmatch(r"n\d{8}", t) and t in cls.wnids:
        return cls.wnids.index(t), ""
    key = norm(t)
    by_name, by_syn = cls.by_name().get(key, set()), cls.by_synonym().get(key, set())
    hit = by_name | by_syn
    if len(hit) == 1:
        return next(iter(hit)), ("name" if by_name else "synonym")
    if hit:
        return None, (f"{key!r} is ambiguous: the name or a WordNet synonym of ImageNet classes "
                      + ", ".join(f"{i} ({cls.names[i]}, {cls.wnids[i] or '?'})" for i in sorted(hit))
                      + "; pick one with a --map row (wnid or index)")
    return None, f"no ImageNet class has the name or WordNet synonym {key!r}"


def map_labels(labels, overrides: dict | None = None, homonyms: bool = True) -> LabelMap:
    """Map each label by exact normalised name (see the module doc); ``overrides`` = ``{label: (target, reason)}``.

    A target of ``None`` leaves the label unmapped with the reason given. Two labels that land on the same
    ImageNet class are both left unmapped (the restricted classifier could not tell them apart).
    """
    table = {norm(k): v for k, v in (HOMONYMS if homonyms else {}).items()}
    table.update({norm(k): v for k, v in (overrides or {}).items()})
    out = LabelMap()
    for lab in sorted({str(v) for v in labels}):
        key = norm(lab)
        if key in table:
            target, reason = table[key]
            if target is None:
                out.unmapped[lab] = f"override: {reason or 'marked unmapped'}"
                continue
            i, why = resolve_class(target)
            if i is None:
                raise ConfigError(f"override {lab!r} -> {target!r}: {why}; give an exact ImageNet class name, "
                                  "wnid (n01234567) or index 0-999, or leave it empty for unmapped")
            out.mapped[lab], out.how[lab] = i, "override"
            continue
        i, why = resolve_class(key) if key and not key.isdigit() else (None, "not a class name")
        if i is None:
            out.unmapped[lab] = why
        else:
            out.mapped[lab], out.how[lab] = i, why
    shared: dict[int, list] = {}
    for lab, i in out.mapped.items():
        shared.setdefault(i, []).append(lab)
    for i, labs in shared.items():
        if len(labs) > 1:
            for lab in labs:
                del out.mapped[lab], out.how[lab]
                out.unmapped[lab] = (f"shares ImageNet class {i} ({imagenet_classes().names[i]}) with "
                                     + ", ".join(x for x in labs if x != lab))
    return out


def read_overrides(path) -> dict:
    """An override CSV: ``label,imagenet[,reason]`` rows (header optional); an empty/``none`` target = unmapped."""
    from embedkit.io.tables import read_csv

    path = Path(path)
    try:
        rows = read_csv(path, "override table", "a UTF-8 CSV of label,imagenet[,reason] rows")
    except OSError as exc:
        raise ConfigError(f"override table {str(path)!r} cannot be read ({exc}); give a UTF-8 CSV of "
                          "label,imagenet[,reason] rows") from exc
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["label", "imagenet"]:
        rows = rows[1:]
    out = {}
    for n, r in enumerate(rows, 1):
        if r[0].strip().startswith("#"):
            continue
        if len(r) < 2 and r[0].strip():
            r = r + [""]
        if not r[0].strip():
            raise invalid(f"override row {n}", ",".join(r), "label,imagenet[,reason] with a label")
        target = r[1].strip()
        out[r[0].strip()] = (None if target.lower() in UNMAPPED_WORDS else target,
                             ",".join(r[2:]).strip() if len(r) > 2 else "")
    return out


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


def baseline_scores(logits, y, label_map: LabelMap):
    """``(scores, classes, keep)``: restricted softmax over the mapped classes for the items whose label maps."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] != N_IMAGENET:
        raise MismatchError(f"the softmax baseline needs the {N_IMAGENET} ImageNet logits per image, got shape "
                            f"{logits.shape}; use a backbone with its ImageNet-1k head (layer 'logits')")
    classes = sorted(label_map.mapped)
    if not classes:
        raise DataError("no label maps to an ImageNet class: " + "; ".join(label_map.describe()[:10]))
    y = np.asarray([str(v) for v in y], dtype=object)
    keep = np.isin(y, classes)
    cols = [label_map.mapped[c] for c in classes]
    return _softmax(logits[keep][:, cols]), classes, keep


def baseline_summary(logits, y, label_map: LabelMap, rep: dict) -> dict:
    """The baseline's extra figures: unmapped classes, coverage, all-image and 1000-way top-1/top-5."""
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray([str(v) for v in y], dtype=object)
    n_all = len(y)
    counts = {lab: int((y == lab).sum()) for lab in label_map.unmapped}
    keep = np.isin(y, list(label_map.mapped))
    t = np.array([label_map.mapped.get(v, -1) for v in y[keep]])
    order = np.argsort(-logits[keep], axis=1, kind="stable")[:, :5]
    hits1, hits5 = rep["top1"] * rep["n"], rep["top5"] * rep["n"]
    return {
        "method": "ImageNet softmax restricted to the ImageNet classes the labels map to (Lagunas & Garces, Table 3)",
        "unmapped_policy": "excluded: images of unmapped classes are left out of top1/top5 and per_class; "
                           "top1_all/top5_all count them as errors",
        "classes_total": len(label_map.mapped) + len(label_map.unmapped), "classes_mapped": len(label_map.mapped),
        "images_total": n_all, "images_excluded": int(n_all - keep.sum()),
        "top1_all": float(hits1 / n_all) if n_all else None, "top5_all": float(hits5 / n_all) if n_all else None,
        "imagenet_1000way": {"top1": float((order[:, 0] == t).mean()) if len(t) else None,
                             "top5": float((order == t[:, None]).any(1).mean()) if len(t) else None},
        "mapping": label_map.to_json(),
        "unmapped": {lab: {"reason": why, "images": counts[lab]} for lab, why in label_map.unmapped.items()},
    }


def baseline_report(logits, y, label_map: LabelMap, paths=None):
    """``(report, failures)``: the classification report of the restricted softmax plus ``report["baseline"]``."""
    from embedkit.classify.evaluate import evaluate_scores

    scores, classes, keep = baseline_scores(logits, y, label_map)
    y = np.asarray([str(v) for v in y], dtype=object)
    if not keep.any():
        raise DataError("no image has a label that maps to an ImageNet class: " + "; ".join(label_map.describe()[:10]))
    paths = list(paths) if paths is not None else [""] * len(y)
    rep, failures = evaluate_scores(scores, classes, y[keep], [p for p, k in zip(paths, keep) if k])
    rep["baseline"] = baseline_summary(logits, y, label_map, rep)
    return rep, failures


@dataclass
class BaselineResult:
    report: dict
    files: dict
    skipped: list
    label_map: LabelMap

    def summary(self) -> str:
        b = self.report["baseline"]
        from embedkit.classify.metrics import accuracy_line

        lines = [f"softmax baseline: {accuracy_line(self.report)} images of "
                 f"{plural(b['classes_mapped'], 'mapped class', 'mapped classes')} (unmapped classes excluded; "
                 f"counted as errors: top-1 {b['top1_all']:.4f} top-5 {b['top5_all']:.4f} on {b['images_total']})"]
        for lab, u in b["unmapped"].items():
            lines.append(f"  unmapped {lab} ({plural(u['images'], 'image')}, excluded): {u['reason']}")
        return "\n".join(lines)


def run_baseline(source, out, backbone: str, weights="default", overrides=None, device: str = "auto",
                 batch_size: int | None = None, workers: int | None = None, progress: bool = True) -> BaselineResult:
    """Embed the labelled images of ``source`` (folder or manifest) at layer "logits" and write the report to ``out``.

    ``overrides`` is a CSV path (see :func:`read_overrides`) or a ``{label: (target, reason)}`` dict.
    """
    from embedkit.classify.evaluate import write_evaluation
    from embedkit.io.discover import discover
    from embedkit.models.backbone import Backbone
    from embedkit.runner.local import embed_files

    items = [it for it in discover(source) if not it.skip]
    unlabelled = [it.path for it in items if not it.label]
    if not items or unlabelled:
        raise DataError(f"the softmax baseline needs labelled images (class folders or a path,label manifest); "
                        f"{len(unlabelled)} of {len(items)} images in {str(source)!r} have no label")
    if isinstance(overrides, (str, Path)):
        overrides = read_overrides(overrides)
    label_map = map_labels([it.label for it in items], overrides)
    bb = Backbone(backbone, layer="logits", weights=weights, device=device)
    logits, kept, skipped = embed_files(bb, [it.path for it in items], batch_size, workers, progress=progress)
    if logits.shape[1] != N_IMAGENET:
        raise MismatchError(f"backbone {backbone!r} with weights {str(weights)!r} has {logits.shape[1]} logits, not "
                            f"the {N_IMAGENET} ImageNet classes; the softmax baseline needs an ImageNet-1k head")
    kept_items = [items[i] for i in kept]
    rep, failures = baseline_report(logits, [it.label for it in kept_items], label_map, [it.path for it in kept_items])
    rep["baseline"].update({"backbone": backbone, "weights": str(weights), "layer": "logits",
                            "skipped": [{"path": items[i].path, "reason": r} for i, r in skipped]})
    files = write_evaluation(out, rep, failures, title=f"softmax baseline {backbone}")
    return BaselineResult(rep, files, [(items[i].path, r) for i, r in skipped], label_map)
