"""Everything rtb prints as a table: a run's accuracy per threat and version,
the worst group per threat, corruption CE/mCE, and check results.

Presentation only: these functions format measurements and check results
that ``metrics`` computed, and compute nothing themselves."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

from benchmark.core.types import THREAT_FAMILIES, CheckResult, Measurement, threat_label


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]],
                 align: str | None = None) -> str:
    """A plain-text table; ``align`` holds one of 'l'/'r' per column."""
    align = align or "l" + "r" * (len(headers) - 1)
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        out = []
        for cell, w, a in zip(cells, widths, align, strict=True):
            out.append(str(cell).ljust(w) if a == "l" else str(cell).rjust(w))
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def _fmt(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def accuracy_table(measurements: Iterable[Measurement], metric: str = "accuracy") -> str:
    """Accuracy per threat (rows) and model version (columns), with the
    difference of the last version against the first."""
    ms = [m for m in measurements if m.metric == metric and not m.group_feature]
    rows_by_threat: dict[tuple[int, str, float], dict[str, Measurement]] = {}
    versions: list[str] = []
    for m in ms:
        key = f"{m.model}@{m.version}"
        if key not in versions:
            versions.append(key)
        fam = THREAT_FAMILIES.index(m.family) if m.family in THREAT_FAMILIES else 99
        param = -1.0 if m.param is None else float(m.param)
        rows_by_threat.setdefault((fam, m.threat, param), {})[key] = m
    headers = ["threat", *versions]
    if len(versions) >= 2:
        headers.append(f"delta ({versions[-1].split('@')[-1]}-{versions[0].split('@')[-1]})")
    rows = []
    for (_, threat, param), by_version in sorted(rows_by_threat.items()):
        family = next(iter(by_version.values())).family
        label = threat_label(family, threat, None if param < 0 else param)
        cells = [label] + [_fmt(by_version[v].value) if v in by_version else "-" for v in versions]
        if len(versions) >= 2:
            a, b = by_version.get(versions[0]), by_version.get(versions[-1])
            cells.append(f"{b.value - a.value:+.3f}" if a and b else "-")
        rows.append(cells)
    sizes = sorted({m.n for m in ms})
    note = f"\n{metric} on n={', '.join(map(str, sizes))} samples" if sizes else ""
    return format_table(headers, rows) + note


def worst_group_table(measurements: Sequence[Measurement]) -> str:
    """Per threat (rows) and version (columns): the lowest group accuracy over
    every group feature, as ``accuracy feature=value``; empty without groups."""
    best: dict[tuple[int, str, float], dict[str, Measurement]] = {}
    versions: list[str] = []
    for m in measurements:
        if m.metric != "accuracy_worst_group":
            continue
        key = f"{m.model}@{m.version}"
        if key not in versions:
            versions.append(key)
        fam = THREAT_FAMILIES.index(m.family) if m.family in THREAT_FAMILIES else 99
        row = best.setdefault((fam, m.threat, -1.0 if m.param is None else float(m.param)), {})
        if key not in row or m.value < row[key].value:
            row[key] = m
    if not best:
        return ""
    rows = []
    for (fam, threat, param), by_version in sorted(best.items()):
        label = threat_label(THREAT_FAMILIES[fam] if fam < len(THREAT_FAMILIES) else "",
                             threat, None if param < 0 else param)
        cells = [label]
        for v in versions:
            w = by_version.get(v)
            cells.append(f"{w.value:.3f} {w.group_feature}={w.group_value}" if w else "-")
        rows.append(cells)
    return "worst group per threat\n" + format_table(["threat", *versions], rows,
                                                     "l" * (1 + len(versions)))


def corruption_table(measurements: Iterable[Measurement]) -> str:
    """Per-corruption accuracy, CE and the mCE summary, versions side by side."""
    from metrics.corruption import SUMMARY_THREAT  # imported here: it loads torch via attacks/

    ms = [m for m in measurements if m.family == "corruption" and m.param is None
          and not m.group_feature]
    if not ms:
        return ""
    versions = list(dict.fromkeys(f"{m.model}@{m.version}" for m in ms))
    metrics = ("accuracy_mean", "ce", "relative_ce", "mean_error", "mce", "relative_mce")
    cells: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for m in ms:
        cells[(m.threat, m.metric)][f"{m.model}@{m.version}"] = m.value
    rows = []
    for (threat, metric), by_v in sorted(
        cells.items(), key=lambda kv: (kv[0][0] == SUMMARY_THREAT, kv[0][0],
                                       metrics.index(kv[0][1]) if kv[0][1] in metrics else 99)
    ):
        rows.append([threat, metric] + [
            "-" if v not in by_v or math.isnan(by_v[v]) else f"{by_v[v]:.3f}" for v in versions
        ])
    baseline = next((m.definition.split("baseline ")[-1] for m in ms if m.metric == "mce"), None)
    note = f"\nCE and mCE normalised by {baseline}" if baseline else ""
    return format_table(["corruption", "metric", *versions], rows, align="ll" + "r" *
                        len(versions)) + note


def checks_table(results: Sequence[CheckResult]) -> str:
    """One row per subject (data set, model version): counts and the checks
    that did not pass."""
    subjects: dict[str, list[CheckResult]] = {}
    for r in results:
        subjects.setdefault(r.subject, []).append(r)
    rows = []
    for subject, rs in subjects.items():
        counts = {s: sum(r.status == s for r in rs) for s in ("pass", "warn", "fail")}
        flagged = ", ".join(f"{r.check} ({r.status})" for r in rs if r.status != "pass")
        rows.append([subject, str(counts["pass"]), str(counts["warn"]), str(counts["fail"]),
                     flagged or "-"])
    return format_table(["checked", "pass", "warn", "fail", "not passed"], rows, align="lrrrl")


def checks_detail(results: Sequence[CheckResult], all_checks: bool = True) -> str:
    """One row per check: subject, check, status, message."""
    rows = [[r.subject, r.check, r.status.upper() if r.status != "pass" else r.status, r.message]
            for r in results if all_checks or r.status != "pass"]
    return format_table(["checked", "check", "status", "message"], rows, align="llll")
