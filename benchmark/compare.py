"""``rtb compare``: model versions side by side, from the store only, with
paired statistics on the per-sample outcomes.

Two measurements are compared only when they were taken on the same data
(fingerprint) under the same threat settings; everything else is listed as
left out, with the reason. Accuracy-type metrics get McNemar's exact test on
the discordant samples (and a paired bootstrap interval for the difference);
metrics that are a mean or median of a per-sample column get a paired
bootstrap; the p-values of one comparison are adjusted together (Holm by
default) and a change is marked significant when the adjusted p < alpha.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from benchmark.console import format_table
from benchmark.core.errors import StoreError
from benchmark.core.types import THREAT_FAMILIES, threat_label
from benchmark.store import Store
from metrics.statistics import (
    ADJUSTMENTS,
    adjust_p_values,
    paired_bootstrap,
    paired_bootstrap_mean,
    paired_mcnemar,
)

MetricKey = tuple[str, str, float | None, str, str, str]  # family, threat, param, feature, value, metric

#: Accuracy-type metrics: per-sample correctness, compared with McNemar's test.
#: The value maps a metric to how it reads the ``correct`` column (1 = correct).
ACCURACY_METRICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "accuracy": lambda correct: correct,
    "robust_accuracy": lambda correct: correct,
    "error": lambda correct: ~correct,
    "error_rate": lambda correct: ~correct,
}

#: Aggregates for metrics named ``<aggregate>_<outcome column>`` (e.g.
#: ``median_l2``): such metrics are recomputed per bootstrap resample.
AGGREGATES: dict[str, Callable[[np.ndarray], float]] = {
    "mean": lambda v: float(np.nanmean(v)) if np.isfinite(v).any() else math.nan,
    "median": lambda v: float(np.nanmedian(v)) if np.isfinite(v).any() else math.nan,
}

#: Metrics where a smaller value is better (errors, corruption errors, gaps
#: between groups). Matched on the metric name's words.
LOWER_IS_BETTER_WORDS: tuple[str, ...] = (
    "error", "ce", "mce", "relative_mce", "difference", "gap", "disparity", "drop",
    "boundary_error", "flip_rate", "nonfinite",
)


def higher_is_better(metric: str) -> bool:
    """Whether an increase of ``metric`` is an improvement."""
    words = metric.lower().split("_")
    return not any(w in LOWER_IS_BETTER_WORDS for w in (*words, metric.lower()))


def _attack_settings(record: dict[str, Any], threat: str) -> Any:
    cfg = ((record.get("config") or {}).get("attack") or {}).get(threat)
    if not isinstance(cfg, dict):
        return None
    return {k: v for k, v in cfg.items() if k != "eps"}


#: How to read a threat's settings (everything but its budget) from a record,
#: by threat family; families without an entry are matched by name and param.
THREAT_SETTINGS: dict[str, Callable[[dict[str, Any], str], Any]] = {
    "attack": _attack_settings,
}


def threat_settings(record: dict[str, Any], family: str, threat: str) -> Any:
    fn = THREAT_SETTINGS.get(family)
    return fn(record, threat) if fn else None


@dataclass
class Side:
    """One model version and the stored runs it is read from (newest first)."""

    model: str
    version: str
    runs: list[str]

    @property
    def key(self) -> str:
        return f"{self.model}@{self.version}"


@dataclass
class Row:
    """One metric of the candidate against the baseline."""

    family: str
    threat: str
    param: float | None
    group_feature: str
    group_value: str
    metric: str
    baseline: str
    candidate: str
    value_baseline: float
    value_candidate: float
    difference: float
    n: int | None
    test: str = "none"
    p_value: float = math.nan
    p_adjusted: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    significant: bool = False
    improved: bool | None = None
    discordant: tuple[int, int] | None = None
    runs: tuple[str, str] = ("", "")
    note: str = ""
    group_baseline: str = ""  # the group a worst/best-group metric names, per version
    group_candidate: str = ""
    n_runs: int = 1  # paired runs (seeds) the values are the mean over
    sd_baseline: float = math.nan  # sd over those runs
    sd_candidate: float = math.nan
    sd_difference: float = math.nan

    @property
    def label(self) -> str:
        return threat_label(self.family, self.threat, self.param)

    @property
    def group(self) -> str:
        if not self.group_feature:
            return ""
        if names_group(self.metric):
            if self.group_baseline == self.group_candidate:
                return f"{self.group_feature}={self.group_baseline}"
            return f"{self.group_feature}={self.group_baseline} -> {self.group_candidate}"
        return f"{self.group_feature}={self.group_value}"


@dataclass
class Exclusion:
    what: str
    why: str


@dataclass
class Comparison:
    baseline: Side
    candidates: list[Side]
    rows: list[Row]
    excluded: list[Exclusion]
    alpha: float
    adjust: str
    data: dict[str, Any] = field(default_factory=dict)
    tests: int = 0  # p-values adjusted together (before any row filter)

    def as_dict(self) -> dict[str, Any]:
        def clean(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [clean(x) for x in v]
            return v

        return clean({
            "baseline": asdict(self.baseline),
            "candidates": [asdict(c) for c in self.candidates],
            "alpha": self.alpha,
            "adjust": self.adjust,
            "tests": self.tests,
            "data": self.data,
            "rows": [{**asdict(r), "label": r.label} for r in self.rows],
            "excluded": [asdict(e) for e in self.excluded],
        })


def parse_ref(ref: str) -> tuple[str, str]:
    name, sep, version = ref.rpartition("@")
    if not sep or not name or not version:
        raise StoreError(f"Expected a model version as NAME@VERSION (e.g. mnist_cnn@v2), but got {ref!r}.")
    return name, version


# ----------------------------------------------------------------------------- selection

def select_sides(store: Store, refs: Sequence[str], *, runs: Sequence[str] | None = None,
                 sweep: str | None = None) -> list[Side]:
    """The versions to compare and the runs each is read from.

    With ``sweep``: every run of the sweep; with ``runs``: those runs; else
    the newest run holding all the versions, or failing that the newest run
    holding each version.
    """
    if sweep is not None:
        frame = store.runs(sweep_id=sweep)
        if frame.empty:
            raise StoreError(f"No runs of sweep {sweep!r} in the store; see `rtb store list`.")
    elif runs:
        ids = [store.resolve_run(r) for r in runs]
        frame = store.runs()
        frame = frame[frame["run_id"].isin(ids)]
    else:
        frame = store.runs()
        if frame.empty:
            raise StoreError(f"The store {str(store.path)!r} holds no runs; run `rtb run` first.")
    frame = frame.sort_values(["started", "run_id"], ascending=False)
    models = store.models(list(frame["run_id"]))
    run_models: dict[str, set[str]] = {}
    for r in models.itertuples():
        run_models.setdefault(str(r.run_id), set()).add(f"{r.name}@{r.version}")
    ordered = [str(r) for r in frame["run_id"]]
    if not refs:
        keys: list[str] = []
        for rid in reversed(ordered):
            for k in sorted(run_models.get(rid, ())):
                if k not in keys:
                    keys.append(k)
        refs = keys
    if len(refs) < 2:
        raise StoreError(
            f"Expected at least two model versions to compare, but found {list(refs)}; name them "
            "as NAME@VERSION or pick runs holding several versions."
        )
    for ref in refs:
        parse_ref(ref)
        if not any(ref in run_models.get(rid, ()) for rid in ordered):
            known = sorted({k for ks in run_models.values() for k in ks})
            raise StoreError(
                f"No stored run holds {ref!r}; expected one of: {', '.join(known) or 'none'}."
            )
    sides = []
    together = next((rid for rid in ordered if set(refs) <= run_models.get(rid, set())), None)
    for ref in refs:
        name, version = parse_ref(ref)
        holding = [rid for rid in ordered if ref in run_models.get(rid, ())]
        if sweep is None and not runs:
            holding = [together] if together else holding[:1]
        sides.append(Side(model=name, version=version, runs=holding))
    return sides


# ----------------------------------------------------------------------------- comparison

def names_group(metric: str) -> bool:
    """Whether ``metric`` is a summary that names a group in ``group_value``
    (the worst or best group): such rows are keyed by the metric alone, with
    the group named in a column, so that the versions pair up."""
    return metric.endswith(("_worst_group", "_best_group"))


def _key(r: Any) -> MetricKey:
    param = None if pd.isna(r.param) else float(r.param)
    value = "" if names_group(r.metric) else r.group_value
    return (r.family, r.threat, param, r.group_feature, value, r.metric)


def _param_key(p: Any) -> float:
    """A threat's param as a dictionary key (NaN / None: -inf)."""
    return -math.inf if p is None or pd.isna(p) else float(np.round(float(p), 9))


