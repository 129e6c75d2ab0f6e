"""Paired statistics for comparing two model versions on the same samples.

- McNemar's exact test for accuracy-type metrics: under the null hypothesis
  the discordant pairs (one version right, the other wrong) split 50/50, so
  the p-value is a two-sided binomial tail on them.
- A paired bootstrap (the same resampled indices for both versions) for the
  difference of any other per-sample statistic.
- Holm's step-down adjustment when many metrics are tested at once.
- The Wilson interval for one proportion lives in ``metrics.robustness``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from metrics.robustness import wilson_interval

__all__ = [
    "BootstrapResult",
    "McNemarResult",
    "adjust_p_values",
    "mcnemar_exact",
    "paired_bootstrap",
    "paired_bootstrap_mean",
    "paired_mcnemar",
    "wilson_interval",
    "wilson_intervals",
]


def wilson_intervals(successes: np.ndarray | Sequence[int], n: np.ndarray | Sequence[int],
                     confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """``wilson_interval`` elementwise over arrays of counts (NaN where n = 0)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"Expected `confidence` in (0, 1), but got {confidence}.")
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2))
    k = np.asarray(successes, dtype=np.float64)
    m = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / m
        denom = 1 + z * z / m
        centre = (p + z * z / (2 * m)) / denom
        half = z * np.sqrt(p * (1 - p) / m + z * z / (4 * m * m)) / denom
    return np.maximum(0.0, centre - half), np.minimum(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts ``b`` (first
    right, second wrong) and ``c`` (first wrong, second right)."""
    for name, v in (("b", b), ("c", c)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"Expected `{name}` to be a non-negative integer, but got {v!r}.")
    n = int(b) + int(c)
    if n == 0:
        return 1.0
    from scipy.stats import binom

    return float(min(1.0, 2.0 * binom.cdf(min(int(b), int(c)), n, 0.5)))


@dataclass(frozen=True)
class McNemarResult:
    """Paired accuracy comparison of version A (baseline) and B on the same samples."""

    n: int
    correct_a: int
    correct_b: int
    b: int  # A right, B wrong
    c: int  # A wrong, B right
    p_value: float

    @property
    def difference(self) -> float:
        """Accuracy of B minus accuracy of A."""
        return (self.correct_b - self.correct_a) / self.n if self.n else math.nan


def _bool_array(name: str, v: Sequence[bool] | np.ndarray) -> np.ndarray:
    arr = np.asarray(v)
    if arr.ndim != 1:
        raise ValueError(f"Expected `{name}` to be one-dimensional, but got shape {arr.shape}.")
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"Expected `{name}` to hold booleans (or 0/1), but got other values.")
        arr = arr.astype(bool)
    return arr


def paired_mcnemar(correct_a: Sequence[bool] | np.ndarray,
                   correct_b: Sequence[bool] | np.ndarray) -> McNemarResult:
    """McNemar's exact test on per-sample correctness of two versions."""
    a = _bool_array("correct_a", correct_a)
    b = _bool_array("correct_b", correct_b)
    if a.shape != b.shape:
        raise ValueError(
            f"Expected `correct_a` and `correct_b` to be paired (same length), but got "
            f"{a.size} and {b.size}."
        )
    n01 = int(np.sum(a & ~b))
    n10 = int(np.sum(~a & b))
    return McNemarResult(n=int(a.size), correct_a=int(a.sum()), correct_b=int(b.sum()),
                         b=n01, c=n10, p_value=mcnemar_exact(n01, n10))


@dataclass(frozen=True)
class BootstrapResult:
    """Paired bootstrap of ``stat(B) - stat(A)``: the observed difference, its
    percentile interval, and the two-sided p-value of "difference = 0" read
    off the bootstrap distribution."""

    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    n_boot: int
    confidence: float


Statistic = Callable[[np.ndarray], float]


def paired_bootstrap(stat: Statistic, a: np.ndarray, b: np.ndarray, *, n_boot: int = 2000,
                     confidence: float = 0.95, seed: int = 0) -> BootstrapResult:
    """Resample sample indices with replacement, apply the same indices to both
    versions (rows of ``a`` and ``b``), and collect ``stat(b[i]) - stat(a[i])``."""
    a = np.asarray(a)
    b = np.asarray(b)
    if len(a) != len(b):
        raise ValueError(
            f"Expected `a` and `b` to be paired (same length), but got {len(a)} and {len(b)}."
        )
    _check_bootstrap_args(len(a), n_boot, confidence)
    rng = np.random.default_rng(seed)
    observed = float(stat(b) - stat(a))
    diffs = np.empty(n_boot)
    n = len(a)
    for i in range(n_boot):
        idx = rng.integers(0, n, n)
        diffs[i] = stat(b[idx]) - stat(a[idx])
    diffs = diffs[np.isfinite(diffs)]
    if diffs.size == 0:
        return BootstrapResult(observed, math.nan, math.nan, math.nan, n_boot, confidence)
    alpha = 1.0 - confidence
    lo, hi = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    k = diffs.size
    p = min(1.0, 2.0 * min((1 + np.sum(diffs <= 0)) / (k + 1), (1 + np.sum(diffs >= 0)) / (k + 1)))
    return BootstrapResult(observed, float(lo), float(hi), float(p), n_boot, confidence)


def _check_bootstrap_args(n: int, n_boot: int, confidence: float) -> None:
    if n == 0:
        raise ValueError("Expected at least one paired sample, but got 0.")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"Expected `n_boot` to be a positive integer, but got {n_boot!r}.")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"Expected `confidence` in (0, 1), but got {confidence!r}.")


