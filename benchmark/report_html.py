"""``rtb report``: one run, or a comparison of versions, as a single
self-contained HTML file (plots inline as base64 PNG, no external resource)
or as Markdown (plots as PNG files in a folder next to it).

A report reads only recorded results (run directories or the results store),
never a model: accuracy table, robustness curves, corruption heatmaps, group
disparities, the validation and reliability checks, and the provenance.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from benchmark.core.errors import DataError, StoreError, UserError
from benchmark.core.types import threat_label
from benchmark.report_gallery import gallery_section
from benchmark.rundir import LoadedRun, resolve_run_ref, stored_outcomes

if TYPE_CHECKING:
    from benchmark.plots import Plot

log = logging.getLogger(__name__)

MEASUREMENT_COLUMNS = ("run", "model", "version", "family", "threat", "param", "group_feature",
                       "group_value", "metric", "value", "n", "ci_low", "ci_high", "definition")
CHECK_COLUMNS = ("run", "series", "check", "status", "subject", "message", "evidence")
FAMILY_ORDER = ("clean", "attack", "corruption", "fault")


@dataclass
class Table:
    """A table of plain strings, rendered as HTML or Markdown; ``classes``
    optionally tags cells (e.g. check status) for colouring."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""
    classes: list[list[str]] = field(default_factory=list)
    #: Rows shown when the table is long; the whole table is one click away.
    brief: list[int] | None = None


@dataclass
class Report:
    """Everything a rendered report shows, independent of the format."""

    title: str
    runs: list[LoadedRun]
    series: list[str]
    summary: Table
    paired: list[Table]
    checks_summary: Table
    plots: list[Plot]
    groups: Table | None
    checks: Table
    notes: list[str]
    verdict: Verdict | None = None
    corruption: Table | None = None
    fairness: Table | None = None
    #: True for a feature-table run: the group tables come before the accuracy table.
    groups_first: bool = False
    #: The example gallery's HTML section (``benchmark.report_gallery.gallery_section``);
    #: empty: no gallery section.
    gallery_html: str = ""


@dataclass
class Verdict:
    """The box at the top: the gate's result (when rules were given), the
    headline numbers of each version, and the significant changes."""

    versions: Table
    changes: list[str]
    changes_note: str = ""
    gate_status: str = ""  # "" (no rules) | pass | fail | error
    gate: Table | None = None
    gate_note: str = ""


# ----------------------------------------------------------------------------- loading
# One run is read by ``benchmark.rundir.resolve_run_ref``; here: runs by version.

def _version_keys(record: dict[str, Any]) -> list[str]:
    keys = list(record.get("models") or {})
    for m in record.get("measurements", []):
        key = f"{m['model']}@{m['version']}"
        if key not in keys:
            keys.append(key)
    return keys


def runs_for_versions(versions: Sequence[str], store: str | None = None) -> list[LoadedRun]:
    """The newest stored run holding every version in ``versions``, else the
    newest run of each version."""
    from benchmark.store import open_store, resolve_store_path

    store_path = resolve_store_path(store)
    if not store_path.exists():
        raise StoreError(
            f"Expected a results store at {str(store_path)!r} to find versions "
            f"{', '.join(versions)} in (or give run directories), but there is none."
        )
    with open_store(store_path, readonly=True) as s:
        per_version: dict[str, list[str]] = {}
        for v in versions:
            name, sep, version = v.partition("@")
            if not sep:
                raise StoreError(f"Expected a version as NAME@VERSION (e.g. mnist_cnn@v2), but got {v!r}.")
            ids = list(s.runs(model=name, version=version)["run_id"])
            if not ids:
                raise StoreError(f"Unknown version {v!r}: no run in {str(store_path)!r} evaluated it.")
            per_version[v] = ids
        common = set.intersection(*(set(ids) for ids in per_version.values()))
        if common:
            newest = [r for r in per_version[versions[0]] if r in common][-1]
            chosen = [newest]
        else:
            chosen = list(dict.fromkeys(ids[-1] for ids in per_version.values()))
        return [LoadedRun(record=s.record(r), source=f"store {store_path}",
                          outcomes=stored_outcomes(store_path, r)) for r in chosen]


def load_runs(refs: Sequence[str], compare: Sequence[str] = (), store: str | None = None
              ) -> list[LoadedRun]:
    if refs:
        runs = [resolve_run_ref(r, store) for r in refs]
    elif compare:
        runs = runs_for_versions(compare, store)
    else:
        raise UserError("Expected a run directory, a run id, or --compare VERSION..., but got none.")
    seen: set[str] = set()
    unique = []
    for r in runs:
        if r.run_id not in seen:
            seen.add(r.run_id)
            unique.append(r)
    return unique


# ----------------------------------------------------------------------------- tables

def measurements_frame(runs: Sequence[LoadedRun], compare: Sequence[str] = ()) -> pd.DataFrame:
    """Every run's tidy measurements, with ``series`` naming the version (and
    the run, when one version appears in several runs); only the versions in
    ``compare`` (in that order) when given."""
    frames = []
    for r in runs:
        df = pd.DataFrame(r.record.get("measurements") or [], columns=list(MEASUREMENT_COLUMNS))
        df["run"] = r.run_id
        frames.append(df)
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=MEASUREMENT_COLUMNS)
    df["group_feature"] = df["group_feature"].fillna("").astype(str)
    df["group_value"] = df["group_value"].fillna("").astype(str)
    for col in ("param", "value", "ci_low", "ci_high"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    df["key"] = df["model"].astype(str) + "@" + df["version"].astype(str)
    runs_per_key = df.groupby("key")["run"].nunique()
    multi = set(runs_per_key[runs_per_key > 1].index)
    df["series"] = [f"{k} ({r})" if k in multi else k for k, r in zip(df["key"], df["run"], strict=True)]
    if compare:
        df = _select_versions(df, compare)
    return df


def _select_versions(df: pd.DataFrame, compare: Sequence[str]) -> pd.DataFrame:
    available = list(dict.fromkeys(df["key"]))
    order: list[str] = []
    for want in compare:
        hits = [k for k in available if k == want or k.split("@", 1)[1] == want]
        if len(hits) != 1:
            what = "ambiguous" if hits else "unknown"
            raise StoreError(
                f"Version {want!r} is {what} in the report's runs; expected one of: "
                f"{', '.join(available) or 'none'}."
            )
        order.append(hits[0])
    df = df[df["key"].isin(order)].copy()
    df["_order"] = df["key"].map({k: i for i, k in enumerate(order)})
    return df.sort_values("_order", kind="stable").drop(columns="_order")


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}"


