"""AutoAttack configs: the reference-protocol `autoattack_standard` (order,
targets, points still standing, FAB-T included) and the light `autoattack`,
each with a `protocol` note that the record keeps."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from conftest import make_evalset, make_model

from attacks.art_adapter import ArtAdapter
from attacks.budgets import run_attack
from benchmark.compose import compose, compose_spec, to_container
from benchmark.core.errors import ConfigError
from benchmark.core.forward import predict

AA = "attack.autoattack_standard"
QUICK = (f"{AA}.attacks.apgd_ce.max_iter=3", f"{AA}.attacks.apgd_t.max_iter=3",
         f"{AA}.attacks.fab_t.max_iter=5", f"{AA}.attacks.square.max_iter=20")


def _spec(name: str, *extra: str):
    spec, _ = compose_spec(["model=[mnist_cnn_v2]", f"attack=[{name}]", *extra])
    return spec.attacks[name]


def test_both_configs_state_how_they_differ_from_the_reference() -> None:
    cfg = to_container(compose(["attack=[autoattack,autoattack_standard]"]))
    standard = " ".join(cfg["attack"]["autoattack_standard"]["protocol"].split())
    light = " ".join(cfg["attack"]["autoattack"]["protocol"].split())
    assert "FAB-T 9 targets" in standard and "Differences:" in standard
    assert "weaker than the reference" in light and "no FAB-T" in light
    for name in ("autoattack", "autoattack_standard"):
        assert "protocol" not in _spec(name).kwargs  # a note for the record, not ART's


def test_protocol_note_must_be_text() -> None:
    with pytest.raises(ConfigError, match="protocol"):
        _spec("autoattack_standard", f"{AA}.protocol=[1,2]")


def test_standard_builds_the_reference_list() -> None:
    spec = _spec("autoattack_standard")
    attack = ArtAdapter(make_model(), 16).make_attack(spec, 0.3)
    assert type(attack).__name__ == "ProtocolAutoAttack" and attack.n_target_classes == 9
    kinds = [(type(a).__name__, bool(getattr(a, "targeted", False))) for a in attack.attacks]
    assert kinds == [("AutoProjectedGradientDescent", False),
                     ("AutoProjectedGradientDescent", True), ("FABTargeted", True),
                     ("SquareLinf", False)]
    apgd_ce, apgd_t, fab, square = attack.attacks
    assert (apgd_ce.max_iter, apgd_t.max_iter, fab.max_iter, square.max_iter) == (100, 100, 100, 5000)
    assert (fab.n_restarts, fab.alpha_max, fab.eta, fab.beta, fab.eps) == (1, 0.1, 1.05, 0.9, 0.3)
    assert apgd_t.loss_type == "difference_logits_ratio"


def _ten_classes() -> tuple:
    data = make_evalset(n=30, size=10, classes=10)
    return data, make_model(size=10, classes=10)


@pytest.mark.parametrize("path", ["adapter", "art"])
def test_protocol_attacks_only_points_still_standing(path: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Each attack sees only the points the earlier ones left standing; a
    targeted one runs once per top class; every point it breaks lies within
    eps and is misclassified by our forward pass. Through the adapter (the
    fast APGD-CE path) and through ART's numpy ``generate``."""
    data, model = _ten_classes()
    spec = _spec("autoattack_standard", f"{AA}.eps=[0.3]", f"{AA}.n_target_classes=2", *QUICK)
    adapter = ArtAdapter(model, 16)
    attack = adapter.make_attack(spec, 0.3)
    seen: list[tuple[str, int]] = []
    if path == "adapter":
        original = adapter.generate

        def spy(a, x, labels, mask=None):
            seen.append((type(a).__name__, len(x)))
            return original(a, x, labels, mask)

        adapter.generate = spy  # type: ignore[method-assign]
    else:
        for a in attack.attacks:
            name = type(a).__name__

            def wrap(x, y=None, _gen=a.generate, _name=name, **kw):
                seen.append((_name, len(x)))
                return _gen(x, y, **kw)

            a.generate = wrap
    clean = predict(model, data.x, 16)
    with caplog.at_level(logging.INFO, logger="attacks.autoattack"):
        if path == "adapter":
            x_adv = adapter.generate(attack, data.x, data.y).cpu()
            seen = seen[1:]  # the outer call
        else:
            onehot = np.eye(10, dtype=np.float32)[data.y.numpy()]
            x_adv = torch.from_numpy(attack.generate(data.x.numpy(), onehot))
    pred = predict(model, x_adv, 16)
    broken = pred != data.y.numpy()
    assert float((x_adv - data.x).abs().max()) <= 0.3 + 1e-6
    assert broken.sum() >= (clean != data.y.numpy()).sum()
    names = [n for n, _ in seen]
    order = ["AutoProjectedGradientDescent", "AutoProjectedGradientDescent",
             "AutoProjectedGradientDescent", "FABTargeted", "FABTargeted", "SquareLinf"]
    assert names == order[: len(names)]  # 1 + 2 targets + 2 targets + square, as far as needed
    sizes = [s for _, s in seen]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == (clean == data.y.numpy()).sum()
    logged = [r.args for r in caplog.records if r.name == "attacks.autoattack"]
    assert [a[3] for a in logged] == sizes  # one line per attack and rank: broke N of M in S
    assert sum(a[2] for a in logged) == broken.sum() - (clean != data.y.numpy()).sum()


