"""Reproducible train/validation/test splits: the one owner of split rules, shared by classify and finetune.

:func:`make_split` is the single entry point: from the items' paths and labels it makes

- the paper's stratified, seeded split by ``fractions`` (default 64/16/20), or
- a hold-out of whole groups (e.g. every image of some designs: ``groups="design"``, or any
  column of values), the test/validation groups named or picked by a seeded draw, or
- the split listed in a ``path,split`` CSV file (``split_file``).

``embedkit classify`` and ``embedkit finetune`` both call it with the same options, so
fine-tuning never sees the images classification tests on.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedkit.defaults import SPLIT_FRACTIONS
from embedkit.errors import ConfigError, DataError, invalid

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: the group key "file name without extension" (e.g. the emoji design across classes)
DESIGN = "design"


@dataclass
class Split:
    """Row indices of each part; disjoint and covering every labelled row given (unlabelled rows are left out)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def to_dict(self) -> dict:
        """``{part: [rows]}``, JSON-ready."""
        return {k: getattr(self, k).tolist() for k in SPLITS}

    def sizes(self) -> dict:
        """``{part: number of rows}``."""
        return {k: int(len(getattr(self, k))) for k in SPLITS}

    def part_of(self, n: int) -> np.ndarray:
        """Name of the part of each of ``n`` rows (object array; ``""`` for rows in no part)."""
        where = np.full(n, "", dtype=object)
        for name in SPLITS:
            where[getattr(self, name)] = name
        return where


def check_fractions(fractions) -> np.ndarray:
    """Three non-negative train/val/test fractions summing to 1, or a :class:`ConfigError`."""
    try:
        fr = np.asarray(fractions, dtype=float)
    except (TypeError, ValueError):
        fr = np.zeros(0)
    if fr.shape != (3,) or (fr < 0).any() or abs(fr.sum() - 1) > 1e-6:
        raise invalid("split fractions", tuple(np.ravel(fractions)) if fr.size else fractions,
                      "three non-negative numbers summing to 1 (e.g. 0.64,0.16,0.20)")
    return fr


def stratified_split(labels, fractions=SPLIT_FRACTIONS, seed: int = 0) -> Split:
    """Stratified split of rows by ``labels`` into train/val/test ``fractions`` (sum 1), seeded.

    Each class (in sorted order) is shuffled by one seeded stream and cut by rounding the
    cumulative fractions, so a class with few images still lands in train first.
    Vectorised: one sort of the labels, not one scan per class.
    """
    labels = np.asarray(labels)
    fr = check_fractions(fractions)
    if len(labels) == 0:
        raise DataError("cannot split an empty set of items")
    rng = np.random.default_rng(seed)
    _, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    by_class = np.argsort(inv.ravel(), kind="stable")  # rows of class 0 (ascending), then class 1...
    parts = {k: [] for k in SPLITS}
    start = 0
    for n in counts.tolist():
        idx = by_class[start:start + n]
        start += n
        idx = idx[rng.permutation(n)]
        n_train = max(1, int(round(fr[0] * n))) if fr[0] > 0 else 0
        n_val = int(round((fr[0] + fr[1]) * n)) - n_train
        n_val = max(0, min(n_val, n - n_train))
        parts["train"].append(idx[:n_train])
        parts["val"].append(idx[n_train:n_train + n_val])
        parts["test"].append(idx[n_train + n_val:])
    return Split(*(np.sort(np.concatenate(parts[k]).astype(np.int64)) for k in SPLITS))


def pick_groups(groups, fraction: float, seed: int, exclude=()) -> list:
    """Seeded choice of whole groups holding about ``fraction`` of the items (never every group)."""
    groups = np.asarray(groups, dtype=object)
    names, counts = np.unique(groups, return_counts=True)
    size = dict(zip(names.tolist(), counts.tolist()))
    names = sorted(set(size) - set(exclude))
    rng = np.random.default_rng(seed)
    chosen, n = [], 0
    for g in [names[i] for i in rng.permutation(len(names))]:
        if n >= fraction * len(groups) or len(chosen) == len(names) - 1:
            break
        chosen.append(g)
        n += size[g]
    return chosen


def group_split(groups, test_groups, val_groups=()) -> Split:
    """Hold out whole groups (e.g. designs): rows whose group is in ``test_groups`` / ``val_groups``."""
    groups = np.asarray(groups, dtype=object)
    test_groups, val_groups = set(test_groups), set(val_groups)
    known = set(np.unique(groups).tolist())
    unknown = (test_groups | val_groups) - known
    if unknown:
        raise invalid("groups", sorted(unknown), f"groups that occur, e.g. {', '.join(map(str, sorted(known)[:20]))}")
    test = np.isin(groups, list(test_groups))
    val = np.isin(groups, list(val_groups)) & ~test
    return Split(np.flatnonzero(~test & ~val), np.flatnonzero(val), np.flatnonzero(test))