def _threat_sort_key(family: str, threat: str, param: float) -> tuple[int, str, float]:
    fam = FAMILY_ORDER.index(family) if family in FAMILY_ORDER else len(FAMILY_ORDER)
    return (fam, threat, -1.0 if math.isnan(param) else param)


def summary_table(df: pd.DataFrame, metric: str = "accuracy") -> Table:
    """Accuracy per threat (rows) and version (columns) with its 95% interval,
    and the last version minus the first."""
    rows_df = df[(df["metric"] == metric) & (df["group_feature"] == "")]
    series = list(dict.fromkeys(rows_df["series"]))
    headers = ["threat", *series]
    if len(series) >= 2:
        headers.append(f"delta ({series[-1]} - {series[0]})")
    cells: list[list[str]] = []
    # NaN != NaN, so the set holds threats without a param as -1 (params are >= 0), not NaN
    unique = {(str(f), str(t), -1.0 if math.isnan(p) else float(p))
              for f, t, p in zip(rows_df["family"], rows_df["threat"], rows_df["param"],
                                 strict=True)}
    keys = [(f, t, math.nan if p < 0 else p)
            for f, t, p in sorted(unique, key=lambda k: _threat_sort_key(*k))]
    for family, threat, param in keys:
        sel = rows_df[(rows_df["family"] == family) & (rows_df["threat"] == threat)]
        sel = sel[sel["param"].isna()] if math.isnan(param) else sel[sel["param"] == param]
        by = {s: row for s, row in zip(sel["series"], sel.itertuples(), strict=True)}
        row = [threat_label(family, threat, param)]
        for s in series:
            m = by.get(s)
            row.append("-" if m is None else
                       f"{_fmt(m.value)} [{_fmt(m.ci_low)}, {_fmt(m.ci_high)}]")
        if len(series) >= 2:
            a, b = by.get(series[0]), by.get(series[-1])
            row.append(f"{b.value - a.value:+.3f}" if a is not None and b is not None else "-")
        cells.append(row)
    sizes = sorted({int(n) for n in rows_df["n"].dropna()})
    note = (f"{metric} on n={', '.join(map(str, sizes))} samples, 95% interval in brackets; for "
            "attacks, the per-point worst case over every budget up to this eps.") if sizes else ""
    return Table(title=f"{metric.capitalize()} per threat", headers=headers, rows=cells, note=note)


def group_table(df: pd.DataFrame, metric: str = "accuracy") -> Table | None:
    """Worst and best group per (group feature, threat, version) and the gap."""
    rows_df = df[(df["metric"] == metric) & (df["group_feature"] != "")]
    if rows_df.empty:
        return None
    cells: list[list[str]] = []
    grouped = rows_df.groupby(["group_feature", "family", "threat", "param", "series"],
                              sort=False, dropna=False)
    top = rows_df.groupby(["family", "threat"], dropna=False)["param"].max()
    brief = []
    for (feature, family, threat, param, series), sub in grouped:
        largest = top.get((family, threat))
        if (isinstance(param, float) and math.isnan(param)) or largest is None or \
                (isinstance(largest, float) and math.isnan(largest)) or param == largest:
            brief.append(len(cells))
        worst = sub.loc[sub["value"].idxmin()]
        best = sub.loc[sub["value"].idxmax()]
        if worst["value"] == best["value"]:  # every group ties: none is worst or best
            named = [f"all {len(sub)} tie ({_fmt(worst['value'])})", "-"]
        else:
            named = [f"{worst['group_value']} ({_fmt(worst['value'])})",
                     f"{best['group_value']} ({_fmt(best['value'])})"]
        cells.append([str(feature), threat_label(str(family), str(threat), float(param)),
                      str(series), *named, _fmt(best["value"] - worst["value"])])
    return Table(title="Group disparity", note=f"{metric} of the worst and best group; gap = best - worst.",
                 headers=["group feature", "threat", "version", "worst group", "best group", "gap"],
                 rows=cells, brief=brief if len(brief) < len(cells) else None)


STATUS_ORDER = {"fail": 0, "warn": 1, "pass": 2}


def checks_summary(runs: Sequence[LoadedRun]) -> Table:
    """Pass / warn / fail counts per subject (the data, each version, each
    version's attacks), naming the checks that did not pass."""
    counts: dict[str, dict[str, int]] = {}
    failing: dict[str, list[str]] = {}
    for r in runs:
        for c in r.record.get("checks") or []:
            subject = str(c.get("subject", "")) or "-"
            status = str(c.get("status", ""))
            by = counts.setdefault(subject, {"pass": 0, "warn": 0, "fail": 0})
            by[status] = by.get(status, 0) + 1
            if status != "pass":
                failing.setdefault(subject, []).append(f"{c.get('check')} ({status})")
    rows, classes = [], []
    for subject, by in counts.items():
        rows.append([subject, str(by["pass"]), str(by["warn"]), str(by["fail"]),
                     ", ".join(failing.get(subject, [])) or "-"])
        worst = "fail" if by["fail"] else "warn" if by["warn"] else "pass"
        classes.append([f"status-{worst}", "", "", "", ""])
    return Table(title="Checks per subject", headers=["subject", "pass", "warn", "fail",
                                                      "not passed"], rows=rows, classes=classes)