class _Samples:
    """The per-sample outcomes of one version under one threat, in sample
    order, as numpy arrays (text views of group columns built once)."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        order = np.argsort(arrays["sample"], kind="stable")
        self._arrays = {k: v[order] for k, v in arrays.items()}
        self.sample = self._arrays["sample"]
        self._text: dict[str, np.ndarray] = {}  # group column -> codes of its text
        self._codes: dict[str, dict[str, int]] = {}

    def __len__(self) -> int:
        return len(self.sample)

    def has(self, column: str) -> bool:
        return column in self._arrays

    def array(self, column: str) -> np.ndarray:
        return self._arrays[column]

    def group_mask(self, feature: str, value: str) -> np.ndarray | None:
        """Samples whose group ``feature`` has ``value`` (None: no such column)."""
        col = next((c for c in (feature, f"group_{feature}", f"group:{feature}")
                    if self.has(c)), None)
        if col is None:
            return None
        if col not in self._text:
            values = self.array(col)
            if values.dtype.kind in "fiub":
                try:
                    return np.isclose(values.astype(float), float(value))
                except (TypeError, ValueError):
                    pass
            codes, uniques = pd.factorize(np.array([str(v) for v in values], dtype=object))
            self._text[col] = codes
            self._codes[col] = {str(u): i for i, u in enumerate(uniques)}
        code = self._codes[col].get(value)
        return self._text[col] == (-2 if code is None else code)


def _split_threats(frame: pd.DataFrame) -> dict[tuple[str, str, float], _Samples]:
    """One ``_Samples`` per (family, threat, param) of an outcomes frame."""
    if not len(frame):
        return {}
    arrays = {str(c): frame[c].to_numpy() for c in frame.columns}
    for c, v in arrays.items():
        if v.dtype.kind not in "fiub":
            arrays[c] = np.asarray(v, dtype=object)
    raw = np.asarray(arrays["param"], dtype=np.float64)
    params = np.where(np.isnan(raw), -math.inf, np.round(raw, 9))
    keys = pd.MultiIndex.from_arrays([arrays["family"], arrays["threat"], params])
    codes, uniques = pd.factorize(keys)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    out: dict[tuple[str, str, float], _Samples] = {}
    for j, (fam, thr, p) in enumerate(uniques):
        idx = order[bounds[j]:bounds[j + 1]]
        out[(str(fam), str(thr), float(p))] = _Samples({k: v[idx] for k, v in arrays.items()})
    return out


class _Data:
    """Cached reads from the store for one comparison."""

    def __init__(self, store: Store, sides: Sequence[Side]) -> None:
        self.store = store
        run_ids = sorted({r for s in sides for r in s.runs})
        self.records = {r: store.record(r) for r in run_ids}
        m = store.measurements(run_ids)
        self.values: dict[tuple[str, str], dict[MetricKey, dict[str, Any]]] = {}
        for r in m.itertuples():
            side = f"{r.model}@{r.version}"
            self.values.setdefault((side, str(r.run_id)), {})[_key(r)] = {
                "value": r.value, "n": r.n,
                "group": str(r.group_value) if names_group(r.metric) else ""}
        self._threats: dict[tuple[str, str], dict[tuple[str, str, float], _Samples]] = {}

    def samples(self, run_id: str, side: Side, key: MetricKey) -> _Samples | None:
        """The per-sample outcomes of ``side`` in ``run_id`` under the threat of ``key``."""
        k = (run_id, side.key)
        if k not in self._threats:
            frame = self.store.outcomes(run_id, model=side.model, version=side.version)
            self._threats[k] = _split_threats(frame)
        return self._threats[k].get((key[0], key[1], _param_key(key[2])))

    def fingerprint(self, run_id: str) -> str:
        return str((self.records[run_id].get("data") or {}).get("fingerprint", ""))

    def seed(self, run_id: str) -> Any:
        return self.records[run_id].get("seed", (self.records[run_id].get("config") or {})
                                        .get("seed"))


def _pair_reason(data: _Data, ra: str, rb: str, family: str, threat: str) -> str | None:
    """Why runs ``ra`` and ``rb`` are not comparable for ``threat`` (None if they are)."""
    if ra == rb:
        return None
    fa, fb = data.fingerprint(ra), data.fingerprint(rb)
    if fa != fb:
        return f"different data (fingerprint {fa[:12]} vs {fb[:12]})"
    sa = threat_settings(data.records[ra], family, threat)
    sb = threat_settings(data.records[rb], family, threat)
    if sa != sb:
        diff = ""
        if isinstance(sa, dict) and isinstance(sb, dict):
            keys = sorted(k for k in set(sa) | set(sb) if sa.get(k) != sb.get(k))
            if keys:
                diff = f": {keys[0]} {sa.get(keys[0])!r} vs {sb.get(keys[0])!r}"
        return f"different {threat} settings{diff}"
    return None


#: Per-sample definitions of binary-task group rates: metric -> (the 0/1
#: indicator from ``pred``, the samples it is a rate over from ``label``);
#: both versions are read on the same samples, so McNemar applies.
RATE_INDICATORS: dict[str, tuple[Callable[[np.ndarray], np.ndarray],
                                 Callable[[np.ndarray], np.ndarray] | None]] = {
    "selection_rate": (lambda pred: pred == 1, None),
    "true_positive_rate": (lambda pred: pred == 1, lambda label: label == 1),
    "false_positive_rate": (lambda pred: pred == 1, lambda label: label != 1),
    "false_negative_rate": (lambda pred: pred != 1, lambda label: label == 1),
}


def _indicators(metric: str, a: _Samples, b: _Samples, ia: np.ndarray,
                ib: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The paired 0/1 per-sample values of an accuracy-type metric at the
    positions ``ia`` of ``a`` and ``ib`` of ``b`` (None: no per-sample form)."""
    if metric in ACCURACY_METRICS:
        read = ACCURACY_METRICS[metric]
        return (read(a.array("correct")[ia].astype(bool)),
                read(b.array("correct")[ib].astype(bool)))
    if metric.endswith(("_worst_group", "_best_group")) and metric.startswith("accuracy"):
        return a.array("correct")[ia].astype(bool), b.array("correct")[ib].astype(bool)
    if metric in RATE_INDICATORS and a.has("label") and b.has("label"):
        ind, over = RATE_INDICATORS[metric]
        ya, yb = a.array("pred")[ia], b.array("pred")[ib]
        if over is not None:
            keep = over(np.asarray(a.array("label")[ia], dtype=float))
            return ind(ya[keep]), ind(yb[keep])
        return ind(ya), ind(yb)
    return None


