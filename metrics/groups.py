"""Performance bias: which groups a model serves worse, on clean data and
under every threat, measured with fairlearn's ``MetricFrame``.

A group definition turns the evaluation set into one sensitive-feature column
(the label, a metadata column, a binned image property, or the intersection of
two of these). Every ``Outcome`` of a run is then split by each column; the
result is tidy ``Measurement`` rows (group feature, group value, metric,
value, n, bootstrap CI).

This is the lower layer: ``metrics.slices`` builds on its binning and missing
policy, and ``metrics.bias`` runs groups, disparity and slices for a run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.core.errors import DataError
from benchmark.core.registry import Registry
from benchmark.core.specs import FeatureSpec, GroupsSpec
from benchmark.core.types import EvalSet, Measurement, Outcome
from metrics.properties import compute_properties

log = logging.getLogger(__name__)

MISSING_VALUE = "missing"
MISSING_POLICIES = ("error", "group")

MSG_TOO_SMALL = (
    "group has {n} samples, fewer than the minimum group size {min_size}; left out of "
    "overall, worst group, difference and ratio"
)
MSG_MISSING = (
    "Group feature {feature!r}: expected a value for every sample, but {count} sample(s) have "
    "none (first at index {first}); set groups.missing=group to report them as a "
    "'missing' group."
)
MSG_UNKNOWN_COLUMN = (
    "Group feature {feature!r}: expected a column {column!r} in {source}, but its columns are: "
    "{valid}."
)
MSG_CSV_UNREADABLE = "Group feature {feature!r}: could not read {path!r} as CSV ({reason})."
MSG_CSV_LENGTH = (
    "Group feature {feature!r}: expected {path!r} to have one row per sample ({n}), but it has "
    "{rows}; give `on: COLUMN` to join by a sample id instead."
)
MSG_CSV_DUPLICATE_KEYS = (
    "Group feature {feature!r}: expected unique values in join column {on!r} of {path!r}, but "
    "{key!r} occurs more than once."
)

ACCURACY_GROUP_DEFINITION = (
    "fraction correct within the group (fairlearn MetricFrame); CI: {ci:.0%} percentile "
    "bootstrap over samples, {n_boot} resamples (fairlearn n_boot/ci_quantiles)"
)
SUMMARY_DEFINITIONS: dict[str, str] = {
    "accuracy_overall": "accuracy over the samples of groups with at least the minimum size",
    "accuracy_worst_group": "lowest group accuracy (MetricFrame.group_min); group_value names it",
    "accuracy_best_group": "highest group accuracy (MetricFrame.group_max); group_value names it",
    "accuracy_difference_between_groups": "max - min group accuracy (MetricFrame.difference)",
    "accuracy_difference_to_overall": "largest |group - overall| accuracy "
    "(MetricFrame.difference, method=to_overall)",
    "accuracy_ratio_between_groups": "min / max group accuracy (MetricFrame.ratio)",
    "accuracy_ratio_to_overall": "smallest group/overall ratio, either way round "
    "(MetricFrame.ratio, method=to_overall)",
}
BINARY_DEFINITIONS: dict[str, str] = {
    "demographic_parity_difference": "fairlearn demographic_parity_difference of the "
    "predictions (positive class: index 1), between groups",
    "equalized_odds_difference": "fairlearn equalized_odds_difference of the predictions "
    "(positive class: index 1), between groups",
}


# ---------------------------------------------------------------- columns


def bin_values(values: np.ndarray, *, bins: int | None = None,
               edges: Sequence[float] | None = None) -> pd.Series:
    """Quantile bins (``Qk [lo, hi)``) or bins between cut points
    (``< a``, ``[a, b)``, ``>= b``) as string labels; NaN stays missing."""
    v = np.asarray(values, dtype=np.float64)
    out = pd.Series(np.full(len(v), None, dtype=object))
    ok = np.isfinite(v)
    if not ok.any():
        return out
    if edges is not None:
        cuts = np.asarray(edges, dtype=np.float64)
        labels = [f"< {cuts[0]:.3g}"]
        labels += [f"[{a:.3g}, {b:.3g})" for a, b in zip(cuts, cuts[1:], strict=False)]
        labels.append(f">= {cuts[-1]:.3g}")
        idx = np.searchsorted(cuts, v[ok], side="right")
    else:
        if bins is None or bins < 2:
            raise ValueError(f"Expected `bins` to be an integer >= 2, but got {bins}.")
        q = np.unique(np.quantile(v[ok], np.linspace(0.0, 1.0, bins + 1)))
        if len(q) < 2:
            labels = [f"Q1 [{q[0]:.3g}, {q[0]:.3g}]"]
            idx = np.zeros(int(ok.sum()), dtype=int)
        else:
            labels = [
                f"Q{i + 1} [{a:.3g}, {b:.3g}{']' if i == len(q) - 2 else ')'}"
                for i, (a, b) in enumerate(zip(q, q[1:], strict=False))
            ]
            idx = np.searchsorted(q[1:-1], v[ok], side="right")
    out[ok] = np.asarray(labels, dtype=object)[idx]
    return out


class FeatureContext:
    """What feature builders share: the data and its (lazily computed) properties."""

    def __init__(self, data: EvalSet, properties: dict[str, np.ndarray] | None = None) -> None:
        self.data = data
        self._props: dict[str, np.ndarray] = dict(properties or {})

    def property(self, name: str) -> np.ndarray:
        if name not in self._props:
            self._props.update(compute_properties(self.data.x, [name]))
        return self._props[name]


FeatureBuilder = Callable[[FeatureSpec, FeatureContext], pd.Series]
FEATURE_KINDS: Registry[FeatureBuilder] = Registry("group feature kind")


def register_feature_kind(kind: str) -> Callable[[FeatureBuilder], FeatureBuilder]:
    """Register a builder of sensitive-feature columns; a duplicate kind raises."""
    return FEATURE_KINDS.register(kind)


@register_feature_kind("label")
def _label_feature(spec: FeatureSpec, ctx: FeatureContext) -> pd.Series:
    names = np.asarray(ctx.data.classes, dtype=object)
    return pd.Series(names[ctx.data.y.numpy()], dtype=object)


def _read_csv(spec: FeatureSpec, path: str) -> pd.DataFrame:
    try:
        return pd.read_csv(Path(path).expanduser())
    except (OSError, ValueError) as exc:
        raise DataError(MSG_CSV_UNREADABLE.format(feature=spec.name, path=path,
                                                  reason=exc)) from None


def _column(frame: pd.DataFrame, column: str, spec: FeatureSpec, source: str) -> pd.Series:
    if column not in frame.columns:
        raise DataError(MSG_UNKNOWN_COLUMN.format(
            feature=spec.name, column=column, source=source,
            valid=", ".join(map(str, frame.columns)) or "(none)"))
    return frame[column]


@register_feature_kind("metadata")
def _metadata_feature(spec: FeatureSpec, ctx: FeatureContext) -> pd.Series:
    data, column = ctx.data, str(spec.column)
    if spec.csv is None:
        col = _column(data.groups, column, spec, f"the group columns of dataset {data.name!r}")
        return col.reset_index(drop=True).astype(object)
    table = _read_csv(spec, spec.csv)
    values = _column(table, column, spec, repr(spec.csv))
    if spec.on is None:
        if len(table) != len(data):
            raise DataError(MSG_CSV_LENGTH.format(feature=spec.name, path=spec.csv, n=len(data),
                                                  rows=len(table)))
        return values.reset_index(drop=True).astype(object)
    keys = _column(table, spec.on, spec, repr(spec.csv))
    dup = keys[keys.duplicated()]
    if len(dup):
        raise DataError(MSG_CSV_DUPLICATE_KEYS.format(feature=spec.name, on=spec.on,
                                                      path=spec.csv, key=dup.tolist()[0]))
    ours = _column(data.groups, spec.on, spec, f"the group columns of dataset {data.name!r}")
    lookup = dict(zip(keys.astype(str), values, strict=True))
    return pd.Series([lookup.get(str(k)) for k in ours], dtype=object)


@register_feature_kind("property")
def _property_feature(spec: FeatureSpec, ctx: FeatureContext) -> pd.Series:
    return bin_values(ctx.property(str(spec.property)), bins=spec.bins, edges=spec.edges)


def _is_missing(col: pd.Series) -> np.ndarray:
    return np.asarray(col.isna(), dtype=bool)


def apply_missing_policy(name: str, col: pd.Series, policy: str) -> pd.Series:
    """Raise on missing values (``error``) or label them ``missing`` (``group``);
    every other value becomes its string form."""
    miss = _is_missing(col)
    if miss.any() and policy == "error":
        raise DataError(MSG_MISSING.format(feature=name, count=int(miss.sum()),
                                           first=int(np.flatnonzero(miss)[0])))
    out = col.astype(object).map(str)
    out[miss] = MISSING_VALUE
    return out.reset_index(drop=True)


def sensitive_features(spec: GroupsSpec, data: EvalSet,
                       properties: dict[str, np.ndarray] | None = None) -> dict[str, pd.Series]:
    """Each configured group feature as a string column aligned with ``data``."""
    ctx = FeatureContext(data, properties)
    cols: dict[str, pd.Series] = {}
    for f in spec.features:
        if f.kind == "intersection":
            continue
        cols[f.name] = apply_missing_policy(f.name, FEATURE_KINDS.get(f.kind)(f, ctx), spec.missing)
    for f in spec.features:
        if f.kind == "intersection":
            a, b = cols[f.of[0]], cols[f.of[1]]
            cols[f.name] = (a + " & " + b).astype(object)
    return {f.name: cols[f.name] for f in spec.features}


def check_groups(spec: GroupsSpec | None, data: EvalSet) -> None:
    """Resolve the metadata group columns now, so a wrong column or file stops
    the run before any threat is evaluated."""
    if spec is None:
        return
    ctx = FeatureContext(data)
    for f in spec.features:
        if f.kind == "metadata":
            apply_missing_policy(f.name, _metadata_feature(f, ctx), spec.missing)


# ---------------------------------------------------------------- metrics


def _accuracy_of(j: int) -> Callable[[Any, Any], float]:
    """Accuracy of column ``j`` of a stacked prediction matrix (fairlearn
    hands a one-column matrix over as a vector)."""

    def accuracy(y_true: Any, y_pred: Any) -> float:
        pred = np.asarray(y_pred)
        return float(np.mean(np.asarray(y_true) == (pred if pred.ndim == 1 else pred[:, j])))

    return accuracy


def _f(v: Any) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v


def _ci(ci: list[Any] | None, metric: str) -> tuple[float | None, float | None]:
    """(low, high) of ``metric`` from a fairlearn ``*_ci`` result (a list of
    Series indexed by metric); NaN becomes None."""
    if ci is None:
        return None, None
    return _f(ci[0][metric]), _f(ci[-1][metric])


def _row(o: Outcome, feature: str, value: str, metric: str, v: float, n: int,
         ci: tuple[float | None, float | None] = (None, None), definition: str = "") -> Measurement:
    t = o.threat
    return Measurement(model=o.model, version=o.version, family=t.family, threat=t.name,
                       param=t.param, metric=metric, value=float(v), n=int(n),
                       group_feature=feature, group_value=value, ci_low=ci[0], ci_high=ci[1],
                       definition=definition)


def group_metrics(outcomes: Sequence[Outcome], y_true: np.ndarray | Sequence[Any],
                  feature: str, column: pd.Series | np.ndarray | Sequence[Any], *,
                  min_size: int = 20, n_boot: int = 0,
                  ci_quantiles: Sequence[float] = (0.025, 0.975), binary: bool = False,
                  seed: int = 0) -> list[Measurement]:
    """Accuracy and count per group of ``column`` for each outcome, with the
    overall, worst, best, difference and ratio summaries and, when ``n_boot``
    > 0, fairlearn's bootstrap CIs. Groups below ``min_size`` are reported as
    too small and left out of the MetricFrame.

    One MetricFrame serves all outcomes (one metric per outcome over the
    stacked predictions), so every threat shares the same bootstrap resamples.
    """
    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        equalized_odds_difference,
    )

    outcomes = list(outcomes)
    if not outcomes:
        return []
    y = np.asarray(y_true)
    col = pd.Series(np.asarray(column, dtype=object))
    for o in outcomes:
        if not (len(y) == len(o.pred) == len(col)):
            raise ValueError(
                f"Expected `y_true`, the predictions and `column` of equal length, but got "
                f"{len(y)}, {len(o.pred)} and {len(col)}."
            )
    if n_boot < 0:
        raise ValueError(f"Expected `n_boot` to be a non-negative integer, but got {n_boot}.")
    sizes = col.value_counts(sort=False)
    small = sizes[sizes < min_size]
    for g, n in small.items():
        log.warning("Group %s=%s has %d samples (< %d): reported as too small", feature, g, n,
                    min_size)
    rows = [
        _row(o, feature, str(g), "too_small", int(n), int(n),
             definition=MSG_TOO_SMALL.format(n=int(n), min_size=min_size))
        for o in outcomes
        for g, n in sorted(small.items(), key=lambda kv: str(kv[0]))
    ]
    keep = ~col.isin(small.index).to_numpy()
    if not keep.any():
        return rows
    boot = n_boot > 0
    preds = np.stack([np.asarray(o.pred) for o in outcomes], axis=1)[keep]
    names = [f"o{j}" for j in range(len(outcomes))]
    mf = MetricFrame(
        metrics={name: _accuracy_of(j) for j, name in enumerate(names)},
        y_true=y[keep],
        y_pred=preds,
        sensitive_features=col[keep].to_numpy(),
        n_boot=n_boot if boot else None,
        ci_quantiles=list(ci_quantiles) if boot else None,
        random_state=seed if boot else None,
    )
    defn = ACCURACY_GROUP_DEFINITION.format(ci=ci_quantiles[-1] - ci_quantiles[0],
                                            n_boot=n_boot) if boot else (
        "fraction correct within the group (fairlearn MetricFrame); no bootstrap")
    by_group = mf.by_group
    by_ci = mf.by_group_ci if boot else None
    summaries: dict[str, tuple[Any, list[Any] | None]] = {
        "accuracy_overall": (mf.overall, mf.overall_ci if boot else None),
        "accuracy_worst_group": (mf.group_min(), mf.group_min_ci() if boot else None),
        "accuracy_best_group": (mf.group_max(), mf.group_max_ci() if boot else None),
    }
    for kind in ("difference", "ratio"):
        for method in ("between_groups", "to_overall"):
            summaries[f"accuracy_{kind}_{method}"] = (
                getattr(mf, kind)(method=method),
                getattr(mf, f"{kind}_ci")(method=method) if boot else None,
            )
    n_keep = int(keep.sum())
    groups = sorted(by_group.index, key=str)
    for o, name in zip(outcomes, names, strict=True):
        acc = by_group[name]
        for g in groups:
            n = int(sizes[g])
            ci = (_f(by_ci[0].loc[g, name]), _f(by_ci[-1].loc[g, name])) if by_ci else (None, None)
            rows.append(_row(o, feature, str(g), "accuracy", acc[g], n, ci, defn))
            rows.append(_row(o, feature, str(g), "count", n, n,
                             definition="number of samples in the group"))
        where = {"accuracy_worst_group": str(acc.idxmin()),
                 "accuracy_best_group": str(acc.idxmax())}
        for metric, (point, ci_list) in summaries.items():
            rows.append(_row(o, feature, where.get(metric, ""), metric, point[name], n_keep,
                             _ci(ci_list, name), SUMMARY_DEFINITIONS[metric]))
        if binary:
            yt, yp, sf = y[keep], np.asarray(o.pred)[keep], col[keep].to_numpy()
            for metric, fn in (("demographic_parity_difference", demographic_parity_difference),
                               ("equalized_odds_difference", equalized_odds_difference)):
                rows.append(_row(o, feature, "", metric, fn(yt, yp, sensitive_features=sf),
                                 n_keep, definition=BINARY_DEFINITIONS[metric]))
    return rows


def group_measurements(spec: GroupsSpec, data: EvalSet, outcomes: Sequence[Outcome],
                       columns: dict[str, pd.Series], seed: int = 0,
                       num_classes: int | None = None) -> list[Measurement]:
    """Group metrics of every outcome under every configured feature.

    The binary metrics (demographic parity, equalized odds) apply only to a
    binary task: ``num_classes`` (the model versions') == 2, else the data
    set's declared classes -- never the labels that happen to be present.
    """
    y = data.y.numpy()
    binary = (num_classes if num_classes is not None else data.num_classes) == 2
    rows: list[Measurement] = []
    for name, col in columns.items():
        rows += group_metrics(outcomes, y, name, col, min_size=spec.min_size,
                              n_boot=spec.n_boot, ci_quantiles=spec.ci_quantiles,
                              binary=binary, seed=seed)
    return rows

