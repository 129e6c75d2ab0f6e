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
import warnings
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
from metrics.statistics import wilson_intervals

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
    "demographic_parity_difference": "fairlearn demographic_parity_difference: max - min "
    "group selection rate (positive class: index 1)",
    "demographic_parity_ratio": "fairlearn demographic_parity_ratio: min / max group "
    "selection rate (positive class: index 1)",
    "equalized_odds_difference": "fairlearn equalized_odds_difference: the larger of the "
    "between-group TPR and FPR differences (positive class: index 1)",
    "equalized_odds_ratio": "fairlearn equalized_odds_ratio: the smaller of the between-group "
    "TPR and FPR ratios (positive class: index 1)",
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

#: Per-sample counts summed per group (one block of these per outcome).
_COUNTS = ("correct", "pred_pos", "tp", "fp")
#: Counts that depend on the labels only (shared by every outcome).
_LABEL_COUNTS = ("n", "pos", "neg")

#: Group rates of a binary task: metric -> (numerator, denominator) count names.
BINARY_RATES: dict[str, tuple[str, str]] = {
    "selection_rate": ("pred_pos", "n"),
    "true_positive_rate": ("tp", "pos"),
    "false_positive_rate": ("fp", "neg"),
    "false_negative_rate": ("fn", "pos"),
    "precision": ("tp", "pred_pos"),
}
RATE_DEFINITIONS: dict[str, str] = {
    "accuracy": "fraction correct within the group",
    "selection_rate": "fraction of the group predicted positive (class index 1)",
    "true_positive_rate": "fraction of the group's positives predicted positive",
    "false_positive_rate": "fraction of the group's negatives predicted positive",
    "false_negative_rate": "fraction of the group's positives predicted negative",
    "precision": "fraction of the group's positive predictions that are positives",
}


def _count_matrix(y: np.ndarray, preds: np.ndarray, binary: bool) -> np.ndarray:
    """Per-sample count columns: ``n, pos, neg`` then ``correct, pred_pos, tp, fp`` per
    outcome (the binary ones only for a binary task); shape (n, 3 + O * k)."""
    n, n_out = preds.shape
    cols = [np.ones(n), (y == 1).astype(np.float64), (y != 1).astype(np.float64)]
    per = [(preds == y[:, None])]
    if binary:
        pos = preds == 1
        per += [pos, pos & (y == 1)[:, None], pos & (y != 1)[:, None]]
    stacked = np.stack(per, axis=2).reshape(n, n_out * len(per)).astype(np.float64)
    return np.concatenate([np.stack(cols, axis=1), stacked], axis=1)


class _GroupCounts:
    """Group sums of the count matrix, as arrays indexed [..., group, outcome]."""

    def __init__(self, sums: np.ndarray, n_out: int, binary: bool) -> None:
        k = 4 if binary else 1
        self.n, self.pos, self.neg = sums[..., 0], sums[..., 1], sums[..., 2]
        per = sums[..., 3:].reshape(*sums.shape[:-1], n_out, k)
        self.correct = per[..., 0]
        if binary:
            self.pred_pos, self.tp, self.fp = per[..., 1], per[..., 2], per[..., 3]
            self.fn = self.pos[..., None] - self.tp

    def count(self, name: str) -> np.ndarray:
        v = getattr(self, name)
        return v[..., None] if name in _LABEL_COUNTS else v

    def rate(self, num: str, den: str) -> np.ndarray:
        a, b = np.broadcast_arrays(self.count(num), self.count(den))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def _summaries(acc: np.ndarray, overall: np.ndarray) -> dict[str, np.ndarray]:
    """MetricFrame's summaries of group accuracies ``acc`` [..., group, outcome]
    (groups without samples are NaN and ignored) against ``overall`` [..., outcome]."""
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanmin(acc, axis=-2), np.nanmax(acc, axis=-2)
        o = overall[..., None, :]
        to_overall = acc / o  # as MetricFrame.ratio(to_overall): 0/0 is NaN
        to_overall = np.where(to_overall > 1, o / acc, to_overall)
        return {
            "accuracy_overall": overall,
            "accuracy_worst_group": lo,
            "accuracy_best_group": hi,
            "accuracy_difference_between_groups": hi - lo,
            "accuracy_difference_to_overall": np.nanmax(np.abs(acc - o), axis=-2),
            "accuracy_ratio_between_groups": lo / hi,
            "accuracy_ratio_to_overall": np.nanmin(to_overall, axis=-2),
        }


