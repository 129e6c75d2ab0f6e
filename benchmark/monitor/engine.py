"""One window through the monitor: checks, drift, accuracy (estimated and
realised) per version and group, and the benchmark threat that explains
the shift. Pure of the store: ``records`` writes what this returns.

Multiple testing: every drift test of a window (properties or features,
outputs, group mix) runs at ``alpha / (tests in the window x horizon)``
(Bonferroni over the features and over ``horizon`` windows), so a stable
stream raises a false drift alarm with probability at most ``alpha`` in its
first ``horizon`` windows.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from benchmark.core.errors import DataError
from benchmark.core.types import CheckResult
from benchmark.monitor.bench_lookup import BenchmarkMap
from benchmark.monitor.estimate import (
    Estimate,
    cbpe,
    matched_estimate,
    realised,
    softmax_confidence,
)
from benchmark.monitor.reference import Reference
from benchmark.monitor.sources import Window

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonitorSettings:
    """How windows are judged (the ``drift:`` and ``match:`` sections of a monitor config)."""

    alpha: float = 0.05
    horizon: int = 100
    small_sample: int = 1000
    batch_size: int = 512
    match: bool = True
    min_group_size: int = 20


@dataclass
class MetricRow:
    model: str           # NAME@VERSION, or '' for the data (group shares)
    metric: str
    value: float
    group_feature: str = ""
    group_value: str = ""
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None


@dataclass
class WindowResult:
    window: Window
    index: int
    checks: list[CheckResult] = field(default_factory=list)
    drift: list[Any] = field(default_factory=list)  # metrics.drift.FeatureDrift
    metrics: list[MetricRow] = field(default_factory=list)
    match: dict[str, Any] | None = None
    alerts: list[Any] = field(default_factory=list)  # rules.Alert
    benchmark_run: str | None = None
    benchmark_note: str = ""

    def metric(self, model: str, metric: str, group_feature: str = "",
               group_value: str = "") -> MetricRow | None:
        return next((m for m in self.metrics if (m.model, m.metric, m.group_feature,
                                                  m.group_value) ==
                     (model, metric, group_feature, group_value)), None)

    def value(self, model: str, metric: str, group_feature: str = "",
              group_value: str = "") -> float | None:
        m = self.metric(model, metric, group_feature, group_value)
        return None if m is None or m.value is None or math.isnan(m.value) else m.value

    @property
    def drifted(self) -> list[str]:
        return [d.feature for d in self.drift if d.drifted]


def _row(model: str, metric: str, e: Estimate, gf: str = "", gv: str = "") -> MetricRow:
    return MetricRow(model, metric, e.value, gf, gv, e.ci_low, e.ci_high, e.n)


def _image_checks(ref: Reference, w: Window) -> list[CheckResult]:
    import torch

    from benchmark.core.specs import ValidationPolicy
    from metrics.data_checks import DataContext, channel_means_stds
    from metrics.validation import run_data_checks

    mean, std = channel_means_stds(ref.data.x)
    shapes = {tuple(v.model.input_shape) for v in ref.versions.values()}
    ctx = DataContext(x=w.x, y=None if w.y is None else torch.from_numpy(w.y),
                      classes=list(ref.data.classes), name=w.key,
                      input_shape=next(iter(shapes)) if len(shapes) == 1 else None,
                      train_x=ref.data.x, reference_mean=tuple(mean.tolist()),
                      reference_std=tuple(std.tolist()), reference_source="reference set")
    return run_data_checks(ValidationPolicy(skip=("train_overlap",)), ctx)


def _group_codes(ref_col: pd.Series, new_col: pd.Series) -> tuple[np.ndarray, np.ndarray, int]:
    cats = sorted(set(ref_col.astype(str)) | set(new_col.astype(str)))
    index = {c: i for i, c in enumerate(cats)}
    return (np.array([index[v] for v in ref_col.astype(str)], dtype=np.int64),
            np.array([index[v] for v in new_col.astype(str)], dtype=np.int64), len(cats))


def _drift(ref: Reference, w: Window, logits: dict[str, Any], s: MonitorSettings,
           feature_pairs: list[tuple[str, str, np.ndarray, np.ndarray]]) -> list[Any]:
    """Every drift test of the window at the corrected level."""
    from metrics.drift import DriftConfig, categorical_drift, numerical_drift

    group_cols = [c for c in w.groups.columns if c in ref.groups.columns]
    n_tests = (len(feature_pairs) + 2 * len(logits) + len(group_cols)) * s.horizon
    cfg = DriftConfig(alpha=s.alpha, small_sample=s.small_sample)
    out = []
    for name, kind, a, b in feature_pairs:
        if kind == "numerical":
            out.append(numerical_drift(name, a, b, cfg, n_tests))
        else:
            out.append(categorical_drift(name, a, b, cfg, n_tests))
    for key, lg in logits.items():
        v = ref.versions[key]
        k = v.model.num_classes
        out.append(categorical_drift(f"predicted_class[{key}]", v.logits.argmax(1).numpy(),
                                     np.nan_to_num(lg.numpy()).argmax(1), cfg, n_tests,
                                     categories=k))
        # the top-class confidence, by KS: the p-value of a permutation MMD test
        # cannot go below 1 / permutations, far above a level corrected over windows
        out.append(numerical_drift(f"confidence[{key}]", softmax_confidence(v.logits.numpy()),
                                   softmax_confidence(lg.numpy()), cfg, n_tests))
    for col in group_cols:
        a, b, k = _group_codes(ref.groups[col], w.groups[col])
        out.append(categorical_drift(f"group_mix[{col}]", a, b, cfg, n_tests, categories=k))
    return out


def _logits(ref: Reference, w: Window, s: MonitorSettings) -> tuple[dict[str, Any], Any]:
    """Each version's logits on the window, and the model input."""
    import torch

    from benchmark.core.forward import forward_logits

    if w.modality == "image":
        if tuple(w.x.shape[1:]) != tuple(ref.data.x.shape[1:]):
            raise DataError(f"window {w.key}: expected images of the reference's shape "
                            f"{list(ref.data.x.shape[1:])}, but got {list(w.x.shape[1:])}.")
        x = w.x
    else:
        from benchmark.monitor.tabular import encode_window

        x = encode_window(ref, w)
    with torch.no_grad():
        return {k: forward_logits(v.model, x, s.batch_size) for k, v in ref.versions.items()}, x


