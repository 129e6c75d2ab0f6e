"""Robustness disparity: accuracy drop, Xu et al. boundary error, distance to
the boundary and Nanda et al. robustness bias, against direct computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import make_evalset, make_model

from benchmark.core.types import Outcome, Threat
from metrics import disparity as D


def nested_outcomes(n: int = 200, seed: int = 0, budgets=(0.1, 0.2, 0.3),
                    key: str = "eps_broken") -> tuple[np.ndarray, list[Outcome]]:
    """Clean plus an attack whose broken points are nested over budgets."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    pred = np.where(rng.random(n) < 0.85, y, (y + 1) % 3)
    clean = pred == y
    outs = [Outcome("m", "v1", Threat("clean", "clean"), pred, clean)]
    dist = np.where(clean, rng.exponential(0.2, n), 0.0)
    for eps in budgets:
        alive = clean & (dist > eps)
        broken = np.where(dist <= eps, np.where(clean, dist, 0.0), np.inf)
        extra = broken if key == "eps_broken" else dist
        outs.append(Outcome("m", "v1", Threat("attack", "pgd", eps),
                            np.where(alive, y, (y + 2) % 3), alive, {key: extra}))
    return y, outs


def as_kind(values: np.ndarray, kind: str):
    return {"list": list, "ndarray": np.asarray, "series": pd.Series}[kind](values)


@pytest.mark.parametrize("kind", ["list", "ndarray", "series"])
def test_group_robustness_matches_direct_computation(kind: str) -> None:
    y, outs = nested_outcomes(seed=1)
    groups = np.random.default_rng(1).choice(["a", "b", "c"], size=len(y))
    clean, robust = outs[0].correct, outs[-1].correct
    got = D.group_robustness(as_kind(clean, kind), as_kind(robust, kind), as_kind(groups, kind))
    assert [g.group for g in got] == ["a", "b", "c"]
    for g in got:
        m = groups == g.group
        assert g.n == m.sum()
        assert g.drop == pytest.approx(clean[m].mean() - robust[m].mean())
        assert g.boundary_error == pytest.approx(np.mean(clean[m] & ~robust[m]))
        # Xu et al.: robust error = natural error + boundary error (nested outcomes)
        assert 1 - g.robust_accuracy == pytest.approx(1 - g.clean_accuracy + g.boundary_error)


def test_drop_measurements_per_outcome_and_group() -> None:
    y, outs = nested_outcomes(seed=2)
    col = pd.Series(np.where(np.arange(len(y)) < 190, "big", "small"), dtype=object)
    rows = D.drop_measurements(outs, {"size": col}, min_size=20)
    assert {r.group_value for r in rows} == {"big"}
    assert {r.param for r in rows} == {0.1, 0.2, 0.3} and all(r.family == "attack" for r in rows)
    m = col.to_numpy() == "big"
    for r in rows:
        o = next(o for o in outs if o.threat.param == r.param)
        if r.metric == "accuracy_drop":
            assert r.value == pytest.approx(outs[0].correct[m].mean() - o.correct[m].mean())
        else:
            assert r.metric == "boundary_error"
            assert r.value == pytest.approx(np.mean(outs[0].correct[m] & ~o.correct[m]))
            assert r.ci_low <= r.value <= r.ci_high


@pytest.mark.parametrize("kind", ["list", "ndarray", "series"])
def test_robustness_bias_matches_direct_computation(kind: str) -> None:
    rng = np.random.default_rng(3)
    n = 150
    dist = rng.exponential(0.3, n)
    dist[rng.random(n) < 0.1] = np.inf
    correct = rng.random(n) < 0.8
    groups = rng.choice(["x", "y"], size=n)
    table = D.robustness_bias(as_kind(dist, kind), as_kind(correct, kind),
                              as_kind(groups, kind), tau=0.25)
    for r in table.itertuples():
        g = (groups == r.group) & correct
        rest = (groups != r.group) & correct
        assert r.n == g.sum() and r.within == np.sum(dist[g] <= 0.25)
        assert r.share == pytest.approx(np.mean(dist[g] <= 0.25))
        assert r.bias == pytest.approx(np.mean(dist[g] <= 0.25) - np.mean(dist[rest] <= 0.25))


