"""Square Attack under Linf (attacks/square.py): the ball and the clip range,
easy points of a linear model broken, only a lower margin kept, the paper's
window schedule, determinism, and bad settings refused."""

from __future__ import annotations

import pytest
import torch
from art.estimators.classification import PyTorchClassifier
from torch import nn

from attacks.square import SquareLinf, window_fraction
from benchmark.core.targets import check_target


def _linear_images(classes: int = 4, seed: int = 0) -> tuple[nn.Module, PyTorchClassifier]:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, classes))
    for p in net.parameters():
        p.requires_grad_(False)
    net.eval()
    est = PyTorchClassifier(model=net, loss=nn.CrossEntropyLoss(), input_shape=(1, 8, 8),
                            nb_classes=classes, clip_values=(0.0, 1.0))
    return net, est


def _nearest_boundary(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions and the Linf distance to the nearest pairwise boundary (a lower bound)."""
    lin = net[1]
    with torch.no_grad():
        z = net(x)
    y = z.argmax(1)
    w = lin.weight
    d = torch.stack([(z.gather(1, y[:, None])[:, 0] - z[:, k]).abs()
                     / (w[y] - w[k]).abs().sum(1).clamp_min(1e-12) for k in range(z.shape[1])], 1)
    d[torch.arange(len(x)), y] = torch.inf
    return y, d.min(1).values


def test_paper_schedule() -> None:
    # p_init halves after 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 queries
    assert [window_fraction(0.8, q) for q in (1, 10, 11, 50, 51, 8000, 8001)] == \
        [0.8, 0.8, 0.4, 0.4, 0.2, 0.8 / 256, 0.8 / 512]


def test_within_the_ball_and_breaks_easy_points() -> None:
    net, est = _linear_images()
    g = torch.Generator().manual_seed(1)
    x = 0.3 + 0.4 * torch.rand(64, 1, 8, 8, generator=g)
    y, dist = _nearest_boundary(net, x)
    eps = float(dist.median())
    torch.manual_seed(0)
    out = torch.from_numpy(SquareLinf(est, eps=eps, max_iter=300).generate(x.numpy(), y.numpy()))
    assert float((out - x).abs().amax()) <= eps + 1e-6
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    with torch.no_grad():
        fooled = net(out).argmax(1) != y
    assert not bool(fooled[dist > eps * (1 + 1e-4)].any())  # out of reach stays standing
    assert bool(fooled[dist < eps / 4].all())  # well within reach: found by the search


def test_keeps_only_a_lower_margin_and_is_deterministic() -> None:
    net, est = _linear_images(seed=3)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(16, 1, 8, 8, generator=g)
    with torch.no_grad():
        z = net(x)
    y = z.argmax(1)

    def margin(v: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            o = net(v)
        own = o.gather(1, y[:, None])[:, 0]
        return own - o.scatter(1, y[:, None], -torch.inf).amax(1)

    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        runs.append(SquareLinf(est, eps=0.02, max_iter=50).perturb(net, x, y))
    assert torch.equal(runs[0], runs[1])
    torch.manual_seed(5)
    stripes_only = SquareLinf(est, eps=0.02, max_iter=1).perturb(net, x, y)  # the start
    assert bool((margin(runs[0]) <= margin(stripes_only) + 1e-6).all())


@pytest.mark.parametrize("kwargs, needle", [
    ({"p_init": 0.0}, "`p_init`"), ({"max_iter": 0}, "`max_iter`"), ({"norm": 2}, "`norm`"),
    ({"eps": -1.0}, "`eps`"), ({"nb_restarts": 1.5}, "`nb_restarts`"),
])
def test_bad_settings(kwargs: dict, needle: str) -> None:
    _, est = _linear_images()
    with pytest.raises(ValueError, match=needle):
        SquareLinf(est, **kwargs)


def test_target_policy_allows_it() -> None:
    assert check_target("a", "attacks.square.SquareLinf") == "attacks.square.SquareLinf"
