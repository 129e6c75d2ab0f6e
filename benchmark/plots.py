"""The report's figures, drawn with matplotlib's Agg backend from tidy
measurement rows (never from a model): robustness curves, corruption
heatmaps and group disparity bars.

Every function takes a DataFrame with the columns of ``Measurement.as_dict``
plus ``series`` (the label of one model version in the report) and returns
``Plot`` objects whose PNG bytes a report embeds. A function returns no plot
when the run has no rows of its kind.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from benchmark.core.types import threat_label  # noqa: E402

DPI = 110
#: Threat families whose ``param`` is a budget drawn on the x axis of a curve.
CURVE_FAMILIES = ("attack",)


@dataclass(frozen=True)
class Plot:
    """One figure of a report: a stable ``key`` (tests and anchors use it),
    a title, a caption that says what is drawn, and the PNG bytes."""

    key: str
    title: str
    caption: str
    png: bytes
    width: int
    height: int


def to_png(fig: Figure) -> tuple[bytes, int, int]:
    """Render and close ``fig``; return the PNG bytes and pixel size."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    data = buf.getvalue()
    # PNG IHDR: width and height are the big-endian ints at bytes 16..24
    width = int.from_bytes(data[16:20], "big")
    height = int.from_bytes(data[20:24], "big")
    return data, width, height


def _plot(key: str, title: str, caption: str, fig: Figure) -> Plot:
    png, w, h = to_png(fig)
    return Plot(key=key, title=title, caption=caption, png=png, width=w, height=h)


