"""rtb's torch loops of APGD (cross-entropy and DLR loss) and FGSM against ART's own ``generate`` on
the same inputs, with the same random start (numpy's global generator): the
same algorithm, so the same examples up to float rounding; and, where CUDA
is present, the same loops on the GPU with no numpy in between."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from conftest import make_evalset, make_model, train_tiny_mlp
from torch import nn

from attacks.art_adapter import ArtAdapter, _fast_apgd_ok, _fast_fgsm_ok


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    return make_evalset(n=24, seed=5), make_model(train_tiny_mlp())


def _art(adapter: ArtAdapter, attack: Any, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    onehot = nn.functional.one_hot(y, adapter.model.num_classes).numpy().astype(np.float32)
    return np.asarray(attack.generate(x=x.numpy(), y=onehot), dtype=np.float32)


@pytest.mark.parametrize("norm,eps,targeted,iters,restarts", [
    ("inf", 0.3, False, 7, 2), (2, 1.0, False, 10, 1),
    pytest.param("inf", 0.15, False, 10, 1, marks=pytest.mark.slow),
    pytest.param("inf", 0.2, True, 10, 1, marks=pytest.mark.slow),
])
def test_apgd_ce_matches_art(tiny: tuple[Any, Any], norm: Any, eps: float, targeted: bool,
                             iters: int, restarts: int) -> None:
    from art.attacks.evasion import AutoProjectedGradientDescent

    data, model = tiny
    adapter = ArtAdapter(model, batch_size=8)
    y = data.y if not targeted else (data.y + 1) % 3
    attack = AutoProjectedGradientDescent(adapter.estimator, norm=norm, eps=eps,
                                          eps_step=eps / 4, max_iter=iters, targeted=targeted,
                                          nb_random_init=restarts, batch_size=8,
                                          loss_type="cross_entropy", verbose=False)
    assert _fast_apgd_ok(attack)
    np.random.seed(3)
    ours = adapter.generate(attack, data.x, y).numpy()
    np.random.seed(3)
    ref = _art(adapter, attack, data.x, y)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def tiny4() -> tuple[Any, Any]:
    """Four classes, so that DLR's third-largest logit is not always the last."""
    return make_evalset(n=24, classes=4, seed=5), make_model(train_tiny_mlp(classes=4),
                                                             classes=4)


@pytest.mark.parametrize("norm,eps,targeted,iters,restarts,shift", [
    ("inf", 0.3, True, 10, 1, 1), (2, 1.5, True, 10, 1, 2), ("inf", 0.25, False, 7, 2, 0),
    pytest.param("inf", 0.2, True, 25, 2, 3, marks=pytest.mark.slow),
])
def test_apgd_dlr_matches_art(tiny4: tuple[Any, Any], norm: Any, eps: float, targeted: bool,
                              iters: int, restarts: int, shift: int) -> None:
    """APGD with ART's DLR loss (APGD-T when targeted): the same examples as
    ART's generate, and the same points hit."""
    from art.attacks.evasion import AutoProjectedGradientDescent

    data, model = tiny4
    adapter = ArtAdapter(model, batch_size=8)
    y = (data.y + shift) % 4
    attack = AutoProjectedGradientDescent(adapter.estimator, norm=norm, eps=eps,
                                          eps_step=eps / 2, max_iter=iters, targeted=targeted,
                                          nb_random_init=restarts, batch_size=8,
                                          loss_type="difference_logits_ratio", verbose=False)
    assert _fast_apgd_ok(attack)
    np.random.seed(4)
    ours = adapter.generate(attack, data.x, y).numpy()
    np.random.seed(4)
    ref = _art(adapter, attack, data.x, y)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)
    with torch.no_grad():
        hit = [model.module(torch.from_numpy(a)).argmax(1) for a in (ours, ref)]
    assert torch.equal(hit[0], hit[1])
    moved = hit[0] == y if targeted else hit[0] != y
    assert bool(moved.any())  # the comparison is not between two untouched inputs


def test_apgd_dlr_needs_three_classes() -> None:
    """DLR reads the third-largest logit: with two classes the attack stays
    ART's own (which rejects it), not the torch loop."""
    from art.attacks.evasion import AutoProjectedGradientDescent

    adapter = ArtAdapter(make_model(classes=2), batch_size=8)
    attack = AutoProjectedGradientDescent(adapter.estimator, eps=0.1, eps_step=0.05,
                                          max_iter=3, targeted=True, batch_size=8,
                                          loss_type="difference_logits_ratio", verbose=False)
    assert not _fast_apgd_ok(attack)


@pytest.mark.parametrize("norm,eps,targeted", [("inf", 0.1, False), (2, 0.8, True)])
def test_fgsm_is_arts_computation(tiny: tuple[Any, Any], norm: Any, eps: float,
                                  targeted: bool) -> None:
    from art.attacks.evasion import FastGradientMethod

    data, model = tiny
    adapter = ArtAdapter(model, batch_size=8)
    y = data.y if not targeted else (data.y + 2) % 3
    attack = FastGradientMethod(adapter.estimator, norm=norm, eps=eps, eps_step=eps,
                                targeted=targeted, batch_size=8)
    assert _fast_fgsm_ok(attack)
    ours = adapter.generate(attack, data.x, y).numpy()
    np.testing.assert_array_equal(ours, _art(adapter, attack, data.x, y))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_attack_loops_stay_on_the_gpu_and_agree_with_the_cpu(tiny: tuple[Any, Any]) -> None:
    """PGD, APGD (cross-entropy and DLR) and FGSM on CUDA: the examples come back on the device,
    no numpy array is made per step (``Tensor.numpy`` would fail on a CUDA
    tensor), and they match the CPU's up to float rounding."""
    from art.attacks.evasion import (
        AutoProjectedGradientDescent,
        FastGradientMethod,
        ProjectedGradientDescentPyTorch,
    )

    data, cpu_model = tiny
    gpu_model = make_model(train_tiny_mlp())
    gpu_model.module.to("cuda")
    gpu_model.device = torch.device("cuda")
    for model in (cpu_model, gpu_model):
        adapter = ArtAdapter(model, batch_size=8)
        est = adapter.estimator
        attacks = [
            FastGradientMethod(est, norm="inf", eps=0.1, eps_step=0.1, batch_size=8),
            AutoProjectedGradientDescent(est, norm="inf", eps=0.15, eps_step=0.04, max_iter=5,
                                         nb_random_init=1, batch_size=8, verbose=False,
                                         loss_type="cross_entropy"),
            AutoProjectedGradientDescent(est, norm="inf", eps=0.15, eps_step=0.04, max_iter=5,
                                         nb_random_init=1, batch_size=8, verbose=False,
                                         loss_type="difference_logits_ratio"),
            ProjectedGradientDescentPyTorch(est, norm="inf", eps=0.15, eps_step=0.04,
                                            max_iter=5, num_random_init=0, batch_size=8,
                                            verbose=False),
        ]
        outs = []
        assert all(_fast_apgd_ok(a) for a in attacks[1:3])
        for attack in attacks:
            np.random.seed(0)
            out = adapter.generate(attack, data.x.to(model.device), data.y.to(model.device))
            assert out.device.type == model.device.type
            outs.append(out.cpu())
        if model is cpu_model:
            expected = outs
    for got, want in zip(outs, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
