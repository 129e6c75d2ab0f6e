"""The one place that knows ART.

It builds ART estimators once per model version, instantiates attacks from
their specs (including nested attacks such as AutoAttack's list), and runs
them on torch tensors. Whatever ART returns is handed back as a tensor; the
callers (``attacks.budgets``) project it to the eps ball and [0, 1] and
recompute success with our own forward pass.

Three attacks run through fast paths that keep the batch in torch on the
model's device, with no numpy round trip per step (on CUDA the whole loop
stays on the GPU) and no extra passes:

* PGD's PyTorch implementation is driven through its per-batch internals:
  the plain ``generate`` adds two predict passes for a success-rate log line
  and a numpy round trip per batch, which rtb does not need.
* FGSM calls ART's own per-batch computation (``_compute``) on the CPU,
  without the predict pass of its success-rate log line (results are
  ART's, bit for bit); on CUDA the same step in torch.
* APGD with ART's cross-entropy or difference-of-logits-ratio (DLR) loss,
  targeted or not (Linf or L2), runs ART's algorithm
  (``AutoProjectedGradientDescent.generate``: same loss, schedule, momentum,
  step halving, restarts and random start from numpy's global generator) in
  torch, with one forward+backward pass per iteration: the loss at the new
  point and the gradient there come from the same pass (ART computes them
  in two), and the gradient at the best point is kept for when the search
  moves back to it. APGD-T of the AutoAttack protocol is the targeted DLR case.

An attack config says ``_partial_: true``: this adapter completes it with the
estimator. It builds the class itself rather than through Hydra's
``instantiate``, because it substitutes a faster PGD, gives nested attacks the
same estimator and checks every argument against the class signature; the
class still comes from the one ``_target_`` check (``benchmark.core.targets``).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmark.core.errors import ConfigError
from benchmark.core.specs import AttackSpec
from benchmark.core.targets import WHERE_ALLOWED, resolve_target
from benchmark.core.types import ModelUnderTest

log = logging.getLogger(__name__)

#: ART classes that take one gradient step (weaker than iterative ones).
SINGLE_STEP: frozenset[str] = frozenset({"FastGradientMethod"})
#: ART classes whose kind cannot be read from their estimator requirements.
KIND_OVERRIDES: dict[str, str] = {"AutoAttack": "iterative"}
#: Step size per budget when a config names neither ``eps_step`` nor a ratio.
DEFAULT_EPS_STEP_RATIO = 0.25


def derive_seed(*parts: Any) -> int:
    """A 32-bit seed from any parts, stable across processes and orders."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def seed_everything(seed: int) -> None:
    """Seed numpy's global generator (ART draws from it) and torch's CPU and
    CUDA generators, as ``torch.manual_seed`` does for them (which, without
    CUDA, also queues a deferred CUDA seeding and formats a stack trace for
    it: a cost on every attack call, for nothing)."""
    np.random.seed(seed % (2**32))
    torch.random.default_generator.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: float) -> torch.Tensor:
    """Project ``x_adv`` onto the ``norm`` ball of radius ``eps`` around ``x``,
    then onto [0, 1]. Works per sample on NCHW tensors; a NaN norm (no Lp
    threat) only clips to [0, 1]."""
    x_adv = torch.nan_to_num(x_adv.to(x.dtype), nan=0.0)
    if math.isnan(norm):
        return x_adv.clamp(0.0, 1.0)
    delta = (x_adv - x).flatten(1)
    if math.isinf(norm):
        delta = delta.clamp(-eps, eps)
    else:
        size = delta.norm(p=norm, dim=1, keepdim=True)
        factor = torch.where(size > eps, eps / size.clamp_min(1e-12), torch.ones_like(size))
        delta = delta * factor
    return (x + delta.view_as(x)).clamp(0.0, 1.0)


def perturbation_norms(x_adv: torch.Tensor, x: torch.Tensor) -> dict[str, np.ndarray]:
    """L0 (count of changed values), L2 and Linf of the perturbation, per sample."""
    delta = (x_adv - x).flatten(1)
    return {
        "linf": delta.abs().amax(dim=1).cpu().numpy().astype(np.float64),
        "l2": delta.norm(p=2, dim=1).cpu().numpy().astype(np.float64),
        "l0": (delta.abs() > 1e-8).sum(dim=1).cpu().numpy().astype(np.float64),
    }


