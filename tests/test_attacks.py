"""Every shipped attack config on a tiny model: examples within eps and [0, 1],
accuracy never rising with eps, the same outcomes under a fixed seed; plus
targeted attacks, minimum-norm distances, and the adapter's error paths."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from conftest import make_evalset, make_model, train_tiny_mlp

from attacks.art_adapter import ArtAdapter, attack_kind, project
from attacks.budgets import attack_points, predict, run_attack
from attacks.target_rules import TARGET_RULES, get_target_rule, register_target_rule
from benchmark.compose import compose, conf_dir, group_options, to_container
from benchmark.core.errors import ConfigError
from benchmark.core.specs import AttackSpec
from benchmark.schema import parse_attack

SHAPE = (1, 8, 8)

#: Per-attack overrides that keep each run tiny (iterations, queries).
TINY: dict[str, dict[str, Any]] = {
    "pgd_linf": {"max_iter": 5},
    "pgd_l2": {"max_iter": 5},
    "apgd_ce": {"max_iter": 5},
    "apgd_dlr": {"max_iter": 5},
    "autoattack": {"attacks": {
        "apgd_ce": {"_target_": "art.attacks.evasion.AutoProjectedGradientDescent",
                    "loss_type": "cross_entropy", "max_iter": 5, "nb_random_init": 1},
        "square": {"_target_": "art.attacks.evasion.SquareAttack", "max_iter": 20}}},
    "carlini_l2": {"max_iter": 5, "binary_search_steps": 2},
    "deepfool": {"max_iter": 10},
    "square": {"max_iter": 20},
    "hopskipjump": {"max_iter": 3, "max_eval": 50, "init_eval": 10, "init_size": 10},
    "boundary": {"max_iter": 5, "num_trial": 5, "sample_size": 5, "init_size": 10},
    "simba": {"max_iter": 50},
}
#: Attacks whose tiny run still takes more than a few seconds on 2 cores.
SLOW = {"autoattack", "ensemble_linf", "boundary", "hopskipjump", "simba", "pgd_linf"}

#: Image attacks; the feature-table ones (``units: std``) are tested in test_tabular_threats.py.
ATTACKS = [a for a in group_options("attack")
           if "units: std" not in (conf_dir() / "attack" / f"{a}.yaml").read_text()]


def shipped_spec(name: str, **extra: Any) -> AttackSpec:
    cfg = to_container(compose([f"attack=[{name}]"]))["attack"][name]
    tiny = TINY.get(name, {})
    if cfg.get("members"):
        for member, m in cfg["members"].items():
            m.update(TINY.get(member, {}))
    else:
        cfg.update(tiny)
    cfg.update(extra)
    return parse_attack(name, cfg, SHAPE)


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    return make_evalset(n=10, seed=3), make_model(train_tiny_mlp())


def _run(spec: AttackSpec, data: Any, model: Any, seed: int = 0) -> list[Any]:
    adapter = ArtAdapter(model, batch_size=16)
    clean = predict(model, data.x, 16)
    return list(run_attack(adapter, spec, data.x, data.y, clean, seed))


def _check_contract(spec: AttackSpec, data: Any, model: Any) -> None:
    outs = _run(spec, data, model)
    assert [o.threat.param for o in outs] == list(spec.eps)
    clean_correct = predict(model, data.x, 16) == data.y.numpy()
    acc = [o.accuracy for o in outs]
    assert all(b <= a for a, b in zip(acc, acc[1:], strict=False)), acc
    assert acc[0] <= clean_correct.mean()
    for o in outs:
        assert set(o.columns) >= {"linf", "l2", "l0", "eps_broken", "success"}
        broken = np.isfinite(o.columns["eps_broken"]) & clean_correct
        assert (o.columns["eps_broken"][broken] <= o.threat.param).all()
        if spec.has_ball:  # the perturbation actually used stays within eps
            size = o.columns["linf"] if math.isinf(spec.norm) else o.columns["l2"]
            assert (size <= o.threat.param + 1e-5).all()
        # correctness comes from our own forward pass on the kept example
        assert ((o.pred == data.y.numpy()) == o.correct).all()
    again = _run(spec, data, model)
    for a, b in zip(outs, again, strict=True):
        np.testing.assert_array_equal(a.pred, b.pred)
        np.testing.assert_allclose(a.columns["l2"], b.columns["l2"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", [a for a in ATTACKS if a not in SLOW])
def test_shipped_attack_contract(name: str, tiny: tuple[Any, Any]) -> None:
    data, model = tiny
    _check_contract(shipped_spec(name), data, model)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLOW & set(ATTACKS)))
def test_shipped_attack_contract_slow(name: str, tiny: tuple[Any, Any]) -> None:
    data, model = tiny
    _check_contract(shipped_spec(name), data, model)


@pytest.mark.parametrize("name", ATTACKS)
def test_shipped_attack_smoke(name: str, tiny: tuple[Any, Any]) -> None:
    """Every shipped config runs at one budget on two points (fast)."""
    data, model = tiny
    spec = shipped_spec(name)
    spec = AttackSpec(**{**spec.__dict__, "eps": spec.eps[-1:]})
    out = _run(spec, make_evalset(n=3, seed=3), model)[0]
    assert len(out.pred) == 3


def test_every_config_is_parsed_and_kinded() -> None:
    kinds = {}
    for name in ATTACKS:
        spec = shipped_spec(name)
        assert spec.target.startswith("art.attacks.evasion.") or spec.members
        kinds[name] = attack_kind(spec)
    assert kinds["fgsm"] == "single-step"
    assert kinds["pgd_linf"] == "iterative"
    assert kinds["square"] == "black-box"
    assert kinds["hopskipjump"] == "black-box"


def test_projection_outside_budget_never_counts(tiny: tuple[Any, Any]) -> None:
    x = torch.rand(4, 1, 8, 8)
    far = x + 0.9
    for norm, eps in ((math.inf, 0.1), (2.0, 0.5)):
        p = project(far, x, eps, norm)
        size = (p - x).flatten(1).norm(p=norm, dim=1)
        assert (size <= eps + 1e-6).all()
        assert p.min() >= 0 and p.max() <= 1


@pytest.mark.parametrize("rule", sorted(TARGET_RULES))
def test_targeted_attack_hits_its_target(rule: str, tiny: tuple[Any, Any]) -> None:
    data, model = tiny
    spec = shipped_spec("pgd_l2", targeted=True, target=rule, max_iter=10)
    outs = _run(spec, data, model)
    target = outs[-1].columns["target"].astype(int)
    assert (target != data.y.numpy()).all()
    success = outs[-1].columns["success"].astype(bool)
    clean_correct = predict(model, data.x, 16) == data.y.numpy()
    # success means the target class was hit by our forward pass
    assert (outs[-1].pred[success & clean_correct] == target[success & clean_correct]).all()
    assert success.any()


def test_target_rules_against_reference() -> None:
    logits = torch.tensor([[3.0, 1.0, -2.0], [0.0, 5.0, 1.0]])
    y = torch.tensor([0, 2])
    gen = np.random.default_rng(0)
    assert get_target_rule("least_likely")(logits, y, gen).tolist() == [2, 0]
    assert get_target_rule("next")(logits, y, gen).tolist() == [1, 0]
    r = get_target_rule("random")(logits.repeat(50, 1), y.repeat(50), gen)
    assert (r != y.repeat(50)).all()
    with pytest.raises(ValueError, match="Expected `target`"):
        get_target_rule("nearest")
    with pytest.raises(ValueError, match="already|registered"):
        register_target_rule("next")(lambda *a: a[1])


def test_minimum_norm_distance_and_thresholds(tiny: tuple[Any, Any]) -> None:
    data, model = tiny
    spec = shipped_spec("deepfool")
    outs = _run(spec, data, model)
    dist = outs[0].columns["distance"]
    clean_correct = predict(model, data.x, 16) == data.y.numpy()
    assert (dist[~clean_correct] == 0).all()
    for o in outs:
        # broken at eps only if the distance found is within eps (up to projection)
        broken = ~o.correct & clean_correct
        assert (dist[broken] <= o.threat.param + 1e-4).all()
    # recomputed independently: the found example's distance under our forward pass
    adapter = ArtAdapter(model, 16)
    idx = torch.from_numpy(np.flatnonzero(clean_correct))
    found = attack_points(adapter, spec, None, data.x[idx], data.y[idx], 0)
    ref = (found - data.x[idx]).flatten(1).norm(dim=1).numpy()
    hit = predict(model, found, 16) != data.y[idx].numpy()
    np.testing.assert_allclose(dist[idx.numpy()][hit], ref[hit], rtol=1e-5)


def test_rejects_unknown_argument_and_bad_budget_arg(tiny: tuple[Any, Any]) -> None:
    _, model = tiny
    adapter = ArtAdapter(model, 16)
    spec = shipped_spec("fgsm", max_iterations=3)
    with pytest.raises(ConfigError, match="Unknown argument `attack.fgsm.max_iterations`"):
        adapter.make_attack(spec, 0.1)
    spec = shipped_spec("fgsm", budget_arg="radius")
    with pytest.raises(ConfigError, match="budget_arg"):
        adapter.make_attack(spec, 0.1)
    spec = shipped_spec("simba", batch_size=4)
    with pytest.raises(ConfigError, match="ART rejected"):
        adapter.make_attack(spec, None)


@pytest.mark.parametrize("bad, match", [
    ({"target": "nearest"}, "target"),
    ({"output": "scores"}, "output"),
    ({"threat_norm": "3"}, "norm"),
    ({"targeted": "yes"}, "targeted"),
])
def test_config_errors(bad: dict[str, Any], match: str) -> None:
    cfg = to_container(compose(["attack=[fgsm]"]))["attack"]["fgsm"]
    cfg.update(bad)
    with pytest.raises(ConfigError, match=match):
        parse_attack("fgsm", cfg, SHAPE)


def test_nested_attack_target_is_checked() -> None:
    cfg = to_container(compose(["attack=[autoattack]"]))["attack"]["autoattack"]
    cfg["attacks"]["square"]["_target_"] = "os.system"
    with pytest.raises(ConfigError, match="Refusing"):
        parse_attack("autoattack", cfg, SHAPE)


def test_partial_false_is_refused_in_one_line() -> None:
    cfg = to_container(compose(["attack=[fgsm]"]))["attack"]["fgsm"]
    assert "_partial_" not in parse_attack("fgsm", cfg, SHAPE).kwargs
    cfg["_partial_"] = False
    with pytest.raises(ConfigError, match=r"Expected `attack.fgsm._partial_` to be true "
                       r"\(the runner supplies the estimator\), but got False."):
        parse_attack("fgsm", cfg, SHAPE)


def test_nested_partial_false_is_refused() -> None:
    cfg = to_container(compose(["attack=[autoattack]"]))["attack"]["autoattack"]
    cfg["attacks"]["square"]["_partial_"] = False
    with pytest.raises(ConfigError, match="autoattack.attacks.square._partial_"):
        parse_attack("autoattack", cfg, SHAPE)


def test_adapter_resolves_classes_through_the_target_check() -> None:
    model = make_model()
    spec = AttackSpec(name="x", target="builtins.eval", kwargs={}, eps=(0.1,), norm=math.inf)
    with pytest.raises(ConfigError, match="Refusing `attack.x._target_` = 'builtins.eval'"):
        ArtAdapter(model, 16).make_attack(spec, 0.1)
