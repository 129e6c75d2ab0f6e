"""Ensembles of attacks at the same budgets, and the per-point worst case.

An ensemble (AutoAttack style) runs its members in order at each eps on the
points still standing: a point broken by one member, or at a smaller eps, is
not attacked again. The result equals running every member independently at
every eps and taking the per-point worst case (``worst_case``), at a
fraction of the cost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from attacks.art_adapter import ArtAdapter
from attacks.budgets import PointState, attack_step, threat_of
from benchmark.config import AttackSpec
from benchmark.types import Outcome, Threat


def run_ensemble(
    adapter: ArtAdapter,
    spec: AttackSpec,
    x: torch.Tensor,
    y: torch.Tensor,
    clean_pred: np.ndarray,
    seed: int,
    on_step: Callable[[], None] | None = None,
) -> Iterator[Outcome]:
    """Per-sample worst case over the members and budgets of ``spec``, one
    ``Outcome`` per eps; ``broken_by`` names the member (index) that broke
    each point (NaN: not broken by an attack)."""
    state = PointState.start(y.numpy(), clean_pred)
    for eps in spec.eps:
        for i, member in enumerate(spec.members):
            attack_step(adapter, member, eps, x, y, state, seed, member=i)
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