def _class(where: str, target: str) -> type:
    """The ART class a spec names, through the one ``_target_`` check."""
    cls = resolve_target(where, target)
    if not isinstance(cls, type):
        raise ConfigError(f"Expected `{where}` to name a class, but {target!r} is not one.")
    return cls


def _flat(reqs: Any) -> list[type]:
    out: list[type] = []
    for r in reqs if isinstance(reqs, (tuple, list)) else (reqs,):
        out.extend(_flat(r) if isinstance(r, (tuple, list)) else [r])
    return out


def attack_kind(spec: AttackSpec) -> str:
    """``single-step``, ``iterative`` (white-box, several gradient steps) or
    ``black-box`` (no gradients), read from the ART class."""
    if spec.members:
        kinds = {attack_kind(m) for m in spec.members}
        return "iterative" if "iterative" in kinds else sorted(kinds)[0]
    cls = _class(f"attack.{spec.name}._target_", spec.target)
    if cls.__name__ in KIND_OVERRIDES:
        return KIND_OVERRIDES[cls.__name__]
    from art.estimators.classification.classifier import ClassGradientsMixin
    from art.estimators.estimator import LossGradientsMixin

    reqs = _flat(getattr(cls, "_estimator_requirements", ()))
    grads = any(isinstance(r, type) and issubclass(r, (LossGradientsMixin, ClassGradientsMixin))
                for r in reqs)
    if not grads:
        return "black-box"
    if cls.__name__ in SINGLE_STEP and not spec.kwargs.get("minimal", False):
        return "single-step"
    return "iterative"


def _device_type(model: ModelUnderTest) -> str:
    return "gpu" if model.device.type == "cuda" else "cpu"


def _fast_pgd_class() -> type:
    """ART's PyTorch PGD with its per-step elementwise work done in float32 on
    scalar budgets (ART broadcasts eps to a float64 array of the input's size
    every step); anything else goes to ART's own code."""
    from art.attacks.evasion import ProjectedGradientDescentPyTorch

    class FastPGD(ProjectedGradientDescentPyTorch):  # type: ignore[misc]
        def _compute_perturbation_pytorch(self, x: torch.Tensor, y: torch.Tensor,
                                          mask: torch.Tensor | None,
                                          momentum: torch.Tensor) -> torch.Tensor:
            if (mask is not None or self.decay is not None or self.summary_writer is not None
                    or self.norm not in ("inf", np.inf)):
                return super()._compute_perturbation_pytorch(x, y, mask, momentum)
            grad = self.estimator.loss_gradient(x=x, y=y)
            return torch.nan_to_num(grad, nan=0.0).sign() * (-1 if self.targeted else 1)

        def _apply_perturbation_pytorch(self, x: torch.Tensor, perturbation: torch.Tensor,
                                        eps_step: Any) -> torch.Tensor:
            if (not np.isscalar(eps_step) or self.estimator.clip_values is None
                    or np.ndim(self.estimator.clip_values[0]) > 0):  # per-feature bounds
                return super()._apply_perturbation_pytorch(x, perturbation, eps_step)
            lo, hi = self.estimator.clip_values
            step = torch.nan_to_num(float(eps_step) * perturbation, nan=0.0)  # type: ignore[arg-type]
            return (x + step).clamp(float(lo), float(hi))

        @staticmethod
        def _projection(values: torch.Tensor, eps: Any, norm_p: Any, *,
                        suboptimal: bool = True) -> torch.Tensor:
            norm = np.inf if norm_p == "inf" else float(norm_p)
            if not np.isscalar(eps) or not (norm == np.inf or norm == 2):
                return ProjectedGradientDescentPyTorch._projection(
                    values, eps, norm_p, suboptimal=suboptimal)
            if norm == np.inf:
                return values.clamp(-float(eps), float(eps))  # type: ignore[arg-type]
            flat = values.reshape(len(values), -1)
            size = flat.norm(p=2, dim=1, keepdim=True)
            factor = torch.where(size > eps, float(eps) / size.clamp_min(1e-12),  # type: ignore[arg-type]
                                 torch.ones_like(size))
            return (flat * factor).reshape(values.shape)

    return FastPGD


