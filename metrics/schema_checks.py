"""Schema validation of a feature table: is this batch what the model was
built to read, compared with its reference (training) data?

``run_schema_checks(reference, batch, schema)`` runs every registered check
once and returns one ``CheckResult`` per check (pass / warn / fail, with
per-column evidence). The schema is given or inferred from the reference
(``TabularSchema.infer``). Labels (``y_ref``, ``y_batch``, or the target
column when a frame holds it) enable the label checks.

Deterministic checks (columns, dtype, range, categories) fail on any value
the schema forbids (range: beyond a margin, or more than a small share just
outside it). Statistical checks compare the batch with the reference: a rise
in a share (missing values, one value, duplicate rows, whole numbers) fails
when a one-sided two-proportion z-test is significant at a
Bonferroni-corrected level *and* the rise exceeds ``min_rise`` (large samples
make any difference significant). ``correlation_shift`` compares every
pairwise correlation (label included), each with its moment-based standard
error: it catches faults that keep each column's own distribution, such as a
misaligned join (though not on a column independent of every other column
and of the label: shifting it leaves the joint distribution as it was).
Per-feature drift (KS / chi-squared, then Wasserstein / Jensen-Shannon) is
``tabular_drift`` (from ``metrics.drift``, re-exported here).

Array work only, no model: fast enough for production windows (10 000 rows
x 10 columns in well under a second, ``scripts/bench_schema_checks.py``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from benchmark.core.registry import Registry
from benchmark.core.tabular import Column, TabularSchema, category_text
from benchmark.core.types import CheckResult, check_result
from metrics.drift import DriftConfig, FeatureDrift, categorical_drift, tabular_drift

log = logging.getLogger(__name__)

__all__ = ["FeatureDrift", "SchemaCheckConfig", "TABULAR_CHECKS", "TabularContext",
           "infer_schema", "register_schema_check", "run_schema_checks", "schema_check_names",
           "tabular_drift"]

#: The ``subject`` of every schema check result.
SUBJECT = "schema"
#: How many row indices or values a result lists as evidence.
MAX_EVIDENCE = 10
#: The target name of a schema inferred from a reference without labels.
NO_TARGET = "__target__"


@dataclass(frozen=True)
class SchemaCheckConfig:
    """Thresholds of the schema checks.

    ``alpha`` is each statistical check's family-wise level (Bonferroni over
    the columns, values or pairs it tests); ``min_rise`` the smallest rise in
    a share that fails, and ``min_count`` how often a value must repeat in
    the batch to be tested for a spike; ``range_margin`` the share of a
    column's width a value may lie outside its range before one such value
    fails (an inferred range is only what the reference happened to hold),
    and ``max_out_of_range`` the share of rows just outside it that fails
    (with at least ``min_count`` of them: a new sample from the reference's
    distribution lands outside its seen range with chance 2 / (n + 1));
    ``min_correlation_change`` the smallest change of a correlation that
    fails; ``leakage_warn`` / ``leakage_fail`` the balanced accuracy of one
    feature alone predicting the label; ``min_class_share`` the smallest
    share of a class before a warning.
    """

    alpha: float = 0.01
    small_sample: int = 1000
    min_rise: float = 0.02
    min_count: int = 5
    range_margin: float = 0.25
    max_out_of_range: float = 0.02
    min_correlation_change: float = 0.05
    leakage_warn: float = 0.9
    leakage_fail: float = 0.98
    leakage_bins: int = 20
    min_rows_per_bin: int = 10
    min_class_share: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"Expected `alpha` in (0, 1), but got {self.alpha}.")
        for name in ("min_rise", "range_margin", "max_out_of_range", "min_correlation_change",
                     "min_class_share"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"Expected `{name}` in [0, 1), but got {v}.")
        if not 0.5 < self.leakage_warn <= self.leakage_fail <= 1.0:
            raise ValueError("Expected 0.5 < `leakage_warn` <= `leakage_fail` <= 1, but got "
                             f"{self.leakage_warn} and {self.leakage_fail}.")
        for name in ("small_sample", "min_count", "leakage_bins", "min_rows_per_bin"):
            if getattr(self, name) < 1:
                raise ValueError(f"Expected `{name}` to be a positive integer, but got "
                                 f"{getattr(self, name)}.")


@dataclass
class TabularContext:
    """What the checks look at, computed once: both frames, the schema columns
    present in both, their encoded values (``TabularSchema.encode``: numbers,
    or category codes; NaN when missing or not a valid value) and the labels
    as codes over the classes of both sides."""

    reference: pd.DataFrame
    batch: pd.DataFrame
    schema: TabularSchema
    cfg: SchemaCheckConfig
    columns: list[Column] = field(default_factory=list)
    x_ref: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    x_new: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    y_ref: np.ndarray | None = None
    y_new: np.ndarray | None = None
    classes: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, reference: pd.DataFrame, batch: pd.DataFrame, schema: TabularSchema,
              cfg: SchemaCheckConfig, y_ref: Any = None, y_batch: Any = None) -> TabularContext:
        cols = [c for c in schema.columns if c.name in reference.columns
                and c.name in batch.columns]
        sub = TabularSchema(columns=tuple(cols), target=schema.target, classes=schema.classes)
        ctx = cls(reference, batch, schema, cfg, cols, sub.encode(reference).astype(np.float64),
                  sub.encode(batch).astype(np.float64))
        labels = [_labels(y, f, schema.target, what, schema.classes)
                  for y, f, what in ((y_ref, reference, "y_ref"), (y_batch, batch, "y_batch"))]
        known = [lab for lab in labels if lab is not None]
        if known:
            ctx.classes = sorted(set(schema.classes) | {t for _, texts in known for t in texts})
            index = {t: i for i, t in enumerate(ctx.classes)}
            ctx.y_ref, ctx.y_new = (
                None if lab is None else
                np.array([index[t] for t in lab[1]], dtype=np.int64)[lab[0]]
                for lab in labels)
        return ctx

    def level(self, n_tests: int) -> float:
        return self.cfg.alpha / max(1, n_tests)


def _labels(y: Any, frame: pd.DataFrame, target: str, what: str,
            classes: Sequence[str] = ()) -> tuple[np.ndarray, list[str]] | None:
    """Labels as (codes, the text of each code), from ``y`` or the frame's
    target column; None when neither is there. Integer labels that are not
    class names are read as indices into ``classes`` (an EvalSet's ``y``)."""
    if y is None:
        if target not in frame.columns:
            return None
        y = frame[target]
    values = pd.Series(np.asarray(y, dtype=object).reshape(-1))
    if len(values) != len(frame):
        raise ValueError(f"Expected `{what}` to have one label per row ({len(frame)}), but got "
                         f"{len(values)}.")
    codes, uniques = pd.factorize(values)
    if (codes < 0).any():
        raise ValueError(f"Expected `{what}` to have no missing labels, but got "
                         f"{int((codes < 0).sum())}.")
    texts = category_text(list(uniques))
    if classes and not set(texts) <= set(classes) and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
            and 0 <= int(v) < len(classes) for v in uniques):
        texts = [classes[int(v)] for v in uniques]  # class codes, as an EvalSet's y holds them
    return np.asarray(codes, dtype=np.int64), texts