def _between(rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Max - min and min / max of a group rate over groups (axis -2)."""
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanmin(rate, axis=-2), np.nanmax(rate, axis=-2)
        return hi - lo, lo / hi  # as fairlearn: 0/0 is NaN


def _fairness(c: _GroupCounts) -> dict[str, np.ndarray]:
    """fairlearn's demographic parity and equalized odds, difference and ratio.
    As in fairlearn (sklearn's zero_division), a rate with no denominator in a
    group that has samples counts as 0; a group without samples is left out."""
    present = c.n[..., None] > 0

    def rate(num: str, den: str) -> np.ndarray:
        return np.where(present, np.nan_to_num(c.rate(num, den)), np.nan)

    sel_d, sel_r = _between(rate("pred_pos", "n"))
    tpr_d, tpr_r = _between(rate("tp", "pos"))
    fpr_d, fpr_r = _between(rate("fp", "neg"))
    return {
        "demographic_parity_difference": sel_d,
        "demographic_parity_ratio": sel_r,
        "equalized_odds_difference": np.maximum(tpr_d, fpr_d),
        "equalized_odds_ratio": np.minimum(tpr_r, fpr_r),
    }


def _bootstrap_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """How often each sample occurs in each of ``n_boot`` resamples with
    replacement, drawn as fairlearn's MetricFrame draws them (``n_boot``
    uint32 seeds from ``default_rng(seed)``, one pandas ``sample`` each), so
    the CIs equal MetricFrame's own bootstrap; shape (n_boot, n)."""
    seeds = np.random.default_rng(seed).integers(0, np.iinfo(np.uint32).max, size=n_boot,
                                                 dtype=np.uint32)
    w = np.empty((n_boot, n))
    for b, s in enumerate(seeds):
        idx = np.random.RandomState(int(s)).choice(n, size=n, replace=True)
        w[b] = np.bincount(idx, minlength=n)
    return w


def _row(o: Outcome, feature: str, value: str, metric: str, v: float, n: int,
         ci: tuple[float | None, float | None] = (None, None), definition: str = "") -> Measurement:
    t = o.threat
    return Measurement(model=o.model, version=o.version, family=t.family, threat=t.name,
                       param=t.param, metric=metric, value=float(v), n=int(n),
                       group_feature=feature, group_value=value, ci_low=ci[0], ci_high=ci[1],
                       definition=definition)


def _counts_metric(width: int) -> Callable[[Any, Any], np.ndarray]:
    """A MetricFrame metric returning the column sums of the count matrix, which
    travels as ``y_pred``, so one call per group serves every outcome."""

    def counts(y_true: Any, y_pred: Any) -> np.ndarray:
        return np.asarray(y_pred, dtype=np.float64).reshape(-1, width).sum(axis=0)

    return counts


def group_metrics(outcomes: Sequence[Outcome], y_true: np.ndarray | Sequence[Any],
                  feature: str, column: pd.Series | np.ndarray | Sequence[Any], *,
                  min_size: int = 20, n_boot: int = 0,
                  ci_quantiles: Sequence[float] = (0.025, 0.975), binary: bool = False,
                  seed: int = 0) -> list[Measurement]:
    """Per group of ``column`` and for each outcome: accuracy and count and,
    for a binary task, selection rate, TPR, FPR, FNR and precision, each with
    its Wilson interval; the overall, worst, best, difference and ratio
    summaries of accuracy and (binary) demographic parity and equalized odds
    differences and ratios, with percentile bootstrap CIs over samples when
    ``n_boot`` > 0. Groups below ``min_size`` are reported as too small and
    left out of everything else.

    The groups come from one fairlearn ``MetricFrame`` whose single metric sums
    per-sample count columns of every outcome at once; the rates and summaries
    are exact functions of those sums, and the bootstrap draws the resamples
    fairlearn draws for ``random_state=seed``, so the intervals equal
    MetricFrame's own (see ``_bootstrap_weights``).
    """
    from fairlearn.metrics import MetricFrame

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
    confidence = float(ci_quantiles[-1] - ci_quantiles[0])
    preds = np.stack([np.asarray(o.pred) for o in outcomes], axis=1)[keep]
    yk, sf = y[keep], col[keep].to_numpy()
    cm = _count_matrix(yk, preds, binary)
    mf = MetricFrame(metrics={"counts": _counts_metric(cm.shape[1])}, y_true=yk, y_pred=cm,
                     sensitive_features=sf)
    groups = sorted(mf.by_group.index, key=str)
    n_out = len(outcomes)
    by_group = _GroupCounts(np.stack([mf.by_group["counts"][g] for g in groups]), n_out, binary)
    overall = _GroupCounts(np.asarray(mf.overall["counts"])[None], n_out, binary)
    acc = by_group.rate("correct", "n")  # [group, outcome]
    point: dict[str, np.ndarray] = _summaries(acc, overall.rate("correct", "n")[0])
    if binary:
        point.update(_fairness(by_group))
    cis: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if n_boot > 0:
        codes = pd.Categorical(sf, categories=groups).codes
        w = _bootstrap_weights(len(yk), n_boot, seed)  # [boot, sample]
        sums = np.stack([w[:, codes == j] @ cm[codes == j] for j in range(len(groups))],
                        axis=1)  # [boot, group, column]
        boot = _GroupCounts(sums, n_out, binary)
        boot_overall = _GroupCounts(sums.sum(axis=1), n_out, binary)
        b_acc = boot.rate("correct", "n")
        b_acc = np.where(boot.n[..., None] > 0, b_acc, np.nan)
        stats = _summaries(b_acc, boot_overall.rate("correct", "n"))
        if binary:
            stats.update(_fairness(boot))
        for metric, values in stats.items():
            q = np.quantile(values, [ci_quantiles[0], ci_quantiles[-1]], axis=0)
            cis[metric] = (q[0], q[1])
    rates = {"accuracy": ("correct", "n"), **(BINARY_RATES if binary else {})}
    per_group = {m: (by_group.rate(a, b), *np.broadcast_arrays(by_group.count(a),
                                                              by_group.count(b)))
                 for m, (a, b) in rates.items()}
    wilson = {m: wilson_intervals(k, d, confidence) for m, (_, k, d) in per_group.items()}
    n_keep = int(keep.sum())
    for j, o in enumerate(outcomes):
        for i, g in enumerate(groups):
            n = int(sizes[g])
            for metric, (value, _, den) in per_group.items():
                if not den[i, j] > 0:
                    continue
                lo, hi = wilson[metric][0][i, j], wilson[metric][1][i, j]
                rows.append(_row(o, feature, str(g), metric, value[i, j], int(den[i, j]),
                                 (float(lo), float(hi)), RATE_DEFINITIONS[metric] + (
                                     f" (fairlearn MetricFrame); {confidence:.0%} Wilson "
                                     "interval")))
            rows.append(_row(o, feature, str(g), "count", n, n,
                             definition="number of samples in the group"))
        where = {"accuracy_worst_group": str(groups[int(np.nanargmin(acc[:, j]))]),
                 "accuracy_best_group": str(groups[int(np.nanargmax(acc[:, j]))])}
        for metric, values in point.items():
            ci: tuple[float | None, float | None] = (None, None)
            if metric in cis:
                ci = (_f(cis[metric][0][j]), _f(cis[metric][1][j]))
            rows.append(_row(o, feature, where.get(metric, ""), metric, values[j], n_keep, ci,
                             _summary_definition(metric, n_boot, confidence)))
    return rows


def _f(v: Any) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v


def _summary_definition(metric: str, n_boot: int, confidence: float) -> str:
    base = SUMMARY_DEFINITIONS.get(metric) or BINARY_DEFINITIONS[metric]
    if n_boot <= 0:
        return base + "; no CI (groups.n_boot=0)"
    return (f"{base}; CI: {confidence:.0%} percentile bootstrap over samples, {n_boot} "
            "seeded resamples (as fairlearn MetricFrame n_boot/random_state=seed)")


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



#: Outcome columns a group column must not take the name of.
RESERVED_OUTCOME_COLUMNS: tuple[str, ...] = (
    "model", "version", "family", "threat", "param", "sample", "pred", "correct", "label",
)


def outcome_group_column(feature: str, taken: Sequence[str] = RESERVED_OUTCOME_COLUMNS) -> str:
    """The outcome column of a group feature: its name, or ``group:NAME`` where
    the name is already an outcome column."""
    return f"group:{feature}" if feature in taken else feature


def sample_frame(y: np.ndarray, columns: dict[str, pd.Series],
                 extras: Sequence[str] = ()) -> pd.DataFrame:
    """What the outcomes carry per sample besides the threat's results: the
    true ``label`` (class index) and one text column per group feature
    (``outcome_group_column``), in sample order."""
    taken = (*RESERVED_OUTCOME_COLUMNS, *extras)
    frame = pd.DataFrame({"label": np.asarray(y, dtype=np.int64)})
    for name, col in columns.items():
        frame[outcome_group_column(name, taken)] = np.asarray(col, dtype=object)
    return frame