class _Float32(nn.Module):
    """Casts inputs to float32: several ART attacks (HopSkipJump, Boundary)
    compute in float64 and hand that to the estimator."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.float())


@functools.lru_cache(maxsize=128)
def _parameters(cls: type) -> Mapping[str, inspect.Parameter]:
    """The constructor parameters of an attack class (read once per class)."""
    return inspect.signature(cls).parameters


def _is_attack_map(value: Any) -> bool:
    return (isinstance(value, Mapping) and bool(value)
            and all(isinstance(v, Mapping) and "_target_" in v for v in value.values()))


def _fast_fgsm_ok(attack: Any) -> bool:
    from art.attacks.evasion import FastGradientMethod

    return (type(attack) is FastGradientMethod and not attack.minimal
            and attack.num_random_init <= 1 and attack.summary_writer is None
            and np.isscalar(attack.eps) and attack.norm in (np.inf, "inf", 1, 2))


#: APGD losses the torch loop computes as ART does.
APGD_FAST_LOSSES: tuple[str, ...] = ("cross_entropy", "difference_logits_ratio")


def _fast_apgd_ok(attack: Any) -> bool:
    from art.attacks.evasion import AutoProjectedGradientDescent

    return (type(attack) is AutoProjectedGradientDescent
            and attack.loss_type in APGD_FAST_LOSSES
            # DLR reads the third-largest logit; with fewer classes ART's own
            # generate fails, and so it still should
            and (attack.loss_type != "difference_logits_ratio"
                 or attack.estimator.nb_classes >= 3)
            and attack.norm in (np.inf, "inf", 2) and np.isscalar(attack.eps)
            and np.isscalar(attack.eps_step))


#: ART's tolerance in APGD's gradient normalisation and L2 projection.
_APGD_TOL = 10e-8


def _apgd_projection(values: torch.Tensor, eps: float, norm: Any) -> torch.Tensor:
    """ART's ``projection`` for a scalar eps under Linf or L2."""
    if norm in (np.inf, "inf"):
        return values.clamp(-eps, eps)
    flat = values.reshape(len(values), -1)
    scale = torch.clamp(eps / (flat.norm(dim=1) + _APGD_TOL), max=1.0)
    return (flat * scale.view(-1, 1)).reshape(values.shape)


