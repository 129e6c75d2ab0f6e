"""The early exit over budgets and the ensemble on standing points give the
same per-point outcomes as running everything independently and taking the
per-point worst case -- while attacking fewer points."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from conftest import make_evalset, make_model, train_tiny_mlp

from attacks.art_adapter import ArtAdapter
from attacks.budgets import independent_outcome, predict, run_attack, worst_case
from benchmark.core.specs import AttackSpec
from benchmark.core.types import Outcome, Threat
from benchmark.schema import parse_attack

SHAPE = (1, 8, 8)
EPS = [0.1, 0.2, 0.3, 0.4]
# deterministic attacks: a point's result does not depend on the other points
FGSM = {"_target_": "art.attacks.evasion.FastGradientMethod", "eps_step_ratio": 1.0}
PGD = {"_target_": "art.attacks.evasion.ProjectedGradientDescentPyTorch", "max_iter": 5,
       "eps_step_ratio": 0.25, "num_random_init": 0}


class CountingAdapter(ArtAdapter):
    """Records how many points each ART call attacks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sizes: list[int] = []

    def generate(self, attack: Any, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(x))
        return super().generate(attack, x, labels)


@pytest.fixture(scope="module")
def setup() -> tuple[Any, Any, np.ndarray]:
    data = make_evalset(n=30, seed=5)
    model = make_model(train_tiny_mlp(seed=2))
    return data, model, predict(model, data.x, 16)


def _spec(name: str, body: dict[str, Any]) -> AttackSpec:
    return parse_attack(name, {**body, "norm": "inf", "eps": EPS}, SHAPE)


@pytest.mark.parametrize("body", [FGSM, PGD], ids=["fgsm", "pgd"])
def test_budget_sweep_equals_independent_worst_case(body: dict[str, Any], setup: Any) -> None:
    data, model, clean = setup
    spec = _spec("a", body)
    adapter = CountingAdapter(model, 16)
    swept = list(run_attack(adapter, spec, data.x, data.y, clean, 0))
    indep = [independent_outcome(ArtAdapter(model, 16), spec, e, data.x, data.y, clean, 0)
             for e in EPS]
    for k, out in enumerate(swept):
        ref = worst_case(indep[: k + 1])
        np.testing.assert_array_equal(out.correct, ref.correct)
        np.testing.assert_array_equal(out.pred, ref.pred)
    assert sum(adapter.sizes) < len(EPS) * int((clean == data.y.numpy()).sum())


def test_ensemble_equals_independent_worst_case(setup: Any) -> None:
    data, model, clean = setup
    ens = parse_attack("ens", {"eps": EPS, "threat_norm": "inf",
                               "members": {"fgsm": dict(FGSM), "pgd": dict(PGD)}}, SHAPE)
    adapter = CountingAdapter(model, 16)
    outs = list(run_attack(adapter, ens, data.x, data.y, clean, 0))
    members = [_spec(f"ens.members.{m}", b) for m, b in (("fgsm", FGSM), ("pgd", PGD))]
    indep = {e: [independent_outcome(ArtAdapter(model, 16), m, e, data.x, data.y, clean, 0)
                 for m in members] for e in EPS}
    for k, out in enumerate(outs):
        ref = worst_case([o for e in EPS[: k + 1] for o in indep[e]])
        np.testing.assert_array_equal(out.correct, ref.correct)
        # every broken point names the member that broke it
        broken = ~out.correct & (clean == data.y.numpy())
        assert np.isin(out.columns["broken_by"][broken], [0, 1]).all()
    attacked_all = 2 * len(EPS) * int((clean == data.y.numpy()).sum())
    assert sum(adapter.sizes) < attacked_all


def test_worst_case_errors() -> None:
    with pytest.raises(ValueError, match="at least one outcome"):
        worst_case([])
    t = Threat(family="attack", name="a", param=0.1)
    a = Outcome("m", "v1", t, np.zeros(3, int), np.ones(3, bool))
    b = Outcome("m", "v1", t, np.zeros(2, int), np.ones(2, bool))
    with pytest.raises(ValueError, match="same 3 points"):
        worst_case([a, b])


def test_worst_case_keeps_first_breaking_prediction() -> None:
    t = Threat(family="attack", name="a", param=0.1)
    a = Outcome("m", "v1", t, np.array([0, 2, 1]), np.array([True, False, True]))
    b = Outcome("m", "v1", t, np.array([1, 1, 1]), np.array([False, False, True]))
    w = worst_case([a, b])
    assert w.correct.tolist() == [False, False, True]
    assert w.pred.tolist() == [1, 2, 1]
