"""Summaries of repeated measurements: mean, standard deviation and a 95% interval of a paired difference,
and the interval of one accuracy measured on n items.

Used where a claim rests on a few folds or seeds (``benchmarks/paper_table.py``): an improvement is
claimed only when the interval of the per-fold paired difference excludes 0. Every accuracy the CLI
prints comes with its n and :func:`proportion_interval` (Wilson), which stays honest at 12 items and 100%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from embedkit.errors import invalid


@dataclass
class Summary:
    """``mean``, sample ``std`` (ddof=1) and the ``low``/``high`` ends of a ``level`` interval of the mean."""

    n: int
    mean: float
    std: float
    low: float
    high: float
    level: float = 0.95
    method: str = "t"

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "std": self.std, "low": self.low, "high": self.high,
                "level": self.level, "method": self.method, "excludes_zero": self.excludes_zero}

    def format(self, scale: float = 100.0, unit: str = "") -> str:
        """e.g. ``+2.1 (95% CI +0.4 to +3.8)`` with ``scale`` 100 for fractions shown as points."""
        s = lambda v: f"{v * scale:+.1f}{unit}"  # noqa: E731
        return f"{s(self.mean)} (95% CI {s(self.low)} to {s(self.high)})"


def _t_quantile(p: float, df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(p, df))


def summarize(values, level: float = 0.95, method: str = "t", n_boot: int = 10_000, seed: int = 0) -> Summary:
    """Mean, std and an interval of the mean of ``values`` (one per fold or seed).

    ``method="t"``: Student's t interval (mean +- t * std / sqrt(n)), the usual choice for a handful of
    paired folds; ``"bootstrap"``: the percentile interval of ``n_boot`` resampled means.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if len(v) < 2 or not np.isfinite(v).all():
        raise invalid("values", v.tolist(), "at least 2 finite numbers (one per fold or seed)")
    if not 0 < level < 1:
        raise invalid("level", level, "a number in (0, 1), e.g. 0.95")
    mean, std = float(v.mean()), float(v.std(ddof=1))
    if method == "t":
        half = _t_quantile(0.5 + level / 2, len(v) - 1) * std / math.sqrt(len(v))
        low, high = mean - half, mean + half
    elif method == "bootstrap":
        rng = np.random.default_rng(seed)
        means = v[rng.integers(0, len(v), size=(int(n_boot), len(v)))].mean(axis=1)
        low, high = (float(q) for q in np.quantile(means, [(1 - level) / 2, (1 + level) / 2]))
    else:
        raise invalid("method", method, "'t' or 'bootstrap'")
    return Summary(len(v), mean, std, float(low), float(high), level, method)


def paired_difference(a, b, **kw) -> Summary:
    """:func:`summarize` of ``a - b`` fold by fold (both measured on the same folds, in the same order)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise invalid("paired measurements", f"{a.shape} and {b.shape}", "two sequences of the same length (one value per fold)")
    return summarize(a - b, **kw)


def proportion_interval(hits: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``hits / n`` (scipy's ``binomtest``), e.g. an accuracy.

    Unlike the normal approximation it does not collapse to a point at 0% or 100%: 12 of 12 correct gives
    about 0.76 to 1.00.
    """
    from scipy import stats

    if n < 1 or not 0 <= hits <= n:
        raise invalid("hits, n", (hits, n), "0 <= hits <= n and n >= 1")
    ci = stats.binomtest(int(hits), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)