def _positions(row: Row, a: _Samples, b: _Samples) -> tuple[np.ndarray, np.ndarray] | str:
    """Positions of the paired samples of ``row`` in ``a`` and ``b`` (its group's
    samples for a group row), or why there are none."""
    if len(a.sample) == len(b.sample) and np.array_equal(a.sample, b.sample):
        ia = ib = np.arange(len(a.sample))
    else:
        common, ia, ib = np.intersect1d(a.sample, b.sample, return_indices=True)
        if len(common) != len(a.sample) or len(common) != len(b.sample):
            return "per-sample outcomes do not pair up"
    if row.group_feature:
        value = row.group_value
        if not value and not names_group(row.metric):
            return "a summary over the groups; values only"
        if names_group(row.metric):
            if row.group_baseline != row.group_candidate:
                return (f"different groups ({row.group_baseline} vs {row.group_candidate}); "
                        "values only")
            value = row.group_baseline
        ma, mb = a.group_mask(row.group_feature, value), b.group_mask(row.group_feature, value)
        if ma is None or mb is None:
            return "no group column in the per-sample outcomes"
        keep = ma[ia] & mb[ib]
        if not keep.any():
            return "no per-sample outcomes for this group"
        ia, ib = ia[keep], ib[keep]
    return ia, ib


