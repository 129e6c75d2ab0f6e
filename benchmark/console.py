"""Everything rtb prints as a table: a run's accuracy per threat and version,
the worst group per threat, corruption CE/mCE, and check results.

Presentation only: these functions format measurements and check results
that ``metrics`` computed, and compute nothing themselves."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
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


#: Fairness differences of the group metrics, with their short column names.
FAIRNESS_METRICS = {
    "demographic_parity_difference": "DP diff",
    "demographic_parity_ratio": "DP ratio",
    "equalized_odds_difference": "EO diff",
    "equalized_odds_ratio": "EO ratio",
}
#: Rows of the worst-group table in the concise output (clean and attacks first).
CONCISE_GROUP_ROWS = 10


def _threat_key(m: Measurement) -> tuple[int, str, float]:
    fam = THREAT_FAMILIES.index(m.family) if m.family in THREAT_FAMILIES else 99
    return (fam, m.threat, -1.0 if m.param is None else float(m.param))


def _version(m: Measurement) -> str:
    return f"{m.model}@{m.version}"


def accuracy_table(measurements: Iterable[Measurement], metric: str = "accuracy",
                   concise: bool = False) -> str:
    """Accuracy per threat (rows) and model version (columns), with the
    difference of the last version against the first. ``concise`` shows a
    corruption as its mean accuracy over the severities, plus the mCE, in
    place of one row per severity."""
    from metrics.corruption import SUMMARY_THREAT  # imported here: it loads torch via attacks/

    ms = [m for m in measurements if not m.group_feature]
    rows_by_threat: dict[tuple[int, str, float], dict[str, Measurement]] = {}
    labels: dict[tuple[int, str, float], str] = {}
    versions: list[str] = []
    for m in ms:
        if m.metric == metric and not (concise and m.family == "corruption"):
            label = threat_label(m.family, m.threat, m.param)
        elif concise and m.family == "corruption" and m.param is None and (
                (m.metric == f"{metric}_mean" and m.threat != SUMMARY_THREAT)
                or (m.metric == "mce" and m.threat == SUMMARY_THREAT)):
            label = (f"mCE ({SUMMARY_THREAT})" if m.metric == "mce"
                     else f"{m.threat} (mean over severities)")
        else:
            continue
        key = _version(m)
        if key not in versions:
            versions.append(key)
        tk = _threat_key(m)
        tk = (tk[0], ("~" if m.metric == "mce" else "") + tk[1], tk[2])  # mCE last
        rows_by_threat.setdefault(tk, {})[key] = m
        labels[tk] = label
    headers = ["threat", *versions]
    if len(versions) >= 2:
        headers.append(f"delta ({versions[-1].split('@')[-1]}-{versions[0].split('@')[-1]})")
    rows = []
    for tk, by_version in sorted(rows_by_threat.items()):
        cells = [labels[tk]] + [_fmt(by_version[v].value) if v in by_version else "-"
                                for v in versions]
        if len(versions) >= 2:
            a, b = by_version.get(versions[0]), by_version.get(versions[-1])
            cells.append(f"{b.value - a.value:+.3f}" if a and b else "-")
        rows.append(cells)
    sizes = sorted({m.n for m in ms if m.metric == metric})
    note = f"\n{metric} on n={', '.join(map(str, sizes))} samples" if sizes else ""
    if concise and any(m.metric == "mce" for m in ms):
        note += "; mCE: lower is better (1.0 = the baseline version)"
    return format_table(headers, rows) + note


def worst_group_table(measurements: Sequence[Measurement], concise: bool = False) -> str:
    """Per threat (rows) and version (columns): the lowest group accuracy over
    every group feature, as ``accuracy feature=value``; empty without groups.
    ``concise`` keeps clean and the attacks, then the corruptions and faults
    with the lowest worst-group accuracy, up to ``CONCISE_GROUP_ROWS`` rows."""
    best: dict[tuple[int, str, float], dict[str, Measurement]] = {}
    versions: list[str] = []
    top = {(_version(m), _threat_key(m), m.group_feature): m.value for m in measurements
           if m.metric == "accuracy_best_group"}
    for m in measurements:
        if m.metric != "accuracy_worst_group":
            continue
        key = _version(m)
        if key not in versions:
            versions.append(key)
        row = best.setdefault(_threat_key(m), {})
        if key not in row or m.value < row[key].value:
            row[key] = m
    if not best:
        return ""
    keys = sorted(best)
    left_out = 0
    if concise and len(keys) > CONCISE_GROUP_ROWS:
        first = [k for k in keys if k[0] < len(THREAT_FAMILIES)
                 and THREAT_FAMILIES[k[0]] in ("clean", "attack")]
        rest = sorted((k for k in keys if k not in first),
                      key=lambda k: min(m.value for m in best[k].values()))
        room = max(CONCISE_GROUP_ROWS - len(first), 3)
        left_out = max(len(rest) - room, 0)
        keep = set(first) | set(rest[:room])
        keys = [k for k in keys if k in keep]
    rows = []
    for fam, threat, param in keys:
        by_version = best[(fam, threat, param)]
        label = threat_label(THREAT_FAMILIES[fam] if fam < len(THREAT_FAMILIES) else "",
                             threat, None if param < 0 else param)
        cells = [label]
        for v in versions:
            w = by_version.get(v)
            tie = w is not None and top.get((v, _threat_key(w), w.group_feature)) == w.value
            cells.append("-" if w is None else f"{w.value:.3f} all {w.group_feature} tie" if tie
                         else f"{w.value:.3f} {w.group_feature}={w.group_value}")
        rows.append(cells)
    note = (f"\n{left_out} more threat(s) with higher worst-group accuracy: rtb run -v, "
            "or rtb report" if left_out else "")
    return "worst group per threat\n" + format_table(["threat", *versions], rows,
                                                     "l" * (1 + len(versions))) + note


def _with_ci(m: Measurement) -> str:
    if m.ci_low is None or m.ci_high is None or math.isnan(m.ci_low) or math.isnan(m.ci_high):
        return _fmt(m.value)
    return f"{m.value:.3f} [{m.ci_low:.3f}, {m.ci_high:.3f}]"


def fairness_table(measurements: Iterable[Measurement], all_threats: bool = False) -> str:
    """Fairness differences and ratios per group feature and version (rows),
    differences with their 95% interval; clean only unless ``all_threats``.
    Empty when the run has none."""
    cells: dict[tuple[tuple[int, str, float], str, str], dict[str, Measurement]] = {}
    for m in measurements:
        if m.metric not in FAIRNESS_METRICS or not m.group_feature:
            continue
        if not all_threats and m.family != "clean":
            continue
        cells.setdefault((_threat_key(m), m.group_feature, _version(m)), {})[m.metric] = m
    if not cells:
        return ""
    present = [k for k in FAIRNESS_METRICS if any(k in by for by in cells.values())]
    headers = (["threat"] if all_threats else []) + ["group feature", "version"] + [
        FAIRNESS_METRICS[k] + (" [95% CI]" if k.endswith("_difference") else "") for k in present]
    rows = []
    for (tk, feature, version), by in sorted(cells.items(), key=lambda kv: kv[0]):
        fam, threat, param = tk
        label = threat_label(THREAT_FAMILIES[fam] if fam < len(THREAT_FAMILIES) else "",
                             threat, None if param < 0 else param)
        row = ([label] if all_threats else []) + [feature, version]
        row += [(_with_ci(by[k]) if k.endswith("_difference") else _fmt(by[k].value))
                if k in by else "-" for k in present]
        rows.append(row)
    n_text = len(headers) - len(present)
    title = "fairness between groups" + ("" if all_threats else " (clean data)")
    return title + "\n" + format_table(headers, rows, "l" * n_text + "r" * len(present)) + (
        "\ndifferences: 0 = parity; ratios: 1 = parity")


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
        not_passed = Counter((r.check, r.status) for r in rs if r.status != "pass")
        flagged = ", ".join(f"{check} ({status}{f' x{n}' if n > 1 else ''})"
                            for (check, status), n in not_passed.items())
        rows.append([subject, str(counts["pass"]), str(counts["warn"]), str(counts["fail"]),
                     flagged or "-"])
    return format_table(["checked", "pass", "warn", "fail", "not passed"], rows, align="lrrrl")


def checks_detail(results: Sequence[CheckResult], all_checks: bool = True) -> str:
    """One row per check: subject, check, status, message."""
    rows = [[r.subject, r.check, r.status.upper() if r.status != "pass" else r.status, r.message]
            for r in results if all_checks or r.status != "pass"]
    return format_table(["checked", "check", "status", "message"], rows, align="llll")


def run_summary(measurements: Sequence[Measurement], checks: Sequence[CheckResult], *,
                detailed: bool = False, tabular: bool = False) -> str:
    """What ``rtb run`` prints after its progress bar. Concise by default
    (fits a screen): the headline accuracy table, the worst group per threat,
    the checks per subject; ``detailed`` adds every corruption severity, every
    threat's worst group, the CE/mCE table and one row per check. A tabular
    run shows its group table (fairness, then worst group) first."""
    groups = [t for t in (fairness_table(measurements, all_threats=detailed),
                          worst_group_table(measurements, concise=not detailed)) if t]
    headline = [accuracy_table(measurements, concise=not detailed)]
    parts = [*groups, *headline] if tabular or any(
        m.metric in FAIRNESS_METRICS for m in measurements) else [*headline, *groups]
    if detailed and (corruptions := corruption_table(measurements)):
        parts.append(corruptions)
    if checks:
        parts.append(checks_table(checks))
        if detailed:
            parts.append(checks_detail(checks, all_checks=False))
    return "\n\n".join(parts)