CheckFn = Callable[[TabularContext], CheckResult]


@dataclass(frozen=True)
class TabularCheck:
    """One registered check: its name, function and what it checks."""

    name: str
    fn: CheckFn
    doc: str


TABULAR_CHECKS: Registry[TabularCheck] = Registry("schema check")


def register_schema_check(name: str) -> Callable[[CheckFn], CheckFn]:
    """Register ``fn(context) -> CheckResult`` as check ``name``; a duplicate raises."""
    TABULAR_CHECKS.check_new(name)

    def deco(fn: CheckFn) -> CheckFn:
        doc = (fn.__doc__ or "").strip().split("\n\n")[0]
        TABULAR_CHECKS.add(name, TabularCheck(name, fn, " ".join(doc.split())))
        return fn

    return deco


def schema_check_names() -> list[str]:
    """The registered checks, in the order they run."""
    return list(TABULAR_CHECKS)


def infer_schema(reference: pd.DataFrame, target: str | None = None,
                 **kwargs: Any) -> TabularSchema:
    """The schema of ``reference`` (``TabularSchema.infer``); without a target
    every column is a feature."""
    if target is None or target not in reference.columns:
        return TabularSchema.infer(reference.assign(**{NO_TARGET: 0}), NO_TARGET, **kwargs)
    return TabularSchema.infer(reference, target, **kwargs)