def _dlr(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """ART's difference-of-logits-ratio loss per sample: ``-(z_y - z_i) /
    (z_1 - z_3)``, with z_1 and z_3 the largest and third-largest logits and
    z_i the largest one that is not ``y``'s (as in ART, from the same
    ``argsort``, so ties break the same way). ``y`` is the true class
    (untargeted) or the target (targeted)."""
    order = logits.argsort(dim=1)
    top = order[:, -1]
    other = torch.where(top != y, top, order[:, -2])
    z_1, z_3 = logits.gather(1, top[:, None]), logits.gather(1, order[:, -3:-2])
    z_i, z_y = logits.gather(1, other[:, None]), logits.gather(1, y[:, None])
    return (-(z_y - z_i) / (z_1 - z_3)).reshape(-1).float()


def _losses(logits: torch.Tensor, y: torch.Tensor, loss_type: str) -> torch.Tensor:
    """Per-sample loss of ART's APGD ``loss_type`` (cross-entropy or DLR)."""
    if loss_type == "difference_logits_ratio":
        return _dlr(logits, y)
    return nn.functional.cross_entropy(logits, y, reduction="none")


class _FastPaths:
    """The torch loops of FGSM and APGD (mixed into ``ArtAdapter``)."""

    model: ModelUnderTest
    batch_size: int

    def _loss_grad(self, x: torch.Tensor, y: torch.Tensor, grad: bool,
                   loss_type: str = "cross_entropy"
                   ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Per-sample loss (cross-entropy, or DLR as ART's APGD defines it),
        the gradient of its batch mean (as ART's loss_gradient, when ``grad``)
        and the predictions, in one pass."""
        module = self.model.module
        if not grad:
            with torch.no_grad():
                logits = module(x).float()
            return _losses(logits, y, loss_type), None, logits.argmax(1)
        xg = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = module(xg).float()
            losses = _losses(logits, y, loss_type)
            (g,) = torch.autograd.grad(losses.mean(), xg)
        return losses.detach(), g, logits.detach().argmax(1)

    def _fgsm(self, attack: Any, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One signed (or normalised) gradient step per batch, then [0, 1] and
        the ball, as ART's FastGradientMethod computes it."""
        dev = self.model.device
        if dev.type == "cpu":
            y = nn.functional.one_hot(labels.long(), self.model.num_classes).numpy()
            x_np = x.detach().numpy().astype(np.float32, copy=False)
            out = attack._compute(x_np, x_np, y.astype(np.float32), None, attack.eps, attack.eps,
                                  attack._project, attack.num_random_init > 0)
            return torch.from_numpy(np.asarray(out, dtype=np.float32)).reshape(x.shape)
        if attack.num_random_init > 0 or attack.norm not in (np.inf, "inf"):
            return self._art_generate(attack, x, labels)
        eps = float(attack.eps)
        out = torch.empty(x.shape, dtype=torch.float32, device=dev)
        sign = -1.0 if attack.targeted else 1.0
        for start in range(0, len(x), attack.batch_size):
            xb = x[start : start + attack.batch_size].to(dev, torch.float32)
            yb = labels[start : start + attack.batch_size].to(dev).long()
            _, g, _ = self._loss_grad(xb, yb, True)
            assert g is not None
            step = torch.nan_to_num(eps * torch.sign(g) * sign, nan=0.0)
            adv = (xb + step).clamp(0.0, 1.0)
            out[start : start + len(xb)] = xb + (adv - xb).clamp(-eps, eps)
        return out

    def _art_generate(self, attack: Any, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _apgd(self, attack: Any, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """ART's APGD (cross-entropy or DLR loss), restart by restart and
        batch by batch."""
        from art.utils import random_sphere

        dev = self.model.device
        eps, norm = float(attack.eps), attack.norm
        x = x.to(dev, torch.float32)
        y = labels.to(dev).long()
        x_adv = x.clone()
        for _ in range(max(1, attack.nb_random_init)):
            pred = torch.cat([self._loss_grad(x_adv[i : i + attack.batch_size],
                                              y[i : i + attack.batch_size], False)[2]
                              for i in range(0, len(x), attack.batch_size)])
            robust = (pred != y) if attack.targeted else (pred == y)
            if not bool(robust.any()):
                break
            x_robust, x_init, y_robust = x_adv[robust], x[robust], y[robust]
            n, m = len(x_robust), int(np.prod(x_robust.shape[1:]))
            noise = random_sphere(n, m, eps, norm).reshape(x_robust.shape).astype(np.float32)
            x_robust = (x_robust + torch.from_numpy(noise).to(dev)).clamp(0.0, 1.0)
            x_robust = x_init + _apgd_projection(x_robust - x_init, eps, norm)
            for b in range(0, n, attack.batch_size):
                sl = slice(b, b + attack.batch_size)
                x_k, p_k = self._apgd_batch(attack, x_robust[sl], x_init[sl], y_robust[sl])
                hit = (p_k == y_robust[sl]) if attack.targeted else (p_k != y_robust[sl])
                x_robust[sl][hit] = x_k[hit]
            x_adv[robust] = x_robust
        return x_adv

    def _apgd_batch(self, attack: Any, x_k: torch.Tensor, x_init: torch.Tensor,
                    y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch of ART's APGD iterations; returns the final point and the
        model's predictions there."""
        eps, norm, iters = float(attack.eps), attack.norm, int(attack.max_iter)
        targeted, loss_type = bool(attack.targeted), str(attack.loss_type)
        checkpoints = [0.0, 0.22]
        while True:
            nxt = checkpoints[-1] + max(checkpoints[-1] - checkpoints[-2] - 0.03, 0.06)
            if nxt > 1:
                break
            checkpoints.append(nxt)
        var_w = [math.ceil(p * iters) for p in checkpoints]
        bsz = len(x_k)
        eta = torch.full((bsz,) + (1,) * (x_k.ndim - 1), float(attack.eps_step),
                         dtype=torch.float32, device=x_k.device)
        count = torch.zeros(bsz, device=x_k.device)
        sign = -1.0 if targeted else 1.0

        def direction(g: torch.Tensor) -> torch.Tensor:
            g = g * sign
            if norm in (np.inf, "inf"):
                return torch.sign(g)
            size = g.reshape(bsz, -1).norm(dim=1).view(-1, *(1,) * (g.ndim - 1))
            return g / (size + _APGD_TOL)

        def pick(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return torch.where(mask.view(-1, *(1,) * (a.ndim - 1)), a, b)

        f_0, g_k, p_k = self._loss_grad(x_k, y, True, loss_type)
        for k in range(iters):
            assert g_k is not None
            z = (x_k + eta * direction(g_k)).clamp(0.0, 1.0)
            last = k == iters - 1
            if k == 0:
                x_1 = x_init + _apgd_projection(z - x_init, eps, norm)
                f_1, g_1, p_1 = self._loss_grad(x_1, y, not last, loss_type)
                eta_prev, f_max_prev = eta, f_0
                up = f_1 >= f_0
                f_max, x_max, p_max = pick(up, f_1, f_0), pick(up, x_1, x_k), pick(up, p_1, p_k)
                x_max_m_1 = x_init
                g_max = g_k if g_1 is None else pick(up, g_1, g_k)
                count = count + up
                x_k_m_1, x_k, g_k, p_k = x_k, x_1, g_1, p_1
                continue
            z = x_init + _apgd_projection(z - x_init, eps, norm)
            x_new = x_k + 0.75 * (z - x_k) + 0.25 * (x_k - x_k_m_1)
            x_new = x_init + _apgd_projection(x_new.clamp(0.0, 1.0) - x_init, eps, norm)
            f_new, g_new, p_new = self._loss_grad(x_new, y, not last, loss_type)
            if bool((f_new == 0.0).all()):
                return x_new, p_new
            better = (f_new < f_max) if targeted else (f_new > f_max)
            count = count + better
            x_max, x_max_m_1 = pick(better, x_new, x_max), pick(better, x_k, x_max_m_1)
            f_max, p_max = pick(better, f_new, f_max), pick(better, p_new, p_max)
            if g_new is not None:
                g_max = pick(better, g_new, g_max)
            x_k_m_1, x_k, g_k, p_k = x_k, x_new, g_new, p_new
            if k in var_w:
                span = k - var_w[var_w.index(k) - 1]
                cond = (count < 0.75 * span) | (
                    (eta_prev == eta).reshape(bsz) & (f_max_prev == f_max))
                eta = pick(cond, eta / 2, eta)
                x_k, x_k_m_1 = pick(cond, x_max, x_k), pick(cond, x_max_m_1, x_k_m_1)
                p_k = pick(cond, p_max, p_k)
                if g_k is not None:
                    g_k = pick(cond, g_max, g_k)
                count = torch.zeros_like(count)
                eta_prev, f_max_prev = eta, f_max
        return x_k, p_k


#: ART attacks whose random starting point comes from an unseeded generator
#: unless ``x_adv_init`` is given.
SEEDED_START_ATTACKS: tuple[str, ...] = ("BoundaryAttack", "HopSkipJump")
#: ART attacks whose ``generate`` takes a feature ``mask``.
MASKED_ATTACKS: tuple[str, ...] = ("FastGradientMethod", "ProjectedGradientDescent", "FastPGD",
                                   "ProjectedGradientDescentPyTorch",
                                   "ProjectedGradientDescentNumpy", "HopSkipJump",
                                   "BoundaryAttack")


class ArtAdapter(_FastPaths):
    """ART estimators and attacks for one model version.

    Estimators are built once per output kind (logits, or probabilities for
    attacks that require them); attacks hold settings and receive the
    estimator at construction time, as ART requires.
    """

    def __init__(self, model: ModelUnderTest, batch_size: int = 256,
                 clip_values: tuple[Any, Any] | None = None, loss_reduction: str = "mean"
                 ) -> None:
        self.model = model
        self.batch_size = batch_size
        #: Input bounds the estimator clips to: [0, 1] pixels, or per-feature
        #: arrays (a feature table's standardised ranges, ``attacks.tabular_attacks``).
        self.clip_values = clip_values
        #: ``sum`` keeps per-sample loss gradients independent of how many
        #: points an attack passes at once (LowProFool adds a norm gradient to them).
        self.loss_reduction = loss_reduction
        self._estimators: dict[str, Any] = {}

    @property
    def estimator(self) -> Any:
        return self.get_estimator("logits")

    def get_estimator(self, output: str = "logits") -> Any:
        """The ART classifier around the model (built on first use)."""
        if output not in self._estimators:
            from art.estimators.classification import PyTorchClassifier

            module: nn.Module = _Float32(self.model.module)
            if output == "probabilities":
                module = nn.Sequential(module, nn.Softmax(dim=1))
            module.train(self.model.module.training)
            self._estimators[output] = PyTorchClassifier(
                model=module,
                loss=nn.CrossEntropyLoss(reduction=self.loss_reduction),
                input_shape=tuple(self.model.input_shape),
                nb_classes=self.model.num_classes,
                clip_values=(0.0, 1.0) if self.clip_values is None else self.clip_values,
                preprocessing=None,  # inputs are [0, 1]; the model normalizes itself
                device_type=_device_type(self.model),
            )
        return self._estimators[output]

    def make_attack(self, spec: AttackSpec, budget: float | None) -> Any:
        """Instantiate the ART attack of ``spec`` at ``budget`` (ignored for
        minimum-norm attacks)."""
        return self._build(spec.name, spec.target, dict(spec.kwargs), spec, budget,
                           self.get_estimator(spec.output))

    def _build(self, where: str, target: str, kwargs: dict[str, Any], spec: AttackSpec,
               budget: float | None, estimator: Any) -> Any:
        cls = _class(f"attack.{where}._target_", target)
        if target == "art.attacks.evasion.ProjectedGradientDescentPyTorch":
            cls = _fast_pgd_class()
        elif target == "art.attacks.evasion.AutoAttack" and "n_target_classes" in kwargs:
            from attacks.autoattack import protocol_autoattack_class

            cls = protocol_autoattack_class()  # the reference protocol's order
        accepted = _parameters(cls)
        kwargs.pop("_target_", None)
        if spec.budget_arg is not None and budget is not None:
            if spec.budget_arg not in accepted:
                raise ConfigError(
                    f"Expected `attack.{where}.budget_arg` to name an argument of {target}, "
                    f"but got {spec.budget_arg!r}."
                )
            kwargs[spec.budget_arg] = budget
            if spec.budget_arg == "eps" and "eps_step" in accepted:
                if spec.eps_step_ratio is not None:
                    kwargs["eps_step"] = spec.eps_step_ratio * budget
                elif "eps_step" not in kwargs:  # ART's default step may exceed small budgets
                    kwargs["eps_step"] = DEFAULT_EPS_STEP_RATIO * budget
        if "norm" in accepted and "norm" not in kwargs and spec.has_ball:
            kwargs["norm"] = "inf" if math.isinf(spec.norm) else int(spec.norm)
        if "batch_size" in accepted:
            kwargs.setdefault("batch_size", self.batch_size)
        if "verbose" in accepted:
            kwargs.setdefault("verbose", False)
        for key, value in list(kwargs.items()):
            if _is_attack_map(value):  # nested attacks, e.g. AutoAttack's `attacks`
                kwargs[key] = [
                    self._build(f"{where}.{key}.{sub}", sub_d["_target_"], dict(sub_d),
                                spec, budget, estimator)
                    for sub, sub_d in value.items()
                ]
        for key, value in kwargs.items():
            if isinstance(value, Mapping) and "_target_" in value:  # never reaches ART raw
                raise ConfigError(f"Refusing `attack.{where}.{key}._target_` = "
                                  f"{value['_target_']!r}: {WHERE_ALLOWED}")
        unknown = sorted(k for k in kwargs if k not in accepted)
        if unknown and not any(p.kind == p.VAR_KEYWORD for p in accepted.values()):
            raise ConfigError(
                f"Unknown argument `attack.{where}.{unknown[0]}` for {target}; expected one "
                f"of: {', '.join(k for k in accepted if k not in ('self', 'estimator', 'classifier'))}."
            )
        try:
            return cls(estimator, **kwargs)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"ART rejected the settings of `attack.{where}`: {exc}") from None

    def generate(self, attack: Any, x: torch.Tensor, labels: torch.Tensor,
                 mask: np.ndarray | None = None) -> torch.Tensor:
        """Run ``attack`` on ``x``; ``labels`` are the true classes (untargeted)
        or the targets (targeted); ``mask`` (1 = may change, broadcastable to
        ``x``) goes to the attacks that take one. Returns raw adversarial
        examples on the model's device (not yet projected or validated)."""
        from attacks.autoattack import is_protocol, protocol_generate

        if mask is None and is_protocol(attack):  # each nested attack through this method
            return protocol_generate(attack, x.to(self.model.device), labels, self.generate,
                                     self.estimator.model)
        if mask is None:  # the fast loops change every feature
            if self._fast_pgd_ok(attack):
                return self._pgd(attack, x, labels)
            if _fast_apgd_ok(attack):
                return self._apgd(attack, x, labels)
            if _fast_fgsm_ok(attack):
                return self._fgsm(attack, x, labels)
        return self._art_generate(attack, x, labels, mask)

    def _art_generate(self, attack: Any, x: torch.Tensor, labels: torch.Tensor,
                      mask: np.ndarray | None = None) -> torch.Tensor:
        """ART's own ``generate`` on numpy arrays."""
        y = nn.functional.one_hot(labels.cpu().long(), self.model.num_classes).numpy()
        x_np = x.detach().cpu().numpy().astype(np.float32, copy=False)
        kwargs: dict[str, Any] = {}
        if mask is not None and type(attack).__name__ in MASKED_ATTACKS:
            kwargs["mask"] = np.broadcast_to(mask, x_np.shape).astype(np.float32)
        if type(attack).__name__ in SEEDED_START_ATTACKS:
            kwargs["x_adv_init"] = self._seeded_start(attack, x_np, labels.cpu().numpy())
        x_adv = attack.generate(x=x_np, y=y.astype(np.float32), **kwargs)
        out = torch.from_numpy(np.asarray(x_adv, dtype=np.float32)).reshape(x.shape)
        return out.to(self.model.device)

    def _seeded_start(self, attack: Any, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Random starting images that are already adversarial, drawn from the
        seeded global generator: ART's own draw uses an unseeded RandomState,
        which would make the attack's results differ from run to run."""
        init = x.copy()
        clean = self.estimator.predict(x, batch_size=self.batch_size).argmax(1)
        found = np.zeros(len(x), dtype=bool)
        lo, hi = (0.0, 1.0) if self.clip_values is None else self.clip_values
        for _ in range(int(getattr(attack, "init_size", 100))):
            cand = np.random.uniform(lo, hi, size=x.shape).astype(np.float32)
            pred = self.estimator.predict(cand, batch_size=self.batch_size).argmax(1)
            ok = (pred == labels) if attack.targeted else (pred != clean)
            ok &= ~found
            init[ok] = cand[ok]
            found |= ok
            if found.all():
                break
        # where noise never crossed the boundary, start from another sample
        # that the model already puts on the wanted side
        for i in np.flatnonzero(~found):
            wanted = (clean == labels[i]) if attack.targeted else (clean != clean[i])
            donors = np.flatnonzero(wanted)
            if len(donors):
                init[i] = x[donors[0]]
        return init

    @staticmethod
    def _fast_pgd_ok(attack: Any) -> bool:
        from art.attacks.evasion import ProjectedGradientDescentPyTorch

        return (isinstance(attack, ProjectedGradientDescentPyTorch)
                and not attack.random_eps
                and attack.summary_writer is None
                and hasattr(attack, "_compute_pytorch"))

    def _pgd(self, attack: Any, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """ART's PGD iterations, batch by batch, on device tensors; restarts
        keep the first successful example, as ART does."""
        dev = self.model.device
        eps, eps_step = attack.eps, attack.eps_step
        onehot = nn.functional.one_hot(labels.long(), self.model.num_classes).float()
        out = torch.empty(x.shape, dtype=torch.float32, device=dev)
        bs = attack.batch_size
        for start in range(0, len(x), bs):
            attack._batch_id = start // bs
            xb = x[start : start + bs].to(dev, torch.float32)
            tb = onehot[start : start + bs].to(dev)
            done = torch.zeros(len(xb), dtype=torch.bool, device=dev)
            for restart in range(max(1, attack.num_random_init)):
                adv = xb.clone()
                momentum = torch.zeros_like(xb)
                for i in range(attack.max_iter):
                    attack._i_max_iter = i
                    adv = attack._compute_pytorch(adv, xb, tb, None, eps, eps_step,
                                                  attack.num_random_init > 0 and i == 0, momentum)
                if restart == 0:
                    out[start : start + len(xb)] = adv
                else:
                    take = ~done
                    out[start : start + len(xb)][take] = adv[take]
                if restart + 1 < attack.num_random_init:
                    with torch.no_grad():
                        pred = self.model.module(out[start : start + len(xb)]).argmax(1)
                    hit = pred == tb.argmax(1)
                    done = hit if attack.targeted else ~hit
                    if bool(done.all()):
                        break
        return out.detach()

