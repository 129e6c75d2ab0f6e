"""Robustness metrics computed from per-sample outcomes."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from benchmark.core.types import Measurement, Outcome

ACCURACY_DEFINITION = (
    "fraction of samples classified correctly under the threat (for attacks: the per-point "
    "worst case over all budgets up to this eps); 95% Wilson score interval"
)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(
            f"Expected 0 <= successes <= n, but got successes={successes}, n={n}."
        )
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"Expected `confidence` in (0, 1), but got {confidence}.")
    if n == 0:
        return (math.nan, math.nan)
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def accuracy_measurement(outcome: Outcome) -> Measurement:
    """Accuracy of one outcome as a tidy row with its Wilson interval."""
    correct = np.asarray(outcome.correct, dtype=bool)
    n = int(correct.size)
    k = int(correct.sum())
    lo, hi = wilson_interval(k, n)
    t = outcome.threat
    return Measurement(
        model=outcome.model,
        version=outcome.version,
        family=t.family,
        threat=t.name,
        param=t.param,
        metric="accuracy",
        value=k / n if n else math.nan,
        n=n,
        ci_low=lo,
        ci_high=hi,
        definition=ACCURACY_DEFINITION,
    )


def accuracy_measurements(outcomes: Iterable[Outcome]) -> list[Measurement]:
    return [accuracy_measurement(o) for o in outcomes]