def run_schema_checks(reference: pd.DataFrame, batch: pd.DataFrame,
                      schema: TabularSchema | None = None, y_ref: Any = None,
                      y_batch: Any = None, *, cfg: SchemaCheckConfig | None = None,
                      skip: Iterable[str] = (), target: str | None = None
                      ) -> list[CheckResult]:
    """Every schema check of ``batch`` against ``reference`` (raw frames), one
    result each, in registration order; ``skip`` names checks not to run.
    Without a ``schema`` it is inferred from ``reference`` (``target``, if
    given, is its label column rather than a feature)."""
    for what, f in (("reference", reference), ("batch", batch)):
        if not isinstance(f, pd.DataFrame):
            raise ValueError(f"Expected `{what}` to be a pandas DataFrame, but got "
                             f"{type(f).__name__}.")
    if schema is None:
        schema = infer_schema(reference, target)
    elif not isinstance(schema, TabularSchema):
        raise ValueError(f"Expected `schema` to be a TabularSchema or None, but got "
                         f"{type(schema).__name__}.")
    skipped = set(skip)
    unknown = sorted(skipped - set(TABULAR_CHECKS))
    if unknown:
        raise ValueError(f"Expected `skip` among {schema_check_names()}, but got {unknown}.")
    ctx = TabularContext.build(reference, batch, schema, cfg or SchemaCheckConfig(), y_ref,
                               y_batch)
    results = [c.fn(ctx) for name, c in TABULAR_CHECKS.items() if name not in skipped]
    log.info("schema checks: %s", ", ".join(f"{r.check}={r.status}" for r in results))
    return results


# -- helpers -----------------------------------------------------------------------------


def _result(name: str, status: str, message: str, **evidence: Any) -> CheckResult:
    return check_result(name, status, message, SUBJECT, **evidence)


