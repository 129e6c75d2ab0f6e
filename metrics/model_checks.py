"""Model checks: does the model behave like a frozen function of its input?

Each check is registered by name and looks at one model version on a small
probe batch. ``run_model_checks`` restores everything the checks may change:
train/eval flags, buffers (BatchNorm statistics move in training mode),
``requires_grad`` and torch's random state (dropout draws from it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from benchmark.core.forward import forward_logits, input_gradient
from benchmark.core.types import CheckResult, ModelUnderTest
from metrics.checks_registry import register_check

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelContext:
    """One model version and the probe batch (finite, in the input range) its checks use."""

    model: ModelUnderTest
    probe: torch.Tensor

    def forward(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """Outputs of the module on ``x`` (the probe by default), on the CPU, float32."""
        x = self.probe if x is None else x
        return forward_logits(self.model, x, batch_size=max(1, len(x)))  # one batch


def make_probe(x: torch.Tensor, size: int, input_range: tuple[float, float] = (0.0, 1.0),
               input_shape: tuple[int, ...] | None = None, seed: int = 0) -> torch.Tensor:
    """Up to ``size`` finite samples of ``x`` spread over the set, clipped to the
    input range; seeded uniform noise of ``input_shape`` when ``x`` has too few
    usable samples or the wrong shape (model checks judge the model, not the data)."""
    lo, hi = input_range
    usable = x.ndim == 4 and (input_shape is None or tuple(x.shape[1:]) == tuple(input_shape))
    if usable:
        finite = torch.isfinite(x.reshape(len(x), -1)).all(1)
        idx = torch.nonzero(finite).flatten()
        if len(idx) >= 2:
            pick = idx[torch.linspace(0, len(idx) - 1, min(size, len(idx))).round().long()]
            return x[pick].detach().cpu().float().clamp(lo, hi)
    shape = tuple(input_shape) if input_shape is not None else tuple(x.shape[1:])
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand((max(2, size), *shape), generator=g)


@contextmanager
def preserved_state(module: torch.nn.Module, devices: list[torch.device]) -> Iterator[None]:
    """Restore train/eval flags, buffers, ``requires_grad`` and the random state on exit."""
    modes = {name: m.training for name, m in module.named_modules()}
    buffers = {name: b.detach().clone() for name, b in module.named_buffers()}
    grads = {name: p.requires_grad for name, p in module.named_parameters()}
    cuda = [d for d in devices if d.type == "cuda"]
    with torch.random.fork_rng(devices=cuda, enabled=True):
        try:
            yield
        finally:
            for name, m in module.named_modules():
                m.training = modes.get(name, m.training)
            own = dict(module.named_buffers())
            with torch.no_grad():
                for name, b in buffers.items():
                    own[name].copy_(b)
            for name, p in module.named_parameters():
                p.requires_grad_(grads[name])


def _scale(out: torch.Tensor) -> float:
    finite = out[torch.isfinite(out)]
    return 1.0 + (float(finite.abs().max()) if finite.numel() else 0.0)


@register_check("eval_mode", "model")
def check_eval_mode(ctx: ModelContext) -> CheckResult:
    """Every submodule is in eval mode (no BatchNorm statistics updates, no dropout)."""
    training = [name or "<root>" for name, m in ctx.model.module.named_modules() if m.training]
    evidence = {"n_training": len(training), "modules": training[:20]}
    if training:
        return CheckResult("eval_mode", "fail",
                           f"{len(training)} submodules are in training mode, e.g. "
                           f"{training[:3]}; call .eval() before evaluating.", evidence)
    return CheckResult("eval_mode", "pass", "all submodules are in eval mode.", evidence)


@register_check("determinism", "model")
def check_determinism(ctx: ModelContext, *, tolerance: float = 1e-5) -> CheckResult:
    """The same input twice gives the same output (within ``tolerance``, relative
    to the largest output)."""
    a, b = ctx.forward(), ctx.forward()
    diff = float(torch.nan_to_num((a - b).abs(), nan=0.0).max()) if a.numel() else 0.0
    nan_mismatch = bool((torch.isnan(a) != torch.isnan(b)).any())
    limit = tolerance * _scale(a)
    evidence: dict[str, Any] = {"max_abs_diff": diff, "limit": limit, "n_probe": len(ctx.probe)}
    if diff > limit or nan_mismatch:
        rows = (a - b).abs().flatten(1).amax(1)
        worst = torch.nonzero(torch.nan_to_num(rows, nan=np.inf) > limit).flatten()[:10].tolist()
        evidence["samples"] = worst
        return CheckResult("determinism", "fail",
                           f"the same input twice gives outputs differing by up to {diff:.3g} "
                           f"(limit {limit:.3g}): dropout or other randomness is active.",
                           evidence)
    return CheckResult("determinism", "pass",
                       f"repeated outputs agree (max difference {diff:.2g}).", evidence)


@register_check("batch_invariance", "model")
def check_batch_invariance(ctx: ModelContext, *, tolerance: float = 1e-4,
                           max_samples: int = 16) -> CheckResult:
    """Outputs of a batch equal those of its samples one by one (BatchNorm in
    training mode and other cross-sample effects break this)."""
    name = "batch_invariance"
    probe = ctx.probe[:max_samples]
    batched = ctx.forward(probe)
    try:
        single = torch.cat([ctx.forward(probe[i : i + 1]) for i in range(len(probe))])
    except (RuntimeError, ValueError) as exc:
        return CheckResult(name, "fail",
                           f"the model fails on a batch of one sample: {str(exc).splitlines()[0]}",
                           {"error": str(exc).splitlines()[0]})
    if single.shape != batched.shape:
        return CheckResult(name, "fail",
                           f"one-by-one outputs have shape {list(single.shape)}, batched "
                           f"{list(batched.shape)}.", {})
    rows = torch.nan_to_num((batched - single).abs(), nan=0.0).flatten(1).amax(1)
    diff = float(rows.max()) if rows.numel() else 0.0
    limit = tolerance * _scale(batched)
    evidence = {"max_abs_diff": diff, "limit": limit, "n_probe": len(probe),
                "samples": torch.nonzero(rows > limit).flatten()[:10].tolist()}
    if diff > limit:
        return CheckResult(name, "fail",
                           f"a sample's output depends on its batch (difference up to {diff:.3g}, "
                           f"limit {limit:.3g}): BatchNorm in training mode or another "
                           f"cross-sample effect.", evidence)
    return CheckResult(name, "pass",
                       f"batched and one-by-one outputs agree (max difference {diff:.2g}).",
                       evidence)


@register_check("finite_outputs", "model")
def check_finite_outputs(ctx: ModelContext) -> CheckResult:
    """Outputs on valid inputs are finite."""
    out = ctx.forward()
    bad = ~torch.isfinite(out.reshape(len(out), -1)).all(1)
    samples = torch.nonzero(bad).flatten().tolist()
    evidence = {"n_samples": len(samples), "samples": samples[:20], "n_probe": len(out)}
    if samples:
        return CheckResult("finite_outputs", "fail",
                           f"non-finite outputs on {len(samples)} of {len(out)} valid probe "
                           f"inputs.", evidence)
    return CheckResult("finite_outputs", "pass", "outputs are finite on the probe.", evidence)


@register_check("output_size", "model")
def check_output_size(ctx: ModelContext) -> CheckResult:
    """Outputs are N x num_classes, as the model version declares."""
    out = ctx.forward()
    k = ctx.model.num_classes
    evidence = {"shape": list(out.shape), "declared_num_classes": k}
    if out.ndim != 2 or out.shape[1] != k or out.shape[0] != len(ctx.probe):
        return CheckResult("output_size", "fail",
                           f"outputs have shape {list(out.shape)}, expected "
                           f"[{len(ctx.probe)}, {k}] (declared num_classes={k}).", evidence)
    return CheckResult("output_size", "pass", f"outputs are N x {k}.", evidence)


@register_check("output_kind", "model")
def check_output_kind(ctx: ModelContext, *, tolerance: float = 1e-4) -> CheckResult:
    """Outputs are logits, not probabilities (rows in [0, 1] summing to 1):
    a softmax inside the model flattens the gradients attacks follow."""
    out = ctx.forward()
    if out.ndim != 2 or not bool(torch.isfinite(out).all()):
        return CheckResult("output_kind", "pass", "skipped: outputs are not finite N x K.",
                           {"skipped": True})
    sums = out.sum(1)
    in_unit = bool(((out >= -tolerance) & (out <= 1 + tolerance)).all())
    sum_one = float((sums - 1).abs().max())
    log_sum = float(torch.logsumexp(out, 1).abs().max())
    evidence = {"row_sum_max_dev": sum_one, "min": float(out.min()), "max": float(out.max()),
                "logsumexp_max_dev": log_sum}
    if in_unit and sum_one <= tolerance:
        return CheckResult("output_kind", "warn",
                           "outputs look like probabilities (rows in [0, 1] summing to 1); "
                           "return logits: gradient attacks on a softmax output underestimate "
                           "the risk.", {**evidence, "looks": "probabilities"})
    looks = "log-probabilities" if log_sum <= tolerance * 10 else "logits"
    return CheckResult("output_kind", "pass", f"outputs look like {looks}.",
                       {**evidence, "looks": looks})


class _NoClassScores(Exception):
    """Raised inside the gradient pass when the outputs are not (N, classes) scores."""


@register_check("input_gradients", "model")
def check_input_gradients(ctx: ModelContext, *, zero_fraction: float = 0.5) -> CheckResult:
    """Gradients of the top-two output margin with respect to the input exist, are
    finite and not all zero (gradient attacks need them; zeros mean masked gradients)."""
    name = "input_gradients"
    x = ctx.probe

    def margin(out: torch.Tensor) -> torch.Tensor:
        if out.ndim != 2 or out.shape[1] < 2:
            raise _NoClassScores(list(out.shape))
        # The margin of the top two outputs: unlike the cross-entropy it does
        # not underflow to 0 on confident predictions of a healthy model.
        top2 = out.topk(2, dim=1).values
        return (top2[:, 0] - top2[:, 1]).sum()

    try:
        grad = input_gradient(ctx.model, x, margin)
    except _NoClassScores as exc:
        shape = exc.args[0]
        return CheckResult(name, "fail", f"outputs of shape {shape} have no "
                           "class scores to differentiate.", {"shape": shape})
    except RuntimeError as exc:
        return CheckResult(name, "fail",
                           f"no gradient with respect to the input: {str(exc).splitlines()[0]}",
                           {"error": str(exc).splitlines()[0]})
    if grad is None:
        return CheckResult(name, "fail", "the output does not depend on the input (no gradient).",
                           {})
    grad = grad.detach().cpu().reshape(len(x), -1)
    finite = torch.isfinite(grad).all(1)
    zero = (grad.abs().amax(1) == 0) & finite
    evidence: dict[str, Any] = {
        "n_nonfinite": int((~finite).sum()), "n_zero": int(zero.sum()), "n_probe": len(x),
        "mean_abs": float(grad[finite].abs().mean()) if bool(finite.any()) else None,
        "nonfinite_samples": torch.nonzero(~finite).flatten()[:20].tolist(),
        "zero_samples": torch.nonzero(zero).flatten()[:20].tolist(),
    }
    if not bool(finite.all()):
        return CheckResult(name, "fail",
                           f"input gradients are not finite for {evidence['n_nonfinite']} of "
                           f"{len(x)} probe samples.", evidence)
    frac = float(zero.float().mean())
    if frac == 1.0:
        return CheckResult(name, "fail", "input gradients are all zero (masked or detached).",
                           evidence)
    if frac > zero_fraction:
        return CheckResult(name, "warn",
                           f"input gradients are zero for {frac:.0%} of the probe samples.",
                           evidence)
    return CheckResult(name, "pass",
                       f"input gradients are finite and non-zero (mean |g| "
                       f"{evidence['mean_abs']:.2g}).", evidence)


def _normalization_stages(module: torch.nn.Module) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Every normalization the module applies that can be seen: submodules
    holding ``mean`` and ``std`` buffers (rtb's folded-in one, and any inside
    a network or a TorchScript file), outermost first."""
    stages = []
    for name, m in module.named_modules():
        buffers = dict(m.named_buffers(recurse=False))
        if "mean" in buffers and "std" in buffers:
            stages.append((name or "<root>", buffers["mean"].detach().cpu().float(),
                           buffers["std"].detach().cpu().float()))
    return stages