def checks_table(runs: Sequence[LoadedRun]) -> Table:
    """Every validation and reliability check of every run, failures first."""
    entries = []
    for r in runs:
        for i, c in enumerate(r.record.get("checks") or []):
            evidence = c.get("evidence") or {}
            ev = json.dumps(evidence, default=str, sort_keys=True) if evidence else ""
            status = str(c.get("status", ""))
            row = [str(c.get("check", "")), status, str(c.get("subject", "")),
                   str(c.get("message", "")), ev]
            if len(runs) > 1:
                row.append(r.run_id)
            entries.append(((STATUS_ORDER.get(status, -1), i), row,
                            ["", f"status-{status}"] + [""] * (len(row) - 2)))
    entries.sort(key=lambda e: e[0])
    note = "" if entries else "No validation or reliability checks were recorded for these runs."
    headers = ["check", "status", "subject", "message", "evidence"]
    return Table(title="Validation and reliability checks",
                 headers=headers + (["run"] if len(runs) > 1 else []),
                 rows=[e[1] for e in entries], classes=[e[2] for e in entries], note=note)


def provenance_tables(run: LoadedRun) -> list[Table]:
    """What a reviewer needs to reproduce or trust one run."""
    r = run.record
    git = r.get("git") or {}
    env = r.get("env") or {}
    data = r.get("data") or {}
    commit = git.get("commit") or "unknown"
    if git.get("dirty"):
        commit += " (uncommitted changes)"
    overview = [
        ["run id", run.run_id], ["name", str(r.get("name", ""))], ["source", run.source],
        ["started", str(r.get("started", ""))], ["finished", str(r.get("finished", ""))],
        ["config hash", str(r.get("config_hash", ""))], ["run key", str(r.get("run_key", ""))],
        ["overrides", " ".join(r.get("overrides") or []) or "(none)"],
        ["data", f"{data.get('name', '')}: n={data.get('n', '')}, shape={data.get('shape', '')}"],
        ["data fingerprint", str(data.get("fingerprint", ""))],
        ["seed", str(r.get("seed", ""))], ["device", str(r.get("device", ""))],
        ["git commit", commit], ["platform", str(env.get("platform", ""))],
        ["torch threads", str(env.get("torch_threads", ""))],
        ["deterministic", str(env.get("deterministic_algorithms", ""))],
    ]
    if env.get("cuda_device"):
        overview.append(["CUDA device", str(env["cuda_device"])])
    models = [[k, str(m.get("sha256", "")), str(m.get("checkpoint", ""))]
              for k, m in (r.get("models") or {}).items()]
    packages = [[k, str(v)] for k, v in (r.get("packages") or {}).items()]
    return [
        Table(title=f"Run {run.run_id}", headers=["field", "value"], rows=overview),
        Table(title="Model versions and checksums", headers=["version", "sha256", "checkpoint"],
              rows=models),
        Table(title="Package versions", headers=["package", "version"], rows=packages),
    ]


@dataclass
class Stored:
    """What the report reads from a temporary store of its runs: the paired
    comparison tables, the significant changes, and the gate's results."""

    paired: list[Table] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    changes_note: str = ""
    gate_status: str = ""
    gate: Table | None = None
    gate_note: str = ""


#: Significant changes the verdict lists before "and N more".
MAX_CHANGES = 8


def stored_analysis(runs: Sequence[LoadedRun], versions: Sequence[str], metric: str = "accuracy",
                    gate_rules: str | None = None) -> Stored:
    """``rtb compare`` (and ``rtb gate`` with ``gate_rules``) on the report's
    runs, from a temporary store holding only these runs: each later version
    against the first, sample by sample (McNemar's exact test for accuracy,
    Holm-adjusted)."""
    out = Stored()
    if len(versions) < 2 and gate_rules is None:
        return out
    import tempfile

    from benchmark.compare import compare, select_sides
    from benchmark.store import Store

    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "report.sqlite") as store:
        for r in runs:
            store.save_run(r.record, r.outcomes())
        run_ids = [r.run_id for r in runs]
        if len(versions) >= 2:
            try:
                result = compare(store, select_sides(store, list(versions), runs=run_ids))
            except UserError as exc:
                out.paired = [Table(title="Paired comparison", headers=[], rows=[],
                                    note=f"No paired comparison: {exc}")]
            else:
                out.paired = _paired_from(result, metric)
                out.changes, out.changes_note = _significant_changes(result, metric)
        if gate_rules is not None:
            _gate_into(out, store, gate_rules, run_ids)
    return out


def _paired_from(result: Any, metric: str) -> list[Table]:
    tables = []
    for cand in result.candidates:
        rows, classes = [], []
        for row in result.rows:
            if row.candidate != cand.key or row.group_feature or row.metric != metric:
                continue
            marker = _change_word(row)
            ci = "-" if math.isnan(row.ci_low) else f"[{row.ci_low:+.3f}, {row.ci_high:+.3f}]"
            rows.append([row.label, row.metric, _fmt(row.value_baseline),
                         _fmt(row.value_candidate), f"{row.difference:+.3f}", ci, row.test,
                         _fmt_p(row.p_value), _fmt_p(row.p_adjusted), marker])
            classes.append([""] * 9 + [f"sig-{marker}" if marker else ""])
        note = (f"Paired on the same samples; significant at alpha={result.alpha:g} after "
                f"{result.adjust} adjustment over every test of the comparison.")
        note += (f" Only {metric} over all samples is shown here; `rtb compare` lists every "
                 "metric and group, and what was left out and why.")
        tables.append(Table(
            title=f"Paired comparison: {cand.key} vs {result.baseline.key}",
            headers=["threat", "metric", result.baseline.key, cand.key, "diff",
                     "95% CI of diff", "test", "p", f"p ({result.adjust})", "significant"],
            rows=rows, classes=classes, note=note))
    return tables


def _change_word(row: Any) -> str:
    if not row.significant:
        return ""
    return "better" if row.improved else "worse" if row.improved is False else "changed"