def test_standard_through_the_budget_sweep() -> None:
    data, model = _ten_classes()
    spec = _spec("autoattack_standard", f"{AA}.eps=[0.1,0.3]", f"{AA}.n_target_classes=2",
                 *QUICK)
    clean = predict(model, data.x, 16)
    low, high = run_attack(ArtAdapter(model, 16), spec, data.x, data.y, clean, seed=0)
    assert high.correct.sum() <= low.correct.sum() <= (clean == data.y.numpy()).sum()
    again = list(run_attack(ArtAdapter(model, 16), spec, data.x, data.y, clean, seed=0))
    assert [o.correct.tolist() for o in again] == [low.correct.tolist(), high.correct.tolist()]


def test_fab_alone_breaks_what_lies_within_reach_on_a_linear_model() -> None:
    """With the other attacks deleted (Hydra's ~), FAB-T alone breaks every point
    whose closed-form distance to its second class's boundary lies within eps."""
    data, model = _ten_classes()
    spec = _spec("autoattack_standard", f"{AA}.eps=[0.3]", f"{AA}.n_target_classes=1",
                 f"~{AA}.attacks.apgd_ce", f"~{AA}.attacks.apgd_t", f"~{AA}.attacks.square")
    assert list(spec.kwargs["attacks"]) == ["fab_t"]
    clean = predict(model, data.x, 16)
    (out,) = run_attack(ArtAdapter(model, 16), spec, data.x, data.y, clean, seed=0)
    w = model.module.fc.weight
    with torch.no_grad():
        z = model.module(data.x)
    y = data.y
    second = z.argsort(1, descending=True)[:, 1]
    dist = ((z.gather(1, y[:, None])[:, 0] - z.gather(1, second[:, None])[:, 0]).abs()
            / (w[y] - w[second]).abs().sum(1))
    reach = (dist * 1.06 <= 0.3).numpy()
    assert reach.any()
    assert not np.asarray(out.correct, dtype=bool)[reach].any()


def _reference_class():
    """The reference AutoAttack class from $RTB_AUTOATTACK_REF (a checkout), if set."""
    import importlib
    import os
    import sys

    path = os.environ.get("RTB_AUTOATTACK_REF")
    if not path:
        return None
    sys.path.insert(0, path)
    try:
        return importlib.import_module("autoattack").AutoAttack
    except ImportError:
        return None


@pytest.mark.slow
def test_breaks_what_the_reference_breaks_on_a_linear_model() -> None:
    """Differential, when $RTB_AUTOATTACK_REF names a fra31/auto-attack checkout:
    both protocols, cut to a few iterations alike, on a random 10-class linear
    model at eps = the median closed-form distance (between two points); away from eps (distance not
    within 10% of it) they break the same points, and rtb breaks every point
    the reference breaks."""
    cls = _reference_class()
    if cls is None:
        pytest.skip("set RTB_AUTOATTACK_REF to a fra31/auto-attack checkout")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(100, 10))
    model = make_model(net, size=10, classes=10)
    x = 0.3 + 0.4 * torch.rand(40, 1, 10, 10)
    with torch.no_grad():
        z = net(x)
    y = z.argmax(1)
    w = net[1].weight
    dist = torch.stack([(z.gather(1, y[:, None])[:, 0] - z[:, k]).abs()
                        / (w[y] - w[k]).abs().sum(1).clamp_min(1e-12) for k in range(10)], 1)
    dist[torch.arange(len(y)), y] = torch.inf
    near = dist.min(1).values  # the closed-form distance to the nearest boundary
    eps = float(near.sort().values[19:21].mean())  # between two points: no tie at eps
    ref = cls(net, norm="Linf", eps=eps, version="standard", device="cpu", seed=0,
              verbose=False)
    ref.apgd.n_iter = ref.apgd_targeted.n_iter = ref.fab.n_iter = 10
    ref.square.n_queries = 50
    x_ref = ref.run_standard_evaluation(x.clone(), y.clone(), bs=64)
    ref_broken = predict(model, x_ref, 16) != y.numpy()
    spec = _spec("autoattack_standard", f"{AA}.eps=[{eps}]",
                 f"{AA}.attacks.apgd_ce.max_iter=10", f"{AA}.attacks.apgd_t.max_iter=10",
                 f"{AA}.attacks.fab_t.max_iter=10", f"{AA}.attacks.square.max_iter=50")
    clean = predict(model, x, 16)
    (out,) = run_attack(ArtAdapter(model, 16), spec, x, y, clean, seed=0)
    ours_broken = ~np.asarray(out.correct, dtype=bool)
    clear = ((near - eps).abs() > 0.1 * eps).numpy()
    assert clear.sum() >= len(y) // 2
    assert (ours_broken[clear] == ref_broken[clear]).all()
    bad = np.flatnonzero(ref_broken & ~ours_broken)
    assert not len(bad), (bad, (near[bad] / eps).tolist(), ref_broken.sum(), ours_broken.sum())
    assert ref_broken.any() and (~ref_broken).any()
