"""Console output of a run: versions side by side, one row per threat."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from benchmark.types import THREAT_FAMILIES, Measurement


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
        if param < 0:
            label = threat
        elif family == "attack":
            label = f"{threat} eps={param:g}"
        else:
            label = f"{threat} {param:g}"
        cells = [label] + [_fmt(by_version[v].value) if v in by_version else "-" for v in versions]
        if len(versions) >= 2:
            a, b = by_version.get(versions[0]), by_version.get(versions[-1])
            cells.append(f"{b.value - a.value:+.3f}" if a and b else "-")
        rows.append(cells)
    sizes = sorted({m.n for m in ms})
    note = f"\n{metric} on n={', '.join(map(str, sizes))} samples" if sizes else ""
    return format_table(headers, rows) + note