def _paired(row: Row, a: _Samples | None,
            b: _Samples | None) -> tuple[str, np.ndarray, np.ndarray] | str:
    """The paired per-sample values of ``row`` in one pair of runs, with the
    test they get (``mcnemar`` or ``bootstrap``), or why there are none."""
    if a is None or b is None:
        return "no per-sample outcomes for this row"
    pos = _positions(row, a, b)
    if isinstance(pos, str):
        return pos
    ia, ib = pos
    paired = _indicators(row.metric, a, b, ia, ib)
    if paired is not None:
        if not len(paired[0]):
            return "no samples the rate is over"
        return "mcnemar", paired[0], paired[1]
    agg, _, column = row.metric.partition("_")
    if agg in AGGREGATES and a.has(column) and b.has(column):
        return "bootstrap", a.array(column)[ia].astype(float), b.array(column)[ib].astype(float)
    return "no per-sample definition; values only"


def _test(row: Row, pairs: Sequence[tuple[str, np.ndarray, np.ndarray] | str], n_boot: int,
          seed: int) -> None:
    """Fill in the paired test of one row from its pairs of per-sample values
    (one pair per paired run; several runs are pooled: McNemar's discordant
    counts add up over independent seeds)."""
    notes = [p for p in pairs if isinstance(p, str)]
    if notes:
        row.note = notes[0]
        return
    got = [p for p in pairs if not isinstance(p, str)]
    kinds = {p[0] for p in got}
    if len(kinds) != 1:
        row.note = "no per-sample definition; values only"
        return
    kind = kinds.pop()
    va = np.concatenate([p[1] for p in got])
    vb = np.concatenate([p[2] for p in got])
    if kind == "mcnemar":
        res = paired_mcnemar(va, vb)
        row.test, row.p_value, row.discordant = "mcnemar", res.p_value, (res.b, res.c)
        boot = paired_bootstrap_mean(va.astype(float), vb.astype(float), n_boot=n_boot,
                                     seed=seed)
    else:
        agg = row.metric.partition("_")[0]
        boot = paired_bootstrap(AGGREGATES[agg], va, vb, n_boot=n_boot, seed=seed)
        row.test, row.p_value = "bootstrap", boot.p_value
    row.ci_low, row.ci_high = boot.ci_low, boot.ci_high