def paired_bootstrap_mean(a: np.ndarray, b: np.ndarray, *, n_boot: int = 2000,
                          confidence: float = 0.95, seed: int = 0,
                          chunk: int = 4_000_000) -> BootstrapResult:
    """Paired bootstrap of ``mean(b) - mean(a)`` for 1-D ``a`` and ``b``, as
    ``paired_bootstrap(np.mean, ...)`` computes it, much faster.

    For 0/1 data (correctness, indicators) a resample's difference is
    (#pairs +1 - #pairs -1) / n, and those counts follow a multinomial over
    the three kinds of pair: they are drawn directly (``n_boot`` draws instead
    of ``n_boot * n`` indices), the same bootstrap distribution as resampling
    indices, so the interval agrees with ``paired_bootstrap`` up to Monte
    Carlo error. Other data resample indices, many resamples at a time, with
    exactly ``paired_bootstrap``'s draws."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or len(a) != len(b):
        raise ValueError(
            f"Expected `a` and `b` to be paired 1-D arrays, but got shapes {a.shape} and {b.shape}."
        )
    _check_bootstrap_args(len(a), n_boot, confidence)
    rng = np.random.default_rng(seed)
    n = len(a)
    observed = float(np.mean(b) - np.mean(a))
    d = b - a
    if np.all(np.isin(a, (0.0, 1.0))) and np.all(np.isin(b, (0.0, 1.0))):
        counts = np.array([np.sum(d > 0), np.sum(d < 0), np.sum(d == 0)], dtype=np.float64)
        draws = rng.multinomial(n, counts / n, size=n_boot)
        diffs = (draws[:, 0] - draws[:, 1]) / n
    else:
        per = max(1, chunk // n)
        parts = []
        for start in range(0, n_boot, per):
            idx = rng.integers(0, n, (min(per, n_boot - start), n))
            parts.append(b[idx].mean(axis=1) - a[idx].mean(axis=1))
        diffs = np.concatenate(parts)
    diffs = diffs[np.isfinite(diffs)]
    alpha = 1.0 - confidence
    lo, hi = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    k = diffs.size
    p = min(1.0, 2.0 * min((1 + np.sum(diffs <= 0)) / (k + 1), (1 + np.sum(diffs >= 0)) / (k + 1)))
    return BootstrapResult(observed, float(lo), float(hi), float(p), n_boot, confidence)


def _holm(p: np.ndarray) -> np.ndarray:
    order = np.argsort(p)
    m = len(p)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj


def _bonferroni(p: np.ndarray) -> np.ndarray:
    return np.minimum(1.0, p * len(p))


#: Multiple-comparison adjustments by name (family-wise error control).
ADJUSTMENTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "holm": _holm,
    "bonferroni": _bonferroni,
    "none": lambda p: p.copy(),
}


def adjust_p_values(p_values: Sequence[float], method: str = "holm") -> list[float]:
    """Adjusted p-values (NaN entries are left out of the family and stay NaN)."""
    if method not in ADJUSTMENTS:
        raise ValueError(
            f"Expected `method` to be one of {', '.join(ADJUSTMENTS)}, but got {method!r}."
        )
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = ADJUSTMENTS[method](p[ok])
    return [float(x) for x in out]
