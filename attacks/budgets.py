"""Budget sweeps: per-sample worst-case outcomes of one attack over its eps list.

Whatever ART returns is projected to the eps ball and [0, 1] here and
validated with our own forward pass, so an example outside the budget never
counts. A point already misclassified is not attacked; a point broken at a
smaller eps counts as broken at every larger eps (nested balls) and is not
attacked again. Minimum-norm attacks run once; their eps list is a set of
thresholds on the distance found, each example re-projected and re-checked.

An ensemble (AutoAttack style) runs its members in order at each eps on the
points still standing: a point broken by one member, or at a smaller eps, is
not attacked again. The result equals running every member independently at
every eps and taking the per-point worst case (``worst_case``), at a
fraction of the cost.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from attacks.art_adapter import (
    ArtAdapter,
    attack_kind,
    derive_seed,
    perturbation_norms,
    project,
    seed_everything,
)
from attacks.target_rules import get_target_rule
from benchmark.core.forward import forward_logits, predict
from benchmark.core.specs import AttackSpec
from benchmark.core.types import ModelUnderTest, Outcome, Threat

log = logging.getLogger(__name__)

NORM_KEYS = ("linf", "l2", "l0")


def norm_label(norm: float) -> str:
    """``inf``, ``2``, ``1`` or ``none`` (no Lp ball)."""
    if math.isnan(norm):
        return "none"
    return "inf" if math.isinf(norm) else f"{norm:g}"


def lp_distance(x_adv: torch.Tensor, x: torch.Tensor, norm: float) -> np.ndarray:
    """Per-sample Lp distance (L2 when the threat has no Lp ball)."""
    p = 2.0 if math.isnan(norm) else norm
    return (x_adv - x).flatten(1).norm(p=p, dim=1).cpu().numpy().astype(np.float64)


class ExampleKeeper:
    """The examples a sweep keeps for a fixed, sorted set of sample indices
    (``pool``): after each budget, the worst-case example of every pool point
    (its clean input while no attack has touched it). The example gallery
    reads them, so that what it shows is exactly what the outcomes counted."""

    def __init__(self, pool: np.ndarray, x: torch.Tensor) -> None:
        self.pool = np.asarray(pool, dtype=np.int64)
        self.current = x[torch.from_numpy(self.pool)].detach().to("cpu", torch.float32).clone()
        self.kept: dict[float, torch.Tensor] = {}

    def put(self, idx: np.ndarray, x_adv: torch.Tensor) -> None:
        """Examples ``x_adv`` (one row per sample index in ``idx``) replace the kept ones."""
        if not len(self.pool) or not len(idx):
            return
        pos = np.clip(np.searchsorted(self.pool, idx), 0, len(self.pool) - 1)
        hit = self.pool[pos] == idx
        if hit.any():
            rows = torch.from_numpy(np.flatnonzero(hit))
            self.current[torch.from_numpy(pos[hit])] = x_adv[rows.to(x_adv.device)].detach().to(
                "cpu", torch.float32)

    def snapshot(self, eps: float) -> None:
        self.kept[float(eps)] = self.current.clone()


@dataclass
class PointState:
    """Per-point worst case so far over budgets (and ensemble members).

    ``alive`` points are still attacked; ``pred`` is the prediction on the
    example kept for the point (the most damaging one found), ``norms`` the
    perturbation of that example.
    """

    y: np.ndarray
    pred: np.ndarray
    alive: np.ndarray
    success: np.ndarray
    eps_broken: np.ndarray
    broken_by: np.ndarray
    target: np.ndarray | None = None
    norms: dict[str, np.ndarray] = field(default_factory=dict)
    keeper: ExampleKeeper | None = None

    @classmethod
    def start(cls, y: np.ndarray, clean_pred: np.ndarray,
              target: np.ndarray | None = None) -> PointState:
        n = len(y)
        correct = clean_pred == y
        return cls(
            y=y, pred=clean_pred.copy(), alive=correct.copy(),
            success=(clean_pred == target) if target is not None else ~correct,
            eps_broken=np.where(correct, np.inf, 0.0), broken_by=np.full(n, np.nan),
            target=target, norms={k: np.zeros(n) for k in NORM_KEYS},
        )

    def update(self, idx: np.ndarray, p: np.ndarray, norms: dict[str, np.ndarray],
               eps: float, member: int | None = None, x_adv: torch.Tensor | None = None) -> None:
        """Fold in the predictions ``p`` on the examples ``x_adv`` found for points ``idx``."""
        y = self.y[idx]
        hit = (p == self.target[idx]) if self.target is not None else (p != y)
        wrong = p != y
        still_correct = self.pred[idx] == y
        # keep the most damaging example: success > misclassified > the latest attempt
        take = hit | (wrong & still_correct) | still_correct
        sel = idx[take]
        self.pred[sel] = p[take]
        for k in NORM_KEYS:
            self.norms[k][sel] = norms[k][take]
        if self.keeper is not None and x_adv is not None:
            self.keeper.put(sel, x_adv[torch.from_numpy(np.flatnonzero(take)).to(x_adv.device)])
        won = idx[hit]
        self.success[won] = True
        self.alive[won] = False
        self.eps_broken[won] = eps
        if member is not None:
            self.broken_by[won] = member

    def outcome(self, model: ModelUnderTest, threat: Threat,
                columns: dict[str, np.ndarray] | None = None) -> Outcome:
        ex = {**{k: v.copy() for k, v in self.norms.items()},
              "eps_broken": self.eps_broken.copy(),
              "success": self.success.astype(np.float64)}
        if self.target is not None:
            ex["target"] = self.target.astype(np.float64)
        ex.update(columns or {})
        return Outcome(model=model.name, version=model.version, threat=threat,
                       pred=self.pred.copy(), correct=self.pred == self.y, columns=ex)


def threat_of(spec: AttackSpec, eps: float) -> Threat:
    """The threat of one attack config at one budget, with every setting."""
    params: dict[str, Any] = {
        "eps": float(eps), "norm": norm_label(spec.norm), "target": spec.target,
        "kind": attack_kind(spec), "targeted": spec.targeted,
        "minimum_norm": spec.minimum_norm, **dict(spec.kwargs),
    }
    if spec.targeted:
        params["target_rule"] = spec.target_rule
    if spec.budget_arg not in (None, "eps"):
        params["budget_arg"] = spec.budget_arg
    if spec.members:
        params["members"] = [member_name(m) for m in spec.members]
        params["member_kinds"] = [attack_kind(m) for m in spec.members]
    return Threat(family="attack", name=spec.name, param=float(eps), params=params)


def member_name(spec: AttackSpec) -> str:
    return spec.name.rsplit(".", 1)[-1]


def choose_targets(adapter: ArtAdapter, spec: AttackSpec, x: torch.Tensor, y: torch.Tensor,
                   seed: int) -> np.ndarray | None:
    """Target classes of a targeted attack (None when untargeted)."""
    if not spec.targeted:
        return None
    model = adapter.model
    logits = forward_logits(model, x, adapter.batch_size)
    gen = np.random.default_rng(derive_seed(seed, model.key, spec.name, "target"))
    return get_target_rule(spec.target_rule or "random")(logits, y, gen).numpy()


def attack_points(adapter: ArtAdapter, spec: AttackSpec, budget: float | None,
                  x: torch.Tensor, labels: torch.Tensor, seed: int) -> torch.Tensor:
    """ART's examples for ``x`` at ``budget``, on the model's device, projected
    to the ball (budgeted attacks) and to [0, 1]."""
    seed_everything(derive_seed(seed, adapter.model.key, spec.name, budget))
    attack = adapter.make_attack(spec, budget)
    raw = adapter.generate(attack, x, labels)
    xs = x.to(adapter.model.device)
    if spec.minimum_norm or budget is None:
        return project(raw, xs, math.inf, math.inf)
    return project(raw, xs, float(budget), spec.norm)


def _labels(y: torch.Tensor, target: np.ndarray | None) -> torch.Tensor:
    return y if target is None else torch.from_numpy(target)


def attack_step(adapter: ArtAdapter, spec: AttackSpec, eps: float, x: torch.Tensor,
                y: torch.Tensor, state: PointState, seed: int, member: int | None = None) -> None:
    """Attack the points still standing at one budget and fold in the result."""
    idx = np.flatnonzero(state.alive)
    if not len(idx) or eps <= 0:
        return
    ti = torch.from_numpy(idx)
    xs = x[ti]
    labels = _labels(y[ti], state.target[idx] if state.target is not None else None)
    x_adv = attack_points(adapter, spec, eps, xs, labels, seed)
    p = predict(adapter.model, x_adv, adapter.batch_size)
    state.update(idx, p, perturbation_norms(x_adv, xs.to(x_adv.device)), eps, member, x_adv)


def run_attack(
    adapter: ArtAdapter,
    spec: AttackSpec,
    x: torch.Tensor,
    y: torch.Tensor,
    clean_pred: np.ndarray,
    seed: int,
    on_step: Callable[[], None] | None = None,
    keeper: ExampleKeeper | None = None,
) -> Iterator[Outcome]:
    """Per-sample worst-case outcomes of one attack config (single, minimum-norm
    or ensemble) over its budgets, one ``Outcome`` per eps.

    ``eps_broken`` records the smallest budget that broke each point (0 for
    clean errors, inf for points that survived). ``keeper`` (optional) keeps
    the examples of its pool points after each budget.
    """
    if spec.members:
        yield from run_ensemble(adapter, spec, x, y, clean_pred, seed, on_step, keeper)
        return
    if spec.minimum_norm:
        yield from _minimum_norm_sweep(adapter, spec, x, y, clean_pred, seed, on_step, keeper)
        return
    target = choose_targets(adapter, spec, x, y, seed)
    state = PointState.start(y.numpy(), clean_pred, target)
    state.keeper = keeper
    for eps in spec.eps:
        attack_step(adapter, spec, eps, x, y, state, seed)
        if keeper is not None:
            keeper.snapshot(eps)
        yield state.outcome(adapter.model, threat_of(spec, eps))
        if on_step is not None:
            on_step()


def _minimum_norm_sweep(adapter: ArtAdapter, spec: AttackSpec, x: torch.Tensor, y: torch.Tensor,
                        clean_pred: np.ndarray, seed: int,
                        on_step: Callable[[], None] | None,
                        keeper: ExampleKeeper | None = None) -> Iterator[Outcome]:
    """One run of a minimum-norm attack; each eps is a threshold on the
    distance found: a point counts as broken at eps only if its example lies
    within eps and is misclassified by our forward pass (after projection,
    which only absorbs rounding)."""
    model = adapter.model
    target = choose_targets(adapter, spec, x, y, seed)
    state = PointState.start(y.numpy(), clean_pred, target)
    state.keeper = keeper
    n = len(y)
    distance = np.where(state.alive, np.inf, 0.0)
    idx = np.flatnonzero(state.alive)
    found: torch.Tensor | None = None
    if len(idx):
        ti = torch.from_numpy(idx)
        labels = _labels(y[ti], target[idx] if target is not None else None)
        found = attack_points(adapter, spec, None, x[ti], labels, seed)
        p = predict(model, found, adapter.batch_size)
        hit = (p == target[idx]) if target is not None else (p != y[ti].numpy())
        d = lp_distance(found, x[ti].to(found.device), spec.norm)
        distance[idx] = np.where(hit, d, np.inf)
    pos = np.full(n, -1)
    pos[idx] = np.arange(len(idx))
    for eps in spec.eps:
        # only examples found within eps count, re-projected and re-checked
        alive = np.flatnonzero(state.alive & (distance <= eps * (1 + 1e-6)))
        if len(alive) and eps > 0 and found is not None:
            rows = torch.from_numpy(pos[alive])
            xs = x[torch.from_numpy(alive)].to(found.device)
            x_eps = project(found[rows], xs, eps, spec.norm)
            p = predict(model, x_eps, adapter.batch_size)
            state.update(alive, p, perturbation_norms(x_eps, xs), eps, x_adv=x_eps)
        if keeper is not None:
            keeper.snapshot(eps)
        yield state.outcome(model, threat_of(spec, eps), {"distance": distance.copy()})
        if on_step is not None:
            on_step()


def independent_outcome(adapter: ArtAdapter, spec: AttackSpec, eps: float, x: torch.Tensor,
                        y: torch.Tensor, clean_pred: np.ndarray, seed: int) -> Outcome:
    """One budget attacked on every clean-correct point, without early exit:
    the reference the sweeps and ensembles are checked against."""
    target = choose_targets(adapter, spec, x, y, seed)
    state = PointState.start(y.numpy(), clean_pred, target)
    attack_step(adapter, spec, eps, x, y, state, seed)
    return state.outcome(adapter.model, threat_of(spec, eps))


def run_ensemble(
    adapter: ArtAdapter,
    spec: AttackSpec,
    x: torch.Tensor,
    y: torch.Tensor,
    clean_pred: np.ndarray,
    seed: int,
    on_step: Callable[[], None] | None = None,
    keeper: ExampleKeeper | None = None,
) -> Iterator[Outcome]:
    """Per-sample worst case over the members and budgets of ``spec``, one
    ``Outcome`` per eps; ``broken_by`` names the member (index) that broke
    each point (NaN: not broken by an attack)."""
    state = PointState.start(y.numpy(), clean_pred)
    state.keeper = keeper
    for eps in spec.eps:
        for i, member in enumerate(spec.members):
            attack_step(adapter, member, eps, x, y, state, seed, member=i)
        if keeper is not None:
            keeper.snapshot(eps)
        yield state.outcome(adapter.model, threat_of(spec, eps),
                            {"broken_by": state.broken_by.copy()})
        if on_step is not None:
            on_step()


def worst_case(outcomes: Sequence[Outcome], threat: Threat | None = None) -> Outcome:
    """The per-point worst case of several outcomes of one model version on
    the same points: a point is correct only if it is correct under all."""
    if not outcomes:
        raise ValueError("Expected at least one outcome, but got none.")
    first = outcomes[0]
    n = len(first.pred)
    if any(len(o.pred) != n for o in outcomes):
        raise ValueError(
            f"Expected outcomes on the same {n} points, but got lengths "
            f"{sorted({len(o.pred) for o in outcomes})}."
        )
    pred = first.pred.copy()
    correct = np.asarray(first.correct, dtype=bool).copy()
    for o in outcomes[1:]:
        newly = correct & ~np.asarray(o.correct, dtype=bool)
        pred[newly] = o.pred[newly]
        correct &= np.asarray(o.correct, dtype=bool)
    return Outcome(model=first.model, version=first.version, threat=threat or first.threat,
                   pred=pred, correct=correct)