def _choose_pairs(data: _Data, key: MetricKey, runs_a: Sequence[str], runs_b: Sequence[str],
                  every: bool) -> tuple[list[tuple[str, str]], str | None]:
    """The run pairs ``key`` is compared on: the same run first, then the newest
    comparable pair; with ``every`` (a sweep) one pair per baseline run, by
    the same run or else the same seed, each candidate run used once."""
    reason: str | None = None
    if not every:
        pairs = [(ra, rb) for ra in runs_a for rb in runs_b]
        pairs.sort(key=lambda p: p[0] != p[1])  # same run first, then newest
        for ra, rb in pairs:
            why = _pair_reason(data, ra, rb, key[0], key[1])
            if why is None:
                return [(ra, rb)], None
            reason = reason or why
        return [], reason
    chosen: list[tuple[str, str]] = []
    used: set[str] = set()
    for ra in runs_a:
        options = [rb for rb in runs_b if rb not in used]
        options.sort(key=lambda rb: (rb != ra, data.seed(rb) != data.seed(ra)))
        for rb in options:
            if rb != ra and data.seed(rb) != data.seed(ra) and len(runs_a) > 1:
                reason = reason or "no run with the same seed"
                break
            why = _pair_reason(data, ra, rb, key[0], key[1])
            if why is None:
                chosen.append((ra, rb))
                used.add(rb)
                break
            reason = reason or why
    return chosen, reason


