"""Model checks: each triggered by a broken model and passed by a sound one;
whatever the checks touch on the model comes back as it was."""

from __future__ import annotations

import pytest
import torch
from conftest import BandNet, make_evalset, make_model
from torch import nn

from benchmark.core.specs import ValidationPolicy
from benchmark.core.types import ModelUnderTest
from metrics.checks import get_check, list_checks
from metrics.model_checks import ModelContext, make_probe
from metrics.validation import run_model_checks


class WithNorm(nn.Module):
    """BandNet behind a BatchNorm layer (and optionally dropout)."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(1)
        self.drop = nn.Dropout(dropout)
        self.net = BandNet()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.drop(self.bn(x)))


class Wrapped(nn.Module):
    """BandNet followed by ``post`` (softmax, NaN, a detach, ...)."""

    def __init__(self, post, pre=None) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.net, self.post, self.pre = BandNet(), post, pre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre is not None:
            x = self.pre(x)
        return self.post(self.net(x))


def context(module: nn.Module | ModelUnderTest | None = None, classes: int = 3) -> ModelContext:
    model = module if isinstance(module, ModelUnderTest) else make_model(module)
    model.num_classes = classes
    return ModelContext(model=model, probe=make_probe(make_evalset().x, 32))


def train_mode_bn() -> ModelUnderTest:
    """A model whose BatchNorm was left in training mode (the rest in eval)."""
    model = make_model(WithNorm())
    model.module.bn.train()
    return model


def dropout_on() -> ModelUnderTest:
    """A model whose dropout was left on."""
    model = make_model(WithNorm(dropout=0.5))
    model.module.drop.train()
    return model


# check -> (a model context that triggers it, expected status)
TRIGGERS = {
    "eval_mode": (lambda: context(train_mode_bn()), "fail"),
    "determinism": (lambda: context(dropout_on()), "fail"),
    "batch_invariance": (lambda: context(train_mode_bn()), "fail"),
    "finite_outputs": (lambda: context(Wrapped(lambda z: torch.log(z - 100.0))), "fail"),
    "output_size": (lambda: context(classes=5), "fail"),
    "output_kind": (lambda: context(Wrapped(lambda z: z.softmax(1))), "warn"),
    "input_gradients": (lambda: context(Wrapped(lambda z: z, pre=lambda x: x.detach())),
                        "fail"),
    "input_normalization": (lambda: context(_normalized(Norm(BandNet(), 0.3, 0.27), 0.3, 0.27)),
                            "warn"),
}


class Norm(nn.Module):
    """``net((x - mean) / std)``, as rtb folds a declared normalization in."""

    def __init__(self, net: nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor([mean]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor([std]).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def _normalized(net: nn.Module, mean: float, std: float) -> ModelUnderTest:
    return make_model(Norm(net, mean, std))


def test_input_normalization_declared_once_or_not_at_all_passes() -> None:
    check = get_check("input_normalization")
    assert check(context(_normalized(BandNet(), 0.0, 1.0))).status == "pass"
    once = check(context(_normalized(BandNet(), 0.3, 0.27)))
    assert once.status == "pass", once.message
    scripted = torch.jit.script(Norm(BandNet(), 0.3, 0.27))
    inside = check(context(_normalized(scripted, 0.3, 0.27)))  # TorchScript normalizing inside
    assert inside.status == "warn" and "normalized 2 times" in inside.message
    assert check(context(_normalized(scripted, 0.0, 1.0))).status == "pass"
    wrong = check(context(_normalized(BandNet(), 0.9, 0.05)))
    assert wrong.status == "warn" and "far from 0 and 1" in wrong.message


def test_every_model_check_has_a_trigger() -> None:
    assert set(TRIGGERS) == set(list_checks("model"))


@pytest.mark.parametrize("name", list_checks("model"))
def test_model_check_passes_on_a_sound_model(name: str) -> None:
    result = get_check(name)(context())
    assert result.status == "pass", result.message


@pytest.mark.parametrize("name", sorted(TRIGGERS))
def test_model_check_flags_its_fault(name: str) -> None:
    make, status = TRIGGERS[name]
    result = get_check(name)(make())
    assert result.status == status, result.message


def _flagged(model: ModelUnderTest, skip: tuple[str, ...] = ()) -> set[str]:
    results = run_model_checks(ValidationPolicy(skip=skip), model, make_evalset().x)
    return {r.check for r in results if r.status == "fail"}


def test_batchnorm_in_training_mode_is_flagged_even_without_the_eval_mode_check() -> None:
    assert _flagged(train_mode_bn()) == {"eval_mode", "batch_invariance"}
    assert _flagged(train_mode_bn(), skip=("eval_mode",)) == {"batch_invariance"}


def test_dropout_on_is_flagged_even_without_the_eval_mode_check() -> None:
    flagged = _flagged(dropout_on(), skip=("eval_mode",))
    assert "determinism" in flagged


def test_sound_models_pass_every_model_check() -> None:
    assert _flagged(make_model()) == set()
    assert _flagged(make_model(WithNorm(dropout=0.5).eval())) == set()


def test_checks_restore_mode_buffers_grad_flags_and_random_state() -> None:
    model = train_mode_bn()
    module = model.module
    module.net.fc.weight.requires_grad_(True)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    modes = {n: m.training for n, m in module.named_modules()}
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    run_model_checks(ValidationPolicy(), model, make_evalset().x)
    assert torch.equal(torch.get_rng_state(), rng)
    assert {n: m.training for n, m in module.named_modules()} == modes
    for k, v in module.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert module.net.fc.weight.requires_grad and module.net.fc.weight.grad is None
    assert not module.net.fc.bias.requires_grad


def test_log_probabilities_pass_as_logits() -> None:
    result = get_check("output_kind")(context(Wrapped(lambda z: z.log_softmax(1))))
    assert result.status == "pass" and result.evidence["looks"] == "log-probabilities"


def test_zero_and_nonfinite_input_gradients_fail() -> None:
    zero = get_check("input_gradients")(context(Wrapped(lambda z: z.round())))
    assert zero.status == "fail" and "all zero" in zero.message
    inf = get_check("input_gradients")(context(Wrapped(lambda z: z, pre=lambda x: (x - x).sqrt())))
    assert inf.status == "fail" and "not finite" in inf.message


def test_input_gradients_match_autograd_on_a_linear_model() -> None:
    # For a linear model the margin gradient is w[top1] - w[top2]: never zero.
    ctx = context()
    result = get_check("input_gradients")(ctx)
    w = ctx.model.module.fc.weight
    out = ctx.model.module(ctx.probe)
    top = out.topk(2, 1).indices
    expected = (w[top[:, 0]] - w[top[:, 1]]).abs().mean()
    assert result.evidence["mean_abs"] == pytest.approx(float(expected), rel=1e-5)


def test_batch_of_one_error_is_a_failure_not_a_crash() -> None:
    class BN1d(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.BatchNorm1d(64)
            self.fc = nn.Linear(64, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.bn(x.flatten(1)))

    m = BN1d()
    model = make_model(m)
    m.bn.train()
    result = get_check("batch_invariance")(ModelContext(model, make_probe(make_evalset().x, 8)))
    assert result.status == "fail" and "batch of one" in result.message


def test_probe_skips_broken_samples_and_falls_back_to_noise() -> None:
    x = make_evalset().x.clone()
    x[0, 0, 0, 0] = float("nan")
    x[1] += 5.0
    probe = make_probe(x, 64)
    assert torch.isfinite(probe).all() and probe.max() <= 1.0 and len(probe) == len(x) - 1
    noise = make_probe(torch.rand(4, 1, 5, 5), 8, input_shape=(1, 8, 8))
    assert noise.shape == (8, 1, 8, 8)
