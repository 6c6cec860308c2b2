"""Leave-groups-out folds and the summaries behind "an improvement only when the interval excludes 0"."""

from __future__ import annotations

import math

import numpy as np
import pytest

from embedkit.errors import ConfigError
from embedkit.splits import designs, group_folds, group_split
from embedkit.stats import paired_difference, summarize

@pytest.mark.parametrize("k", [2, 5, 7])
def test_group_folds_test_every_design_once_and_select_on_other_designs(k, emoji_dir):
    """On emoji-dev where conftest finds it (EMBEDKIT_EMOJI_DEV, else beside the checkout)."""
    groups = designs(sorted(str(p) for p in emoji_dir.glob("*/*.png")))
    folds = group_folds(groups, k, seed=0)
    assert len(folds) == k
    tested = [g for f in folds for g in f.test]
    assert sorted(tested) == sorted(set(groups.tolist()))  # disjoint test designs covering all 14
    for f in folds:
        assert f.val and not set(f.val) & set(f.test)  # model selection on designs never tested in this fold
        s = group_split(groups, f.test, f.val)
        assert set(groups[s.test].tolist()) == set(f.test) and not set(groups[s.train].tolist()) & set(f.test)
        n = len(set(groups.tolist()))
        assert n // k <= len(f.test) <= -(-n // k)  # near-equal numbers of designs
    assert [f.to_dict() for f in group_folds(groups, k, seed=0)] == [f.to_dict() for f in folds]
    assert [f.test for f in group_folds(groups, k, seed=1)] != [f.test for f in folds]


def test_group_folds_refuse_more_folds_than_groups():
    with pytest.raises(ConfigError, match="number of folds.*from 2 to the number of groups \\(3\\)"):
        group_folds(np.array(["a", "b", "c", "a"], dtype=object), 4)


def test_t_interval_matches_the_textbook_formula():
    s = summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)  # t(0.975, 4) * std / sqrt(n)
    assert s.n == 5 and s.mean == 3.0 and s.std == pytest.approx(math.sqrt(2.5))
    assert (s.low, s.high) == (pytest.approx(3 - half), pytest.approx(3 + half))
    assert s.excludes_zero


def test_paired_difference_claims_only_what_the_interval_supports():
    base = np.array([0.90, 0.92, 0.88, 0.95, 0.91, 0.93, 0.89])
    better = base + np.array([0.03, 0.02, 0.04, 0.01, 0.03, 0.02, 0.03])
    noisy = base + np.array([0.05, -0.04, 0.03, -0.02, 0.01, -0.03, 0.02])
    assert paired_difference(better, base).excludes_zero
    assert paired_difference(better, base, method="bootstrap").excludes_zero
    d = paired_difference(noisy, base)
    assert not d.excludes_zero and d.low < 0 < d.high
    b = summarize(noisy - base, method="bootstrap", seed=3)
    assert min(noisy - base) <= b.low < b.mean < b.high <= max(noisy - base)
    assert d.format().startswith("+0.3 (95% CI ")


def test_summaries_refuse_what_they_cannot_summarise():
    with pytest.raises(ConfigError, match="at least 2 finite numbers"):
        summarize([0.5])
    with pytest.raises(ConfigError, match="at least 2 finite numbers"):
        summarize([0.5, float("nan")])
    with pytest.raises(ConfigError, match="same length"):
        paired_difference([0.1, 0.2, 0.3], [0.1, 0.2])
    with pytest.raises(ConfigError, match="'t' or 'bootstrap'"):
        summarize([0.1, 0.2], method="jackknife")