def process_window(ref: Reference, w: Window, index: int, s: MonitorSettings,
                   bench: BenchmarkMap) -> WindowResult:
    """Measure one window (see the module doc); alerts are added by ``rules``."""
    import torch

    res = WindowResult(w, index, benchmark_run=bench.run_id, benchmark_note=bench.reason)
    if w.modality != ref.modality:
        raise DataError(f"window {w.key}: expected {ref.modality} data like the reference "
                        f"({ref.source}), but got {w.modality} data.")
    if w.modality == "tabular":
        from benchmark.monitor.tabular import prepare

        prepare(ref, w)
    if w.y is not None:
        k = len(ref.data.classes)
        y = np.asarray(w.y)
        if ref.modality == "tabular":
            from benchmark.monitor.tabular import label_codes

            y = label_codes(ref, w)
        if len(y) and (y.min() < 0 or y.max() >= k):
            raise DataError(f"window {w.key}: expected labels in 0..{k - 1}, but got values "
                            f"{int(y.min())}..{int(y.max())}.")
        w.y = y
    logits, x = _logits(ref, w, s)
    if w.modality == "image":
        from metrics.data_checks import image_properties

        res.checks = _image_checks(ref, w)
        props = image_properties(x)
        pairs = [(k, "numerical", ref.props[k], props[k]) for k in ref.props]
    else:
        from benchmark.monitor.tabular import tabular_checks, tabular_pairs

        res.checks = tabular_checks(ref, w)
        pairs = tabular_pairs(ref, w)
    res.drift = _drift(ref, w, logits, s, pairs)

    # the group mix
    for col in [c for c in w.groups.columns if c in ref.groups.columns]:
        shares = w.groups[col].astype(str).value_counts(normalize=True)
        ref_shares = ref.group_shares(col)
        for g in sorted(set(shares.index) | set(ref_shares)):
            res.metrics.append(MetricRow("", "group_share", float(shares.get(g, 0.0)), col, g,
                                         n=int((w.groups[col].astype(str) == g).sum())))
            res.metrics.append(MetricRow("", "reference_share", float(ref_shares.get(g, 0.0)),
                                         col, g))

    # the match
    match = None
    if s.match and ref.modality == "image":
        from benchmark.monitor.match import image_signature
        from benchmark.monitor.reference import ensure_library

        lib = ensure_library(ref)
        match = lib.match(image_signature(x, ref.stats), len(w))
    elif s.match and ref.modality == "tabular":
        from benchmark.monitor.tabular import tabular_match

        match = tabular_match(ref, w)
    # A window without drift and without a failed check shows no shift to explain:
    # the accuracy estimate stays CBPE's (the match is kept, marked as no shift).
    shifted = bool(res.drifted) or any(c.status == "fail" for c in res.checks)
    res.match = None if match is None else {**match.as_dict(), "shift": shifted}
    if not shifted:
        match = None
    elif match is not None and match.threat.family == "clean":
        # a shift no benchmark threat explains (a group mix moving): CBPE alone,
        # with the nearest threat's accuracy mixed in it would only add noise
        match = None

    yt = None if w.y is None else torch.from_numpy(np.asarray(w.y, dtype=np.int64))
    for key, lg in logits.items():
        v = ref.versions[key]
        conf = softmax_confidence(lg.numpy())
        est = cbpe(v.calibrator, conf)
        res.metrics.append(_row(key, "estimated_accuracy", est))
        res.metrics.append(MetricRow(key, "reference_accuracy", v.accuracy, n=len(v.correct)))
        if match is not None:
            measured = {t: a for t in match.posterior
                        if (a := bench.lookup(key, t)) is not None}
            res.metrics.append(_row(key, "matched_accuracy",
                                    matched_estimate(est, match.posterior, measured)))
            b = bench.lookup(key, match.threat.key)
            if b is not None:
                res.metrics.append(MetricRow(key, "benchmark_accuracy", b))
        pred = np.nan_to_num(lg.numpy()).argmax(1)
        correct = None if yt is None else (pred == yt.numpy())
        if correct is not None:
            r = realised(correct)
            res.metrics.append(_row(key, "realised_accuracy", r))
            res.metrics.append(MetricRow(key, "estimate_error", est.value - r.value, n=r.n))
            m = res.metric(key, "matched_accuracy")
            if m is not None:
                res.metrics.append(MetricRow(key, "matched_error", m.value - r.value, n=r.n))
        if w.served is not None and len(w.served) == len(pred):
            res.metrics.append(MetricRow(key, "served_agreement",
                                         float((np.asarray(w.served) == pred).mean()),
                                         n=len(pred)))
        for col in [c for c in w.groups.columns if c in ref.groups.columns]:
            gw = w.groups[col].astype(str).to_numpy()
            gr = ref.groups[col].astype(str).to_numpy()
            for g in sorted(set(gw)):
                sel = gw == g
                if sel.sum() < s.min_group_size:
                    continue
                res.metrics.append(_row(key, "estimated_accuracy",
                                        cbpe(v.calibrator, conf[sel]), col, g))
                if (gr == g).sum() >= s.min_group_size:
                    res.metrics.append(MetricRow(key, "reference_accuracy",
                                                 float(v.correct[gr == g].mean()), col, g,
                                                 n=int((gr == g).sum())))
                if correct is not None:
                    res.metrics.append(_row(key, "realised_accuracy", realised(correct[sel]),
                                            col, g))
    return res
