"""Robustness disparity: does a threat hurt some groups more than others?

Per group, from per-sample outcomes: the drop from clean to robust accuracy;
the boundary error of Xu et al. (2021, "To be robust or to be fair"), the
share of the group classified correctly on clean inputs but broken by the
threat; and, from the per-sample distance to the decision boundary (a
minimum-norm attack's ``distance``, or ``eps_broken``, the smallest budget
that broke each point), its distribution per group and the robustness bias of
Nanda et al. (2021, "Fairness through robustness"): the share of a group's
correctly classified points within distance tau, minus that share for the rest.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from benchmark.core.types import Measurement, Outcome
from metrics.statistics import wilson_intervals

log = logging.getLogger(__name__)

#: Per-sample extras that hold a distance to the decision boundary, by preference.
DISTANCE_KEYS: tuple[str, ...] = ("distance", "eps_broken")
DISTANCE_QUANTILES: tuple[float, ...] = (0.25, 0.5, 0.75)

DROP_DEFINITION = "clean accuracy - accuracy under the threat, within the group"
BOUNDARY_DEFINITION = (
    "boundary error (Xu et al. 2021): fraction of the group correct on clean inputs but "
    "misclassified under the threat; robust error = natural error + boundary error; "
    "95% Wilson interval"
)
DISTANCE_DEFINITION = (
    "{q:.0%} quantile of the distance to the decision boundary (extra `{key}`) over the group's "
    "clean-correct samples; absent when it lies beyond the largest budget tried"
)
WITHIN_TAU_DEFINITION = (
    "share of the group's clean-correct samples within distance tau (= param) of the decision "
    "boundary (extra `{key}`); 95% Wilson interval"
)
BIAS_DEFINITION = (
    "robustness bias (Nanda et al. 2021): share within distance tau (= param) in the group "
    "minus share within tau among all other clean-correct samples (extra `{key}`); positive: "
    "the group is easier to break"
)


@dataclass(frozen=True)
class GroupRobustness:
    """Clean vs robust accuracy and boundary error of one group."""

    group: str
    n: int
    clean_accuracy: float
    robust_accuracy: float
    boundary_errors: int

    @property
    def drop(self) -> float:
        return self.clean_accuracy - self.robust_accuracy

    @property
    def boundary_error(self) -> float:
        return self.boundary_errors / self.n if self.n else math.nan


def _check_lengths(**arrays: np.ndarray) -> None:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"Expected arrays of equal length, but got {lengths}.")


def group_robustness(clean_correct: np.ndarray, robust_correct: np.ndarray,
                     groups: pd.Series | np.ndarray) -> list[GroupRobustness]:
    """Per group: clean and robust accuracy and the Xu et al. boundary error count."""
    c = np.asarray(clean_correct, dtype=bool)
    r = np.asarray(robust_correct, dtype=bool)
    g = np.asarray(groups, dtype=object)
    _check_lengths(clean_correct=c, robust_correct=r, groups=g)
    out = []
    for value in sorted(pd.unique(g), key=str):
        m = g == value
        out.append(GroupRobustness(
            group=str(value), n=int(m.sum()), clean_accuracy=float(c[m].mean()),
            robust_accuracy=float(r[m].mean()), boundary_errors=int((c[m] & ~r[m]).sum()),
        ))
    return out


def robustness_bias(distance: np.ndarray, clean_correct: np.ndarray,
                    groups: pd.Series | np.ndarray, tau: float) -> pd.DataFrame:
    """Nanda et al. robustness bias at ``tau`` for each group, over clean-correct
    samples: columns ``n``, ``within`` (count within tau), ``share``,
    ``share_rest`` and ``bias`` = share - share_rest."""
    if not tau >= 0:
        raise ValueError(f"Expected `tau` to be a non-negative float, but got {tau}.")
    d = np.asarray(distance, dtype=np.float64)
    c = np.asarray(clean_correct, dtype=bool)
    g = np.asarray(groups, dtype=object)
    _check_lengths(distance=d, clean_correct=c, groups=g)
    d, g = d[c], g[c]
    close = d <= tau
    rows = []
    for value in sorted(pd.unique(g), key=str):
        m = g == value
        n, rest = int(m.sum()), int((~m).sum())
        share = float(close[m].mean())
        share_rest = float(close[~m].mean()) if rest else math.nan
        rows.append({"group": str(value), "n": n, "within": int(close[m].sum()),
                     "share": share, "share_rest": share_rest, "bias": share - share_rest})
    return pd.DataFrame(rows, columns=["group", "n", "within", "share", "share_rest", "bias"])


def _row(o: Outcome, feature: str, value: str, metric: str, v: float, n: int,
         ci: tuple[float, float] | tuple[None, None] = (None, None), definition: str = "",
         param: float | None = None) -> Measurement:
    t = o.threat
    return Measurement(model=o.model, version=o.version, family=t.family, threat=t.name,
                       param=t.param if param is None else param, metric=metric,
                       value=float(v), n=int(n), group_feature=feature, group_value=value,
                       ci_low=ci[0], ci_high=ci[1], definition=definition)


def _clean_by_version(outcomes: Sequence[Outcome]) -> dict[tuple[str, str], Outcome]:
    return {(o.model, o.version): o for o in outcomes if o.threat.family == "clean"}


def _eligible(column: pd.Series, min_size: int) -> np.ndarray:
    sizes = column.value_counts()
    return column.isin(sizes[sizes >= min_size].index).to_numpy()


class _Codes:
    """A group column as integer codes over its eligible groups (sorted by
    their text, as the per-group functions sort them); -1 for samples of too
    small groups. Built once per feature, shared by every outcome."""

    def __init__(self, column: pd.Series, min_size: int) -> None:
        keep = _eligible(column, min_size)
        values = np.asarray(column, dtype=object)
        self.names = sorted({str(v) for v in pd.unique(values[keep])})
        lookup = {v: i for i, v in enumerate(self.names)}
        self.codes = np.array([lookup[str(v)] if k else -1 for v, k in zip(values, keep,
                                                                              strict=True)],
                              dtype=np.int64)
        self.keep = keep

    def counts(self, mask: np.ndarray | None = None) -> np.ndarray:
        """Samples per group (of those in ``mask``)."""
        sel = self.keep if mask is None else self.keep & mask
        return np.bincount(self.codes[sel], minlength=len(self.names))


def drop_measurements(outcomes: Sequence[Outcome], columns: dict[str, pd.Series],
                      min_size: int = 1) -> list[Measurement]:
    """Accuracy drop and boundary error per group for every non-clean outcome
    (groups below ``min_size`` are reported as too small by the group metrics)."""
    clean = _clean_by_version(outcomes)
    rows: list[Measurement] = []
    codes = {feature: _Codes(col, min_size) for feature, col in columns.items()}
    for o in outcomes:
        base = clean.get((o.model, o.version))
        if o.threat.family == "clean" or base is None:
            continue
        c = np.asarray(base.correct, dtype=bool)
        r = np.asarray(o.correct, dtype=bool)
        _check_lengths(clean_correct=c, robust_correct=r)
        for feature, gc in codes.items():
            n = gc.counts()
            n_clean, n_robust, n_broken = gc.counts(c), gc.counts(r), gc.counts(c & ~r)
            lo, hi = wilson_intervals(n_broken, n)
            for i, name in enumerate(gc.names):
                if not n[i]:
                    continue
                drop = n_clean[i] / n[i] - n_robust[i] / n[i]
                rows.append(_row(o, feature, name, "accuracy_drop", drop, int(n[i]),
                                 definition=DROP_DEFINITION))
                rows.append(_row(o, feature, name, "boundary_error", n_broken[i] / n[i],
                                 int(n[i]), (float(lo[i]), float(hi[i])), BOUNDARY_DEFINITION))
    return rows


def _distance_outcomes(outcomes: Sequence[Outcome]) -> list[tuple[Outcome, str, list[float]]]:
    """(outcome, distance key, budgets of that threat) for each threat of each
    version that carries distances: the outcome of the largest budget, whose
    distances are the most complete."""
    last: dict[tuple[str, str, str], Outcome] = {}
    budgets: dict[tuple[str, str, str], list[float]] = {}
    for o in outcomes:
        if not any(k in o.columns for k in DISTANCE_KEYS):
            continue
        key = (o.model, o.version, o.threat.name)
        p = -math.inf if o.threat.param is None else o.threat.param
        prev = last.get(key)
        if prev is None or p >= (-math.inf if prev.threat.param is None else prev.threat.param):
            last[key] = o
        if o.threat.param is not None:
            budgets.setdefault(key, []).append(float(o.threat.param))
    out = []
    for key, o in last.items():
        dkey = next(k for k in DISTANCE_KEYS if k in o.columns)
        out.append((o, dkey, sorted(set(budgets.get(key, [])))))
    return out


def distance_measurements(outcomes: Sequence[Outcome], columns: dict[str, pd.Series],
                          min_size: int = 1,
                          taus: Sequence[float] | None = None) -> list[Measurement]:
    """Per group: quantiles of the distance to the decision boundary, the share
    within each tau and the Nanda et al. robustness bias. ``taus`` default to
    the threat's budgets, or the median distance when it has none."""
    clean = _clean_by_version(outcomes)
    rows: list[Measurement] = []
    codes = {feature: _Codes(col, min_size) for feature, col in columns.items()}
    for o, key, budgets in _distance_outcomes(outcomes):
        base = clean.get((o.model, o.version))
        cc = np.asarray(base.correct if base is not None else o.columns[key] > 0, dtype=bool)
        dist = np.asarray(o.columns[key], dtype=np.float64)
        cc = cc & ~np.isnan(dist)
        finite = dist[cc & np.isfinite(dist)]
        use_taus = list(taus) if taus else budgets or (
            [float(np.median(finite))] if len(finite) else [])
        for feature, gc in codes.items():
            for i, value in enumerate(gc.names):
                d = dist[gc.keep & cc & (gc.codes == i)]
                if not len(d):
                    continue
                for q in DISTANCE_QUANTILES:
                    v = float(np.quantile(d, q, method="inverted_cdf"))
                    if math.isfinite(v):
                        rows.append(_row(o, feature, value, f"distance_q{int(q * 100)}", v,
                                         len(d), definition=DISTANCE_DEFINITION.format(q=q,
                                                                                       key=key)))
            n = gc.counts(cc)
            total = int(n.sum())
            for tau in use_taus:
                if not tau >= 0:
                    raise ValueError(f"Expected `tau` to be a non-negative float, but got {tau}.")
                within = gc.counts(cc & (dist <= tau))
                lo, hi = wilson_intervals(within, n)
                all_within = int(within.sum())
                for i, value in enumerate(gc.names):
                    if not n[i]:
                        continue
                    share = within[i] / n[i]
                    rest = total - n[i]
                    rows.append(_row(o, feature, value, "share_within_tau", share, int(n[i]),
                                     (float(lo[i]), float(hi[i])),
                                     WITHIN_TAU_DEFINITION.format(key=key), param=tau))
                    if rest:
                        bias = share - (all_within - within[i]) / rest
                        rows.append(_row(o, feature, value, "robustness_bias", bias, int(n[i]),
                                         definition=BIAS_DEFINITION.format(key=key),
                                         param=tau))
    return rows


def disparity_measurements(outcomes: Sequence[Outcome], columns: dict[str, pd.Series],
                           min_size: int = 1,
                           taus: Sequence[float] | None = None) -> list[Measurement]:
    """Accuracy drop, boundary error, distance distribution and robustness bias."""
    return (drop_measurements(outcomes, columns, min_size)
            + distance_measurements(outcomes, columns, min_size, taus))