def _significant_changes(result: Any, metric: str) -> tuple[list[str], str]:
    """One sentence per significant change of ``metric`` over all samples,
    largest first."""
    rows = [r for r in result.rows if r.significant and not r.group_feature
            and r.metric == metric]
    rows.sort(key=lambda r: -abs(r.difference))
    lines = [f"{r.candidate} {_change_word(r)} than {r.baseline} under {r.label}: "
             f"{_fmt(r.value_baseline)} -> {_fmt(r.value_candidate)} ({r.difference:+.3f}, "
             f"p {result.adjust} {_fmt_p(r.p_adjusted)})" for r in rows[:MAX_CHANGES]]
    more = len(rows) - MAX_CHANGES
    note = (f"and {more} more; see the paired comparison below." if more > 0 else
            "" if rows else f"No significant change in {metric} (alpha={result.alpha:g}, "
            f"{result.adjust}).")
    return lines, note


def _gate_into(out: Stored, store: Any, rules: str, run_ids: list[str]) -> None:
    from benchmark.gate import evaluate, load_rules

    try:
        spec = load_rules(rules)
        results, _ = evaluate(store, spec, runs=run_ids)
    except UserError as exc:
        out.gate_status, out.gate_note = "error", f"The gate {rules!r} was not evaluated: {exc}"
        return
    names = [n for n, _ in spec.rules]
    out.gate_status = "fail" if any(r.status == "fail" for r in results) else "pass"
    out.gate = Table(title=f"Gate {rules}", headers=["rule", "status", "result"],
                     rows=[[n, r.status, r.message] for n, r in zip(names, results, strict=True)],
                     classes=[["", f"status-{r.status}", ""] for r in results])


def paired_tables(runs: Sequence[LoadedRun], versions: Sequence[str],
                  metric: str = "accuracy") -> list[Table]:
    """The paired comparison tables of ``stored_analysis``."""
    return stored_analysis(runs, versions, metric).paired


def _fmt_p(p: float) -> str:
    if math.isnan(p):
        return "-"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.4f}"


def verdict_table(df: pd.DataFrame, metric: str = "accuracy") -> Table:
    """Per version: clean accuracy, the worst robust accuracy of each attack
    (over its budgets), mCE, and the worst clean group accuracy."""
    from metrics.corruption import SUMMARY_THREAT

    overall = df[df["group_feature"] == ""]
    series = list(dict.fromkeys(df["series"]))
    attacks = list(dict.fromkeys(overall[(overall["family"] == "attack")
                                         & (overall["metric"] == metric)]["threat"]))
    has_mce = bool(((overall["metric"] == "mce") & (overall["threat"] == SUMMARY_THREAT)).any())
    worst_rows = df[(df["metric"] == f"{metric}_worst_group") & (df["family"] == "clean")]
    headers = ["version", f"clean {metric}",
               *[f"worst under {a}" for a in attacks],
               *(["mCE"] if has_mce else []),
               *(["worst group (clean)"] if not worst_rows.empty else [])]
    rows = []
    for s in series:
        mine = overall[overall["series"] == s]
        clean = mine[(mine["family"] == "clean") & (mine["metric"] == metric)]["value"]
        row = [s, _fmt(float(clean.iloc[0])) if len(clean) else "-"]
        for a in attacks:
            sel = mine[(mine["threat"] == a) & (mine["metric"] == metric)]
            if sel.empty:
                row.append("-")
                continue
            at = sel.loc[sel["value"].idxmin()]
            row.append(f"{_fmt(at['value'])} (eps={at['param']:g})")
        if has_mce:
            mce = mine[(mine["threat"] == SUMMARY_THREAT) & (mine["metric"] == "mce")]["value"]
            row.append(_fmt(float(mce.iloc[0])) if len(mce) else "-")
        if not worst_rows.empty:
            w = worst_rows[worst_rows["series"] == s]
            if w.empty:
                row.append("-")
            else:
                low = w.loc[w["value"].idxmin()]
                top = df[(df["metric"] == f"{metric}_best_group") & (df["family"] == "clean")
                         & (df["series"] == s) & (df["group_feature"] == low["group_feature"])]
                tie = not top.empty and float(top["value"].max()) == float(low["value"])
                row.append(f"{_fmt(low['value'])} (all {low['group_feature']} tie)" if tie else
                           f"{_fmt(low['value'])} ({low['group_feature']}={low['group_value']})")
        rows.append(row)
    note = (f"Worst robust {metric}: the lowest over the attack's budgets (the per-point worst "
            "case at the largest eps)." + (" mCE: lower is better; 1.0 is the baseline version."
                                           if has_mce else ""))
    return Table(title="Headline per version", headers=headers, rows=rows, note=note)


#: The CE/mCE metrics of ``metrics.corruption``, in table order, with column names.
CE_METRICS = {"accuracy_mean": "mean accuracy", "ce": "CE", "relative_ce": "relative CE"}


def corruption_ce_table(df: pd.DataFrame) -> Table | None:
    """Per corruption and version: mean accuracy over the severities, CE and
    relative CE; last the mCE and relative mCE (Hendrycks & Dietterich)."""
    from metrics.corruption import SUMMARY_THREAT

    rows_df = df[(df["family"] == "corruption") & df["param"].isna() & (df["group_feature"] == "")]
    if rows_df.empty:
        return None
    series = list(dict.fromkeys(rows_df["series"]))
    value = {(str(t), str(m), str(s)): float(v) for t, m, s, v in
             zip(rows_df["threat"], rows_df["metric"], rows_df["series"], rows_df["value"],
                 strict=True)}
    present = [m for m in CE_METRICS if any(k[1] == m for k in value)]
    headers = ["corruption"] + [f"{CE_METRICS[m]} {s}" if len(series) > 1 else CE_METRICS[m]
                                for m in present for s in series]
    names = [t for t in dict.fromkeys(rows_df["threat"]) if t != SUMMARY_THREAT]
    rows = [[t] + [_fmt(value.get((t, m, s))) for m in present for s in series] for t in names]
    summary = {"accuracy_mean": "mean_error", "ce": "mce", "relative_ce": "relative_mce"}
    if any(k[0] == SUMMARY_THREAT for k in value):
        cells = []
        for m in present:
            for s in series:
                v = value.get((SUMMARY_THREAT, summary[m], s))
                cells.append("-" if v is None else
                             _fmt(1.0 - v) if m == "accuracy_mean" else _fmt(v))
        rows.append(["mCE (" + SUMMARY_THREAT + ")"] + cells)
    definition = next((str(d) for d, m in zip(rows_df["definition"], rows_df["metric"], strict=True)
                       if m == "mce" and isinstance(d, str)), "")
    note = ("CE: the version's summed error over the severities divided by the baseline's; "
            "relative CE subtracts the clean error first; mCE averages CE over the corruptions. "
            "Lower is better; 1.0 is the baseline." + (f" {definition}." if definition else ""))
    return Table(title="Corruption error (CE, mCE)", headers=headers, rows=rows, note=note)