def compare(store: Store, sides: Sequence[Side], *, alpha: float = 0.05, adjust: str = "holm",
            n_boot: int = 1000, seed: int = 0, every_run: bool = False) -> Comparison:
    """Compare every candidate (sides[1:]) with the baseline (sides[0]).

    ``every_run`` (a sweep): each metric is compared on every pair of runs
    (one per seed) and reported as the mean over them, with the sd; the paired
    test pools the pairs."""
    if not 0 < alpha < 1:
        raise StoreError(f"Expected `alpha` in (0, 1), but got {alpha!r}.")
    if adjust not in ADJUSTMENTS:
        raise StoreError(f"Expected `adjust` to be one of {', '.join(ADJUSTMENTS)}, but got {adjust!r}.")
    base, candidates = sides[0], list(sides[1:])
    data = _Data(store, sides)
    rows: list[Row] = []
    excluded: list[Exclusion] = []
    for cand in candidates:
        keys_a = {k: r for r in base.runs for k in data.values.get((base.key, r), {})}
        keys_b = {k: r for r in cand.runs for k in data.values.get((cand.key, r), {})}
        for k in sorted(set(keys_a) | set(keys_b), key=_sort_key):
            what = _what(k)
            if k not in keys_a or k not in keys_b:
                missing = base.key if k not in keys_a else cand.key
                excluded.append(Exclusion(what, f"not measured for {missing}"))
                continue
            runs_a = [r for r in base.runs if k in data.values.get((base.key, r), {})]
            runs_b = [r for r in cand.runs if k in data.values.get((cand.key, r), {})]
            chosen, reason = _choose_pairs(data, k, runs_a, runs_b, every_run)
            if not chosen:
                excluded.append(Exclusion(what, reason or "not comparable"))
                continue
            va = [data.values[(base.key, ra)][k] for ra, _ in chosen]
            vb = [data.values[(cand.key, rb)][k] for _, rb in chosen]
            xa = np.array([_f(v["value"]) for v in va])
            xb = np.array([_f(v["value"]) for v in vb])
            row = Row(family=k[0], threat=k[1], param=k[2], group_feature=k[3], group_value=k[4],
                      metric=k[5], baseline=base.key, candidate=cand.key,
                      value_baseline=float(np.mean(xa)), value_candidate=float(np.mean(xb)),
                      difference=float(np.mean(xb - xa)),
                      n=None if pd.isna(vb[0]["n"]) else int(vb[0]["n"]), runs=chosen[0],
                      group_baseline=va[0]["group"], group_candidate=vb[0]["group"],
                      n_runs=len(chosen))
            if len(chosen) > 1:
                row.sd_baseline, row.sd_candidate = float(np.std(xa, ddof=1)), float(
                    np.std(xb, ddof=1))
                row.sd_difference = float(np.std(xb - xa, ddof=1))
                groups = {(v["group"], w["group"]) for v, w in zip(va, vb, strict=True)}
                if len(groups) > 1:  # worst group differs between seeds: no one group to test
                    row.group_baseline = row.group_candidate = "varies"
            pairs = [_paired(row, data.samples(ra, base, k), data.samples(rb, cand, k))
                     for ra, rb in chosen]
            _test(row, pairs, n_boot, seed)
            rows.append(row)
    adjusted = adjust_p_values([r.p_value for r in rows], adjust)
    for r, p in zip(rows, adjusted, strict=True):
        r.p_adjusted = p
        r.significant = bool(np.isfinite(p) and p < alpha)
        if r.significant and r.difference != 0:
            r.improved = (r.difference > 0) == higher_is_better(r.metric)
    first = base.runs[0] if base.runs else None
    info = {}
    if first:
        d = data.records[first].get("data") or {}
        info = {"name": d.get("name"), "n": d.get("n"), "fingerprint": d.get("fingerprint")}
    return Comparison(base, candidates, rows, excluded, alpha, adjust, info,
                      tests=sum(math.isfinite(r.p_value) for r in rows))


def _f(v: Any) -> float:
    return math.nan if v is None or pd.isna(v) else float(v)


def _sort_key(k: MetricKey) -> tuple[Any, ...]:
    fam = THREAT_FAMILIES.index(k[0]) if k[0] in THREAT_FAMILIES else 99
    return (k[3] != "", k[3], fam, k[1], -1.0 if k[2] is None else k[2], k[5], k[4])


def _what(k: MetricKey) -> str:
    group = f" [{k[3]}={k[4]}]" if k[3] else ""
    return f"{threat_label(k[0], k[1], k[2])} {k[5]}{group}"


# ----------------------------------------------------------------------------- output

def _num(v: float, digits: int = 3) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _p(v: float) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:.3f}" if v >= 0.001 else f"{v:.1e}"


