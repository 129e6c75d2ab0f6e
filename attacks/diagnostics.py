"""Attack and model diagnostics: reliability flags that run the model or re-run attacks.

After AutoAttack's checks and the attack-failure indicators of Pintor et
al. 2022 and Carlini et al. 2019: a robust accuracy is only as good as the
attacks behind it. Model flags run before any threat (ART switches a model
to eval mode, which would hide dropout left on); attack flags read the
per-sample outcomes and re-run attacks on a small subsample (the largest
budget alone, an unbounded budget, twice the iterations). Flags that only
read outcomes live in ``metrics/reliability.py``; which flags a run gets is
decided in ``benchmark/reliability_run.py``.

Each flag returns a ``CheckResult`` with its evidence.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from attacks.art_adapter import ArtAdapter, derive_seed
from attacks.budgets import attack_points, choose_targets, member_name
from benchmark.core.forward import forward_logits, input_gradient
from benchmark.core.registry import Registry
from benchmark.core.specs import ANOMALY_FRACTION, AttackSpec, max_budget
from benchmark.core.types import CheckResult, ModelUnderTest, Outcome, check_result, param_text

log = logging.getLogger(__name__)

#: Fraction of points with a vanishing gradient that warns / fails.
ZERO_GRAD_WARN, ZERO_GRAD_FAIL = 0.1, 0.5
#: Largest logit difference between two forward passes of the same input.
REPEAT_TOL = 1e-5
#: Success rate an unbounded budget must reach (warn below, fail far below).
UNBOUNDED_WARN, UNBOUNDED_FAIL = 0.95, 0.5

def subject_of(model: ModelUnderTest) -> str:
    """The subject reliability flags of ``model`` are reported under."""
    return f"{model.key} attacks"


# --------------------------------------------------------------------- model flags

ModelFlag = Callable[[ModelUnderTest, torch.Tensor, torch.Tensor], CheckResult]
MODEL_FLAGS: Registry[ModelFlag] = Registry(
    "reliability flag", duplicate="Expected a new {kind} name, but {name!r} is registered.")


def register_model_flag(name: str) -> Callable[[ModelFlag], ModelFlag]:
    """Register a model-level reliability flag; a duplicate name raises."""
    return MODEL_FLAGS.register(name)


@register_model_flag("gradients")
def gradient_flag(model: ModelUnderTest, x: torch.Tensor, y: torch.Tensor) -> CheckResult:
    """Input gradients of the margin loss: unavailable, NaN, or zero for many
    points means gradient attacks are blind (masking, a non-differentiable step)."""
    name, subject = "gradients", subject_of(model)
    yd = y.to(model.device)

    def margin(logits: torch.Tensor) -> torch.Tensor:
        true = logits.gather(1, yd[:, None]).squeeze(1)
        other = logits.scatter(1, yd[:, None], -torch.inf).amax(1)
        return (other - true).sum()

    try:
        grad = input_gradient(model, x, margin)
    except RuntimeError as exc:
        return check_result(name, "fail", f"input gradients unavailable: {str(exc).splitlines()[0]}",
                       subject, error=str(exc).splitlines()[0])
    if grad is None:
        return check_result(name, "fail", "input gradients unavailable (output does not depend on "
                       "the input through autograd)", subject, error="grad is None")
    flat = grad.flatten(1)
    nonfinite = float((~torch.isfinite(flat).all(1)).float().mean())
    zero = float((flat.abs().amax(1) == 0).float().mean())
    ev = {"n": len(x), "frac_zero": zero, "frac_nonfinite": nonfinite,
          "mean_l2": float(torch.nan_to_num(flat).norm(dim=1).mean())}
    if nonfinite > 0:
        return check_result(name, "fail", f"NaN/inf input gradients on {nonfinite:.0%} of points",
                       subject, **ev)
    if zero >= ZERO_GRAD_FAIL:
        return check_result(name, "fail", f"zero input gradients on {zero:.0%} of points", subject, **ev)
    if zero >= ZERO_GRAD_WARN:
        return check_result(name, "warn", f"zero input gradients on {zero:.0%} of points", subject, **ev)
    return check_result(name, "pass", "input gradients finite and non-zero", subject, **ev)


@register_model_flag("deterministic_outputs")
def repeat_flag(model: ModelUnderTest, x: torch.Tensor, y: torch.Tensor) -> CheckResult:
    """Two forward passes of the same inputs must agree (dropout left on or
    random defenses make attacks and accuracies noise)."""
    a = forward_logits(model, x, max(1, len(x)))
    b = forward_logits(model, x, max(1, len(x)))
    diff = float((a - b).abs().max()) if len(a) else 0.0
    flips = float((a.argmax(1) != b.argmax(1)).float().mean()) if len(a) else 0.0
    ev = {"n": len(x), "max_abs_diff": diff, "frac_pred_changed": flips}
    if diff > REPEAT_TOL:
        return check_result("deterministic_outputs", "fail",
                       f"outputs change across repeated forward passes (max diff {diff:.2g}, "
                       f"{flips:.0%} predictions changed)", subject_of(model), **ev)
    return check_result("deterministic_outputs", "pass", "repeated forward passes agree",
                   subject_of(model), **ev)


@register_model_flag("logit_outputs")
def logits_flag(model: ModelUnderTest, x: torch.Tensor, y: torch.Tensor) -> CheckResult:
    """Outputs that are probabilities (or log-probabilities) rather than
    logits weaken loss-based attacks (saturated softmax of a softmax)."""
    z = forward_logits(model, x, max(1, len(x)))
    probs = bool(((z >= -1e-6) & (z <= 1 + 1e-6)).all() and
                 ((z.sum(1) - 1).abs() < 1e-3).all())
    logprobs = bool((z <= 1e-6).all() and (torch.logsumexp(z, 1).abs() < 1e-3).all())
    ev = {"n": len(x), "min": float(z.min()), "max": float(z.max()),
          "max_row_sum_error": float((z.sum(1) - 1).abs().max()), "looks_like": (
              "probabilities" if probs else "log-probabilities" if logprobs else "logits")}
    if probs or logprobs:
        return check_result("logit_outputs", "warn",
                       f"outputs look like {ev['looks_like']}, not logits: attack losses saturate",
                       subject_of(model), **ev)
    return check_result("logit_outputs", "pass", "outputs look like logits", subject_of(model), **ev)


def model_flags(model: ModelUnderTest, x: torch.Tensor, y: torch.Tensor,
                n_samples: int = 32) -> list[CheckResult]:
    """Every model flag on the first ``n_samples`` points."""
    xs, ys = x[:n_samples], y[:n_samples]
    return [flag(model, xs, ys) for flag in MODEL_FLAGS.values()]


# -------------------------------------------------------------------- attack flags


def monotone_flag(name: str, outs: Sequence[Outcome], subject: str,
                  sub: np.ndarray | None = None, hit_top: np.ndarray | None = None
                  ) -> CheckResult:
    """Robust accuracy must not rise with eps: neither in the outcomes, nor
    for points broken at a smaller eps when the largest eps is attacked on
    its own (``hit_top``: success per point of ``sub``) -- an attack that
    fails with more budget is failing."""
    acc = [o.accuracy for o in outs]
    ev: dict[str, Any] = {"attack": name, "eps": [o.threat.param for o in outs], "accuracy": acc}
    if any(b > a + 1e-12 for a, b in zip(acc, acc[1:], strict=False)):
        return check_result("accuracy_monotone", "fail", f"{name}: robust accuracy rises with eps",
                       subject, **ev)
    if sub is not None and hit_top is not None and len(sub):
        top = float(outs[-1].threat.param or 0.0)
        eps_broken = outs[-1].columns["eps_broken"][sub]
        lost = np.flatnonzero((eps_broken < top) & ~hit_top)
        ev.update(n_checked=len(sub), survive_larger_eps=len(lost),
                  points=sub[lost][:10].tolist())
        if len(lost) and len(lost) > ANOMALY_FRACTION * len(sub):
            return check_result("accuracy_monotone", "warn",
                           f"{name}: {len(lost)} of {len(sub)} points broken at a smaller eps "
                           f"survive an attack at eps={param_text(top)} alone", subject, **ev)
    return check_result("accuracy_monotone", "pass", f"{name}: robust accuracy never rises with eps",
                   subject, **ev)


def unbounded_flag(name: str, rate: float, n: int, subject: str) -> CheckResult:
    """With eps = the whole input range every point can be broken: an attack
    that does not reach ~100% there is failing, not the model robust."""
    ev = {"attack": name, "success_rate": rate, "n": n}
    if n == 0 or math.isnan(rate):
        return check_result("unbounded_budget", "pass", f"{name}: no point to check", subject, **ev)
    status = ("fail" if rate < UNBOUNDED_FAIL else "warn" if rate < UNBOUNDED_WARN else "pass")
    return check_result("unbounded_budget", status,
                   f"{name}: {rate:.0%} success with an unbounded budget", subject, **ev)


def attack_subsample(adapter: ArtAdapter, spec: AttackSpec, eps: float, xs: torch.Tensor,
                     ys: torch.Tensor, seed: int) -> tuple[np.ndarray, float]:
    """Attack every point of ``xs`` at ``eps`` (no early exit): per-point
    success by our forward pass, and the mean cross-entropy of the examples.
    An ensemble runs its members in order on the points still standing."""
    if spec.members:
        hit = np.zeros(len(xs), dtype=bool)
        x_adv = xs.clone()
        for member in spec.members:
            idx = np.flatnonzero(~hit)
            if not len(idx):
                break
            ti = torch.from_numpy(idx)
            target = choose_targets(adapter, member, xs[ti], ys[ti], seed)
            labels = ys[ti] if target is None else torch.from_numpy(target)
            adv = attack_points(adapter, member, eps, xs[ti], labels, seed).cpu()
            p = forward_logits(adapter.model, adv, adapter.batch_size).argmax(1).numpy()
            won = p == target if target is not None else p != ys[ti].numpy()
            hit[idx[won]] = True
            x_adv[ti[torch.from_numpy(won)]] = adv[torch.from_numpy(won)]
        loss = float(torch.nn.functional.cross_entropy(
            forward_logits(adapter.model, x_adv, adapter.batch_size), ys))
        return hit, loss
    target = choose_targets(adapter, spec, xs, ys, seed)
    labels = ys if target is None else torch.from_numpy(target)
    x_adv = attack_points(adapter, spec, eps, xs, labels, seed)
    logits = forward_logits(adapter.model, x_adv, adapter.batch_size)
    p = logits.argmax(1).numpy()
    hit = p == target if target is not None else p != ys.numpy()
    loss = float(torch.nn.functional.cross_entropy(logits, ys))
    return hit, loss


def _doubled_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """``kwargs`` with every ``max_iter`` doubled, nested attacks (AutoAttack's
    ``attacks``) included; whether any was found."""
    out = dict(kwargs)
    found = False
    if isinstance(out.get("max_iter"), int) and not isinstance(out["max_iter"], bool) \
            and out["max_iter"] > 0:
        out["max_iter"] = 2 * out["max_iter"]
        found = True
    for key, value in kwargs.items():
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            nested = {}
            for sub, sub_d in value.items():
                nested[sub], hit = _doubled_kwargs(sub_d)
                found |= hit
            out[key] = nested
    return out, found


def doubled(spec: AttackSpec) -> AttackSpec | None:
    """``spec`` with twice the iterations (single attacks, ensemble members and
    AutoAttack's nested attacks); None when nothing in it iterates."""
    if spec.minimum_norm:
        return None
    if spec.members:
        members = [doubled(m) for m in spec.members]
        if all(m is None for m in members):
            return None
        new = tuple(m if m is not None else o for m, o in zip(members, spec.members, strict=True))
        return replace(spec, members=new)
    kwargs, found = _doubled_kwargs(spec.kwargs)
    return replace(spec, kwargs=kwargs) if found else None


def iterations(spec: AttackSpec) -> Any:
    """The ``max_iter`` of ``spec``, per member or nested attack where it has them."""
    if spec.members:
        return {member_name(m): iterations(m) for m in spec.members}
    nested = {f"{k}.{sub}": d.get("max_iter") for k, v in spec.kwargs.items()
              if isinstance(v, dict) and v and all(isinstance(d, dict) for d in v.values())
              for sub, d in v.items()}
    return nested or spec.kwargs.get("max_iter")


def attack_flags(adapter: ArtAdapter, spec: AttackSpec, outs: Sequence[Outcome],
                 x: torch.Tensor, y: torch.Tensor, clean_pred: np.ndarray, seed: int,
                 n_samples: int = 32) -> list[CheckResult]:
    """Per attack: accuracy monotone in eps, an unbounded budget reaching
    ~100%, and the optimization complete (twice the iterations on a
    subsample break no more points)."""
    model = adapter.model
    subject = subject_of(model)
    correct = np.flatnonzero(clean_pred == y.numpy())
    sub = correct[:n_samples]
    xs, ys = x[torch.from_numpy(sub)], y[torch.from_numpy(sub)]
    results: list[CheckResult] = []
    budgeted = not spec.minimum_norm and not spec.members
    top = float(spec.eps[-1])
    hit_top = loss_top = None
    if budgeted and len(sub):
        hit_top, loss_top = attack_subsample(adapter, spec, top, xs, ys, seed)
    results.append(monotone_flag(spec.name, outs, subject, sub, hit_top))
    if budgeted and spec.has_ball and len(sub):
        hit, _ = attack_subsample(adapter, spec, max_budget(spec.norm, model.input_shape), xs, ys, seed)
        results.append(unbounded_flag(spec.name, float(hit.mean()), len(sub), subject))
    elif spec.minimum_norm:
        dist = outs[-1].columns["distance"][correct]
        results.append(unbounded_flag(spec.name, float(np.isfinite(dist).mean())
                                      if len(dist) else math.nan, len(dist), subject))
    twice = doubled(spec)
    if twice is not None and len(sub):
        if hit_top is None:  # ensembles: the members in order on the points still standing
            hit_top, loss_top = attack_subsample(adapter, spec, top, xs, ys, seed)
        hit_2x, loss_2x = attack_subsample(adapter, twice, top, xs, ys, seed)
        extra = int((hit_2x & ~hit_top).sum())
        ev = {"attack": spec.name, "eps": top, "n": len(sub), "max_iter": iterations(spec),
              "success": float(hit_top.mean()), "success_2x": float(hit_2x.mean()),
              "extra_broken_2x": extra, "loss": loss_top, "loss_2x": loss_2x}
        if extra and extra > ANOMALY_FRACTION * len(sub):
            results.append(check_result("optimization_complete", "warn",
                                   f"{spec.name}: twice the iterations break {extra} more of "
                                   f"{len(sub)} points at eps={param_text(top)}", subject, **ev))
        else:
            results.append(check_result("optimization_complete", "pass",
                                   f"{spec.name}: twice the iterations break no more points",
                                   subject, **ev))
    return results


# ---------------------------------------------------------- registered attack flags


@dataclass(frozen=True)
class AttackEvaluation:
    """What an attack flag reads: one attack's outcomes on one model version,
    and the means to re-attack a subsample."""

    adapter: ArtAdapter
    spec: AttackSpec
    outs: Sequence[Outcome]
    x: torch.Tensor
    y: torch.Tensor
    clean_pred: np.ndarray
    seed: int
    n_samples: int = 32
    targeted_top_k: int = 3
    targeted_max_iter: int = 100


AttackFlag = Callable[[AttackEvaluation], CheckResult]
ATTACK_FLAGS: Registry[AttackFlag] = Registry(
    "attack flag", duplicate="Expected a new {kind} name, but {name!r} is registered.")


def register_attack_flag(name: str) -> Callable[[AttackFlag], AttackFlag]:
    """Register a reliability flag that re-attacks one attack's standing points."""
    return ATTACK_FLAGS.register(name)


#: The standard attack the targeted sweep stands for, and its settings.
APGD_T = "art.attacks.evasion.AutoProjectedGradientDescent"
#: Named in the record: what a configured attack falls short of when APGD-T
#: breaks points it left standing.
APGD_T_STANDARD = "AutoAttack's APGD-T"


def _targeted_parts(spec: AttackSpec) -> list[str]:
    """Names of the targeted parts of ``spec`` (itself, members, nested attacks)."""
    if spec.members:
        return [p for m in spec.members for p in _targeted_parts(m)]
    found = [spec.name] if spec.targeted else []
    for key, value in spec.kwargs.items():
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            found += [f"{spec.name}.{key}.{sub}" for sub, d in value.items() if d.get("targeted")]
    return found


def top_k_targets(logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Per point, the ``k`` non-true classes with the largest clean logits
    (most likely first), shape (n, k)."""
    masked = logits.scatter(1, y[:, None].to(logits.device), -torch.inf)
    return masked.topk(k, dim=1).indices.cpu()


@register_attack_flag("targeted_sweep")
def targeted_sweep_flag(ev: AttackEvaluation) -> CheckResult:
    """APGD-T over the top-k classes on points the attack left standing at its
    largest budget: every point it breaks (re-checked by our forward pass,
    within the ball) is a point the configured attack missed -- the gap that
    AutoAttack closes with its targeted attack (Croce & Hein 2020)."""
    name, spec, model = "targeted_sweep", ev.spec, ev.adapter.model
    subject = subject_of(model)
    top = float(spec.eps[-1])
    base = {"attack": spec.name, "eps": top, "standard": APGD_T_STANDARD}
    targeted = _targeted_parts(spec)
    skip = ("a minimum-norm attack" if spec.minimum_norm
            else f"already targeted ({', '.join(targeted)})" if targeted
            else "no Lp ball to attack in" if not spec.has_ball
            else f"its budget is {spec.budget_arg!r}, not an Lp radius"
            if spec.budget_arg not in ("eps", None) and not spec.members else None)
    if skip is not None:
        return check_result(name, "pass", f"{spec.name}: skipped, {skip}", subject,
                            **base, skipped=skip)
    k = min(ev.targeted_top_k, model.num_classes - 1)
    standing = np.flatnonzero(np.asarray(ev.outs[-1].correct, bool))
    if k < 1 or not len(standing):
        return check_result(name, "pass", f"{spec.name}: no point left standing at eps={param_text(top)}",
                            subject, **base, n=0, standing=len(standing))
    if len(standing) > ev.n_samples:
        gen = np.random.default_rng(derive_seed(ev.seed, model.key, spec.name, name))
        standing = np.sort(gen.choice(standing, ev.n_samples, replace=False))
    ti = torch.from_numpy(standing)
    xs, ys = ev.x[ti], ev.y[ti]
    targets = top_k_targets(forward_logits(model, xs, ev.adapter.batch_size), ys, k)
    loss = "difference_logits_ratio" if model.num_classes >= 4 else "cross_entropy"
    apgd_t = AttackSpec(name=f"{spec.name}.apgd_t", target=APGD_T, eps=(top,), norm=spec.norm,
                        eps_step_ratio=0.25, kwargs={
                            "loss_type": loss, "targeted": True, "max_iter": ev.targeted_max_iter,
                            "nb_random_init": 1})
    broken = np.zeros(len(standing), dtype=bool)
    by_class: dict[int, int] = {}
    for j in range(k):
        idx = np.flatnonzero(~broken)
        if not len(idx):
            break
        sel = torch.from_numpy(idx)
        goal = targets[sel, j]
        x_adv = attack_points(ev.adapter, apgd_t, top, xs[sel], goal, ev.seed + j)
        p = forward_logits(model, x_adv, ev.adapter.batch_size).argmax(1).numpy()
        won = p != ys[sel].numpy()
        broken[idx[won]] = True
        for c in p[won].tolist():
            by_class[int(c)] = by_class.get(int(c), 0) + 1
    n_broken, n = int(broken.sum()), len(standing)
    what = f"APGD-T (targeted, top-{k})"
    evidence = {**base, "n": n, "broken": n_broken, "top_k": k, "loss_type": loss,
                "max_iter": ev.targeted_max_iter, "points": standing[broken][:10].tolist(),
                "classes": {str(c): v for c, v in sorted(by_class.items())}}
    if n_broken:
        return check_result(name, "warn",
                            f"{spec.name}: {what} broke {n_broken} of {n} standing points at "
                            f"eps={param_text(top)}: the configured attack falls short of {APGD_T_STANDARD}",
                            subject, **evidence)
    return check_result(name, "pass", f"{spec.name}: {what} broke none of {n} standing points "
                        f"at eps={param_text(top)}", subject, **evidence)