def _overall(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows of one metric over all samples (no group)."""
    if df.empty:
        return df
    return df[(df["metric"] == metric) & (df["group_feature"].fillna("") == "")]


def _colors(series: list[str]) -> dict[str, tuple[float, float, float, float]]:
    cmap = plt.get_cmap("tab10")
    return {s: cmap(i % 10) for i, s in enumerate(series)}


def _series_order(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df["series"]))


def robustness_curves(df: pd.DataFrame, metric: str = "accuracy") -> list[Plot]:
    """Robust accuracy versus eps, one panel per attack, one line per
    version with its 95% interval as a band; eps 0 is the clean accuracy."""
    rows = _overall(df, metric)
    attacks = rows[rows["family"].isin(CURVE_FAMILIES) & rows["param"].notna()]
    if attacks.empty:
        return []
    clean = rows[rows["family"] == "clean"]
    names = list(dict.fromkeys(attacks["threat"]))
    series = _series_order(rows)
    colors = _colors(series)
    ncols = min(len(names), 3)
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows), squeeze=False,
                             sharey=True)
    for ax, name in zip(axes.flat, names, strict=False):
        for s in series:
            pts = attacks[(attacks["threat"] == name) & (attacks["series"] == s)]
            base = clean[clean["series"] == s]
            if pts.empty:
                continue
            pts = pd.concat([base.assign(param=0.0), pts]).sort_values("param")
            x = pts["param"].to_numpy(float)
            y = pts["value"].to_numpy(float)
            ax.plot(x, y, marker="o", color=colors[s], label=s)
            lo = pts["ci_low"].to_numpy(float)
            hi = pts["ci_high"].to_numpy(float)
            if np.isfinite(lo).all() and np.isfinite(hi).all():
                ax.fill_between(x, lo, hi, color=colors[s], alpha=0.18, linewidth=0)
        ax.set_title(name)
        ax.set_xlabel("eps")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    axes[0][0].set_ylabel(f"robust {metric}")
    axes[0][0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    caption = (f"Robust {metric} versus attack budget, one line per model version; eps 0 is "
               "clean accuracy; bands are 95% intervals.")
    return [_plot("robustness", f"Robust {metric} versus eps", caption, fig)]


def corruption_heatmaps(df: pd.DataFrame, metric: str = "accuracy") -> list[Plot]:
    """Corruption (rows) x severity (columns) heatmap, one panel per version."""
    rows = _overall(df, metric)
    rows = rows[(rows["family"] == "corruption") & rows["param"].notna()]
    if rows.empty:
        return []
    series = _series_order(rows)
    corruptions = sorted(set(rows["threat"]))
    severities = sorted(set(rows["param"].astype(float)))
    fig, axes = plt.subplots(1, len(series),
                             figsize=(1.0 + 0.75 * len(severities) * len(series) + 1.6 * len(series),
                                      1.2 + 0.36 * len(corruptions)),
                             squeeze=False)
    image = None
    for ax, s in zip(axes[0], series, strict=True):
        grid = (rows[rows["series"] == s]
                .pivot_table(index="threat", columns="param", values="value", aggfunc="mean")
                .reindex(index=corruptions, columns=severities))
        values = grid.to_numpy(float)
        image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto")
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(severities)), [f"{p:g}" for p in severities])
        ax.set_yticks(range(len(corruptions)), corruptions if ax is axes[0][0] else [])
        ax.set_xlabel("severity")
        ax.set_title(s, fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=list(axes[0]), shrink=0.8, label=metric)
    caption = (f"{metric.capitalize()} under each corruption (rows) and severity (columns), "
               "one panel per model version.")
    return [_plot("corruption-heatmap", f"Corruption x severity {metric}", caption, fig)]


def group_disparity(df: pd.DataFrame, metric: str = "accuracy",
                    max_threats: int = 4) -> list[Plot]:
    """Per-group bars, one figure per group feature, one bar per version, one
    panel per threat: clean, then the threats (each at its largest budget or
    severity) with the lowest accuracy; the worst group of each version is
    outlined and named."""
    rows = df[(df["metric"] == metric) & (df["group_feature"].fillna("") != "")]
    if rows.empty:
        return []
    plots = []
    series = _series_order(df)
    colors = _colors(series)
    for feature in list(dict.fromkeys(rows["group_feature"])):
        fr = rows[rows["group_feature"] == feature]
        panels = _disparity_panels(fr, max_threats)
        groups = sorted(set(fr["group_value"].astype(str)), key=_natural_key)
        labels = [_wrap(g) for g in groups]
        widest = max(len(line) for g in labels for line in g.split("\n"))
        panel_w = max(3.5, len(groups) * max(0.32 * len(series), 0.075 * widest) + 1)
        ncols = max(1, min(len(panels), int(16 // panel_w)))  # side by side while they fit
        nrows = math.ceil(len(panels) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(panel_w * ncols + 1, 2.6 * nrows),
                                 squeeze=False)
        width = 0.8 / max(len(series), 1)
        for ax in axes.flat[len(panels):]:
            ax.set_visible(False)
        for ax, (family, threat, param) in zip(axes.flat, panels, strict=False):
            sel = fr[(fr["family"] == family) & (fr["threat"] == threat)]
            sel = sel[sel["param"].isna()] if param is None else sel[sel["param"] == param]
            worst_notes = []
            for k, s in enumerate(series):
                part = sel[sel["series"] == s].set_index(sel[sel["series"] == s]["group_value"]
                                                         .astype(str))
                if part.empty:
                    continue
                values = np.array([part["value"].get(g, np.nan) for g in groups], dtype=float)
                xs = np.arange(len(groups)) + (k - (len(series) - 1) / 2) * width
                bars = ax.bar(xs, values, width=width, color=colors[s], label=s)
                if np.isfinite(values).any():
                    w = int(np.nanargmin(values))
                    if np.nanmax(values) == values[w]:  # every group ties: none is the worst
                        worst_notes.append(f"{s}: all tie ({values[w]:.2f})")
                        continue
                    bars[w].set_edgecolor("black")
                    bars[w].set_linewidth(1.6)
                    worst_notes.append(f"{s}: worst {groups[w]} ({values[w]:.2f})")
            ax.set_xticks(range(len(groups)), labels, fontsize=8)
            ax.set_ylim(0, 1.05)
            ax.set_ylabel(metric)
            ax.set_title(threat_label(family, threat, param) + "\n" + "; ".join(worst_notes),
                         fontsize=8)
            ax.grid(axis="y", alpha=0.3)
            ax.set_xlabel(feature, fontsize=8)
        fig.tight_layout()
        from matplotlib.patches import Patch

        fig.legend([Patch(color=colors[s]) for s in series], series, loc="lower center",
                   bbox_to_anchor=(0.5, 1.0), ncol=max(len(series), 1), fontsize=8, frameon=False)
        caption = (f"{metric.capitalize()} per value of group feature '{feature}': clean, then "
                   "the threats (at their largest budget or severity) with the lowest accuracy; "
                   "the worst group of each version is outlined in black.")
        plots.append(_plot(f"groups-{_slug(feature)}", f"Group disparity: {feature}", caption, fig))
    return plots


def _disparity_panels(fr: pd.DataFrame, max_threats: int) -> list[tuple[str, str, float | None]]:
    """Clean first, then each threat at its largest param, lowest mean accuracy first."""
    clean: list[tuple[str, str, float | None]] = []
    scored: list[tuple[float, tuple[str, str, float | None]]] = []
    for (family, threat), sub in fr.groupby(["family", "threat"], sort=False, dropna=False):
        params = sub["param"].dropna()
        if params.empty:
            panel = (str(family), str(threat), None)
            if family == "clean":
                clean.append(panel)
                continue
            scored.append((float(sub["value"].mean()), panel))
            continue
        top = float(params.max())
        scored.append((float(sub[sub["param"] == top]["value"].mean()),
                       (str(family), str(threat), top)))
    scored.sort(key=lambda sp: sp[0])
    return (clean + [p for _, p in scored])[:max_threats]


def _wrap(label: str, width: int = 12) -> str:
    """Break a long tick label at its first space (``Q1 [0.05, 0.09]``)."""
    if len(label) <= width or " " not in label:
        return label
    head, _, tail = label.partition(" ")
    return f"{head}\n{tail}"


def _natural_key(s: str) -> tuple[int, float | str]:
    try:
        return (0, float(s))
    except ValueError:
        return (1, s)


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in s).strip("-").lower() or "group"


PlotFn = Callable[[pd.DataFrame], list[Plot]]

#: The report's figures, in the order they appear.
PLOTS: dict[str, PlotFn] = {
    "robustness": robustness_curves,
    "corruption": corruption_heatmaps,
    "groups": group_disparity,
}


def all_plots(df: pd.DataFrame) -> list[Plot]:
    """Every figure the measurements support, in report order."""
    return [p for fn in PLOTS.values() for p in fn(df)]