def _rise(k_ref: Any, n_ref: int, k_new: Any, n_new: int, level: float,
          min_rise: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whether a share rose from ``k_ref / n_ref`` to ``k_new / n_new``: the
    one-sided pooled two-proportion z-test's p-value is below ``level`` and the
    rise exceeds ``min_rise``. Returns (failed, rise, p-value), vectorised."""
    from scipy.special import ndtr

    kr = np.asarray(k_ref, dtype=np.float64)
    kn = np.asarray(k_new, dtype=np.float64)
    n1, n2 = max(1, n_ref), max(1, n_new)
    p1, p2 = kr / n1, kn / n2
    pooled = (kr + kn) / (n1 + n2)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = np.where(se > 0, (p2 - p1) / np.where(se > 0, se, 1.0), 0.0)
    p = 1.0 - ndtr(z)
    rise = p2 - p1
    return (p < level) & (rise > min_rise), rise, p


def _status(fails: Sequence[Any], warns: Sequence[Any] = ()) -> str:
    return "fail" if fails else "warn" if warns else "pass"


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(items[:MAX_EVIDENCE])
    return shown + (f" and {len(items) - MAX_EVIDENCE} more" if len(items) > MAX_EVIDENCE else "")


def _round(v: Any) -> float:
    return float(round(float(v), 4))


# -- the checks -----------------------------------------------------------------------------


@register_schema_check("columns")
def check_columns(ctx: TabularContext) -> CheckResult:
    """Every schema column is in the batch and in the reference."""
    names = ctx.schema.names
    missing = [n for n in names if n not in ctx.batch.columns]
    missing_ref = [n for n in names if n not in ctx.reference.columns]
    extra = [str(c) for c in ctx.batch.columns if c not in names and c != ctx.schema.target]
    ev = {"missing": missing, "missing_in_reference": missing_ref, "extra": extra}
    if missing or missing_ref:
        where = ([f"batch lacks {_listed(missing)}"] if missing else []) + (
            [f"reference lacks {_listed(missing_ref)}"] if missing_ref else [])
        return _result("columns", "fail", f"schema columns missing: {'; '.join(where)}.",
                       failed=missing + missing_ref, **ev)
    return _result("columns", "pass", f"all {len(names)} schema columns present"
                   + (f" ({len(extra)} extra ignored)." if extra else "."), failed=[], **ev)


@register_schema_check("dtype")
def check_dtype(ctx: TabularContext) -> CheckResult:
    """Numeric columns hold numbers, integer columns whole numbers, and a
    real-valued column has not turned into whole numbers (a truncating cast)."""
    problems: dict[str, str] = {}
    per: dict[str, Any] = {}
    level = ctx.level(sum(c.kind == "numeric" for c in ctx.columns))
    for j, c in enumerate(ctx.columns):
        if not c.is_numeric:
            continue
        raw = ctx.batch[c.name]
        v = ctx.x_new[:, j]
        unparsable = (raw.notna() & pd.to_numeric(raw, errors="coerce").isna()).to_numpy()
        fin = v[np.isfinite(v)]
        info: dict[str, Any] = {"reference_dtype": str(ctx.reference[c.name].dtype),
                                "batch_dtype": str(raw.dtype)}
        if unparsable.any():
            bad = category_text(list(raw[unparsable].unique()[:MAX_EVIDENCE]))
            problems[c.name] = f"{int(unparsable.sum())} values are not numbers ({bad})"
            info["not_numbers"] = bad
        if c.kind == "integer":
            frac = fin != np.rint(fin)
            if frac.any():
                problems.setdefault(c.name, f"{int(frac.sum())} of {fin.size} values of an "
                                    "integer column are not whole")
                info["not_whole"] = int(frac.sum())
        else:
            r = ctx.x_ref[:, j]
            r = r[np.isfinite(r)]
            k_ref = int((r == np.rint(r)).sum())
            k_new = int((fin == np.rint(fin)).sum())
            failed, _, p = _rise(k_ref, r.size, k_new, fin.size, level, ctx.cfg.min_rise)
            info.update(whole_share_reference=_round(k_ref / max(1, r.size)),
                        whole_share_batch=_round(k_new / max(1, fin.size)), p_value=float(p))
            if bool(failed) and k_new >= ctx.cfg.min_count:
                problems.setdefault(c.name, f"{k_new / fin.size:.0%} whole numbers, the "
                                    f"reference {k_ref / max(1, r.size):.0%} (truncated?)")
        per[c.name] = info
    if problems:
        return _result("dtype", "fail", "; ".join(f"{k}: {v}" for k, v in problems.items())
                       + ".", failed=sorted(problems), columns=per)
    return _result("dtype", "pass", f"{len(per)} numeric columns hold numbers of their kind.",
                   failed=[], columns=per)


@register_schema_check("range")
def check_range(ctx: TabularContext) -> CheckResult:
    """Numbers within each column's range: fails on a value beyond the range
    by more than ``range_margin`` of its width, or on more than
    ``max_out_of_range`` of the rows (and at least ``min_count``) outside it;
    warns on fewer."""
    fails: dict[str, str] = {}
    warns: dict[str, str] = {}
    per: dict[str, Any] = {}
    for j, c in enumerate(ctx.columns):
        if not c.is_numeric or (c.low is None and c.high is None):
            continue
        lo = -math.inf if c.low is None else float(c.low)
        hi = math.inf if c.high is None else float(c.high)
        if math.isfinite(hi - lo) and hi > lo:
            width = hi - lo
        else:
            width = max([abs(b) for b in (lo, hi) if math.isfinite(b)] + [1.0])
        m = ctx.cfg.range_margin * width
        v = ctx.x_new[:, j]
        seen = ~np.isnan(v)
        out = seen & ((v < lo) | (v > hi))
        far = seen & ((v < lo - m) | (v > hi + m))
        share = float(out.sum()) / max(1, int(seen.sum()))
        per[c.name] = {"low": c.low, "high": c.high, "out_of_range": int(out.sum()),
                       "share": _round(share), "far": int(far.sum()),
                       "min": float(np.nanmin(v)) if seen.any() else None,
                       "max": float(np.nanmax(v)) if seen.any() else None,
                       "rows": np.flatnonzero(out)[:MAX_EVIDENCE].tolist()}
        if not out.any():
            continue
        text = (f"{int(out.sum())} values ({share:.1%}) outside [{lo:g}, {hi:g}], seen "
                f"[{np.nanmin(v):.4g}, {np.nanmax(v):.4g}]")
        many = int(out.sum()) >= ctx.cfg.min_count and share > ctx.cfg.max_out_of_range
        (fails if far.any() or many else warns)[c.name] = text
    msgs = fails or warns
    if msgs:
        return _result("range", _status(list(fails), list(warns)),
                       "; ".join(f"{k}: {v}" for k, v in msgs.items()) + ".",
                       failed=sorted(fails), warned=sorted(warns), columns=per)
    return _result("range", "pass", f"{len(per)} numeric columns within their ranges.",
                   failed=[], warned=[], columns=per)


@register_schema_check("categories")
def check_categories(ctx: TabularContext) -> CheckResult:
    """Categorical values among the schema's categories (a renamed, re-cased
    or padded category is a new one)."""
    sub = TabularSchema(columns=tuple(c for c in ctx.columns if not c.is_numeric),
                        target=ctx.schema.target)
    bad = sub.unknown_values(ctx.batch)
    per: dict[str, Any] = {}
    for name, values in bad.items():
        text = pd.Series(category_text(ctx.batch[name].dropna().tolist()), dtype=object)
        per[name] = {"unknown": [repr(v) for v in values[:MAX_EVIDENCE]],
                     "rows": int(text.isin(values).sum()),
                     "allowed": list(ctx.schema.column(name).categories)[:MAX_EVIDENCE]}
    if per:
        return _result("categories", "fail", "; ".join(
            f"{k}: {v['rows']} rows with values not in the schema ({', '.join(v['unknown'])})"
            for k, v in per.items()) + ".", failed=sorted(per), columns=per)
    return _result("categories", "pass", f"{len(sub.columns)} categorical columns hold only "
                   "their categories.", failed=[], columns={})


@register_schema_check("missing_rate")
def check_missing_rate(ctx: TabularContext) -> CheckResult:
    """No column's share of missing values rose above the reference's."""
    if not ctx.columns:
        return _result("missing_rate", "pass", "no columns to compare.", failed=[], columns={})
    names = [c.name for c in ctx.columns]
    k_ref = ctx.reference[names].isna().sum().to_numpy()
    k_new = ctx.batch[names].isna().sum().to_numpy()
    failed, _, p = _rise(k_ref, len(ctx.reference), k_new, len(ctx.batch),
                         ctx.level(len(names)), ctx.cfg.min_rise)
    per = {n: {"reference": _round(k_ref[i] / max(1, len(ctx.reference))),
               "batch": _round(k_new[i] / max(1, len(ctx.batch))), "p_value": float(p[i])}
           for i, n in enumerate(names)}
    bad = [n for i, n in enumerate(names) if failed[i]]
    if bad:
        return _result("missing_rate", "fail", "; ".join(
            f"{n}: missing {per[n]['reference']:.1%} -> {per[n]['batch']:.1%}" for n in bad)
            + ".", failed=bad, columns=per)
    return _result("missing_rate", "pass", "no rise in missing values.", failed=[], columns=per)


@register_schema_check("constant_columns")
def check_constant_columns(ctx: TabularContext) -> CheckResult:
    """No column stuck at one value where the reference varies (unless a batch
    this small would often be constant by chance); warns on columns constant
    in the reference itself."""
    fails: list[str] = []
    warns: list[str] = []
    per: dict[str, Any] = {}
    level = ctx.level(len(ctx.columns))
    for j, c in enumerate(ctx.columns):
        r, v = ctx.x_ref[:, j], ctx.x_new[:, j]
        r, v = r[~np.isnan(r)], v[~np.isnan(v)]
        _, counts = np.unique(r, return_counts=True)
        n_new = len(np.unique(v))
        if len(counts) <= 1:
            warns.append(c.name)
            per[c.name] = {"reference_values": len(counts), "batch_values": n_new}
            continue
        shares = counts / counts.sum()
        chance = float(np.sum(shares ** len(v))) if len(v) else 1.0
        per[c.name] = {"reference_values": len(counts), "batch_values": n_new,
                       "chance_constant": chance}
        if n_new == 1 and chance < level:
            fails.append(c.name)
    if fails or warns:
        parts = [f"{n}: one value on all {len(ctx.batch)} rows (the reference has "
                 f"{per[n]['reference_values']})" for n in fails]
        parts += [f"{n}: constant in the reference" for n in warns]
        return _result("constant_columns", _status(fails, warns), "; ".join(parts) + ".",
                       failed=fails, warned=warns, columns=per)
    return _result("constant_columns", "pass", "no stuck columns.", failed=[], warned=[],
                   columns=per)


@register_schema_check("value_spike")
def check_value_spike(ctx: TabularContext) -> CheckResult:
    """No single value's share rose (a sentinel, a default, a stale value or
    nulls imputed as 0): every value seen at least ``min_count`` times in the
    batch is tested against its share in the reference."""
    per_col: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, int, int]] = []
    for j, c in enumerate(ctx.columns):
        r, v = ctx.x_ref[:, j], ctx.x_new[:, j]
        r, v = r[~np.isnan(r)], v[~np.isnan(v)]
        if not len(r) or not len(v):
            continue
        vals, k_new = np.unique(v, return_counts=True)
        keep = k_new >= ctx.cfg.min_count
        vals, k_new = vals[keep], k_new[keep]
        rs = np.sort(r)
        k_ref = np.searchsorted(rs, vals, side="right") - np.searchsorted(rs, vals, side="left")
        if len(vals):
            per_col.append((c.name, vals, k_ref, k_new, len(r), len(v)))
    n_tests = sum(len(t[1]) for t in per_col)
    if not n_tests:
        return _result("value_spike", "pass", "no repeated values to compare.", failed=[],
                       spikes=[])
    level = ctx.level(n_tests)
    spikes: list[dict[str, Any]] = []
    for name, vals, k_ref, k_new, n_ref, n_new in per_col:
        failed, rise, p = _rise(k_ref, n_ref, k_new, n_new, level, ctx.cfg.min_rise)
        col = ctx.schema.column(name)
        for i in np.flatnonzero(failed):
            value: Any = float(vals[i]) if col.is_numeric else col.categories[int(vals[i])]
            spikes.append({"column": name, "value": value,
                           "reference": _round(k_ref[i] / n_ref),
                           "batch": _round(k_new[i] / n_new), "p_value": float(p[i]),
                           "rise": float(rise[i])})
    if spikes:
        spikes.sort(key=lambda s: -float(s["rise"]))
        failed_cols = sorted({str(s["column"]) for s in spikes})
        return _result("value_spike", "fail", "; ".join(
            f"{s['column']}={s['value']!r}: {s['reference']:.1%} -> {s['batch']:.1%}"
            for s in spikes[:3]) + ".", failed=failed_cols, spikes=spikes[:MAX_EVIDENCE])
    return _result("value_spike", "pass", f"no value's share rose ({n_tests} tested).",
                   failed=[], spikes=[])


def _duplicates(x: np.ndarray) -> np.ndarray:
    """Whether each row repeats an earlier one (NaN equal to NaN)."""
    if not len(x):
        return np.zeros(0, dtype=bool)
    return pd.DataFrame(x).duplicated().to_numpy()


@register_schema_check("duplicates")
def check_duplicates(ctx: TabularContext) -> CheckResult:
    """The share of rows repeating an earlier row did not rise above the
    reference's, both measured on samples of the same size (duplicates grow
    with the sample)."""
    n = min(len(ctx.x_ref), len(ctx.x_new))
    if n < 2:
        return _result("duplicates", "pass", "too few rows to compare.", failed=[])
    g = np.random.default_rng(ctx.cfg.seed)

    def sample(x: np.ndarray) -> np.ndarray:
        return x if len(x) == n else x[np.sort(g.choice(len(x), size=n, replace=False))]

    k_ref = int(_duplicates(sample(ctx.x_ref)).sum())
    k_new = int(_duplicates(sample(ctx.x_new)).sum())
    dup = _duplicates(ctx.x_new)
    failed, _, p = _rise(k_ref, n, k_new, n, ctx.cfg.alpha, ctx.cfg.min_rise)
    ev = {"reference_share": _round(k_ref / n), "batch_share": _round(k_new / n),
          "compared_rows": n, "batch_duplicates": int(dup.sum()), "p_value": float(p),
          "rows": np.flatnonzero(dup)[:MAX_EVIDENCE].tolist()}
    text = f"{k_new / n:.1%} of {n} rows repeat an earlier row, the reference {k_ref / n:.1%}."
    if bool(failed):
        return _result("duplicates", "fail", text, failed=["rows"], **ev)
    return _result("duplicates", "pass", text, failed=[], **ev)


def _correlations(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlations of the columns (missing values at the column
    mean; NaN for a constant column) and each one's asymptotic variance
    times n, from the fourth moments (the delta method; it is (1 - r^2)^2
    for normal data, but binary and skewed columns differ)."""
    x = np.array(x, dtype=np.float64, copy=True)
    missing = np.isnan(x)
    if missing.any():
        with np.errstate(all="ignore"):
            mean = np.nan_to_num(np.nanmean(x, axis=0))
        x = np.where(missing, mean[None, :], x)
    n = max(1, len(x))
    x -= x.mean(0, keepdims=True)
    sd = np.sqrt((x ** 2).mean(0))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = x / np.where(sd > 0, sd, np.nan)
        r = np.clip(z.T @ z / n, -1.0, 1.0)
        z2, z3 = z ** 2, z ** 3
        m22 = z2.T @ z2 / n
        m31 = z3.T @ z / n
        m40 = (z2 ** 2).mean(0)
        var = (m22 + r ** 2 / 4 * (m40[:, None] + m40[None, :] + 2 * m22)
               - r * (m31 + m31.T))
    return r, np.maximum(var, 1e-12)


