"""The one place that knows ART.

It builds one ART estimator per model version, instantiates attacks from
their specs, and turns whatever ART returns into trustworthy per-sample
outcomes: every adversarial example is projected to its eps ball and to
[0, 1], and success is recomputed with our own forward pass, so an example
outside the budget can never count.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmark.config import AttackSpec
from benchmark.errors import ConfigError
from benchmark.models import predict_logits
from benchmark.types import ModelUnderTest, Outcome, Threat

log = logging.getLogger(__name__)


def derive_seed(*parts: Any) -> int:
    """A 32-bit seed from any parts, stable across processes and orders."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def seed_everything(seed: int) -> None:
    """Seed numpy's global generator (ART draws from it) and torch."""
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: float) -> torch.Tensor:
    """Project ``x_adv`` onto the ``norm`` ball of radius ``eps`` around ``x``,
    then onto [0, 1]. Works per sample on NCHW tensors."""
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
        "linf": delta.abs().amax(dim=1).numpy().astype(np.float64),
        "l2": delta.norm(p=2, dim=1).numpy().astype(np.float64),
        "l0": (delta.abs() > 1e-8).sum(dim=1).numpy().astype(np.float64),
    }


def _device_type(model: ModelUnderTest) -> str:
    return "gpu" if model.device.type == "cuda" else "cpu"


class ArtAdapter:
    """ART estimator and attacks for one model version.

    The estimator is built once; attacks hold settings and receive it at
    construction time, as ART requires.
    """

    def __init__(self, model: ModelUnderTest, batch_size: int = 256) -> None:
        from art.estimators.classification import PyTorchClassifier

        self.model = model
        self.batch_size = batch_size
        self.estimator = PyTorchClassifier(
            model=model.module,
            loss=nn.CrossEntropyLoss(),
            input_shape=tuple(model.input_shape),
            nb_classes=model.num_classes,
            clip_values=(0.0, 1.0),
            device_type=_device_type(model),
        )

    def make_attack(self, spec: AttackSpec, eps: float) -> Any:
        """Instantiate the ART attack of ``spec`` at budget ``eps``."""
        module_name, _, cls_name = spec.target.rpartition(".")
        cls = getattr(importlib.import_module(module_name), cls_name)
        accepted = inspect.signature(cls.__init__).parameters
        kwargs = dict(spec.kwargs)
        if not spec.minimum_norm and "eps" in accepted:
            kwargs["eps"] = eps
            if spec.eps_step_ratio is not None and "eps_step" in accepted:
                kwargs["eps_step"] = spec.eps_step_ratio * eps
        if "batch_size" in accepted:
            kwargs.setdefault("batch_size", self.batch_size)
        if "verbose" in accepted:
            kwargs.setdefault("verbose", False)
        unknown = sorted(k for k in kwargs if k not in accepted)
        if unknown and not any(p.kind == p.VAR_KEYWORD for p in accepted.values()):
            raise ConfigError(
                f"Unknown argument `attack.{spec.name}.{unknown[0]}` for {spec.target}; "
                f"expected one of: {', '.join(k for k in accepted if k not in ('self', 'estimator'))}."
            )
        try:
            return cls(self.estimator, **kwargs)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"ART rejected the settings of `attack.{spec.name}`: {exc}") from None

    def generate(self, attack: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Run ``attack`` on CPU tensors; returns adversarial examples as a CPU tensor."""
        x_np = x.detach().cpu().numpy().astype(np.float32, copy=False)
        y_np = y.detach().cpu().numpy()
        x_adv = attack.generate(x=x_np, y=y_np)
        return torch.from_numpy(np.asarray(x_adv, dtype=np.float32)).reshape(x.shape)


def attack_threats(spec: AttackSpec) -> list[Threat]:
    """The threats of one attack config: one per budget."""
    return [
        Threat(family="attack", name=spec.name, param=float(eps),
               params={"eps": float(eps), "norm": spec.norm, "target": spec.target,
                       **{k: v for k, v in spec.kwargs.items()}})
        for eps in spec.eps
    ]


def run_attack(
    adapter: ArtAdapter,
    spec: AttackSpec,
    x: torch.Tensor,
    y: torch.Tensor,
    clean_pred: np.ndarray,
    seed: int,
    on_step: Callable[[], None] | None = None,
) -> Iterator[Outcome]:
    """Per-sample worst-case outcomes of one attack over its budgets.

    A point already misclassified is not attacked; a point broken at a
    smaller eps counts as broken at every larger eps (nested balls) and is
    not attacked again. ``eps_broken`` records the smallest budget that broke
    each point (0 for clean errors, inf for points that survived).
    """
    model = adapter.model
    y_np = y.numpy()
    n = len(y_np)
    pred = clean_pred.copy()
    alive = pred == y_np
    eps_broken = np.where(alive, np.inf, 0.0)
    norms = {k: np.zeros(n) for k in ("linf", "l2", "l0")}
    for threat in attack_threats(spec):
        eps = float(threat.param or 0.0)
        idx = np.flatnonzero(alive)
        if len(idx) and eps > 0:
            seed_everything(derive_seed(seed, model.key, spec.name, eps))
            xs, ys = x[torch.from_numpy(idx)], y[torch.from_numpy(idx)]
            attack = adapter.make_attack(spec, eps)
            x_adv = project(adapter.generate(attack, xs, ys), xs, eps, spec.norm)
            p = predict_logits(model, x_adv, adapter.batch_size).argmax(1).numpy()
            for key, arr in perturbation_norms(x_adv, xs).items():
                norms[key][idx] = arr
            broken = p != ys.numpy()
            pred[idx[broken]] = p[broken]
            alive[idx[broken]] = False
            eps_broken[idx[broken]] = eps
        yield Outcome(
            model=model.name,
            version=model.version,
            threat=threat,
            pred=pred.copy(),
            correct=alive.copy(),
            extras={**{k: v.copy() for k, v in norms.items()}, "eps_broken": eps_broken.copy()},
        )
        if on_step is not None:
            on_step()
