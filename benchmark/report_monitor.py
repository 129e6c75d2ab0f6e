"""``rtb report --monitor NAME``: the timelines of a monitor, from the store.

Per version: estimated accuracy (CBPE, 95% interval band), the estimate
with the benchmark match, and realised accuracy where labels arrived (with
its interval); drift per feature over windows as a heatmap (-log10 of the
p-value against its corrected level, drifted cells marked); the group mix;
the threat matched to each window with each version's measured accuracy
under it; and every alert raised.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.core.errors import StoreError
from benchmark.report_html import CSS, Table, _e, _html_plot, _html_table, _md_table
from benchmark.store import Store


def _fmt(v: Any, digits: int = 3) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(f) else f"{f:.{digits}f}"


def load(store: Store, monitor: str) -> dict[str, pd.DataFrame]:
    from benchmark.monitor.records import monitor_frames, monitors

    known = monitors(store)
    if monitor not in known:
        raise StoreError(f"Unknown monitor {monitor!r} in {str(store.path)!r}; expected one of: "
                         f"{', '.join(known) or '(none: run `rtb monitor` first)'}.")
    return monitor_frames(store, monitor)


def accuracy_plot(f: dict[str, pd.DataFrame]) -> Any:
    import matplotlib.pyplot as plt

    from benchmark.plots import _plot

    w = f["windows"]["window"].tolist()
    pos = {k: i for i, k in enumerate(w)}
    m = f["metrics"]
    m = m[(m["group_feature"] == "") & (m["model"] != "")]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(w) + 2), 3.6))
    for i, key in enumerate(sorted(set(m["model"]))):
        color = f"C{i}"
        for metric, style, label in (("estimated_accuracy", "-", "estimated (CBPE)"),
                                     ("matched_accuracy", ":", "with benchmark match"),
                                     ("realised_accuracy", "o", "realised")):
            d = m[(m["model"] == key) & (m["metric"] == metric)]
            if d.empty:
                continue
            xs = [pos[v] for v in d["window"]]
            if metric == "realised_accuracy":
                err = [(d["value"] - d["ci_low"]).fillna(0).clip(lower=0),
                       (d["ci_high"] - d["value"]).fillna(0).clip(lower=0)]
                ax.errorbar(xs, d["value"], yerr=err, fmt="o", color=color, ms=4, capsize=2,
                            label=f"{key} {label}")
            else:
                ax.plot(xs, d["value"], style, color=color, label=f"{key} {label}")
                if metric == "estimated_accuracy":
                    ax.fill_between(xs, d["ci_low"], d["ci_high"], color=color, alpha=0.15)
    ax.set_xticks(range(len(w)), w, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    return _plot("monitor-accuracy", "Accuracy per window",
                 "Estimated without labels (CBPE, 95% band), with the benchmark match, and "
                 "realised (labels, Wilson 95% interval).", fig)


def drift_plot(f: dict[str, pd.DataFrame]) -> Any:
    import matplotlib.pyplot as plt
    import numpy as np

    from benchmark.plots import _plot

    d = f["drift"]
    if d.empty:
        return None
    w = f["windows"]["window"].tolist()
    feats = list(dict.fromkeys(d["feature"]))
    z = np.full((len(feats), len(w)), np.nan)
    hit = np.zeros_like(z, dtype=bool)
    for r in d.itertuples(index=False):
        i, j = feats.index(r.feature), w.index(r.window)
        if r.p_value is not None and not pd.isna(r.p_value) and r.level:
            z[i, j] = -math.log10(max(float(r.p_value), 1e-300)) / -math.log10(float(r.level))
        else:
            z[i, j] = 2.0 if r.drifted else 0.0
        hit[i, j] = bool(r.drifted)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(w) + 3), 0.3 * len(feats) + 1.5))
    im = ax.imshow(np.clip(z, 0, 3), aspect="auto", cmap="Reds", vmin=0, vmax=3)
    for i, j in zip(*np.nonzero(hit), strict=True):
        ax.text(j, i, "x", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(w)), w, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(feats)), feats, fontsize=7)
    fig.colorbar(im, ax=ax, label="-log10 p / -log10 level")
    return _plot("monitor-drift", "Drift per feature",
                 "Each test's evidence relative to its corrected level (1 = at the level); "
                 "x marks drift.", fig)


def group_plot(f: dict[str, pd.DataFrame]) -> Any:
    import matplotlib.pyplot as plt

    from benchmark.plots import _plot

    m = f["metrics"]
    g = m[m["metric"] == "group_share"]
    if g.empty:
        return None
    w = f["windows"]["window"].tolist()
    feats = sorted(set(g["group_feature"]))
    fig, axes = plt.subplots(len(feats), 1, figsize=(max(6.0, 0.45 * len(w) + 2),
                                                     2.4 * len(feats)), squeeze=False)
    for ax, feat in zip(axes[:, 0], feats, strict=True):
        gf = g[g["group_feature"] == feat]
        table = gf.pivot_table(index="window", columns="group_value", values="value").reindex(w)
        table.fillna(0).plot.bar(stacked=True, ax=ax, width=0.85, legend=True)
        ax.set_title(f"group mix: {feat}", fontsize=9)
        ax.set_ylim(0, 1)
        ax.tick_params(axis="x", labelrotation=60, labelsize=7)
        ax.legend(fontsize=7, loc="upper right")
    return _plot("monitor-groups", "Group mix per window", "Share of each group value.", fig)


def tables(f: dict[str, pd.DataFrame]) -> dict[str, Table]:
    w, m, a = f["windows"], f["metrics"], f["alerts"]
    versions = sorted({k for k in m["model"] if k})
    rows, classes = [], []
    for r in w.itertuples(index=False):
        details = json.loads(r.details or "{}")
        match = details.get("match") or {}
        shifted = match.get("shift") and match.get("threat") not in (None, "clean")
        threat = f"{match.get('label')} ({_fmt(match.get('confidence'), 2)})" if shifted \
            else "clean"
        mw = m[(m["window"] == r.window) & (m["group_feature"] == "")]

        def val(key: str, metric: str, mw: pd.DataFrame = mw) -> str:
            v = mw[(mw["model"] == key) & (mw["metric"] == metric)]["value"]
            return _fmt(v.iloc[0]) if len(v) else "-"
        cells = [str(r.seq), r.window, str(r.n), "yes" if r.has_labels else "no", threat]
        for k in versions:
            cells.append(f"{val(k, 'estimated_accuracy')} / {val(k, 'matched_accuracy')} / "
                         f"{val(k, 'realised_accuracy')} / bench {val(k, 'benchmark_accuracy')}")
        fails = a[(a["window"] == r.window) & (a["status"] == "fail")]
        cells.append(", ".join(fails["kind"]) or "-")
        rows.append(cells)
        classes.append([""] * (len(cells) - 1) + ["status-fail" if len(fails) else "status-pass"])
    bench = ", ".join(sorted({str(b) for b in w["benchmark_run"] if b})) or "none"
    timeline = Table("Windows", ["#", "window", "n", "labels", "matched threat (confidence)",
                      *[f"{k}: estimated / matched / realised / benchmark" for k in versions],
                      "alerts"], rows, note=f"Benchmark run for the matched threats: {bench}.",
                     classes=classes)
    fails = a[a["status"] == "fail"]
    alerts = Table("Alerts", ["window", "rule", "kind", "message"],
                   [[str(r.window), str(r.rule), str(r.kind), str(r.message)] for r in fails.itertuples(index=False)])
    return {"timeline": timeline, "alerts": alerts}


def write_monitor_report(store_path: str | None, monitor: str, out: Path, fmt: str) -> list[Path]:
    from benchmark.report_html import check_report_path
    from benchmark.store import resolve_store_path

    check_report_path(out, fmt)
    with Store(resolve_store_path(store_path), readonly=True) as s:
        f = load(s, monitor)
    plots = [p for p in (accuracy_plot(f), drift_plot(f), group_plot(f)) if p is not None]
    t = tables(f)
    title = f"rtb monitor: {monitor}"
    if fmt == "markdown":
        assets = out.with_name(out.stem + "_files")
        assets.mkdir(exist_ok=True)
        parts = [f"# {title}", "", "## Windows", "", _md_table(t["timeline"]), ""]
        for p in plots:
            (assets / f"{p.key}.png").write_bytes(p.png)
            parts += [f"## {p.title}", "", f"![{p.title}]({assets.name}/{p.key}.png)", "",
                      p.caption, ""]
        parts += ["## Alerts", "", _md_table(t["alerts"]) if t["alerts"].rows else "none", ""]
        out.write_text("\n".join(parts), encoding="utf-8")
        return [out, *sorted(assets.glob("*.png"))]
    body = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}"
            f"</title><style>{CSS}</style></head><body><main>", f"<h1>{_e(title)}</h1>",
            "<h2 id=\"windows\">Windows</h2>", _html_table(t["timeline"])]
    for p in plots:
        body += [f"<h2>{_e(p.title)}</h2>", _html_plot(p)]
    body += ["<h2 id=\"alerts\">Alerts</h2>",
             _html_table(t["alerts"]) if t["alerts"].rows else "<p>none</p>",
             "</main></body></html>"]
    out.write_text("\n".join(body), encoding="utf-8")
    return [out]