def _marker(r: Row) -> str:
    if not r.significant:
        return ""
    return "* better" if r.improved else ("* worse" if r.improved is False else "*")


def _value(v: float, sd: float) -> str:
    return _num(v) if not math.isfinite(sd) else f"{_num(v)} +- {sd:.3f}"


def _table_rows(c: Comparison, cand: Side, groups: bool,
                rows_in: Sequence[Row] | None = None) -> tuple[list[str], list[list[str]]]:
    headers = ["threat", *(["group"] if groups else []), "metric", c.baseline.key, cand.key,
               "diff", "95% CI of diff", "test", "p", f"p ({c.adjust})", "change"]
    rows = []
    for r in (c.rows if rows_in is None else rows_in):
        if r.candidate != cand.key or bool(r.group_feature) != groups:
            continue
        ci = "-" if not math.isfinite(r.ci_low) else f"[{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
        diff = "-" if not math.isfinite(r.difference) else f"{r.difference:+.3f}"
        if math.isfinite(r.sd_difference):
            diff += f" +- {r.sd_difference:.3f}"
        rows.append([r.label, *([r.group] if groups else []), r.metric,
                     _value(r.value_baseline, r.sd_baseline),
                     _value(r.value_candidate, r.sd_candidate), diff,
                     ci, r.test if r.test != "none" else "-", _p(r.p_value), _p(r.p_adjusted),
                     _marker(r)])
    return headers, rows


def _excluded_summary(c: Comparison, limit: int = 20) -> list[str]:
    lines = [f"{e.what}: {e.why}" for e in c.excluded]
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more (see --format json)"]
    return lines


def _header(c: Comparison) -> str:
    d = c.data
    runs = sorted({r for row in c.rows for r in row.runs})
    seeds = max((r.n_runs for r in c.rows), default=1)
    over = f"; mean +- sd over {seeds} paired runs" if seeds > 1 else ""
    shown = ", ".join(runs[:3]) + (f" and {len(runs) - 3} more" if len(runs) > 3 else "")
    return (f"baseline {c.baseline.key} vs {', '.join(s.key for s in c.candidates)} on "
            f"{d.get('name')} (n={d.get('n')}, fingerprint {str(d.get('fingerprint'))[:12]}); "
            f"run(s) {shown or '-'}{over}")


def _footer(c: Comparison) -> str:
    return (f"* significant at alpha={c.alpha:g} after {c.adjust} adjustment over "
            f"{c.tests} tests (overall and group rows); "
            "accuracy-type metrics and group rates: McNemar's exact test on the discordant "
            "samples, CI from a paired bootstrap")


def filter_rows(c: Comparison, *, metrics: Sequence[str] = (),
                threats: Sequence[str] = ()) -> Comparison:
    """``c`` with only the rows (and left-out entries) of the given metrics and
    threats (a threat matches by name or by its label, e.g. ``fgsm eps=0.1``)."""
    def keep(metric: str, threat: str, label: str) -> bool:
        return ((not metrics or metric in metrics)
                and (not threats or threat in threats or label in threats))

    rows = [r for r in c.rows if keep(r.metric, r.threat, r.label)]
    excluded = [e for e in c.excluded
                if (not metrics or any(f" {m}" in e.what for m in metrics))
                and (not threats or any(e.what.startswith(t) for t in threats))]
    return Comparison(c.baseline, c.candidates, rows, excluded, c.alpha, c.adjust, c.data,
                      tests=c.tests)


def _largest(rows: Sequence[Row]) -> Row:
    return max(rows, key=lambda r: abs(r.difference) if math.isfinite(r.difference) else -1.0)


def _significant_groups(c: Comparison, cand: Side) -> tuple[list[str], list[list[str]], int]:
    """One line per threat with significant group changes: how many got better
    and worse, and the largest of them; plus the number of group rows tested."""
    group_rows = [r for r in c.rows if r.candidate == cand.key and r.group_feature]
    tested = sum(math.isfinite(r.p_value) for r in group_rows)
    by_threat: dict[str, list[Row]] = {}
    for r in group_rows:
        if r.significant:
            by_threat.setdefault(r.label, []).append(r)
    lines = []
    for label, rs in by_threat.items():
        top = _largest(rs)
        lines.append([label, str(sum(r.improved is True for r in rs)),
                      str(sum(r.improved is False for r in rs)),
                      f"{top.group} {top.metric} {top.value_baseline:.3f} -> "
                      f"{top.value_candidate:.3f} ({top.difference:+.3f})"])
    return ["threat", "better", "worse", "largest change"], lines, tested


