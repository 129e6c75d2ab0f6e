"""Drift between a reference set and a new batch of inputs.

Per image property (brightness, contrast, sharpness, ...) and for the
model's predicted-class distribution, the test follows the sample size, as
monitoring tools such as Evidently do: while either set has at most
``small_sample`` samples, a statistical test (two-sample Kolmogorov-Smirnov
for properties, chi-squared for classes) at a Bonferroni-corrected level;
beyond that, where any difference is significant, a distance with a
threshold (Wasserstein distance in reference standard deviations for
properties, Jensen-Shannon distance for classes). The model's logits get a
kernel two-sample test (MMD with an RBF kernel, permutation p-value), which
sees drift no single property shows.

``tabular_drift`` applies the same tests to each column of a feature table
(KS / Wasserstein for numbers, chi-squared / Jensen-Shannon for categories)
and to each model version's outputs on it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch

from benchmark.core.tabular import TabularSchema
from benchmark.core.types import CheckResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriftConfig:
    """How drift is decided.

    ``alpha`` is the family-wise level of all tests together (each test runs
    at ``alpha / number of tests``); the thresholds apply to large samples.
    """

    small_sample: int = 1000
    alpha: float = 0.05
    wasserstein_threshold: float = 0.1
    js_threshold: float = 0.1
    mmd_permutations: int = 200
    mmd_max_samples: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"Expected `alpha` in (0, 1), but got {self.alpha}.")
        if self.small_sample < 1:
            raise ValueError(
                f"Expected `small_sample` to be a positive integer, but got {self.small_sample}."
            )
        for name in ("wasserstein_threshold", "js_threshold"):
            if getattr(self, name) <= 0:
                raise ValueError(
                    f"Expected `{name}` to be a positive float, but got {getattr(self, name)}."
                )
        if self.mmd_permutations < 1 or self.mmd_max_samples < 2:
            raise ValueError(
                "Expected `mmd_permutations` >= 1 and `mmd_max_samples` >= 2, but got "
                f"{self.mmd_permutations} and {self.mmd_max_samples}."
            )


@dataclass
class FeatureDrift:
    """Drift of one feature: the test used, its verdict and how much it moved."""

    feature: str
    kind: str  # numerical | categorical | multivariate
    test: str
    statistic: float
    drifted: bool
    p_value: float | None = None
    level: float | None = None  # the corrected significance level of a test
    threshold: float | None = None  # the distance threshold of a large sample
    distance: float | None = None  # effect size: normed Wasserstein or Jensen-Shannon
    reference_mean: float | None = None
    batch_mean: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_check(self) -> CheckResult:
        how = (f"p={self.p_value:.2g} (level {self.level:.2g})" if self.p_value is not None
               else f"{self.statistic:.3g} vs threshold {self.threshold:g}")
        moved = ""
        if self.reference_mean is not None and self.batch_mean is not None:
            moved = f"; mean {self.reference_mean:.4g} -> {self.batch_mean:.4g}"
        if self.distance is not None:
            moved += f"; distance {self.distance:.3g}"
        verdict = "drifted" if self.drifted else "no drift"
        return CheckResult(
            check=f"drift:{self.feature}", status="fail" if self.drifted else "pass",
            message=f"{verdict} ({self.test} {how}{moved}).",
            evidence={k: v for k, v in self.__dict__.items() if k != "details"} | self.details,
            subject="drift",
        )


@dataclass
class DriftReport:
    """Every feature's drift between one reference set and one batch."""

    n_reference: int
    n_batch: int
    features: list[FeatureDrift]

    @property
    def drifted(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    def as_checks(self) -> list[CheckResult]:
        return [f.as_check() for f in self.features]


def _normed_wasserstein(ref: np.ndarray, new: np.ndarray) -> float:
    from scipy.stats import wasserstein_distance

    scale = float(np.std(ref))
    d = float(wasserstein_distance(ref, new))
    if scale <= 0:
        return 0.0 if d == 0 else math.inf
    return d / scale


def numerical_drift(feature: str, ref: np.ndarray, new: np.ndarray, cfg: DriftConfig,
                    n_tests: int = 1) -> FeatureDrift:
    """KS test for small samples, Wasserstein distance (in reference stds) for large."""
    from scipy.stats import ks_2samp

    ref = np.asarray(ref, dtype=np.float64)
    new = np.asarray(new, dtype=np.float64)
    if len(ref) < 2 or len(new) < 2:
        raise ValueError(
            f"Expected at least 2 samples on each side for `{feature}`, but got "
            f"{len(ref)} and {len(new)}."
        )
    distance = _normed_wasserstein(ref, new)
    common: dict[str, Any] = {"reference_mean": float(ref.mean()),
                              "batch_mean": float(new.mean()), "distance": distance}
    if min(len(ref), len(new)) <= cfg.small_sample:
        level = cfg.alpha / max(1, n_tests)
        res = ks_2samp(ref, new)
        p = float(res.pvalue)
        return FeatureDrift(feature, "numerical", "ks", float(res.statistic), p < level,
                            p_value=p, level=level, **common)
    return FeatureDrift(feature, "numerical", "wasserstein", distance,
                        distance > cfg.wasserstein_threshold,
                        threshold=cfg.wasserstein_threshold, **common)


def categorical_drift(feature: str, ref: np.ndarray, new: np.ndarray, cfg: DriftConfig,
                      n_tests: int = 1, categories: int | None = None) -> FeatureDrift:
    """Chi-squared test for small samples, Jensen-Shannon distance for large."""
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import chi2_contingency

    ref = np.asarray(ref, dtype=np.int64)
    new = np.asarray(new, dtype=np.int64)
    k = int(max(ref.max(initial=0), new.max(initial=0)) + 1)
    k = max(k, categories or 0)
    table = np.stack([np.bincount(ref, minlength=k), np.bincount(new, minlength=k)])
    p_ref, p_new = table[0] / max(1, table[0].sum()), table[1] / max(1, table[1].sum())
    js = float(jensenshannon(p_ref, p_new, base=2)) if table.sum() else 0.0
    details = {"reference_share": np.round(p_ref, 4).tolist(),
               "batch_share": np.round(p_new, 4).tolist()}
    if min(len(ref), len(new)) <= cfg.small_sample:
        level = cfg.alpha / max(1, n_tests)
        used = table[:, table.sum(0) > 0]
        if used.shape[1] < 2:
            stat, p = 0.0, 1.0
        else:
            res = chi2_contingency(used)
            stat, p = float(res.statistic), float(res.pvalue)
        return FeatureDrift(feature, "categorical", "chi2", stat, p < level, p_value=p,
                            level=level, distance=js, details=details)
    return FeatureDrift(feature, "categorical", "jensen_shannon", js, js > cfg.js_threshold,
                        threshold=cfg.js_threshold, distance=js, details=details)


def mmd_drift(feature: str, ref: torch.Tensor, new: torch.Tensor, cfg: DriftConfig,
              n_tests: int = 1) -> FeatureDrift:
    """Kernel two-sample test on feature vectors (logits): MMD^2 with an RBF
    kernel (median-distance bandwidth) and a permutation p-value."""
    g = torch.Generator().manual_seed(cfg.seed)

    def sub(t: torch.Tensor) -> torch.Tensor:
        t = torch.nan_to_num(t.detach().double().cpu().reshape(len(t), -1))
        if len(t) > cfg.mmd_max_samples:
            t = t[torch.randperm(len(t), generator=g)[: cfg.mmd_max_samples]]
        return t

    a, b = sub(ref), sub(new)
    z = torch.cat([a, b])
    d2 = torch.cdist(z, z).pow(2)
    off = d2[~torch.eye(len(z), dtype=torch.bool)]
    bandwidth = float(off.median()) if off.numel() else 1.0
    k = torch.exp(-d2 / max(bandwidth, 1e-12))
    # Biased MMD^2 = w' K w with w = 1/n on the reference rows, -1/m on the
    # batch rows; a permutation of the pooled samples permutes w.
    w = torch.cat([torch.full((len(a),), 1.0 / len(a)), torch.full((len(b),), -1.0 / len(b))])
    w = w.double()
    stat = float(w @ k @ w)
    perms = torch.stack([w[torch.randperm(len(z), generator=g)]
                         for _ in range(cfg.mmd_permutations)])
    null = ((perms @ k) * perms).sum(1)
    exceed = int((null >= stat - 1e-12).sum())
    p = (exceed + 1) / (cfg.mmd_permutations + 1)
    level = cfg.alpha / max(1, n_tests)
    return FeatureDrift(feature, "multivariate", "mmd_rbf", stat, p < level, p_value=p,
                        level=level, details={"bandwidth": bandwidth, "n_reference": len(a),
                                              "n_batch": len(b)})


def population_stability_index(ref: np.ndarray, new: np.ndarray, bins: int = 10,
                               categorical: bool = False) -> float:
    """PSI = sum((q - p) ln(q / p)) over bins: reference deciles for numbers
    (ties merged), each value for categories; shares floored at 1e-4."""
    ref = np.asarray(ref, dtype=np.float64)
    new = np.asarray(new, dtype=np.float64)
    if categorical:
        k = int(max(ref.max(initial=0), new.max(initial=0)) + 1)
        p = np.bincount(ref.astype(np.int64), minlength=k).astype(np.float64)
        q = np.bincount(new.astype(np.int64), minlength=k).astype(np.float64)
    else:
        edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
        p = np.bincount(np.searchsorted(edges, ref, side="right"),
                        minlength=len(edges) + 1).astype(np.float64)
        q = np.bincount(np.searchsorted(edges, new, side="right"),
                        minlength=len(edges) + 1).astype(np.float64)
    p = np.maximum(p / max(1.0, p.sum()), 1e-4)
    q = np.maximum(q / max(1.0, q.sum()), 1e-4)
    return float(np.sum((q - p) * np.log(q / p)))


class ModelLogits(NamedTuple):
    """One model version's logits on the reference set and on the batch."""

    reference: torch.Tensor
    batch: torch.Tensor
    num_classes: int


def output_drift(logits: Mapping[str, ModelLogits], cfg: DriftConfig, n_tests: int
                 ) -> list[FeatureDrift]:
    """For each model version (``logits`` keyed by ``name@version``), drift of
    its predicted classes (``predicted_class[key]``: chi-squared or
    Jensen-Shannon) and of its logits (``logits[key]``: MMD test)."""
    out: list[FeatureDrift] = []
    for key, (ref_logits, new_logits, num_classes) in logits.items():
        out.append(categorical_drift(f"predicted_class[{key}]", ref_logits.argmax(1).numpy(),
                                     new_logits.argmax(1).numpy(), cfg, n_tests,
                                     categories=num_classes))
        out.append(mmd_drift(f"logits[{key}]", ref_logits, new_logits, cfg, n_tests))
    return out


def drift_report(reference_x: torch.Tensor, batch_x: torch.Tensor,
                 logits: Mapping[str, ModelLogits] | None = None,
                 cfg: DriftConfig | None = None) -> DriftReport:
    """Drift of every image property, and for each model version (``logits``
    keyed by ``name@version``, computed by the caller) of its predicted
    classes (``predicted_class[key]``) and logits (``logits[key]``), between
    ``reference_x`` and ``batch_x``."""
    from metrics.data_checks import image_properties

    cfg = cfg or DriftConfig()
    logits = logits or {}
    if reference_x.ndim != 4 or batch_x.ndim != 4:
        raise ValueError(
            "Expected `reference_x` and `batch_x` as N x C x H x W, but got shapes "
            f"{list(reference_x.shape)} and {list(batch_x.shape)}."
        )
    if reference_x.shape[1:] != batch_x.shape[1:]:
        raise ValueError(
            f"Expected the batch to have the reference's sample shape "
            f"{list(reference_x.shape[1:])}, but got {list(batch_x.shape[1:])}."
        )
    ref_props, new_props = image_properties(reference_x), image_properties(batch_x)
    n_tests = len(ref_props) + 2 * len(logits)
    features = [numerical_drift(k, ref_props[k], new_props[k], cfg, n_tests) for k in ref_props]
    features += output_drift(logits, cfg, n_tests)
    report = DriftReport(n_reference=len(reference_x), n_batch=len(batch_x), features=features)
    log.info("drift: %d of %d features drifted (%s)", len(report.drifted), len(features),
             ", ".join(report.drifted) or "none")
    return report


def tabular_drift(reference: pd.DataFrame, batch: pd.DataFrame, schema: TabularSchema,
                  logits: Mapping[str, ModelLogits] | None = None,
                  cfg: DriftConfig | None = None) -> list[FeatureDrift]:
    """Drift of every schema column present in both frames, then of each model
    version's outputs (``logits``, see ``output_drift``).

    Numbers: KS test on the finite values while either side has at most
    ``cfg.small_sample`` rows, Wasserstein distance in reference stds beyond.
    Categories: chi-squared, then Jensen-Shannon distance, over the schema's
    categories plus one bucket for missing or unknown values. Each feature's
    details add the population stability index (``psi``). The tests share a
    Bonferroni-corrected level ``cfg.alpha``. A column with fewer than two
    values on a side is reported, not tested (``details["skipped"]``).
    """
    cfg = cfg or DriftConfig()
    logits = logits or {}
    for what, f in (("reference", reference), ("batch", batch)):
        if not isinstance(f, pd.DataFrame):
            raise ValueError(f"Expected `{what}` to be a pandas DataFrame, but got "
                             f"{type(f).__name__}.")
    cols = [c for c in schema.columns if c.name in reference.columns and c.name in batch.columns]
    sub = TabularSchema(columns=tuple(cols), target=schema.target, classes=schema.classes)
    x_ref, x_new = sub.encode(reference), sub.encode(batch)
    n_tests = len(cols) + 2 * len(logits)
    features: list[FeatureDrift] = []
    for j, c in enumerate(cols):
        a, b = x_ref[:, j].astype(np.float64), x_new[:, j].astype(np.float64)
        if c.is_numeric:
            a, b = a[np.isfinite(a)], b[np.isfinite(b)]
            if min(len(a), len(b)) < 2:
                features.append(FeatureDrift(c.name, "numerical", "none", math.nan, False,
                                             threshold=math.nan, details={
                                                 "skipped": "fewer than 2 finite values",
                                                 "n_reference": len(a), "n_batch": len(b)}))
                continue
            fd = numerical_drift(c.name, a, b, cfg, n_tests)
            fd.details["psi"] = population_stability_index(a, b)
        else:
            k = len(c.categories)
            a, b = np.where(np.isnan(a), k, a), np.where(np.isnan(b), k, b)
            fd = categorical_drift(c.name, a, b, cfg, n_tests, categories=k + 1)
            fd.details["categories"] = [*c.categories, "(missing or unknown)"]
            fd.details["psi"] = population_stability_index(a, b, categorical=True)
        features.append(fd)
    features += output_drift(logits, cfg, n_tests)
    log.info("tabular drift: %d of %d features drifted", sum(f.drifted for f in features),
             len(features))
    return features
