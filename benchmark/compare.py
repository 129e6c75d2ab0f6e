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
from metrics.statistics import ADJUSTMENTS, adjust_p_values, paired_bootstrap, paired_mcnemar

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

    @property
    def label(self) -> str:
        return threat_label(self.family, self.threat, self.param)

    @property
    def group(self) -> str:
        return f"{self.group_feature}={self.group_value}" if self.group_feature else ""


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

def _key(r: Any) -> MetricKey:
    param = None if pd.isna(r.param) else float(r.param)
    return (r.family, r.threat, param, r.group_feature, r.group_value, r.metric)


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
                "value": r.value, "n": r.n}
        self._outcomes: dict[tuple[str, str, str], pd.DataFrame] = {}

    def outcomes(self, run_id: str, side: Side) -> pd.DataFrame:
        k = (run_id, side.model, side.version)
        if k not in self._outcomes:
            self._outcomes[k] = self.store.outcomes(run_id, model=side.model, version=side.version)
        return self._outcomes[k]

    def fingerprint(self, run_id: str) -> str:
        return str((self.records[run_id].get("data") or {}).get("fingerprint", ""))


def _series(frame: pd.DataFrame, key: MetricKey) -> pd.DataFrame | None:
    family, threat, param, feature, value, _ = key
    sel = (frame["family"] == family) & (frame["threat"] == threat)
    sel &= frame["param"].isna() if param is None else np.isclose(frame["param"], param)
    rows = frame[sel]
    if feature:
        col = next((c for c in (feature, f"group_{feature}", f"group:{feature}")
                    if c in rows.columns), None)
        if col is None:
            return None
        col_values = rows[col]
        try:
            mask = np.isclose(col_values.astype(float), float(value))
        except (TypeError, ValueError):
            mask = col_values.astype(str) == value
        rows = rows[mask]
    return rows.sort_values("sample") if len(rows) else None


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


def _test(row: Row, a: pd.DataFrame | None, b: pd.DataFrame | None, n_boot: int,
          seed: int) -> None:
    """Fill in the paired test of one row from the per-sample outcomes."""
    if a is None or b is None:
        row.note = "no per-sample outcomes for this row"
        return
    merged = a.merge(b, on="sample", suffixes=("_a", "_b"))
    if len(merged) != len(a) or len(merged) != len(b):
        row.note = "per-sample outcomes do not pair up"
        return
    metric = row.metric
    if metric in ACCURACY_METRICS:
        read = ACCURACY_METRICS[metric]
        ca = read(merged["correct_a"].to_numpy(bool))
        cb = read(merged["correct_b"].to_numpy(bool))
        res = paired_mcnemar(ca, cb)
        row.test, row.p_value, row.discordant = "mcnemar", res.p_value, (res.b, res.c)
        boot = paired_bootstrap(np.mean, ca.astype(float), cb.astype(float), n_boot=n_boot,
                                seed=seed)
        row.ci_low, row.ci_high = boot.ci_low, boot.ci_high
        return
    agg, _, column = metric.partition("_")
    if agg in AGGREGATES and f"{column}_a" in merged.columns:
        va = merged[f"{column}_a"].to_numpy(float)
        vb = merged[f"{column}_b"].to_numpy(float)
        boot = paired_bootstrap(AGGREGATES[agg], va, vb, n_boot=n_boot, seed=seed)
        row.test, row.p_value = "bootstrap", boot.p_value
        row.ci_low, row.ci_high = boot.ci_low, boot.ci_high
        return
    row.note = "no per-sample definition; values only"


def compare(store: Store, sides: Sequence[Side], *, alpha: float = 0.05, adjust: str = "holm",
            n_boot: int = 1000, seed: int = 0) -> Comparison:
    """Compare every candidate (sides[1:]) with the baseline (sides[0])."""
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
            pairs = [(ra, rb) for ra in runs_a for rb in runs_b]
            pairs.sort(key=lambda p: p[0] != p[1])  # same run first, then newest
            chosen, reason = None, None
            for ra, rb in pairs:
                why = _pair_reason(data, ra, rb, k[0], k[1])
                if why is None:
                    chosen = (ra, rb)
                    break
                reason = reason or why
            if chosen is None:
                excluded.append(Exclusion(what, reason or "not comparable"))
                continue
            ra, rb = chosen
            va = data.values[(base.key, ra)][k]
            vb = data.values[(cand.key, rb)][k]
            row = Row(family=k[0], threat=k[1], param=k[2], group_feature=k[3], group_value=k[4],
                      metric=k[5], baseline=base.key, candidate=cand.key,
                      value_baseline=_f(va["value"]), value_candidate=_f(vb["value"]),
                      difference=_f(vb["value"]) - _f(va["value"]),
                      n=None if pd.isna(vb["n"]) else int(vb["n"]), runs=(ra, rb))
            _test(row, _series(data.outcomes(ra, base), k), _series(data.outcomes(rb, cand), k),
                  n_boot, seed)
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
    return Comparison(base, candidates, rows, excluded, alpha, adjust, info)


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


def _table_rows(c: Comparison, cand: Side, groups: bool) -> tuple[list[str], list[list[str]]]:
    headers = ["threat", *(["group"] if groups else []), "metric", c.baseline.key, cand.key,
               "diff", "95% CI of diff", "test", "p", f"p ({c.adjust})", ""]
    rows = []
    for r in c.rows:
        if r.candidate != cand.key or bool(r.group_feature) != groups:
            continue
        ci = "-" if not math.isfinite(r.ci_low) else f"[{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
        rows.append([r.label, *([r.group] if groups else []), r.metric, _num(r.value_baseline),
                     _num(r.value_candidate),
                     "-" if not math.isfinite(r.difference) else f"{r.difference:+.3f}",
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
    return (f"baseline {c.baseline.key} vs {', '.join(s.key for s in c.candidates)} on "
            f"{d.get('name')} (n={d.get('n')}, fingerprint {str(d.get('fingerprint'))[:12]}); "
            f"run(s) {', '.join(runs) or '-'}")


def _footer(c: Comparison) -> str:
    return (f"* significant at alpha={c.alpha:g} after {c.adjust} adjustment over "
            f"{sum(math.isfinite(r.p_value) for r in c.rows)} tests; accuracy-type metrics: "
            "McNemar's exact test on the discordant samples, CI from a paired bootstrap")


def format_text(c: Comparison) -> str:
    out = [_header(c)]
    for cand in c.candidates:
        for groups in (False, True):
            headers, rows = _table_rows(c, cand, groups)
            if rows:
                out += ["", "groups" if groups else "metrics",
                        format_table(headers, rows, align="l" * (3 if groups else 2) + "rrrllrrl")]
    out += ["", _footer(c)]
    if c.excluded:
        out += ["", f"left out ({len(c.excluded)}):", *("  " + x for x in _excluded_summary(c))]
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
