"""Accuracy without labels: confidence-based performance estimation (CBPE).

On the reference (labelled, not used for training) the model's top-class
probability is calibrated against correctness with isotonic regression, as
NannyML's CBPE does. On a window without labels, the expected accuracy is
the mean calibrated confidence. Its interval adds two variances: the
window's own sampling (a sum of Bernoulli(p_i) outcomes, Poisson-binomial)
and the calibration's (the reference is finite: binomial over its size).

CBPE assumes the shift leaves P(correct | confidence) unchanged (covariate
shift); under corruptions the model is over-confident, and the estimate
is too high. ``matched_estimate`` mixes in the benchmark's measured
accuracy under the threats that explain the window's shift.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Calibrator:
    """Isotonic map from top-class confidence to the probability of being right."""

    knots_x: np.ndarray
    knots_y: np.ndarray
    n_reference: int
    reference_accuracy: float

    def __call__(self, confidence: np.ndarray) -> np.ndarray:
        c = np.nan_to_num(np.asarray(confidence, dtype=np.float64), nan=0.0)
        return np.interp(c, self.knots_x, self.knots_y)


def softmax_confidence(logits: np.ndarray) -> np.ndarray:
    """Top-class softmax probability per row (non-finite logits count as 0)."""
    z = np.nan_to_num(np.asarray(logits, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    z = z - z.max(1, keepdims=True)
    p = np.exp(z)
    return np.asarray(p.max(1) / p.sum(1))


def fit_calibrator(confidence: np.ndarray, correct: np.ndarray) -> Calibrator:
    """Isotonic (non-decreasing) fit of ``correct`` on ``confidence``."""
    from sklearn.isotonic import IsotonicRegression

    c = np.asarray(confidence, dtype=np.float64)
    k = np.asarray(correct, dtype=np.float64)
    if len(c) < 2 or len(c) != len(k):
        raise ValueError(f"Expected at least 2 reference samples with one correctness flag each, "
                         f"but got {len(c)} and {len(k)}.")
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(c, k)
    xs = np.asarray(iso.X_thresholds_, dtype=np.float64)
    ys = np.asarray(iso.y_thresholds_, dtype=np.float64)
    return Calibrator(xs, ys, len(c), float(k.mean()))


@dataclass(frozen=True)
class Estimate:
    value: float
    ci_low: float
    ci_high: float
    n: int


def _interval(value: float, var: float, n: int) -> Estimate:
    half = Z95 * math.sqrt(max(var, 0.0))
    return Estimate(value, max(0.0, value - half), min(1.0, value + half), n)


def cbpe(calibrator: Calibrator, confidence: np.ndarray) -> Estimate:
    """Expected accuracy of a window from its confidences, with a 95% interval."""
    p = calibrator(confidence)
    n = len(p)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    value = float(p.mean())
    var = float((p * (1 - p)).sum()) / n ** 2 + value * (1 - value) / calibrator.n_reference
    return _interval(value, var, n)


def realised(correct: np.ndarray) -> Estimate:
    """Accuracy from labels with a Wilson 95% interval."""
    k = np.asarray(correct, dtype=np.float64)
    n = len(k)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    p = float(k.mean())
    denom = 1 + Z95 ** 2 / n
    centre = (p + Z95 ** 2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / denom
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half), n)


def matched_estimate(cbpe_estimate: Estimate, posterior: Mapping[str, float],
                     measured: Mapping[str, float], clean_key: str = "clean") -> Estimate:
    """Accuracy expected from the benchmark: the posterior-weighted mean of
    each candidate threat's measured accuracy (the CBPE estimate stands in
    for ``clean`` and for a threat the benchmark did not measure)."""
    if not posterior:
        return cbpe_estimate
    value, second = 0.0, 0.0
    for key, w in posterior.items():
        acc = cbpe_estimate.value if key == clean_key else measured.get(key, cbpe_estimate.value)
        value += w * acc
        second += w * acc * acc
    spread = max(0.0, second - value * value)  # disagreement between candidate threats
    half_cbpe = (cbpe_estimate.ci_high - cbpe_estimate.ci_low) / 2 / Z95
    var = half_cbpe ** 2 + spread
    return _interval(float(value), var, cbpe_estimate.n)