def test_distance_measurements_use_budgets_as_tau_and_agree_with_accuracy() -> None:
    """With eps_broken, the share within tau=eps is the share of clean-correct
    points broken at eps: 1 - robust/clean accuracy within the group."""
    y, outs = nested_outcomes(seed=4)
    col = pd.Series(np.asarray([str(v) for v in y], dtype=object))
    rows = D.distance_measurements(outs, {"class": col})
    shares = [r for r in rows if r.metric == "share_within_tau"]
    assert {r.param for r in shares} == {0.1, 0.2, 0.3}
    for r in shares:
        m = col.to_numpy() == r.group_value
        o = next(o for o in outs if o.threat.param == r.param)
        c = outs[0].correct[m]
        assert r.value == pytest.approx(1 - o.correct[m].sum() / c.sum())
    q50 = [r for r in rows if r.metric == "distance_q50"]
    for r in q50:
        m = (col.to_numpy() == r.group_value) & outs[0].correct
        d = outs[-1].columns["eps_broken"][m]
        assert r.value == np.quantile(d, 0.5, method="inverted_cdf")


def test_minimum_norm_distance_without_budgets_uses_the_median() -> None:
    y, outs = nested_outcomes(seed=5, budgets=(0.3,), key="distance")
    outs[-1].threat = Threat("attack", "deepfool", None)
    col = pd.Series(np.where(np.arange(len(y)) % 2 == 0, "even", "odd"), dtype=object)
    rows = D.distance_measurements(outs, {"parity": col})
    d = outs[-1].columns["distance"][outs[0].correct]
    (tau,) = {r.param for r in rows if r.metric == "robustness_bias"}
    assert tau == pytest.approx(np.median(d))
    biases = {r.group_value: r.value for r in rows if r.metric == "robustness_bias"}
    table = D.robustness_bias(outs[-1].columns["distance"], outs[0].correct, col, tau)
    assert biases == pytest.approx(dict(zip(table.group, table.bias, strict=True)))
    fixed = D.distance_measurements(outs, {"parity": col}, taus=[0.05, 0.5])
    assert {r.param for r in fixed if r.metric == "robustness_bias"} == {0.05, 0.5}


def test_a_group_that_breaks_first_has_positive_robustness_bias() -> None:
    """Planted disparity: group 'weak' sits close to the boundary."""
    rng = np.random.default_rng(6)
    n = 200
    weak = np.arange(n) < 50
    dist = np.where(weak, rng.uniform(0.0, 0.1, n), rng.uniform(0.2, 1.0, n))
    table = D.robustness_bias(dist, np.ones(n, bool), np.where(weak, "weak", "rest"), tau=0.15)
    bias = dict(zip(table.group, table.bias, strict=True))
    assert bias["weak"] == pytest.approx(1.0) and bias["rest"] == pytest.approx(-1.0)


def test_real_attack_outcomes_feed_disparity() -> None:
    """FGSM through the ART adapter: eps_broken drives the distance rows."""
    from attacks.art_adapter import ArtAdapter
    from attacks.budgets import run_attack
    from benchmark.runner import clean_outcome
    from benchmark.schema import parse_attack

    data, model = make_evalset(n=60), make_model()
    spec = parse_attack("fgsm", {"_target_": "art.attacks.evasion.FastGradientMethod",
                                 "norm": "inf", "eps": [0.1, 0.3], "eps_step_ratio": 1.0},
                        (1, 8, 8))
    clean = clean_outcome(model, data, 32)
    outs = [clean, *run_attack(ArtAdapter(model, 32), spec, data.x, data.y, clean.pred, 0)]
    col = pd.Series(np.asarray(data.classes, dtype=object)[data.y.numpy()])
    rows = D.disparity_measurements(outs, {"class": col}, min_size=5)
    metrics = {r.metric for r in rows}
    assert {"accuracy_drop", "boundary_error", "share_within_tau", "robustness_bias"} <= metrics
    for r in rows:
        if r.metric == "accuracy_drop":
            o = next(o for o in outs if o.threat.param == r.param and o.threat.family == "attack")
            m = col.to_numpy() == r.group_value
            assert r.value == pytest.approx(clean.correct[m].mean() - o.correct[m].mean())


def test_argument_errors() -> None:
    with pytest.raises(ValueError, match="Expected `tau` to be a non-negative float"):
        D.robustness_bias(np.ones(3), np.ones(3, bool), np.array(["a"] * 3), tau=-1.0)
    with pytest.raises(ValueError, match="Expected arrays of equal length"):
        D.group_robustness(np.ones(3, bool), np.ones(2, bool), np.array(["a"] * 3))
