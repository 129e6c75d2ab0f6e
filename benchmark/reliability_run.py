"""Which reliability flags a run gets, and on what: the runner's side of them.

Model flags (``attacks.diagnostics``) run before any threat, while the
models are as loaded; attack flags re-run attacks on a subsample and read
the run's outcomes once every threat is done (``attacks.diagnostics`` and
``metrics.reliability``). Nothing runs when reliability is disabled or the
run has no attack.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from attacks.art_adapter import ArtAdapter
from attacks.diagnostics import attack_flags, model_flags, subject_of
from benchmark.core.specs import AttackSpec, RunSpec
from benchmark.core.types import CheckResult, EvalSet, ModelUnderTest, Outcome
from metrics.reliability import by_attack, weaker_attack_flag

log = logging.getLogger(__name__)


def reliability_checks(adapters: Mapping[str, ArtAdapter], attacks: Mapping[str, AttackSpec],
                       outcomes: Sequence[Outcome], x: torch.Tensor, y: torch.Tensor,
                       clean_preds: Mapping[str, np.ndarray], seed: int,
                       n_samples: int = 32) -> list[CheckResult]:
    """Every attack flag, per model version (keyed by ``model.key``)."""
    results: list[CheckResult] = []
    for key, adapter in adapters.items():
        mine = [o for o in outcomes if o.model_key == key]
        per_attack = by_attack(mine)
        for name, spec in attacks.items():
            if name in per_attack:
                results.extend(attack_flags(adapter, spec, per_attack[name], x, y,
                                            clean_preds[key], seed, n_samples))
        results.append(weaker_attack_flag(mine, subject_of(adapter.model)))
    return results


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
                              spec.seed, settings.n_samples)
