"""embedkit.splits: the one owner of split rules, shared by classify and finetune."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from embedkit.errors import ConfigError, DataError
from embedkit.splits import SPLITS, make_split, pick_groups, split_from_file, stratified_split


def _reference_stratified(labels, fractions, seed):
    """The per-class scan the vectorised split replaced (its results must not change)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts = {k: [] for k in SPLITS}
    for cls in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == cls)
        idx = idx[rng.permutation(len(idx))]
        n = len(idx)
        n_train = max(1, int(round(fractions[0] * n))) if fractions[0] > 0 else 0
        n_val = max(0, min(int(round((fractions[0] + fractions[1]) * n)) - n_train, n - n_train))
        parts["train"].extend(idx[:n_train])
        parts["val"].extend(idx[n_train:n_train + n_val])
        parts["test"].extend(idx[n_train + n_val:])
    return {k: sorted(int(i) for i in parts[k]) for k in SPLITS}


@pytest.mark.parametrize("seed", [0, 3])
def test_stratified_split_unchanged(seed):
    rng = np.random.default_rng(seed)
    labels = np.array([f"c{i}" for i in rng.integers(0, 7, 500)] + ["tiny"], dtype=object)
    for fr in ((0.64, 0.16, 0.2), (0.8, 0.0, 0.2), (0.5, 0.5, 0.0)):
        assert stratified_split(labels, fr, seed).to_dict() == _reference_stratified(labels, fr, seed)


def test_make_split_rules(tmp_path):
    paths = [str(tmp_path / f"c{i % 3}" / f"d{i % 5}.png") for i in range(60)]
    labels = np.array([f"c{i % 3}" for i in range(60)], dtype=object)
    s = make_split(paths, labels, "design", seed=2)
    d = np.array([f"d{i % 5}" for i in range(60)])
    parts = [set(d[getattr(s, k)]) for k in SPLITS]
    assert all(parts) and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert sorted(parts[2]) == sorted(pick_groups(d, 0.2, 2))
    named = make_split(paths, labels, "design", test_groups=["d0"], val_groups=["d1"])
    assert set(d[named.test]) == {"d0"} and set(d[named.val]) == {"d1"}
    assert make_split(paths, labels, d, seed=2).to_dict() == s.to_dict()  # an array of groups = the column
    assert make_split(paths, labels).to_dict() == stratified_split(labels).to_dict()
    with pytest.raises(ConfigError, match="without groups"):
        make_split(paths, labels, test_groups=["d0"])
    with pytest.raises(ConfigError, match="split fractions"):
        make_split(paths, labels, fractions=(0.5, 0.6, 0.1))
    with pytest.raises(ConfigError, match="'d9'"):
        make_split(paths, labels, "design", test_groups=["d9"])
    # a split file wins and matches paths through symbolic links
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    f = tmp_path / "split.csv"
    f.write_text("path,split\n" + "".join(f"{tmp_path / 'link' / f'{i}.png'},{SPLITS[i % 3]}\n" for i in range(6)))
    got = split_from_file([str(tmp_path / "real" / f"{i}.png") for i in range(6)], f)
    assert got.to_dict() == {"train": [0, 3], "val": [1, 4], "test": [2, 5]}
    with pytest.raises(DataError, match="1 items are not in split file"):
        split_from_file([str(tmp_path / "real" / f"{i}.png") for i in range(7)], f)


def test_finetune_splits_like_classify_without_importing_it(tmp_path):
    from types import SimpleNamespace

    from embedkit.finetune.data import _split

    paths = [str(tmp_path / f"c{i % 3}" / f"d{i % 5}.png") for i in range(60)]
    labels = np.array([f"c{i % 3}" for i in range(60)], dtype=object)
    items = [SimpleNamespace(path=p, label=lab) for p, lab in zip(paths, labels)]
    for kw in ({}, {"split_by": "design"}):
        ft = _split(items, labels, (0.64, 0.16, 0.2), 1, None, kw.get("split_by"))
        assert ft.to_dict() == make_split(paths, labels, kw.get("split_by"), seed=1).to_dict()
    code = "import sys, embedkit.finetune.data; print(any(m.startswith('embedkit.classify') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