#: Threats the default comparison lists with significant group changes.
GROUP_CHANGE_LINES = 8


def format_text(c: Comparison, full: bool = False) -> str:
    """The console comparison. By default: the overall rows that have a test
    or changed significantly, one line per threat summing up the significant
    group changes, and counts of what else there is. ``full``: every row."""
    out = [_header(c)]
    for cand in c.candidates:
        if full:
            for groups in (False, True):
                headers, rows = _table_rows(c, cand, groups)
                if rows:
                    out += ["", "groups" if groups else "metrics",
                            format_table(headers, rows,
                                         align="l" * (3 if groups else 2) + "rrrllrrl")]
            continue
        tested_rows = [r for r in c.rows if r.candidate == cand.key and not r.group_feature
                       and (r.test != "none" or r.significant)]
        # clean and the attacks always; a corruption or fault row when it changed significantly
        shown = [r for r in tested_rows if r.family in ("clean", "attack") or r.significant]
        headers, rows = _table_rows(c, cand, False, shown)
        if rows:
            out += ["", f"overall: {cand.key} against {c.baseline.key}",
                    format_table(headers, rows, align="llrrrllrrl")]
        if len(tested_rows) > len(shown):
            out.append(f"{len(tested_rows) - len(shown)} corruption/fault row(s) without a "
                       "significant change (--all, or --threat NAME)")
        headers, rows, tested = _significant_groups(c, cand)
        title = (f"significant group changes ({sum(int(r[1]) + int(r[2]) for r in rows)} of "
                 f"{tested} tested group rows)")
        if len(rows) > GROUP_CHANGE_LINES:  # the threats with the largest group changes
            order = sorted(range(len(rows)), key=lambda i: -abs(float(
                rows[i][3].rsplit("(", 1)[-1].rstrip(")"))))
            keep = sorted(order[:GROUP_CHANGE_LINES])
            title += f", the {GROUP_CHANGE_LINES} threats with the largest of {len(rows)}"
            rows = [rows[i] for i in keep]
        if rows:
            out += ["", title, format_table(headers, rows, align="lrrl")]
        elif tested:
            out += ["", f"no significant group change ({tested} tested group rows)"]
    out += ["", _footer(c)]
    if full and c.excluded:
        out += ["", f"left out ({len(c.excluded)}):", *("  " + x for x in _excluded_summary(c))]
    if not full:
        n_overall = sum(1 for r in c.rows if not r.group_feature and (r.test != "none"
                                                                        or r.significant))
        more = [f"{len(c.rows) - n_overall} more compared row(s) (each group, worst/best group, "
                "untested metrics)"]
        if c.excluded:
            more.append(f"{len(c.excluded)} left out (measured for one version only, or not "
                        "comparable)")
        if more:
            out.append("; ".join(more) + ": --all lists them, --metric/--threat select")
    return "\n".join(out)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(s: str) -> str:
        return str(s).replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(esc(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def format_markdown(c: Comparison) -> str:
    out = [f"## rtb compare: {c.baseline.key} vs {', '.join(s.key for s in c.candidates)}", "",
           _header(c)]
    for cand in c.candidates:
        for groups in (False, True):
            headers, rows = _table_rows(c, cand, groups)
            if rows:
                out += ["", f"### {'Groups' if groups else 'Metrics'}: {cand.key}", "",
                        markdown_table(headers, rows)]
    out += ["", _footer(c)]
    if c.excluded:
        out += ["", f"Left out ({len(c.excluded)}):", ""]
        out += [f"- {x}" for x in _excluded_summary(c)]
    return "\n".join(out)


FORMATS: dict[str, Callable[[Comparison], str]] = {
    "table": format_text,
    "markdown": format_markdown,
    "json": lambda c: json.dumps(c.as_dict(), indent=2),
}
