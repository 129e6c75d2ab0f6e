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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
    cells = []
    grouped = rows_df.groupby(["group_feature", "family", "threat", "param", "series"],
                              sort=False, dropna=False)
    for (feature, family, threat, param, series), sub in grouped:
        worst = sub.loc[sub["value"].idxmin()]
        best = sub.loc[sub["value"].idxmax()]
        cells.append([str(feature), threat_label(str(family), str(threat), float(param)),
                      str(series), f"{worst['group_value']} ({_fmt(worst['value'])})",
                      f"{best['group_value']} ({_fmt(best['value'])})",
                      _fmt(best["value"] - worst["value"])])
    return Table(title="Group disparity", note=f"{metric} of the worst and best group; gap = best - worst.",
                 headers=["group feature", "threat", "version", "worst group", "best group", "gap"],
                 rows=cells)


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
            if len(ev) > 160:
                ev = ev[:157] + "..."
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


def paired_tables(runs: Sequence[LoadedRun], versions: Sequence[str],
                  metric: str = "accuracy") -> list[Table]:
    """``rtb compare`` on the report's runs: each later version against the
    first, sample by sample (McNemar's exact test for accuracy, Holm-adjusted),
    from a temporary store holding only these runs."""
    if len(versions) < 2:
        return []
    import tempfile

    from benchmark.compare import compare, select_sides
    from benchmark.store import Store

    try:
        with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "report.sqlite") as store:
            for r in runs:
                store.save_run(r.record, r.outcomes())
            sides = select_sides(store, list(versions), runs=[r.run_id for r in runs])
            result = compare(store, sides)
    except UserError as exc:
        return [Table(title="Paired comparison", headers=[], rows=[],
                      note=f"No paired comparison: {exc}")]
    tables = []
    for cand in result.candidates:
        rows, classes = [], []
        for row in result.rows:
            if row.candidate != cand.key or row.group_feature or row.metric != metric:
                continue
            marker = "" if not row.significant else (
                "better" if row.improved else "worse" if row.improved is False else "changed")
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


def _fmt_p(p: float) -> str:
    if math.isnan(p):
        return "-"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.4f}"


def comparability_notes(runs: Sequence[LoadedRun]) -> list[str]:
    """Say when runs in one report were not measured on the same data."""
    prints = {r.run_id: (r.record.get("data") or {}).get("fingerprint") for r in runs}
    if len(set(prints.values())) > 1:
        listing = ", ".join(f"{rid}: {str(fp)[:12]}" for rid, fp in prints.items())
        return [f"These runs were measured on different data (fingerprints {listing}); their "
                "numbers are not comparable sample for sample."]
    return []


def build_report(runs: Sequence[LoadedRun], compare: Sequence[str] = (),
                 title: str | None = None) -> Report:
    """Everything the report shows, computed from the runs' records."""
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
    paired = paired_tables(runs, keys) if len(keys) == len(series) else []
    return Report(title=title, runs=list(runs), series=series, summary=summary_table(df),
                  paired=paired, plots=all_plots(df), groups=group_table(df), checks=checks_table(runs),
                  checks_summary=checks_summary(runs),
                  notes=comparability_notes(runs))


# ----------------------------------------------------------------------------- HTML

CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#1f2328;
background:#f6f8fa}
main{max-width:1180px;margin:0 auto;padding:24px 32px;background:#fff}
h1{font-size:1.6em;margin:0 0 4px}h2{border-bottom:1px solid #d0d7de;padding-bottom:4px;
margin-top:32px}h3{margin-top:20px}
.meta{color:#57606a;font-size:.9em}
table{border-collapse:collapse;margin:8px 0;font-size:.88em}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.mono,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.92em;word-break:break-all}
.sig-better,.status-pass{background:#dafbe1}.sig-worse{background:#ffebe9;font-weight:600}
.status-pass{background:#dafbe1}.status-warn{background:#fff8c5}.status-fail{background:#ffebe9;
font-weight:600}
figure{margin:16px 0}figure img{max-width:100%;height:auto;border:1px solid #d0d7de}
figcaption{color:#57606a;font-size:.88em}
.note{color:#57606a;font-size:.88em}.warning{background:#fff8c5;padding:8px;border:1px solid #d4a72c}
pre{background:#f6f8fa;padding:8px;overflow:auto;font-size:.82em;max-height:480px}
nav a{margin-right:12px}
"""


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _html_table(t: Table, mono_cols: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in t.headers)
    body = []
    for i, row in enumerate(t.rows):
        cls_row = t.classes[i] if i < len(t.classes) else []
        cells = []
        for j, cell in enumerate(row):
            cls = [cls_row[j]] if j < len(cls_row) and cls_row[j] else []
            if j in mono_cols:
                cls.append("mono")
            attr = f' class="{" ".join(cls)}"' if cls else ""
            cells.append(f"<td{attr}>{_e(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = f'<p class="note">{_e(t.note)}</p>' if t.note else ""
    table = (f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
             if t.rows else "")
    return table + note


def _html_plot(p: Plot) -> str:
    data = base64.b64encode(p.png).decode("ascii")
    return (f'<figure id="fig-{_e(p.key)}"><img class="plot" data-plot="{_e(p.key)}" '
            f'alt="{_e(p.title)}" width="{p.width}" height="{p.height}" '
            f'src="data:image/png;base64,{data}"><figcaption>{_e(p.caption)}</figcaption></figure>')


def render_html(report: Report) -> str:
    """The report as one HTML document with everything inline."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(report.title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{_e(report.title)}</h1>",
        '<p class="meta">' + " &middot; ".join(
            f"run {_e(r.run_id)} ({_e((r.record.get('data') or {}).get('name', ''))}, "
            f"n={_e((r.record.get('data') or {}).get('n', ''))}, finished {_e(r.record.get('finished', ''))})"
            for r in report.runs) + "</p>",
        '<nav><a href="#summary">Summary</a><a href="#plots">Plots</a>'
        + ('<a href="#groups">Groups</a>' if report.groups else "")
        + '<a href="#checks">Checks</a><a href="#provenance">Provenance</a></nav>',
    ]
    parts += [f'<p class="warning">{_e(n)}</p>' for n in report.notes]
    parts += ['<h2 id="summary">' + _e(report.summary.title) + "</h2>",
              _html_table(report.summary)]
    for t in report.paired:
        parts += [f"<h3>{_e(t.title)}</h3>", _html_table(t)]
    parts.append('<h2 id="plots">Plots</h2>')
    for p in report.plots:
        parts += [f"<h3>{_e(p.title)}</h3>", _html_plot(p)]
    if not report.plots:
        parts.append('<p class="note">No measurements to plot.</p>')
    if report.groups:
        parts += [f'<h2 id="groups">{_e(report.groups.title)}</h2>', _html_table(report.groups)]
    parts += [gallery_section(r) for r in report.runs]  # the example gallery (images)
    parts += [f'<h2 id="checks">{_e(report.checks.title)}</h2>',
              _html_table(report.checks_summary), _html_table(report.checks, mono_cols=(4,))]
    parts.append('<h2 id="provenance">Provenance</h2>')
    for run in report.runs:
        tables = provenance_tables(run)
        parts += [f"<h3>{_e(tables[0].title)}</h3>", _html_table(tables[0], mono_cols=(1,))]
        for t in tables[1:]:
            parts += [f"<h4>{_e(t.title)}</h4>", _html_table(t, mono_cols=(1,))]
        config = json.dumps(run.record.get("config") or {}, indent=2, sort_keys=True, default=str)
        parts.append(f"<details><summary>Resolved config</summary><pre>{_e(config)}</pre></details>")
    parts.append('<p class="meta">Generated by rtb report from recorded results; no model was '
                 "run to make it.</p></main></body></html>")
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
    out += [f"## {report.summary.title}", "", _md_table(report.summary)]
    for t in report.paired:
        out += [f"### {t.title}", "", _md_table(t)]
    out += ["## Plots", ""]
    for p in report.plots:
        (assets / f"{p.key}.png").write_bytes(p.png)
        out += [f"### {p.title}", "", f"![{p.title}]({link_prefix}/{p.key}.png)", "",
                f"_{p.caption}_", ""]
    if report.groups:
        out += [f"## {report.groups.title}", "", _md_table(report.groups)]
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
