"""Reproducible train/validation/test splits, shared by classify and finetune.

Default is the paper's 64/16/20 stratified split. A split can also hold out
whole groups (e.g. every image of some designs/styles: ``by="group"``) or come
from a list file of ``path,split`` rows.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedkit.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    """Row indices of each part; disjoint and covering every row given."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def to_dict(self) -> dict:
        return {k: getattr(self, k).tolist() for k in SPLITS}

    def sizes(self) -> dict:
        return {k: int(len(getattr(self, k))) for k in SPLITS}


def stratified_split(labels, fractions=(0.64, 0.16, 0.20), seed: int = 0) -> Split:
    """Stratified split of rows by ``labels`` into train/val/test ``fractions`` (sum 1), seeded.

    Each class is shuffled with its own stream and cut by rounding the cumulative
    fractions, so a class with few images still lands in train first.
    """
    labels = np.asarray(labels)
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (3,) or (fr < 0).any() or abs(fr.sum() - 1) > 1e-6:
        raise ConfigError(f"split fractions {tuple(fractions)} are not valid; give three non-negative numbers summing to 1 (e.g. 0.64,0.16,0.20)")
    if len(labels) == 0:
        raise DataError("cannot split an empty set of items")
    rng = np.random.default_rng(seed)
    parts = {k: [] for k in SPLITS}
    for cls in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == cls)
        idx = idx[rng.permutation(len(idx))]
        n = len(idx)
        n_train = max(1, int(round(fr[0] * n))) if fr[0] > 0 else 0
        n_val = int(round((fr[0] + fr[1]) * n)) - n_train
        n_val = max(0, min(n_val, n - n_train))
        parts["train"].extend(idx[:n_train])
        parts["val"].extend(idx[n_train:n_train + n_val])
        parts["test"].extend(idx[n_train + n_val:])
    return Split(*(np.sort(np.asarray(parts[k], dtype=np.int64)) for k in SPLITS))


def group_split(groups, test_groups, val_groups=()) -> Split:
    """Hold out whole groups (e.g. designs): rows whose group is in ``test_groups`` / ``val_groups``."""
    groups = np.asarray(groups)
    test_groups, val_groups = set(test_groups), set(val_groups)
    unknown = (test_groups | val_groups) - set(groups.tolist())
    if unknown:
        raise ConfigError(f"groups {sorted(unknown)} do not occur; known groups: {sorted(set(groups.tolist()))[:20]}")
    test = np.isin(groups, list(test_groups))
    val = np.isin(groups, list(val_groups)) & ~test
    return Split(np.flatnonzero(~test & ~val), np.flatnonzero(val), np.flatnonzero(test))


def split_from_file(paths, path: str | Path) -> Split:
    """Split from a CSV of ``path,split`` rows (split in train/val/test); every store path must be listed."""
    where = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            if len(row) >= 2 and row[1].strip() in SPLITS:
                where[str(Path(row[0].strip()).resolve())] = row[1].strip()
    parts = {k: [] for k in SPLITS}
    missing = []
    for i, p in enumerate(paths):
        s = where.get(str(Path(p).resolve()))
        (parts[s].append(i) if s else missing.append(p))
    if missing:
        raise DataError(f"{len(missing)} items are not in split file {str(path)!r} (first: {missing[0]}); list every path with train, val or test")
    return Split(*(np.asarray(parts[k], dtype=np.int64) for k in SPLITS))


def design_of(path: str) -> str:
    """Group key of a file in an ImageFolder tree: its file name without extension (e.g. the emoji design)."""
    return Path(path).stem