@register_schema_check("correlation_shift")
def check_correlation_shift(ctx: TabularContext) -> CheckResult:
    """No pairwise correlation (label included) changed: a two-sample z test
    with each correlation's moment-based standard error at a Bonferroni level,
    and a change of at least ``min_correlation_change`` (catches a misaligned
    join, swapped columns or a reordered vocabulary, which can keep every
    column's own distribution)."""
    from scipy.special import ndtr

    names = [c.name for c in ctx.columns]
    xr, xn = ctx.x_ref, ctx.x_new
    if ctx.y_ref is not None and ctx.y_new is not None and len(ctx.classes) == 2:
        names = [*names, "label"]
        xr = np.column_stack([xr, ctx.y_ref])
        xn = np.column_stack([xn, ctx.y_new])
    n1, n2 = len(xr), len(xn)
    if len(names) < 2 or min(n1, n2) < 10:
        return _result("correlation_shift", "pass", "too few columns or rows to compare.",
                       failed=[], pairs=[])
    (c1, v1), (c2, v2) = _correlations(xr), _correlations(xn)
    iu = np.triu_indices(len(names), k=1)
    r1, r2 = c1[iu], c2[iu]
    ok = np.isfinite(r1) & np.isfinite(r2) & np.isfinite(v1[iu]) & np.isfinite(v2[iu])
    se = np.sqrt(np.nan_to_num(v1[iu]) / n1 + np.nan_to_num(v2[iu]) / n2)
    ok &= se > 0
    diff = np.abs(np.nan_to_num(r1 - r2))
    p = 2 * (1 - ndtr(np.where(ok, diff / np.where(ok, se, 1.0), 0.0)))
    level = ctx.level(int(ok.sum()))
    failed = ok & (p < level) & (diff >= ctx.cfg.min_correlation_change)
    pairs: list[dict[str, Any]] = []
    for k in np.flatnonzero(failed):
        pairs.append({"pair": [names[int(iu[0][k])], names[int(iu[1][k])]],
                      "reference": _round(r1[k]), "batch": _round(r2[k]),
                      "p_value": float(p[k])})
    pairs.sort(key=lambda d: -abs(float(d["reference"]) - float(d["batch"])))
    if pairs:
        counts = pd.Series([n for d in pairs for n in d["pair"]]).value_counts()
        shown = "; ".join(f"{d['pair'][0]}~{d['pair'][1]} {d['reference']:+.2f} -> "
                          f"{d['batch']:+.2f}" for d in pairs[:3])
        return _result("correlation_shift", "fail", f"{len(pairs)} correlations changed, most "
                       f"around {_listed([str(v) for v in counts.index[:3]])}: {shown}.",
                       failed=[str(v) for v in counts.index], pairs=pairs[:MAX_EVIDENCE])
    return _result("correlation_shift", "pass", f"{int(ok.sum())} correlations unchanged.",
                   failed=[], pairs=[])


