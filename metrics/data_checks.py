"""Data checks: is this what the model was built to read?

Each check is registered by name (``metrics.checks_registry``) and returns a
``CheckResult`` with evidence: which samples, what values. Checks that need
a reference (a training set, known channel statistics) pass with
``evidence["skipped"]`` when none is given.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.core.types import CheckResult, EvalSet
from metrics.checks_registry import register_check

log = logging.getLogger(__name__)

#: How many sample indices a result lists as evidence.
MAX_EVIDENCE = 20

#: ``DataContext.reference_source`` when the reference is the models' declared normalization.
DECLARED = "declared normalization"


@dataclass(frozen=True)
class DataContext:
    """What the data checks look at.

    ``x`` is the evaluation set as it arrived (N x C x H x W expected),
    ``input_shape`` and ``input_range`` what the model declares it reads,
    ``reference_mean``/``reference_std`` the per-channel statistics the
    inputs should have (from the policy, a training set, or the model's
    declared normalization; ``reference_source`` says which).
    """

    x: torch.Tensor
    y: torch.Tensor | None
    classes: list[str]
    name: str = "data"
    input_shape: tuple[int, ...] | None = None
    input_range: tuple[float, float] = (0.0, 1.0)
    train_x: torch.Tensor | None = None
    reference_mean: tuple[float, ...] | None = None
    reference_std: tuple[float, ...] | None = None
    reference_source: str = ""

    @classmethod
    def from_evalset(cls, data: EvalSet, **kwargs: Any) -> DataContext:
        return cls(x=data.x, y=data.y, classes=list(data.classes), name=data.name,
                   train_x=data.train_x, **kwargs)

    @property
    def is_image_batch(self) -> bool:
        return self.x.ndim == 4 and self.x.is_floating_point()


def _skipped(name: str, why: str) -> CheckResult:
    return CheckResult(name, "pass", f"skipped: {why}", {"skipped": True})


def _few(idx: np.ndarray | list[int]) -> list[int]:
    return [int(i) for i in list(idx)[:MAX_EVIDENCE]]


def _finite(x: torch.Tensor) -> torch.Tensor:
    """float64 copy with non-finite values replaced by NaN (for nan-aware stats)."""
    x = x.detach().to("cpu", torch.float64)
    return torch.where(torch.isfinite(x), x, torch.full_like(x, math.nan))


def _graded(value: float, warn: float | None, fail: float | None) -> str:
    """``fail`` if value > fail, ``warn`` if value > warn, else ``pass`` (None disables)."""
    if fail is not None and value > fail:
        return "fail"
    if warn is not None and value > warn:
        return "warn"
    return "pass"


# -- image properties -------------------------------------------------------------


#: Properties used for outliers and drift (colourfulness only for RGB images).
PROPERTY_NAMES: tuple[str, ...] = ("brightness", "contrast", "sharpness", "ink_fraction",
                                   "stroke_thickness")


def image_properties(x: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-image properties used for outliers and drift, from
    ``metrics.properties`` (non-finite values count as 0).

    Images smaller than 2 x 2 get brightness and contrast only.
    """
    from metrics.properties import compute_properties

    x = torch.nan_to_num(x.detach().to("cpu", torch.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if min(x.shape[2:]) < 3:
        flat = x.reshape(len(x), -1).double()
        return {"brightness": flat.mean(1).numpy(),
                "contrast": flat.std(1, unbiased=False).numpy()}
    names = PROPERTY_NAMES + (("colourfulness",) if x.shape[1] == 3 else ())
    return compute_properties(x, names)


# -- shape, values, scale -----------------------------------------------------------


@register_check("dtype_shape", "data")
def check_dtype_shape(ctx: DataContext) -> CheckResult:
    """Images are floating N x C x H x W of the model's input shape; labels are
    one integer per image."""
    name = "dtype_shape"
    x, y = ctx.x, ctx.y
    problems: list[str] = []
    if x.ndim != 4:
        problems.append(f"images have shape {list(x.shape)}, expected N x C x H x W")
    if not x.is_floating_point():
        problems.append(f"images have dtype {x.dtype}, expected floating point")
    if ctx.input_shape is not None and x.ndim == 4 and tuple(x.shape[1:]) != tuple(ctx.input_shape):
        problems.append(
            f"samples have shape {list(x.shape[1:])}, the model expects {list(ctx.input_shape)}"
        )
    if y is not None:
        if y.ndim != 1 or len(y) != len(x):
            problems.append(f"labels have shape {list(y.shape)}, expected [{len(x)}]")
        if y.is_floating_point() or y.dtype == torch.bool:
            problems.append(f"labels have dtype {y.dtype}, expected integers")
    evidence = {"shape": list(x.shape), "dtype": str(x.dtype),
                "expected_shape": list(ctx.input_shape) if ctx.input_shape else None,
                "label_shape": list(y.shape) if y is not None else None}
    if problems:
        return CheckResult(name, "fail", "; ".join(problems) + ".", evidence)
    return CheckResult(name, "pass", f"{len(x)} samples of shape {list(x.shape[1:])}, {x.dtype}.",
                       evidence)


@register_check("finite_values", "data")
def check_finite_values(ctx: DataContext) -> CheckResult:
    """No NaN or infinite pixel values."""
    x = ctx.x.detach().cpu()
    bad = ~torch.isfinite(x)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return CheckResult("finite_values", "pass", "all values are finite.", {"n_values": 0})
    per_sample = bad.reshape(len(x), -1).sum(1).numpy()
    samples = np.flatnonzero(per_sample)
    evidence = {"n_values": n_bad, "n_nan": int(torch.isnan(x).sum()),
                "n_inf": int(torch.isinf(x).sum()), "n_samples": int(len(samples)),
                "samples": _few(samples)}
    return CheckResult(
        "finite_values", "fail",
        f"{n_bad} non-finite values ({evidence['n_nan']} NaN, {evidence['n_inf']} Inf) in "
        f"{len(samples)} samples, e.g. samples {_few(samples)[:5]}.", evidence)


@register_check("input_range", "data")
def check_input_range(ctx: DataContext, *, tolerance: float = 1e-6,
                      fail_fraction: float = 0.0) -> CheckResult:
    """Finite values lie inside the model's declared input range (e.g. [0, 1])."""
    lo, hi = ctx.input_range
    x = _finite(ctx.x)
    outside = (x < lo - tolerance) | (x > hi + tolerance)
    n_out = int(outside.sum())
    finite = torch.isfinite(x)
    vmin = float(x[finite].min()) if bool(finite.any()) else math.nan
    vmax = float(x[finite].max()) if bool(finite.any()) else math.nan
    evidence: dict[str, Any] = {"range": [lo, hi], "min": vmin, "max": vmax, "n_values": n_out}
    if n_out == 0:
        span = f"[{vmin:.3g}, {vmax:.3g}]"
        bounds = f"[{lo:g}, {hi:g}]"
        return CheckResult("input_range", "pass",
                           f"values span the whole input range {bounds}." if span == bounds
                           else f"values lie in {span}, inside the input range {bounds}.",
                           evidence)
    samples = np.flatnonzero(outside.reshape(len(x), -1).any(1).numpy())
    fraction = n_out / max(1, int(finite.sum()))
    evidence.update(n_samples=int(len(samples)), samples=_few(samples), fraction=fraction)
    status = "fail" if fraction > fail_fraction else "warn"
    return CheckResult(
        "input_range", status,
        f"{n_out} values ({fraction:.1%}) in {len(samples)} samples lie outside [{lo:g}, {hi:g}] "
        f"(min {vmin:.3g}, max {vmax:.3g}).", evidence)


@register_check("input_scale", "data")
def check_input_scale(ctx: DataContext, *, integral_fraction: float = 0.9) -> CheckResult:
    """The values look like [0, 1] pixels: not 0-255 integers, not already
    normalized (negative values with mean near 0 and std near 1)."""
    name = "input_scale"
    x = _finite(ctx.x)
    vals = x[torch.isfinite(x)]
    if vals.numel() == 0:
        return CheckResult(name, "fail", "no finite values to judge the scale from.", {})
    lo, hi = ctx.input_range
    vmin, vmax = float(vals.min()), float(vals.max())
    mean, std = float(vals.mean()), float(vals.std())
    evidence: dict[str, Any] = {"min": vmin, "max": vmax, "mean": mean, "std": std}
    if vmax > hi + 0.5 and vmin >= lo - 1e-6:
        integral = float((vals == vals.round()).double().mean())
        evidence.update(integral_fraction=integral, looks="0-255")
        if vmax <= 255.0 + 1e-6 and (integral >= integral_fraction or vmax > 2.0 * hi):
            return CheckResult(
                name, "fail",
                f"inputs look like 0-255 pixels (max {vmax:.4g}, {integral:.0%} integral); "
                f"the model expects [{lo:g}, {hi:g}]: divide by 255.", evidence)
    if vmin < lo - 1e-3:
        looks_standardized = abs(mean) < 0.5 and 0.5 < std < 2.0
        evidence["looks"] = "normalized" if looks_standardized else "shifted"
        what = ("already normalized" if looks_standardized else "normalized or shifted")
        what += f" (mean {mean:.2f}, std {std:.2f})"
        return CheckResult(
            name, "fail",
            f"inputs look {what}: min {vmin:.3g} < {lo:g}; the model normalizes itself and "
            f"expects [{lo:g}, {hi:g}] pixels.", evidence)
    if vmax > hi + 1e-3:
        evidence["looks"] = "unknown"
        return CheckResult(name, "warn",
                           f"values up to {vmax:.3g} exceed {hi:g} but match no known scale.",
                           evidence)
    evidence["looks"] = "pixels"
    return CheckResult(name, "pass", f"values look like [{lo:g}, {hi:g}] pixels "
                       f"(mean {mean:.3f}, std {std:.3f}).", evidence)


def channel_means_stds(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over all finite values of an NCHW batch."""
    xf = _finite(x).transpose(0, 1).reshape(x.shape[1], -1).numpy()
    return np.nanmean(xf, axis=1), np.nanstd(xf, axis=1)


@register_check("channel_stats", "data")
def check_channel_stats(ctx: DataContext, *, warn_shift: float = 0.25, fail_shift: float = 0.5,
                        warn_std_ratio: float = 1.25, fail_std_ratio: float = 2.0) -> CheckResult:
    """Per-channel mean and std are close to the reference: the mean shift is
    measured in reference standard deviations, the spread as a std ratio (a
    reference from the models' declared normalization only warns)."""
    name = "channel_stats"
    if ctx.reference_mean is None or ctx.reference_std is None:
        return _skipped(name, "no reference channel statistics (no training set, no declared "
                              "normalization, none in the policy)")
    if not ctx.is_image_batch:
        return _skipped(name, "inputs are not an N x C x H x W float batch")
    mean, std = channel_means_stds(ctx.x)
    c = len(mean)
    ref_m = np.broadcast_to(np.asarray(ctx.reference_mean, dtype=np.float64), (c,))
    ref_s = np.broadcast_to(np.asarray(ctx.reference_std, dtype=np.float64), (c,))
    shift = np.abs(mean - ref_m) / np.maximum(ref_s, 1e-12)
    ratio = np.maximum(std, 1e-12) / np.maximum(ref_s, 1e-12)
    spread = np.maximum(ratio, 1.0 / ratio)
    worst_shift, worst_spread = float(np.nanmax(shift)), float(np.nanmax(spread))
    statuses = [_graded(worst_shift, warn_shift, fail_shift),
                _graded(worst_spread, warn_std_ratio, fail_std_ratio)]
    status = "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"
    if status == "fail" and ctx.reference_source == DECLARED:
        # A declared mean/std is what the model was trained on, not a measurement
        # of this data set's source: evidence enough to warn, not to stop a run.
        status = "warn"
    evidence = {"mean": mean.tolist(), "std": std.tolist(), "reference_mean": ref_m.tolist(),
                "reference_std": ref_s.tolist(), "reference": ctx.reference_source,
                "mean_shift_in_std": shift.tolist(), "std_ratio": ratio.tolist()}
    msg = (f"channel mean {np.round(mean, 3).tolist()} vs {np.round(ref_m, 3).tolist()} "
           f"({ctx.reference_source}): shift {worst_shift:.2f} std; std ratio "
           f"{np.round(ratio, 2).tolist()}.")
    return CheckResult(name, status, msg, evidence)


@register_check("channel_order", "data")
def check_channel_order(ctx: DataContext, *, margin: float = 3.0,
                        min_gap: float = 0.02) -> CheckResult:
    """The channel order matches the reference: catches BGR fed to an RGB model
    (another permutation of the channel means fits the reference far better)."""
    name = "channel_order"
    if not ctx.is_image_batch or ctx.x.shape[1] < 2:
        return _skipped(name, "fewer than two channels")
    if ctx.reference_mean is None or len(ctx.reference_mean) != ctx.x.shape[1]:
        return _skipped(name, "no per-channel reference mean")
    mean, _ = channel_means_stds(ctx.x)
    ref = np.asarray(ctx.reference_mean, dtype=np.float64)
    c = len(mean)
    dists = {perm: float(np.abs(mean[list(perm)] - ref).sum()) for perm in
             itertools.permutations(range(c))}
    identity = tuple(range(c))
    best = min(dists, key=lambda p: dists[p])
    evidence = {"mean": mean.tolist(), "reference_mean": ref.tolist(),
                "reference": ctx.reference_source, "best_order": list(best),
                "distance": dists[identity], "best_distance": dists[best]}
    if best != identity and dists[identity] > min_gap and dists[best] * margin < dists[identity]:
        swapped = "reversed (BGR vs RGB)" if best == tuple(reversed(identity)) else f"in order {list(best)}"
        return CheckResult(name, "fail",
                           f"channels look {swapped}: channel means {np.round(mean, 3).tolist()} "
                           f"match the reference {np.round(ref, 3).tolist()} far better "
                           f"reordered.", evidence)
    return CheckResult(name, "pass", "channel means match the reference order.", evidence)


# -- content ------------------------------------------------------------------------


@register_check("constant_images", "data")
def check_constant_images(ctx: DataContext, *, tolerance: float = 1e-6,
                          fail_fraction: float = 0.5) -> CheckResult:
    """No constant or blank images (every pixel the same value)."""
    name = "constant_images"
    x = torch.nan_to_num(_finite(ctx.x), nan=0.0).reshape(len(ctx.x), -1)
    spread = (x.amax(1) - x.amin(1)).numpy() if x.shape[1] else np.zeros(len(x))
    idx = np.flatnonzero(spread <= tolerance)
    fraction = len(idx) / max(1, len(x))
    evidence = {"n_samples": int(len(idx)), "samples": _few(idx), "fraction": fraction,
                "values": [float(x[i, 0]) for i in _few(idx)]}
    if len(idx) == 0:
        return CheckResult(name, "pass", "no constant images.", evidence)
    status = "fail" if fraction > fail_fraction else "warn"
    return CheckResult(name, status,
                       f"{len(idx)} constant images ({fraction:.1%}), e.g. samples "
                       f"{_few(idx)[:5]}.", evidence)


POOLED_FEATURES = 1024


def _pooled(x: torch.Tensor) -> torch.Tensor:
    """Flattened images, average-pooled to at most ~POOLED_FEATURES values.

    Average pooling never increases the RMS difference of two images, so a
    pair within a threshold at full size is within it pooled: pooled
    distances give candidates, full-size ones the verdict.
    """
    x = torch.nan_to_num(x.detach().to("cpu", torch.float32), nan=0.0, posinf=0.0, neginf=0.0)
    n, c, h, w = x.shape
    if c * h * w > POOLED_FEATURES:
        side = max(1, int(math.sqrt(POOLED_FEATURES / c)))
        x = F.adaptive_avg_pool2d(x, (min(side, h), min(side, w)))
    return x.reshape(n, -1)


def close_pairs(a: torch.Tensor, b: torch.Tensor | None, rms: float,
                chunk: int = 512) -> list[tuple[int, int, float]]:
    """Pairs (i, j, rms difference) with RMS pixel difference <= ``rms``.

    ``b=None`` compares ``a`` with itself (pairs i < j only).
    """
    same = b is None
    other = a if b is None else b
    fa, fb = _pooled(a), _pooled(other)
    threshold = rms * math.sqrt(fa.shape[1]) + 1e-4
    full_a = torch.nan_to_num(a.detach().to("cpu", torch.float32)).reshape(len(a), -1)
    full_b = torch.nan_to_num(other.detach().to("cpu", torch.float32)).reshape(len(other), -1)
    pairs: list[tuple[int, int, float]] = []
    for start in range(0, len(fa), chunk):
        dist = torch.cdist(fa[start:start + chunk], fb)
        if same:
            rows = torch.arange(start, start + len(dist)).unsqueeze(1)
            dist = dist.masked_fill(torch.arange(len(fb)).unsqueeze(0) <= rows, math.inf)
        for i, j in (dist <= threshold).nonzero().tolist():
            i += start
            d = float((full_a[i] - full_b[j]).pow(2).mean().sqrt())
            if d <= rms:
                pairs.append((i, j, d))
    return pairs


def _duplicate_result(name: str, pairs: list[tuple[int, int, float]], n: int, what: str,
                      fail_fraction: float | None) -> CheckResult:
    exact = [(i, j) for i, j, d in pairs if d == 0.0]
    near = [(i, j, round(d, 5)) for i, j, d in pairs if d > 0.0]
    affected = sorted({i for i, _, _ in pairs})
    fraction = len(affected) / max(1, n)
    evidence = {"n_exact": len(exact), "n_near": len(near), "n_samples": len(affected),
                "fraction": fraction, "exact_pairs": [list(p) for p in exact[:MAX_EVIDENCE]],
                "near_pairs": [list(p) for p in near[:MAX_EVIDENCE]]}
    if not pairs:
        return CheckResult(name, "pass", f"no exact or near duplicates {what}.", evidence)
    status = "fail" if fail_fraction is not None and fraction > fail_fraction else "warn"
    shown = [list(p) for p in (exact or [(i, j) for i, j, _ in near])[:3]]
    return CheckResult(name, status,
                       f"{len(exact)} exact and {len(near)} near duplicate pairs {what} "
                       f"({len(affected)} samples, {fraction:.1%}), e.g. {shown}.", evidence)


@register_check("duplicates", "data")
def check_duplicates(ctx: DataContext, *, near_rms: float = 0.01,
                     fail_fraction: float | None = None) -> CheckResult:
    """No exact or near duplicate images within the set (RMS pixel difference
    at most ``near_rms``)."""
    if not ctx.is_image_batch:
        return _skipped("duplicates", "inputs are not an N x C x H x W float batch")
    pairs = close_pairs(ctx.x, None, near_rms)
    return _duplicate_result("duplicates", pairs, len(ctx.x), "within the set", fail_fraction)


@register_check("train_overlap", "data")
def check_train_overlap(ctx: DataContext, *, near_rms: float = 0.01,
                        fail_fraction: float | None = 0.5) -> CheckResult:
    """No evaluation image is an exact or near copy of a training image
    (leakage inflates every accuracy)."""
    name = "train_overlap"
    if ctx.train_x is None:
        return _skipped(name, "no training set given")
    if not ctx.is_image_batch or ctx.train_x.shape[1:] != ctx.x.shape[1:]:
        return _skipped(name, "training and evaluation images differ in shape")
    pairs = close_pairs(ctx.x, ctx.train_x, near_rms)
    return _duplicate_result(name, pairs, len(ctx.x), "between evaluation and training set",
                             fail_fraction)


# -- labels -------------------------------------------------------------------------


@register_check("label_range", "data")
def check_label_range(ctx: DataContext) -> CheckResult:
    """Every label is a class index in [0, number of classes)."""
    name = "label_range"
    if ctx.y is None:
        return _skipped(name, "no labels")
    y = ctx.y.detach().cpu().numpy()
    k = len(ctx.classes)
    bad = np.flatnonzero((y < 0) | (y >= k))
    evidence: dict[str, Any] = {"n_classes": k, "n_samples": int(len(bad)), "samples": _few(bad),
                "values": sorted({int(v) for v in y[bad]})[:MAX_EVIDENCE]}
    if len(bad):
        return CheckResult(name, "fail",
                           f"{len(bad)} labels outside [0, {k}): values "
                           f"{evidence['values'][:5]} at samples {_few(bad)[:5]}.", evidence)
    return CheckResult(name, "pass", f"all labels in [0, {k}).", evidence)


def _class_counts(ctx: DataContext) -> np.ndarray:
    assert ctx.y is not None
    y = ctx.y.detach().cpu().numpy().astype(np.int64)
    k = len(ctx.classes)
    y = y[(y >= 0) & (y < k)]
    return np.bincount(y, minlength=k)


@register_check("class_coverage", "data")
def check_class_coverage(ctx: DataContext) -> CheckResult:
    """Every class appears at least once (a class never seen is never measured)."""
    name = "class_coverage"
    if ctx.y is None:
        return _skipped(name, "no labels")
    counts = _class_counts(ctx)
    missing = [ctx.classes[i] for i in np.flatnonzero(counts == 0)]
    evidence = {"missing": missing[:MAX_EVIDENCE], "n_missing": len(missing)}
    if missing:
        return CheckResult(name, "warn",
                           f"{len(missing)} of {len(counts)} classes never appear: {missing[:5]}.",
                           evidence)
    return CheckResult(name, "pass", f"all {len(counts)} classes appear.", evidence)


@register_check("class_imbalance", "data")
def check_class_imbalance(ctx: DataContext, *, warn_ratio: float = 3.0,
                          fail_ratio: float | None = None) -> CheckResult:
    """The largest class is at most ``warn_ratio`` times the smallest present one."""
    name = "class_imbalance"
    if ctx.y is None:
        return _skipped(name, "no labels")
    counts = _class_counts(ctx)
    present = counts[counts > 0]
    if len(present) < 2:
        return _skipped(name, "fewer than two classes present")
    ratio = float(present.max() / present.min())
    evidence = {"counts": {c: int(n) for c, n in zip(ctx.classes, counts, strict=True)},
                "ratio": ratio, "largest": ctx.classes[int(np.argmax(counts))],
                "smallest": ctx.classes[int(np.flatnonzero(counts == present.min())[0])]}
    status = _graded(ratio, warn_ratio, fail_ratio)
    if present.max() == present.min():  # balanced: no class is the largest or the smallest
        return CheckResult(name, status, f"balanced: each of the {len(present)} classes present "
                           f"has {present.max()} samples.", evidence)
    return CheckResult(name, status,
                       f"largest/smallest class ratio {ratio:.2f} ({evidence['largest']}: "
                       f"{present.max()}, {evidence['smallest']}: {present.min()}).", evidence)


# -- image properties -----------------------------------------------------------------


def robust_z(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(values - median) / (1.4826 MAD) of the reference (std when MAD is 0)."""
    med = float(np.median(reference))
    scale = 1.4826 * float(np.median(np.abs(reference - med)))
    if scale <= 0:
        scale = float(np.std(reference))
    if scale <= 0:
        scale = 1e-12
    return (values - med) / scale


@register_check("property_outliers", "data")
def check_property_outliers(ctx: DataContext, *, z: float = 6.0, warn_fraction: float = 0.02,
                            fail_fraction: float = 0.25) -> CheckResult:
    """Few images have an extreme brightness, contrast, sharpness, ... (robust
    z-score against the training set when given, else the set itself); a
    large share means the whole set is off."""
    name = "property_outliers"
    if not ctx.is_image_batch:
        return _skipped(name, "inputs are not an N x C x H x W float batch")
    use_train = ctx.train_x is not None and ctx.train_x.shape[1:] == ctx.x.shape[1:]
    props = image_properties(ctx.x)
    ref_props = image_properties(ctx.train_x) if use_train else props  # type: ignore[arg-type]
    per_prop: dict[str, Any] = {}
    flagged = np.zeros(len(ctx.x), dtype=bool)
    for key, values in props.items():
        zs = robust_z(values, ref_props[key])
        out = np.abs(zs) > z
        flagged |= out
        if out.any():
            idx = np.flatnonzero(out)
            per_prop[key] = {"n_samples": int(out.sum()), "fraction": float(out.mean()),
                             "samples": _few(idx), "values": [round(float(values[i]), 4)
                                                              for i in _few(idx)],
                             "reference_median": float(np.median(ref_props[key])),
                             "median_z": float(np.median(zs))}
    fraction = float(flagged.mean()) if len(flagged) else 0.0
    evidence = {"reference": "training set" if use_train else "the set itself", "z": z,
                "fraction": fraction, "properties": per_prop}
    status = _graded(fraction, warn_fraction, fail_fraction)
    if not per_prop:
        return CheckResult(name, "pass", f"no image beyond |z| > {z:g} on "
                           f"{', '.join(props)}.", evidence)
    worst = sorted(per_prop, key=lambda k: -per_prop[k]["n_samples"])
    parts = [f"{k} {per_prop[k]['n_samples']}" for k in worst]
    return CheckResult(name, status,
                       f"{int(flagged.sum())} images ({fraction:.1%}) are outliers (|z| > {z:g} "
                       f"vs {evidence['reference']}): {', '.join(parts)}.", evidence)