def _trivial(mean: torch.Tensor, std: torch.Tensor) -> bool:
    return bool((mean == 0).all() and (std == 1).all())


@register_check("input_normalization", "model")
def check_input_normalization(ctx: ModelContext, *, max_mean: float = 1.0,
                              max_std_ratio: float = 3.0) -> CheckResult:
    """The data after the declared normalization looks like normalized data:
    per channel, mean within ``max_mean`` of 0 and std within a factor
    ``max_std_ratio`` of 1. Two non-trivial normalizations in a row (one
    declared, one inside the network) normalize twice: a TorchScript file
    that normalizes internally should declare mean [0] and std [1]."""
    name = "input_normalization"
    stages = [s for s in _normalization_stages(ctx.model.module) if not _trivial(s[1], s[2])]
    z = ctx.probe.detach().cpu().float()
    for _, mean, std in stages:
        shape = (1, -1) + (1,) * (z.ndim - 2)
        z = (z - mean.reshape(shape)) / std.reshape(shape)
    dims = [d for d in range(z.ndim) if d != 1]
    means, stds = z.mean(dim=dims), z.std(dim=dims)
    evidence: dict[str, Any] = {
        "stages": [s[0] for s in stages], "channel_mean": [round(float(v), 4) for v in means],
        "channel_std": [round(float(v), 4) for v in stds]}
    if not stages:
        return CheckResult(name, "pass", "no normalization declared: the model takes [0, 1] "
                           "pixels (or normalizes internally).", evidence)
    if len(stages) > 1:
        return CheckResult(name, "warn",
                           f"inputs are normalized {len(stages)} times ({', '.join(evidence['stages'])}): "
                           "a network that normalizes internally should be declared with mean [0] "
                           "and std [1].", evidence)
    far = bool((means.abs() > max_mean).any() or (stds > max_std_ratio).any()
               or (stds < 1.0 / max_std_ratio).any())
    if far:
        return CheckResult(name, "warn",
                           f"after the declared normalization the data has channel mean "
                           f"{evidence['channel_mean']} and std {evidence['channel_std']}, far from "
                           "0 and 1: the declared mean/std do not fit the data (normalized twice, or "
                           "the wrong statistics).", evidence)
    return CheckResult(name, "pass", "the declared normalization brings the data near mean 0, "
                       "std 1.", evidence)