def _single_feature_accuracy(x: np.ndarray, y: np.ndarray, edges: np.ndarray | None) -> float:
    """Balanced accuracy of predicting ``y`` by the majority label of each of
    ``x``'s values (numbers: the bins between ``edges``; missing: one bin)."""
    if edges is not None:
        b = np.where(np.isnan(x), len(edges) + 1, np.searchsorted(edges, x, side="right"))
    else:
        b = np.where(np.isnan(x), -1, x).astype(np.int64)
        b = b - b.min(initial=0)
    b = b.astype(np.int64)
    k = int(y.max(initial=0)) + 1
    nb = int(b.max(initial=0)) + 1
    table = np.bincount(b * k + y, minlength=nb * k).reshape(nb, k)
    pred = table.argmax(1)
    per_class = np.bincount(pred, weights=table[np.arange(nb), pred], minlength=k)
    sizes = np.bincount(y, minlength=k)
    present = sizes > 0
    return float(np.mean(per_class[present] / sizes[present]))


@register_schema_check("label_leakage")
def check_label_leakage(ctx: TabularContext) -> CheckResult:
    """No feature alone predicts the label (a target leaked into the
    features): the balanced accuracy of each feature's per-value (or
    per-bin) majority label, on each side that has labels."""
    if ctx.y_ref is None and ctx.y_new is None:
        return _result("label_leakage", "pass", "skipped: no labels.", skipped=True, failed=[])
    cfg = ctx.cfg
    per: dict[str, dict[str, float]] = {}
    fails: list[str] = []
    warns: list[str] = []
    for j, c in enumerate(ctx.columns):
        edges = None
        if c.is_numeric:
            r = ctx.x_ref[:, j]
            r = r[np.isfinite(r)]
            if len(r):
                edges = np.unique(np.quantile(r, np.linspace(0, 1, cfg.leakage_bins + 1)[1:-1]))
        scores: dict[str, float] = {}
        for side, x, y in (("reference", ctx.x_ref, ctx.y_ref), ("batch", ctx.x_new, ctx.y_new)):
            if y is None or len(y) == 0:
                continue
            col = x[:, j]
            n_bins = len(edges) + 2 if edges is not None else len(np.unique(col))
            if len(y) < cfg.min_rows_per_bin * max(2, n_bins):
                continue  # too few rows per value: a majority vote would memorise them
            scores[side] = _round(_single_feature_accuracy(col, y, edges))
        if not scores:
            continue
        best = max(scores.values())
        per[c.name] = scores
        if best >= cfg.leakage_fail:
            fails.append(c.name)
        elif best >= cfg.leakage_warn:
            warns.append(c.name)
    if fails or warns:
        return _result("label_leakage", _status(fails, warns), "; ".join(
            f"{n} alone predicts the label (balanced accuracy {max(per[n].values()):.3f})"
            for n in fails + warns) + ".", failed=fails, warned=warns, columns=per)
    top = max(per.items(), key=lambda kv: max(kv[1].values()), default=None)
    best_text = f" (best {top[0]}: {max(top[1].values()):.3f})" if top else ""
    return _result("label_leakage", "pass", f"no feature alone predicts the label{best_text}.",
                   failed=[], warned=[], columns=per)


