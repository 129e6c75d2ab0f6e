"""FAB-T (attacks/fab.py): against closed forms on linear models, the Linf
projection against a linear program, the eps rule, the clip range,
determinism, and bad settings refused through the config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from art.estimators.classification import PyTorchClassifier
from conftest import make_model, tiny_overrides
from scipy.optimize import linprog
from torch import nn

from attacks.art_adapter import ArtAdapter
from attacks.fab import FABTargeted, _linf_to_plane
from benchmark.compose import compose_spec
from benchmark.core.errors import ConfigError
from benchmark.core.targets import check_config_targets, check_target


def _estimator(module: nn.Module, n_in: int, classes: int) -> PyTorchClassifier:
    module.eval()
    return PyTorchClassifier(model=module, loss=nn.CrossEntropyLoss(), input_shape=(n_in,),
                             nb_classes=classes, clip_values=(0.0, 1.0))


def _linear(n_in: int, classes: int, seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    lin = nn.Linear(n_in, classes)
    for p in lin.parameters():
        p.requires_grad_(False)
    return lin


def _pairwise(lin: nn.Linear, x: torch.Tensor, src: torch.Tensor, k: torch.Tensor
              ) -> torch.Tensor:
    """Linf distance from x to the hyperplane z_src = z_k: |margin| / ||w_src - w_k||_1."""
    with torch.no_grad():
        z = lin(x)
    w = lin.weight
    margin = z.gather(1, src[:, None])[:, 0] - z.gather(1, k[:, None])[:, 0]
    return margin.abs() / (w[src] - w[k]).abs().sum(1)


def _interior(n: int, n_in: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.4 + 0.2 * torch.rand(n, n_in, generator=g)  # far from the box: it does not bind


def test_projection_is_the_linear_programs_optimum() -> None:
    """min r s.t. w.d = c, |d_i| <= r, 0 <= p + d <= 1, solved by scipy's LP."""
    g = torch.Generator().manual_seed(3)
    n, m = 24, 7
    p = torch.rand(n, m, generator=g, dtype=torch.float64)
    w = torch.randn(n, m, generator=g, dtype=torch.float64)
    w[0, :3] = 0.0  # zero weights move nothing
    c = torch.randn(n, generator=g, dtype=torch.float64)
    d = _linf_to_plane(p, w, c)
    solved = 0
    for i in range(n):
        cost = np.r_[np.zeros(m), 1.0]
        a_ub = np.r_[np.c_[np.eye(m), -np.ones(m)], np.c_[-np.eye(m), -np.ones(m)]]
        bounds = [(-p[i, j].item(), 1 - p[i, j].item()) for j in range(m)] + [(0, None)]
        res = linprog(cost, A_ub=a_ub, b_ub=np.zeros(2 * m), A_eq=np.r_[w[i].numpy(), 0][None],
                      b_eq=[c[i].item()], bounds=bounds)
        assert torch.all(p[i] + d[i] >= -1e-12) and torch.all(p[i] + d[i] <= 1 + 1e-12)
        if res.status == 0:  # feasible: the same optimum, on the plane
            solved += 1
            assert d[i].abs().max().item() == pytest.approx(res.fun, abs=1e-9)
            assert (w[i] * d[i]).sum().item() == pytest.approx(c[i].item(), abs=1e-9)
        else:  # the box cannot reach the plane: the largest move towards it
            gain = (w[i] * d[i]).sum().item() * np.sign(c[i].item())
            best = (w[i].abs() * torch.where(w[i] * c[i] > 0, 1 - p[i], p[i])).sum().item()
            assert gain == pytest.approx(best, abs=1e-9)
    assert solved >= n // 2


@pytest.mark.parametrize("classes", [2, 5])
def test_finds_the_closed_form_boundary_of_a_linear_model(classes: int) -> None:
    n_in = 30
    lin = _linear(n_in, classes, seed=classes)
    est = _estimator(lin, n_in, classes)
    x = _interior(48, n_in, seed=1)
    with torch.no_grad():
        src = lin(x).argmax(1)
        ranked = lin(x).argsort(1, descending=True)
    tgt = ranked[:, 1]
    target_dist = _pairwise(lin, x, src, tgt)
    nearest = torch.stack([_pairwise(lin, x, src, torch.full_like(src, k)) for k in range(classes)],
                          1)
    nearest[torch.arange(len(x)), src] = torch.inf
    lower = nearest.min(1).values  # no example is misclassified closer than this
    attack = FABTargeted(est, eps=1.0, max_iter=100, stop_at_eps=False)
    out = attack.perturb(x, src, tgt)
    dist = (out - x).abs().amax(1)
    with torch.no_grad():
        assert bool((lin(out).argmax(1) != src).all())
    assert bool((dist <= 1.05 * target_dist).all())  # within the overshoot of the closed form
    assert bool((dist >= (1 - 1e-4) * lower).all())
    # stopping at the first success within eps still stays within the overshoot
    stop = FABTargeted(est, eps=1.0, max_iter=100).perturb(x, src, tgt)
    assert bool(((stop - x).abs().amax(1) <= 1.05 * target_dist + 1e-6).all())