FAIRNESS_METRICS = ("demographic_parity_difference", "demographic_parity_ratio",
                    "equalized_odds_difference", "equalized_odds_ratio")


def fairness_table(df: pd.DataFrame) -> Table | None:
    """Fairness differences (with their 95% interval) and ratios per threat,
    group feature and version; None when the run has none."""
    rows_df = df[df["metric"].isin(FAIRNESS_METRICS) & (df["group_feature"] != "")]
    if rows_df.empty:
        return None
    present = [m for m in FAIRNESS_METRICS if (rows_df["metric"] == m).any()]
    rows = []
    grouped = rows_df.groupby(["family", "threat", "param", "group_feature", "series"],
                              sort=False, dropna=False)
    keyed = sorted(grouped, key=lambda kv: (_threat_sort_key(str(kv[0][0]), str(kv[0][1]),
                                                             float(kv[0][2])), str(kv[0][3])))
    for (family, threat, param, feature, series), sub in keyed:
        by = {str(m): r for m, r in zip(sub["metric"], sub.itertuples(), strict=True)}
        row = [threat_label(str(family), str(threat), float(param)), str(feature), str(series)]
        for m in present:
            r = by.get(m)
            if r is None:
                row.append("-")
            elif m.endswith("_difference") and not math.isnan(r.ci_low):
                row.append(f"{_fmt(r.value)} [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]")
            else:
                row.append(_fmt(r.value))
        rows.append(row)
    return Table(title="Fairness between groups",
                 headers=["threat", "group feature", "version",
                          *[m.replace("_", " ") for m in present]],
                 rows=rows, note="Differences: 0 is parity (95% interval in brackets); "
                                 "ratios: 1 is parity.")


def comparability_notes(runs: Sequence[LoadedRun]) -> list[str]:
    """Say when runs in one report were not measured on the same data."""
    prints = {r.run_id: (r.record.get("data") or {}).get("fingerprint") for r in runs}
    if len(set(prints.values())) > 1:
        listing = ", ".join(f"{rid}: {str(fp)[:12]}" for rid, fp in prints.items())
        return [f"These runs were measured on different data (fingerprints {listing}); their "
                "numbers are not comparable sample for sample."]
    return []


def build_report(runs: Sequence[LoadedRun], compare: Sequence[str] = (),
                 title: str | None = None, gate: str | None = None) -> Report:
    """Everything the report shows, computed from the runs' records; ``gate``
    names release rules (conf/gate/NAME or a YAML path) for the verdict box."""
    from benchmark.plots import all_plots  # matplotlib: loaded only when a report is built

    df = measurements_frame(runs, compare)
    series = list(dict.fromkeys(df["series"]))
    if df.empty:
        raise DataError(
            "Expected the runs to hold measurements, but they hold none: "
            + ", ".join(r.source for r in runs) + "."
        )
    if title is None:
        title = "rtb report: " + (" vs ".join(series) if len(series) <= 4 else f"{len(series)} versions")
    keys = list(dict.fromkeys(df["key"]))
    stored = (stored_analysis(runs, keys, gate_rules=gate) if len(keys) == len(series)
              else Stored())
    if gate is not None and not stored.gate_status:
        stored.gate_status, stored.gate_note = "error", (
            f"The gate {gate!r} was not evaluated: one version appears in several runs.")
    verdict = Verdict(versions=verdict_table(df), changes=stored.changes,
                      changes_note=stored.changes_note, gate_status=stored.gate_status,
                      gate=stored.gate, gate_note=stored.gate_note)
    fairness = fairness_table(df)
    tabular = fairness is not None or any(
        (r.record.get("data") or {}).get("modality") == "tabular" for r in runs)
    report = Report(title=title, runs=list(runs), series=series, summary=summary_table(df),
                    paired=stored.paired, plots=all_plots(df), groups=group_table(df),
                    checks=checks_table(runs), checks_summary=checks_summary(runs),
                    notes=comparability_notes(runs), verdict=verdict,
                    corruption=corruption_ce_table(df), fairness=fairness, groups_first=tabular)
    # the example gallery's section slot: image grids (or feature diffs) of each run
    report.gallery_html = "\n".join(filter(None, (gallery_section(r) for r in runs)))
    return report


# ----------------------------------------------------------------------------- HTML

CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#1f2328;
background:#f6f8fa}
main{max-width:1180px;margin:0 auto;padding:0 32px 24px;background:#fff}
h1{font-size:1.6em;margin:0;padding-top:20px}h2{border-bottom:1px solid #d0d7de;
padding-bottom:4px;margin-top:28px}h3{margin-top:18px}
section{scroll-margin-top:48px}
.meta{color:#57606a;font-size:.9em;margin:4px 0}
table{border-collapse:collapse;margin:8px 0;font-size:.88em}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;
white-space:nowrap}
td.mono,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.92em;word-break:break-all}
.sig-better{background:#dafbe1}.sig-worse{background:#ffebe9;font-weight:600}
.status-pass{background:#dafbe1}.status-warn{background:#fff8c5}.status-fail{background:#ffebe9;
font-weight:600}.status-skip{background:#f6f8fa}
figure{margin:12px 0}figure img{max-width:100%;height:auto;border:1px solid #d0d7de}
figcaption{color:#57606a;font-size:.88em}
.note{color:#57606a;font-size:.88em}.warning{background:#fff8c5;padding:8px;border:1px solid #d4a72c}
pre{background:#f6f8fa;padding:8px;overflow:auto;font-size:.82em;max-height:480px;margin:4px 0}
nav.toc{position:sticky;top:0;z-index:1;background:#fff;border-bottom:1px solid #d0d7de;
padding:8px 0;margin-bottom:8px}nav.toc a{margin-right:14px;color:#0969da;text-decoration:none}
.verdict{border:2px solid #d0d7de;border-radius:6px;padding:4px 16px 12px;margin-top:12px}
.verdict h2{border:0;margin-top:8px}.verdict-pass{border-color:#1a7f37}
.verdict-fail{border-color:#cf222e}.gate{font-size:1.1em;font-weight:600;padding:6px 10px;
display:inline-block;border-radius:4px}.gate-pass{background:#dafbe1}.gate-fail{background:#ffebe9}
.gate-error{background:#fff8c5}
details>summary{cursor:pointer;color:#0969da}td details>summary{color:#57606a}
ul.changes{margin:4px 0 8px;padding-left:20px}
"""

#: A cell that holds a number (optionally with an interval or a note in brackets).
NUMBER = re.compile(r"^([+-]?(\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?%?|-)( \[[^\]]*\]| \([^)]*\))?$")


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _is_num(cell: str) -> bool:
    return bool(NUMBER.match(str(cell)))


def _html_table(t: Table, mono_cols: Sequence[int] = ()) -> str:
    """``t`` as HTML; columns whose cells are all numbers are right-aligned (``num``)."""
    numeric = {j for j in range(len(t.headers))
               if t.rows and j > 0 and all(_is_num(r[j]) for r in t.rows if j < len(r))
               and any(str(r[j]) != "-" for r in t.rows if j < len(r))}
    num_attr = ' class="num"'
    head = "".join(f"<th{num_attr if j in numeric else ''}>{_e(h)}</th>"
                   for j, h in enumerate(t.headers))
    body = []
    for i, row in enumerate(t.rows):
        cls_row = t.classes[i] if i < len(t.classes) else []
        cells = []
        for j, cell in enumerate(row):
            cls = [cls_row[j]] if j < len(cls_row) and cls_row[j] else []
            if j in mono_cols:
                cls.append("mono")
            if j in numeric:
                cls.append("num")
            attr = f' class="{" ".join(cls)}"' if cls else ""
            cells.append(f"<td{attr}>{_e(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = f'<p class="note">{_e(t.note)}</p>' if t.note else ""
    table = (f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
             if t.rows else "")
    return table + note


#: A table longer than this shows its brief rows, the rest behind a click.
LONG_TABLE = 12


#: Rows the brief version of a long group table keeps (the widest gaps).
BRIEF_ROWS = 20


def _html_long_table(t: Table, mono_cols: Sequence[int] = ()) -> str:
    """``t``, or its brief rows with the whole table in a ``<details>`` when long."""
    if t.brief is None or len(t.rows) <= LONG_TABLE:
        return _html_table(t, mono_cols)
    pick = [i for i in t.brief if i < len(t.rows)]
    if len(pick) > BRIEF_ROWS and "gap" in t.headers:  # the widest gaps, in table order
        col = t.headers.index("gap")

        def gap(i: int) -> float:
            try:
                return float(str(t.rows[i][col]).split()[0])
            except (ValueError, IndexError):
                return -1.0

        pick = sorted(sorted(pick, key=gap, reverse=True)[:BRIEF_ROWS])
    short = Table(title=t.title, headers=t.headers, rows=[t.rows[i] for i in pick],
                  classes=[t.classes[i] for i in pick if i < len(t.classes)],
                  note=f"{t.note} Clean and each threat at its largest budget or severity"
                       + (f", the {BRIEF_ROWS} widest gaps" if len(pick) == BRIEF_ROWS else "")
                       + "; every row below.".strip())
    whole = replace(t, note="")
    return (_html_table(short, mono_cols) + f"<details><summary>All {len(t.rows)} rows</summary>"
            + _html_table(whole, mono_cols) + "</details>")


def _html_plot(p: Plot) -> str:
    data = base64.b64encode(p.png).decode("ascii")
    return (f'<figure id="fig-{_e(p.key)}"><img class="plot" data-plot="{_e(p.key)}" '
            f'alt="{_e(p.title)}" width="{p.width}" height="{p.height}" '
            f'src="data:image/png;base64,{data}"><figcaption>{_e(p.caption)}</figcaption></figure>')


def _html_verdict(v: Verdict) -> str:
    status = v.gate_status or "none"
    parts = [f'<section id="verdict" class="verdict verdict-{status}"><h2>Verdict</h2>']
    if v.gate_status:
        label = {"pass": "PASS", "fail": "FAIL", "error": "NOT EVALUATED"}[v.gate_status]
        title = v.gate.title if v.gate else "Gate"
        parts.append(f'<p class="gate gate-{v.gate_status}">{_e(title)}: {label}</p>')
        if v.gate is not None:
            n_fail = sum(r[1] == "fail" for r in v.gate.rows)
            parts.append(f"<details{' open' if n_fail else ''}><summary>{len(v.gate.rows)} "
                         f"rule(s), {n_fail} failed</summary>{_html_table(v.gate)}</details>")
        if v.gate_note:
            parts.append(f'<p class="note">{_e(v.gate_note)}</p>')
    parts.append(_html_table(v.versions))
    if v.changes or v.changes_note:
        parts.append("<h3>Significant changes</h3>")
        if v.changes:
            parts.append('<ul class="changes">' + "".join(f"<li>{_e(c)}</li>" for c in v.changes)
                         + "</ul>")
        if v.changes_note:
            parts.append(f'<p class="note">{_e(v.changes_note)}</p>')
    parts.append("</section>")
    return "".join(parts)


#: Check statuses in the order the report groups them; failures and warnings open.
CHECK_GROUPS = (("fail", True), ("warn", True), ("pass", False))


def _html_checks(t: Table) -> str:
    """The check rows grouped by status, each group collapsible and every
    evidence collapsed into its own ``<details>``."""
    if not t.rows:
        return f'<p class="note">{_e(t.note)}</p>' if t.note else ""
    extra = t.headers[5:]  # the run column, with several runs
    out = []
    known = [g for g, _ in CHECK_GROUPS]
    groups = [*CHECK_GROUPS, *[(st, True) for st in dict.fromkeys(r[1] for r in t.rows)
                               if st not in known]]
    for status, is_open in groups:
        rows = [r for r in t.rows if r[1] == status]
        if not rows:
            continue
        head = "".join(f"<th>{_e(h)}</th>" for h in ["check", "subject", "message", "evidence",
                                                     *extra])
        body = []
        for r in rows:
            check, _, subject, message, evidence, *rest = r
            ev = ""
            if evidence:
                pretty = json.dumps(json.loads(evidence), indent=1, sort_keys=True)
                ev = f"<details><summary>evidence</summary><pre>{_e(pretty)}</pre></details>"
            body.append(f"<tr><td>{_e(check)}</td><td>{_e(subject)}</td><td>{_e(message)}</td>"
                        f"<td>{ev}</td>" + "".join(f"<td>{_e(x)}</td>" for x in rest) + "</tr>")
        out.append(f'<details class="checks-{status}"{" open" if is_open else ""}>'
                   f'<summary class="status-{status}">{_e(status)} ({len(rows)})</summary>'
                   f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
                   "</details>")
    return "".join(out)


def _sections(report: Report) -> list[tuple[str, str]]:
    """(anchor, title) of every section the report shows, in page order."""
    groups = [("groups", "Groups")] if report.groups or report.fairness else []
    out = [("verdict", "Verdict")] if report.verdict else []
    out += groups if report.groups_first else []
    out += [("summary", "Accuracy")]
    out += [("paired", "Paired comparison")] if report.paired else []
    out += [("corruption", "CE / mCE")] if report.corruption else []
    out += [("plots", "Plots")]
    out += groups if not report.groups_first else []
    out += [("gallery", "Examples")] if report.gallery_html else []
    return out + [("checks", "Checks"), ("provenance", "Provenance")]


def render_html(report: Report) -> str:
    """The report as one HTML document with everything inline."""
    sections = _sections(report)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(report.title)}</title><style>{CSS}</style></head><body><main>",
        f'<h1 id="top">{_e(report.title)}</h1>',
        '<p class="meta">' + " &middot; ".join(
            f"run {_e(r.run_id)} ({_e((r.record.get('data') or {}).get('name', ''))}, "
            f"n={_e((r.record.get('data') or {}).get('n', ''))}, finished {_e(r.record.get('finished', ''))})"
            for r in report.runs) + "</p>",
        '<nav class="toc">' + "".join(f'<a href="#{a}">{_e(t)}</a>' for a, t in sections)
        + "</nav>",
    ]
    parts += [f'<p class="warning">{_e(n)}</p>' for n in report.notes]
    body: dict[str, list[str]] = {}
    if report.verdict:
        body["verdict"] = [_html_verdict(report.verdict)]
    groups = ["<h2>Groups</h2>"]
    if report.fairness:
        groups += [f"<h3>{_e(report.fairness.title)}</h3>", _html_long_table(report.fairness)]
    if report.groups:
        groups += [f"<h3>{_e(report.groups.title)}</h3>", _html_long_table(report.groups)]
    body["groups"] = groups
    body["summary"] = [f"<h2>{_e(report.summary.title)}</h2>", _html_table(report.summary)]
    paired = ["<h2>Paired comparison</h2>"]
    for t in report.paired:
        paired += [f"<h3>{_e(t.title)}</h3>", _html_table(t)]
    body["paired"] = paired
    if report.corruption:
        body["corruption"] = [f"<h2>{_e(report.corruption.title)}</h2>",
                              _html_table(report.corruption)]
    plots = ["<h2>Plots</h2>"]
    group_plots = [p for p in report.plots if p.key.startswith("groups-")]
    for p in report.plots:
        if p in group_plots[1:]:
            continue
        plots += [f"<h3>{_e(p.title)}</h3>", _html_plot(p)]
    if len(group_plots) > 1:  # one group feature's figure shown, the others a click away
        more = ", ".join(p.title.split(": ", 1)[-1] for p in group_plots[1:])
        plots.append(f"<details><summary>Group disparity of the other features: {_e(more)}"
                     "</summary>" + "".join(f"<h3>{_e(p.title)}</h3>{_html_plot(p)}"
                                            for p in group_plots[1:]) + "</details>")
    if not report.plots:
        plots.append('<p class="note">No measurements to plot.</p>')
    body["plots"] = plots
    body["gallery"] = [report.gallery_html]  # the example gallery's section slot
    body["checks"] = [f"<h2>{_e(report.checks.title)}</h2>", _html_table(report.checks_summary),
                      _html_checks(report.checks)]
    prov = ["<h2>Provenance</h2>"]
    for run in report.runs:
        tables = provenance_tables(run)
        prov += [f"<h3>{_e(tables[1].title)}</h3>", _html_table(tables[1], mono_cols=(1, 2))]
        prov.append(f"<details><summary>{_e(tables[0].title)}: config hash, data fingerprint, "
                    f"git commit, platform</summary>{_html_table(tables[0], mono_cols=(1,))}"
                    "</details>")
        for t in tables[2:]:
            prov.append(f"<details><summary>{_e(t.title)}</summary>"
                        f"{_html_table(t, mono_cols=(1,))}</details>")
        config = json.dumps(run.record.get("config") or {}, indent=2, sort_keys=True, default=str)
        prov.append(f"<details><summary>Resolved config</summary><pre>{_e(config)}</pre></details>")
    body["provenance"] = prov
    for anchor, _ in sections:
        parts.append(f'<section id="{anchor}">' + "\n".join(body[anchor]) + "</section>"
                     if anchor != "verdict" else "\n".join(body[anchor]))
    parts.append('<p class="meta">Generated by rtb report from recorded results; no model was '
                 'run to make it. <a href="#top">Back to top</a></p></main></body></html>')
    return "\n".join(parts)


# ----------------------------------------------------------------------------- Markdown

def _md_cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _md_table(t: Table) -> str:
    if not t.rows:
        return f"_{t.note}_\n" if t.note else ""
    lines = ["| " + " | ".join(_md_cell(h) for h in t.headers) + " |",
             "|" + "|".join("---" for _ in t.headers) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
    if t.note:
        lines += ["", f"_{t.note}_"]
    return "\n".join(lines) + "\n"


def render_markdown(report: Report, assets: Path, link_prefix: str) -> str:
    """The report as Markdown; each plot is written to ``assets`` as a PNG and
    linked as ``link_prefix/<key>.png``."""
    assets.mkdir(parents=True, exist_ok=True)
    out = [f"# {report.title}", ""]
    out += [f"- run `{r.run_id}` ({(r.record.get('data') or {}).get('name', '')}, "
            f"n={(r.record.get('data') or {}).get('n', '')}), finished {r.record.get('finished', '')}"
            for r in report.runs]
    out.append("")
    out += [f"> **Note:** {n}\n" for n in report.notes]
    if report.verdict:
        v = report.verdict
        out += ["## Verdict", ""]
        if v.gate_status:
            out += [f"**{v.gate.title if v.gate else 'Gate'}: {v.gate_status.upper()}**", ""]
            out += [_md_table(v.gate)] if v.gate else []
            out += [f"_{v.gate_note}_", ""] if v.gate_note else []
        out += [_md_table(v.versions)]
        if v.changes or v.changes_note:
            out += ["### Significant changes", "", *[f"- {c}" for c in v.changes], ""]
            out += [f"_{v.changes_note}_", ""] if v.changes_note else []
    group_md = []
    if report.fairness:
        group_md += [f"## {report.fairness.title}", "", _md_table(report.fairness)]
    if report.groups:
        group_md += [f"## {report.groups.title}", "", _md_table(report.groups)]
    out += group_md if report.groups_first else []
    out += [f"## {report.summary.title}", "", _md_table(report.summary)]
    for t in report.paired:
        out += [f"### {t.title}", "", _md_table(t)]
    if report.corruption:
        out += [f"## {report.corruption.title}", "", _md_table(report.corruption)]
    out += ["## Plots", ""]
    for p in report.plots:
        (assets / f"{p.key}.png").write_bytes(p.png)
        out += [f"### {p.title}", "", f"![{p.title}]({link_prefix}/{p.key}.png)", "",
                f"_{p.caption}_", ""]
    out += group_md if not report.groups_first else []
    out += [f"## {report.checks.title}", "", _md_table(report.checks_summary),
            _md_table(report.checks), "## Provenance", ""]
    for run in report.runs:
        tables = provenance_tables(run)
        out += [f"### {tables[0].title}", "", _md_table(tables[0])]
        for t in tables[1:]:
            out += [f"#### {t.title}", "", _md_table(t)]
        config = json.dumps(run.record.get("config") or {}, indent=2, sort_keys=True, default=str)
        out += ["<details><summary>Resolved config</summary>", "", "```json", config, "```", "",
                "</details>", ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------- writing

def _write_html(report: Report, path: Path) -> list[Path]:
    path.write_text(render_html(report), encoding="utf-8")
    return [path]


def _write_markdown(report: Report, path: Path) -> list[Path]:
    assets = path.with_name(path.stem + "_files")
    text = render_markdown(report, assets, assets.name)
    path.write_text(text, encoding="utf-8")
    return [path, *sorted(assets.glob("*.png"))]


#: Output formats by name: each writes the report to a path and returns the files written.
WRITERS: dict[str, Callable[[Report, Path], list[Path]]] = {
    "html": _write_html,
    "markdown": _write_markdown,
}
SUFFIX_FORMAT = {".html": "html", ".htm": "html", ".md": "markdown", ".markdown": "markdown"}


def report_format(output: str | None, fmt: str | None) -> str:
    """The format of a report written to ``output``: ``fmt`` when given, else by
    suffix; a suffix that names no format we write is refused."""
    if output is not None:
        suffix = Path(output).suffix.lower()
        if suffix not in SUFFIX_FORMAT:
            raise UserError(f"Expected the report file to end in {', '.join(SUFFIX_FORMAT)} "
                            f"(formats: {', '.join(WRITERS)}), but got {output!r}.")
        return fmt or SUFFIX_FORMAT[suffix]
    return fmt or "html"


def check_report_path(path: Path, fmt: str) -> None:
    """Refuse, before any work, a report path that cannot be written."""
    from benchmark.outputs import check_output_dir, check_output_file

    if fmt not in WRITERS:
        raise UserError(f"Unknown report format {fmt!r}; expected one of: {', '.join(WRITERS)}.")
    check_output_file("the report file", path)
    if not path.parent.is_dir():
        raise UserError(f"Expected an existing directory for the report, but "
                        f"{str(path.parent)!r} does not exist.")
    if fmt == "markdown":
        check_output_dir("the report's image directory", path.with_name(path.stem + "_files"))


def write_report(report: Report, path: Path, fmt: str) -> list[Path]:
    """Write ``report`` in format ``fmt`` (html | markdown) to ``path``."""
    check_report_path(path, fmt)
    try:
        return WRITERS[fmt](report, path)
    except OSError as exc:
        raise UserError(f"Could not write the report {str(path)!r} ({exc.strerror or exc}).") from None