def split_from_file(paths, path: str | Path) -> Split:
    """Split from a CSV of ``path,split`` rows (split in train/val/test); every path must be listed.

    Paths match as absolute paths, or else after resolving symbolic links.
    """
    from embedkit.io.tables import read_csv

    where = {}
    for row in read_csv(path, "split file", "a CSV of path,split rows (split: train, val or test)"):
        if len(row) >= 2 and row[1].strip() in SPLITS:
            p, s = row[0].strip(), row[1].strip()
            where[os.path.abspath(p)] = s
            where.setdefault(os.path.realpath(p), s)
    paths = np.asarray(paths, dtype=object)
    part = np.array([where.get(os.path.abspath(str(p))) or where.get(os.path.realpath(str(p)), "")
                     for p in paths.tolist()], dtype=object)
    missing = np.flatnonzero(part == "")
    if len(missing):
        raise DataError(f"{len(missing)} items are not in split file {str(path)!r} (first: {paths[missing[0]]}); "
                        "list every path with train, val or test")
    return Split(*(np.flatnonzero(part == k).astype(np.int64) for k in SPLITS))


def design_of(path: str) -> str:
    """Group key of a file in an ImageFolder tree: its file name without extension (e.g. the emoji design)."""
    return os.path.splitext(os.path.basename(str(path)))[0]


def designs(paths) -> np.ndarray:
    """:func:`design_of` of every path (object array)."""
    return np.array([design_of(p) for p in np.asarray(paths, dtype=object).tolist()], dtype=object)


def make_split(paths, labels, groups=None, fractions=SPLIT_FRACTIONS, seed: int = 0, test_groups=(),
               val_groups=(), split_file=None) -> Split:
    """The train/val/test :class:`Split` of items, by the one set of rules classify and finetune share.

    ``split_file`` (a ``path,split`` CSV) wins; else ``groups`` (``"design"`` = file names, or an array of
    one group value per item) holds out whole groups: ``test_groups``/``val_groups`` when given, else a
    seeded pick of about the test/val fractions (val from ``seed + 1``); else a stratified split by
    ``labels``. The same arguments always give the same split.
    """
    fr = check_fractions(fractions)
    if split_file:
        return split_from_file(paths, split_file)
    labels = np.asarray(labels, dtype=object)
    unlabelled = (labels == "") | np.equal(labels, None)
    if unlabelled.any():
        # The label rule: an image's label is its first-level sub-folder; files directly in the top folder
        # are unlabelled. They are left out of training and evaluation (never an empty-string class).
        keep = np.flatnonzero(~unlabelled)
        first = str(np.asarray(paths, dtype=object)[np.flatnonzero(unlabelled)[0]])
        log.warning("%d of %d items have no label (e.g. %s: a file directly in the top folder, not in a class "
                    "sub-folder); they are left out of training and evaluation", int(unlabelled.sum()),
                    len(labels), first)
        sub_groups = groups if groups is None or isinstance(groups, str) else np.asarray(groups, dtype=object)[keep]
        sub = make_split(np.asarray(paths, dtype=object)[keep], labels[keep], sub_groups, fractions, seed,
                         test_groups, val_groups)
        return Split(keep[sub.train], keep[sub.val], keep[sub.test])
    if groups is None:
        if test_groups or val_groups:
            raise ConfigError("test/val groups were given without groups to split by; add --split-by design "
                              "(or a column name)")
        return stratified_split(labels, fr, seed)
    if isinstance(groups, str):
        if groups != DESIGN:
            raise invalid("split_by", groups, f"'{DESIGN}' or an array of one group per item")
        groups = designs(paths)
    groups = np.asarray(groups, dtype=object)
    if len(groups) != len(paths):
        raise DataError(f"got {len(groups)} group values for {len(paths)} items; give one per item")
    test = list(test_groups) or pick_groups(groups, fr[2], seed)
    val = list(val_groups) or (pick_groups(groups, fr[1], seed + 1, exclude=test) if fr[1] > 0 else [])
    return group_split(groups, test, val)


@dataclass
class GroupFold:
    """One fold of :func:`group_folds`: the held-out ``test`` groups and the ``val`` groups used for model selection."""

    index: int
    test: list
    val: list

    def to_dict(self) -> dict:
        return {"fold": self.index, "test": list(self.test), "val": list(self.val)}


def group_folds(groups, k: int, seed: int = 0, val_fraction: float = SPLIT_FRACTIONS[1]) -> list[GroupFold]:
    """Leave-groups-out cross-validation: ``k`` folds whose test groups are disjoint and cover every group.

    The groups (e.g. designs) are shuffled by ``seed`` and dealt into ``k`` folds of near-equal numbers of
    groups. Each fold also names validation groups, a seeded pick (:func:`pick_groups`) of about
    ``val_fraction`` of the rows among the groups it does not test on, so model selection (early stopping,
    the best epoch) never sees the test groups and is itself made on unseen groups.
    """
    groups = np.asarray(groups, dtype=object)
    names = sorted(set(groups.tolist()))
    if not 2 <= int(k) <= len(names):
        raise invalid("number of folds", k, f"an integer from 2 to the number of groups ({len(names)})")
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    folds = []
    for i in range(int(k)):
        test = sorted(order[i::int(k)])
        rest = groups[~np.isin(groups, test)]
        val = sorted(pick_groups(rest, val_fraction, seed + 1 + i)) if val_fraction > 0 else []
        folds.append(GroupFold(i, test, val))
    return folds
