"""Which reliability flags a run gets, and on what: the runner's side of them.

Model flags (``attacks.diagnostics``) run before any threat, while the
models are as loaded; attack flags re-run attacks on a subsample and read
the run's outcomes once every threat is done (``attacks.diagnostics`` and
``metrics.reliability``). Nothing runs when reliability is disabled or the
run has no attack.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from attacks.art_adapter import ArtAdapter
from attacks.diagnostics import (
    ATTACK_FLAGS,
    AttackEvaluation,
    attack_flags,
    model_flags,
    subject_of,
)
from benchmark.core.specs import AttackSpec, ReliabilitySpec, RunSpec
from benchmark.core.types import CheckResult, EvalSet, ModelUnderTest, Outcome, check_result
from metrics.reliability import by_attack, weaker_attack_flag

log = logging.getLogger(__name__)


def reliability_checks(adapters: Mapping[str, ArtAdapter], attacks: Mapping[str, AttackSpec],
                       outcomes: Sequence[Outcome], x: torch.Tensor, y: torch.Tensor,
                       clean_preds: Mapping[str, np.ndarray], seed: int,
                       n_samples: int = 32, settings: ReliabilitySpec | None = None,
                       clock: Callable[[], float] = time.monotonic) -> list[CheckResult]:
    """Every attack flag, per model version (keyed by ``model.key``): the
    built-in ones, then each registered one (``ATTACK_FLAGS``). With
    ``settings.budget_s``, flags not started within the budget are skipped
    and one check lists them."""
    settings = settings or ReliabilitySpec(n_samples=n_samples)
    start = clock()
    results: list[CheckResult] = []
    skipped: list[str] = []

    def within_budget(what: str) -> bool:
        if settings.budget_s is not None and clock() - start > settings.budget_s:
            skipped.append(what)
            return False
        return True

    for key, adapter in adapters.items():
        mine = [o for o in outcomes if o.model_key == key]
        per_attack = by_attack(mine)
        for name, spec in attacks.items():
            if name not in per_attack:
                continue
            if within_budget(f"{key}/{name}/attack flags"):
                results.extend(attack_flags(adapter, spec, per_attack[name], x, y,
                                            clean_preds[key], seed, settings.n_samples))
            ev = AttackEvaluation(adapter, spec, per_attack[name], x, y, clean_preds[key], seed,
                                  settings.n_samples, settings.targeted_top_k,
                                  settings.targeted_max_iter)
            for flag_name, flag in ATTACK_FLAGS.items():
                if within_budget(f"{key}/{name}/{flag_name}"):
                    results.append(flag(ev))
        results.append(weaker_attack_flag(mine, subject_of(adapter.model)))
    if settings.budget_s is not None:
        results.append(budget_check(settings.budget_s, clock() - start, skipped))
    return results


def budget_check(budget_s: float, spent_s: float, skipped: Sequence[str]) -> CheckResult:
    """Which attack flags the reliability budget left out (warn when any)."""
    ev = {"budget_s": budget_s, "spent_s": round(spent_s, 3), "skipped": list(skipped)}
    if skipped:
        return check_result("reliability_budget", "warn",
                            f"reliability budget of {budget_s:g}s exceeded: skipped "
                            f"{len(skipped)} flag runs ({', '.join(skipped[:5])}"
                            f"{', ...' if len(skipped) > 5 else ''})", "reliability", **ev)
    return check_result("reliability_budget", "pass",
                        f"every attack flag ran within {budget_s:g}s", "reliability", **ev)


def flags_before_threats(spec: RunSpec, data: EvalSet,
                         models: Sequence[ModelUnderTest]) -> list[CheckResult]:
    """Model flags of every version, before ART touches the models."""
    settings = spec.reliability
    if not settings.enabled or not spec.attacks:
        return []
    return [r for m in models for r in model_flags(m, data.x, data.y, settings.n_samples)]


def flags_after_threats(spec: RunSpec, data: EvalSet, models: Sequence[ModelUnderTest],
                        outcomes: Sequence[Outcome]) -> list[CheckResult]:
    """Attack flags of every version, from the run's outcomes and re-runs on
    a subsample."""
    settings = spec.reliability
    if not settings.enabled or not spec.attacks:
        return []
    clean = {o.model_key: o.pred for o in outcomes if o.threat.family == "clean"}
    adapters = {m.key: ArtAdapter(m, spec.batch_size) for m in models if m.key in clean}
    return reliability_checks(adapters, spec.attacks, outcomes, data.x, data.y, clean,
                              spec.seed, settings.n_samples, settings)