@register_schema_check("class_balance")
def check_class_balance(ctx: TabularContext) -> CheckResult:
    """The batch's label shares match the reference's (chi-squared test, then
    Jensen-Shannon distance, as for drift); warns on a class below
    ``min_class_share``."""
    if ctx.y_ref is None and ctx.y_new is None:
        return _result("class_balance", "pass", "skipped: no labels.", skipped=True, failed=[])
    k = len(ctx.classes)
    shares = {side: (np.bincount(y, minlength=k) / max(1, len(y))).round(4).tolist()
              for side, y in (("reference", ctx.y_ref), ("batch", ctx.y_new)) if y is not None}
    ev: dict[str, Any] = {"classes": ctx.classes, "shares": shares}
    rare = sorted({ctx.classes[i] for s in shares.values() for i, v in enumerate(s)
                   if v < ctx.cfg.min_class_share})
    if ctx.y_ref is not None and ctx.y_new is not None and min(len(ctx.y_ref),
                                                               len(ctx.y_new)) >= 2:
        d = categorical_drift("label", ctx.y_ref, ctx.y_new,
                              DriftConfig(small_sample=ctx.cfg.small_sample,
                                          alpha=ctx.cfg.alpha), 1, categories=k)
        ev.update(test=d.test, statistic=d.statistic, p_value=d.p_value, distance=d.distance)
        if d.drifted:
            how = (f"chi-squared p={d.p_value:.2g}" if d.p_value is not None
                   else f"Jensen-Shannon {d.statistic:.3g} > {d.threshold:g}")
            return _result("class_balance", "fail", f"label shares moved "
                           f"{shares['reference']} -> {shares['batch']} over {ctx.classes} "
                           f"({how}).", failed=["label"], **ev)
    if rare:
        return _result("class_balance", "warn", f"classes below "
                       f"{ctx.cfg.min_class_share:.0%} of the rows: {', '.join(rare)}.",
                       failed=[], warned=rare, **ev)
    return _result("class_balance", "pass", f"label shares {shares} over {ctx.classes}.",
                   failed=[], **ev)