def test_never_reports_a_perturbation_above_eps() -> None:
    n_in, classes = 20, 3
    lin = _linear(n_in, classes, seed=7)
    est = _estimator(lin, n_in, classes)
    x = _interior(40, n_in, seed=2)
    with torch.no_grad():
        src = lin(x).argmax(1)
    tgt = (src + 1) % classes
    dist = _pairwise(lin, x, src, tgt)
    eps = float(dist.median())
    onehot = np.eye(classes, dtype=np.float32)[tgt.numpy()]
    out = torch.from_numpy(FABTargeted(est, eps=eps, max_iter=50).generate(x.numpy(), onehot))
    moved = (out - x).abs().amax(1)
    with torch.no_grad():
        fooled = lin(out).argmax(1) != src
    assert bool(((moved == 0) | (fooled & (moved <= eps))).all())
    assert bool((moved[dist > 1.06 * eps] == 0).all())  # out of reach: returned unchanged
    assert bool(fooled[dist < eps / 1.06].all())  # within reach: broken


def test_stays_in_the_clip_range_and_is_deterministic() -> None:
    """A small conv net near the box edges; two seeded runs with random restarts agree."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 4))
    for p in net.parameters():
        p.requires_grad_(False)
    net.eval()
    est = PyTorchClassifier(model=net, loss=nn.CrossEntropyLoss(), input_shape=(1, 8, 8),
                            nb_classes=4, clip_values=(0.0, 1.0))
    x = (torch.rand(16, 1, 8, 8) > 0.5).float()  # every pixel at 0 or 1
    with torch.no_grad():
        src = net(x).argmax(1)
    tgt = (src + 1) % 4
    runs = []
    for _ in range(2):
        torch.manual_seed(11)
        runs.append(FABTargeted(est, eps=0.3, max_iter=10, n_restarts=3).perturb(x, src, tgt))
    assert torch.equal(runs[0], runs[1])
    out = runs[0]
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float((out - x).abs().amax()) <= 0.3


def test_target_policy_allows_exactly_fab() -> None:
    assert check_target("a", "attacks.fab.FABTargeted") == "attacks.fab.FABTargeted"
    check_config_targets({"attack": {"aa": {"_target_": "art.attacks.evasion.AutoAttack",
                                            "attacks": {"f": {"_target_": "attacks.fab.FABTargeted"}}}}})
    for other in ("attacks.fab.torch", "attacks.fab._linf_to_plane", "attacks.budgets.run_attack"):
        with pytest.raises(ConfigError, match="Refusing"):
            check_target("a", other)


BAD = [("eta=0.5", "`eta`"), ("alpha_max=2", "`alpha_max`"), ("max_iter=0", "`max_iter`"),
       ("n_restarts=1.5", "`n_restarts`"), ("targeted=false", "`targeted`"),
       ("+norm=2", "`norm`")]
AA = "attack.autoattack_standard"


@pytest.mark.parametrize("override, needle", BAD)
def test_bad_settings_are_refused_when_built(override: str, needle: str) -> None:
    add = "+" if override.startswith("+") else ""  # a key the shipped config does not set
    spec, _ = compose_spec(["model=[mnist_cnn_v2]", "attack=[autoattack_standard]",
                            f"{add}{AA}.attacks.fab_t.{override.lstrip('+')}"])
    adapter = ArtAdapter(make_model(), 16)
    with pytest.raises(ConfigError, match=r"ART rejected the settings of "
                       r"`attack.autoattack_standard.attacks.fab_t`: expected " + needle):
        adapter.make_attack(spec.attacks["autoattack_standard"], 0.3)


def test_bad_setting_is_one_line_exit_2(run_cli, tiny_files) -> None:
    """Through `rtb run`: one error line naming the setting, exit 2, no traceback."""
    ckpt, npz = tiny_files
    base = [o for o in tiny_overrides(ckpt, npz) if not o.startswith("attack")]
    res = run_cli("run", *base, "attack=[autoattack_standard]", f"{AA}.eps=[0.1]",
                  f"{AA}.attacks.apgd_ce.max_iter=1", f"{AA}.attacks.apgd_t.max_iter=1",
                  f"{AA}.attacks.square.max_iter=1", f"{AA}.attacks.fab_t.eta=0.5")
    assert res.returncode == 2, res.stderr[-2000:]
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("rtb: error:")]
    assert len(errors) == 1 and "`eta` to be a number of at least 1" in errors[0], res.stderr
    assert "fab_t" in errors[0] and "Traceback" not in res.stderr + res.stdout
