"""Slice discovery: find, without any configured group, the slices of the
data (bins of derived image properties or of a feature table's columns,
metadata values, classes, and
optionally their pairs) where accuracy under a threat is significantly worse
than on the rest.

Each candidate slice is tested against its complement with a one-sided
Fisher exact test (hypergeometric tail: is the slice's count of correct
predictions this low by chance?); the p-values of one outcome are corrected
with Benjamini-Hochberg, and the slices significant at the configured false
discovery rate are reported, worst accuracy gap first.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import false_discovery_control, hypergeom

from benchmark.core.specs import SliceSpec
from benchmark.core.types import EvalSet, Measurement, Outcome
from metrics.groups import apply_missing_policy, bin_values
from metrics.properties import list_properties
from metrics.robustness import wilson_interval

log = logging.getLogger(__name__)

SLICE_PREFIX = "slice:"
GAP_DEFINITION = (
    "slice accuracy - overall accuracy under the threat, for a slice found by discovery: "
    "one-sided Fisher exact test of slice vs complement, Benjamini-Hochberg q <= {fdr} over "
    "{m} candidate slices of at least {min_size} samples; CI: 95% Wilson interval of the slice "
    "accuracy minus the overall accuracy"
)
Q_DEFINITION = "Benjamini-Hochberg adjusted p-value of the slice (one-sided Fisher exact test)"
COUNT_DEFINITION = (
    "number of slices whose accuracy is significantly below their complement at FDR {fdr} "
    "(out of {m} candidates of at least {min_size} samples)"
)


@dataclass(frozen=True)
class Slice:
    """One discovered slice with its test."""

    feature: str
    value: str
    n: int
    correct: int
    accuracy: float
    complement_accuracy: float
    overall_accuracy: float
    p_value: float
    q_value: float

    @property
    def gap(self) -> float:
        """Slice accuracy minus overall accuracy (negative: the slice is worse)."""
        return self.accuracy - self.overall_accuracy


@dataclass(frozen=True)
class SliceReport:
    """Slices of one outcome significant at ``fdr`` (worst first) and how many
    candidates were tested."""

    slices: list[Slice]
    candidates: int
    fdr: float


def feature_columns(spec: SliceSpec, data: EvalSet) -> dict[str, pd.Series]:
    """A feature table's columns as slice candidates: numeric and integer
    features in quantile bins of their raw values, categorical and binary
    features by value (``spec.properties``, when given, names the features)."""
    schema = data.schema
    if schema is None:
        return {}
    frame = data.frame if data.frame is not None else schema.decode(data.x.numpy())
    frame = frame.reset_index(drop=True)
    wanted = list(spec.properties) if spec.properties else schema.names
    cols: dict[str, pd.Series] = {}
    for name in wanted:
        if name not in schema.names or name not in frame.columns:
            log.warning("Slice feature %r is not a column of dataset %r; skipped", name,
                        data.name)
            continue
        column = schema.column(name)
        if column.is_numeric:
            values = pd.to_numeric(frame[name], errors="coerce").to_numpy(np.float64)
            col = bin_values(values, bins=spec.bins)
        else:
            col = frame[name].astype(object).where(frame[name].notna(), None)
        if col.nunique(dropna=True) >= 2:
            cols[name] = apply_missing_policy(name, col, "group")
    return cols


def candidate_slices(spec: SliceSpec, data: EvalSet, properties: dict[str, np.ndarray],
                     missing: str = "group") -> dict[str, pd.Series]:
    """Partitions of the data to search: each image property (or, for a feature
    table, each feature) in quantile bins, each metadata column, the class,
    and (``spec.pairs``) every pair of these."""
    cols: dict[str, pd.Series] = {}
    if data.modality == "tabular":
        cols.update(feature_columns(spec, data))
    else:
        for name in spec.properties or list_properties():
            col = bin_values(properties[name], bins=spec.bins)
            if col.nunique(dropna=True) >= 2:
                cols[name] = apply_missing_policy(name, col, "group")
    for name in spec.metadata if spec.metadata is not None else list(data.groups.columns):
        if name in cols:  # a feature of the table already searched by its values
            continue
        if name not in data.groups.columns:
            log.warning("Slice metadata column %r is not in dataset %r; skipped", name,
                        data.name)
            continue
        col = data.groups[name].reset_index(drop=True).astype(object)
        cols[str(name)] = apply_missing_policy(str(name), col, missing)
    if spec.label:
        cols["class"] = pd.Series(np.asarray(data.classes, dtype=object)[data.y.numpy()])
    if spec.pairs:
        for a, b in itertools.combinations(list(cols), 2):
            cols[f"{a} & {b}"] = (cols[a] + " & " + cols[b]).astype(object)
    return cols


def discover_slices(correct: np.ndarray | Sequence[bool], candidates: dict[str, pd.Series], *,
                    min_size: int = 30, fdr: float = 0.05) -> SliceReport:
    """Slices whose accuracy is significantly below their complement's, at
    Benjamini-Hochberg false discovery rate ``fdr``, worst gap first."""
    c = np.asarray(correct, dtype=bool)
    if min_size < 1:
        raise ValueError(f"Expected `min_size` to be a positive integer, but got {min_size}.")
    if not 0.0 < fdr < 1.0:
        raise ValueError(f"Expected `fdr` to be a float in (0, 1), but got {fdr}.")
    total, hits = len(c), int(c.sum())
    feats, values, sizes, ks = [], [], [], []
    for feature, col in candidates.items():
        g = np.asarray(col, dtype=object)
        if len(g) != total:
            raise ValueError(
                f"Expected slice column {feature!r} to have {total} entries, but got {len(g)}."
            )
        codes, uniques = pd.factorize(g)
        n = np.bincount(codes, minlength=len(uniques))
        k = np.bincount(codes, weights=c, minlength=len(uniques)).astype(int)
        for i, value in enumerate(uniques):
            if min_size <= n[i] < total:
                feats.append(feature)
                values.append(str(value))
                sizes.append(int(n[i]))
                ks.append(int(k[i]))
    if not sizes:
        return SliceReport(slices=[], candidates=0, fdr=fdr)
    n_arr, k_arr = np.asarray(sizes), np.asarray(ks)
    # P(X <= k) for X ~ Hypergeom(total, hits, n): one-sided Fisher exact test.
    p = np.clip(hypergeom.cdf(k_arr, total, hits, n_arr), 0.0, 1.0)
    q = false_discovery_control(p, method="bh")
    overall = hits / total
    found = []
    for i in (int(j) for j in np.flatnonzero(q <= fdr)):
        rest = int(total - n_arr[i])
        found.append(Slice(
            feature=feats[i], value=values[i], n=int(n_arr[i]), correct=int(k_arr[i]),
            accuracy=k_arr[i] / n_arr[i], complement_accuracy=(hits - k_arr[i]) / rest,
            overall_accuracy=overall, p_value=float(p[i]), q_value=float(q[i]),
        ))
    found.sort(key=lambda s: (s.gap, s.q_value, s.feature, s.value))
    return SliceReport(slices=found, candidates=len(sizes), fdr=fdr)


def _row(o: Outcome, metric: str, value: float, n: int, *, group_feature: str = "",
         group_value: str = "", ci_low: float | None = None, ci_high: float | None = None,
         definition: str = "") -> Measurement:
    t = o.threat
    return Measurement(model=o.model, version=o.version, family=t.family, threat=t.name,
                       param=t.param, metric=metric, value=float(value), n=int(n),
                       group_feature=group_feature, group_value=group_value, ci_low=ci_low,
                       ci_high=ci_high, definition=definition)


def slice_measurements(outcomes: Sequence[Outcome], candidates: dict[str, pd.Series],
                       spec: SliceSpec) -> list[Measurement]:
    """The worst ``spec.top`` significant slices of every outcome as tidy rows
    (accuracy gap with CI, q-value), plus the count of significant slices."""
    rows: list[Measurement] = []
    for o in outcomes:
        rep = discover_slices(o.correct, candidates, min_size=spec.min_size, fdr=spec.fdr)
        t = o.threat
        rows.append(_row(o, "slices_significant", len(rep.slices), len(o.correct),
                         definition=COUNT_DEFINITION.format(fdr=spec.fdr, m=rep.candidates,
                                                            min_size=spec.min_size)))
        gap_def = GAP_DEFINITION.format(fdr=spec.fdr, m=rep.candidates, min_size=spec.min_size)
        for s in rep.slices[: spec.top]:
            lo, hi = wilson_interval(s.correct, s.n)
            feature = SLICE_PREFIX + s.feature
            rows.append(_row(o, "slice_accuracy_gap", s.gap, s.n, group_feature=feature,
                             group_value=s.value, ci_low=lo - s.overall_accuracy,
                             ci_high=hi - s.overall_accuracy, definition=gap_def))
            rows.append(_row(o, "slice_q_value", s.q_value, s.n, group_feature=feature,
                             group_value=s.value, definition=Q_DEFINITION))
        if rep.slices and not math.isnan(rep.slices[0].gap):
            s = rep.slices[0]
            log.info("%s@%s %s: worst slice %s=%s (n=%d, gap %+.3f, q=%.2g)", o.model,
                     o.version, t.label, s.feature, s.value, s.n, s.gap, s.q_value)
    return rows
