"""Pipeline faults: the registry contract over every entry, what each fault
does against an independent computation, its errors, its config section and
its outcomes (finite flags) on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks.corruption_suite import fault_outcomes
from attacks.faults import (
    DEFAULT_MEAN,
    DEFAULT_STD,
    fault_params,
    get_fault,
    list_faults,
    register_fault,
)
from benchmark.core.errors import ConfigError
from benchmark.core.specs import FaultSuiteSpec
from benchmark.models import Normalized
from benchmark.schema import parse_fault_suite
from tests.conftest import make_evalset, make_model

FAULTS = list_faults()
#: Faults whose output may leave [0, 1] or hold NaN: that is the bug.
OUT_OF_RANGE = {"scale_255", "normalization_missing", "normalization_twice", "nan_values"}


def images(n: int = 5, channels: int = 3, h: int = 12, w: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, h, w, generator=torch.Generator().manual_seed(seed))


def test_registry_names_and_errors() -> None:
    assert set(FAULTS) == {"scale_255", "channel_swap", "normalization_missing",
                           "normalization_twice", "nan_values", "dead_pixels", "transpose",
                           "rotate", "resize", "quantize", "float16"}
    with pytest.raises(ValueError, match="already registered"):
        register_fault("float16")
    with pytest.raises(ValueError, match="Unknown fault 'nope'; expected one of: channel_swap"):
        get_fault("nope")
    assert fault_params("nan_values") == {"fraction": 0.01, "seed": 0, "keys": None}


@pytest.mark.parametrize("name", FAULTS)
def test_shape_dtype_range_and_determinism(name: str) -> None:
    for x in (images(), images(3, 1, 10, 14).double()):
        out = get_fault(name)(x)
        assert out.shape == x.shape and out.dtype == x.dtype
        torch.testing.assert_close(out, get_fault(name)(x), equal_nan=True, rtol=0, atol=0)
        if name not in OUT_OF_RANGE:
            assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        if x.shape[1] == 3:
            assert not torch.equal(out, x)  # every fault changes an RGB batch


@pytest.mark.parametrize("name", FAULTS)
def test_independent_of_batch_size(name: str) -> None:
    x = images(6)
    fn = get_fault(name)
    keyed = "keys" in fault_params(name)
    kw = (lambda s: {"keys": list(range(6))[s]}) if keyed else (lambda s: {})
    whole = fn(x, **kw(slice(0, 6)))
    parts = torch.cat([fn(x[:2], **kw(slice(0, 2))), fn(x[2:], **kw(slice(2, 6)))])
    torch.testing.assert_close(parts, whole, equal_nan=True, rtol=0, atol=1e-6)


def test_each_fault_does_what_it_says() -> None:
    x = images()
    torch.testing.assert_close(get_fault("scale_255")(x), x * 255)
    torch.testing.assert_close(get_fault("channel_swap")(x), x[:, [2, 1, 0]])
    torch.testing.assert_close(get_fault("channel_swap")(x[:, :1]), x[:, :1])
    torch.testing.assert_close(get_fault("transpose")(x), x.permute(0, 1, 3, 2))
    assert get_fault("transpose")(images(2, 3, 8, 12)).shape == (2, 3, 8, 12)
    torch.testing.assert_close(get_fault("rotate")(x, quarter_turns=4), x)
    torch.testing.assert_close(get_fault("rotate")(x, quarter_turns=2), x.flip(-1).flip(-2))
    q = get_fault("quantize")(x, levels=4)
    torch.testing.assert_close(q * 3, (q * 3).round())
    assert len(torch.unique(q)) <= 4
    assert float((get_fault("quantize")(x, levels=4) - x).abs().max()) <= 1 / 6 + 1e-6
    h = get_fault("float16")(x)
    assert float(((h - x).abs() / x.clamp_min(1e-3)).max()) <= 2**-11
    assert not torch.equal(h, x)


def test_normalization_faults_through_a_normalized_model() -> None:
    """The model folds (x - mean) / std in; the faults feed it what a pipeline
    that skipped or doubled the normalization would."""
    x = images()
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    seen: list[torch.Tensor] = []

    class Probe(torch.nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            seen.append(t)
            return t

    model = Normalized(Probe(), mean, std)
    model(get_fault("normalization_missing")(x, mean=mean, std=std))
    torch.testing.assert_close(seen[-1], x)  # the network sees raw pixels
    model(get_fault("normalization_twice")(x, mean=mean, std=std))
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(seen[-1], ((x - m) / s - m) / s)
    gray = images(2, 1)
    out = get_fault("normalization_missing")(gray)
    torch.testing.assert_close(out, gray * (sum(DEFAULT_STD) / 3) + sum(DEFAULT_MEAN) / 3)


def test_nan_and_dead_pixel_fractions() -> None:
    x = images(20, 3, 32, 32)
    nan = get_fault("nan_values")(x, fraction=0.1)
    assert float(torch.isnan(nan).float().mean()) == pytest.approx(0.1, abs=0.01)
    torch.testing.assert_close(nan[~torch.isnan(nan)], x[~torch.isnan(nan)])
    dead = get_fault("dead_pixels")(x, fraction=0.2)
    zero = dead == 0
    assert torch.equal(zero.all(1), zero.any(1))  # all channels of a pixel at once
    assert float(zero.all(1).float().mean()) == pytest.approx(0.2, abs=0.02)
    assert not torch.equal(get_fault("nan_values")(x, seed=1).isnan(), nan.isnan())


def test_resize_keeps_the_model_shape() -> None:
    x = images(2, 3, 16, 16)
    back = get_fault("resize")(x, factor=0.5)
    assert back.shape == x.shape and not torch.equal(back, x)
    small = torch.nn.functional.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(back, torch.nn.functional.interpolate(
        small, size=(16, 16), mode="bilinear", align_corners=False))
    cropped = get_fault("resize")(x, factor=0.5, restore=False)
    assert cropped.shape == x.shape
    torch.testing.assert_close(cropped[..., 4:12, 4:12], small)
    assert float(cropped[..., :4, :].abs().max()) == 0.0
    big = get_fault("resize")(x, factor=2.0, restore=False, mode="nearest")
    assert big.shape == x.shape


def test_argument_errors() -> None:
    x = images(2)
    cases = [
        ("nan_values", {"fraction": 1.5}, "`fraction` to be a number in \\[0, 1\\]"),
        ("dead_pixels", {"fraction": -0.1}, "`fraction`"),
        ("quantize", {"levels": 1}, "`levels` to be an integer >= 2"),
        ("resize", {"factor": 0}, "`factor` to be a positive number"),
        ("resize", {"mode": "lanczos"}, "`mode`"),
        ("rotate", {"quarter_turns": 1.5}, "`quarter_turns`"),
        ("normalization_missing", {"mean": [0.1, 0.2]}, "`mean` to have 1 or 3 values"),
        ("nan_values", {"keys": [1]}, "sample keys"),
    ]
    for name, params, msg in cases:
        with pytest.raises(ValueError, match=msg):
            get_fault(name)(x, **params)
    with pytest.raises(ValueError, match="N x C x H x W"):
        get_fault("scale_255")(x[0])


def test_fault_section_parsing() -> None:
    spec = parse_fault_suite({"name": "s", "faults": {"nan_values": {"fraction": 0.2},
                                                      "float16": None}})
    assert [f.name for f in spec.faults] == ["nan_values", "float16"]
    assert spec.faults[0].params == {"fraction": 0.2}
    assert parse_fault_suite({"faults": ["scale_255"]}).faults[0].name == "scale_255"
    bad = [
        ({"faults": {"nope": {}}}, "Unknown fault 'nope' in `fault.faults`"),
        ({"faults": {"quantize": {"bits": 3}}}, "Unknown parameter `fault.faults.quantize.bits`"),
        ({"faults": {"quantize": {"levels": 0}}}, "Invalid parameters for fault 'quantize'"),
        ({"faults": {"nan_values": {"keys": [1]}}}, "Unknown parameter"),
        ({"faults": {}}, "non-empty mapping"),
        ({"faults": ["float16"], "extra": 1}, "Unknown config key `fault.extra`"),
        ({"faults": ["float16"], "seed": -1}, "`fault.seed`"),
        ("all", "a mapping"),
    ]
    for d, msg in bad:
        with pytest.raises(ConfigError, match=msg):
            parse_fault_suite(d)


def test_fault_outcomes_flag_non_finite_outputs() -> None:
    data = make_evalset(n=30)
    model = make_model()
    suite = parse_fault_suite({"name": "t", "faults": {"nan_values": {"fraction": 0.5},
                                                       "scale_255": {}, "float16": {}}})
    assert isinstance(suite, FaultSuiteSpec)
    steps: list[int] = []
    outs = {o.threat.name: o for o in fault_outcomes(suite, model, data, 7, seed=0,
                                                     on_step=lambda: steps.append(1))}
    assert len(steps) == 3
    nan = outs["nan_values"]
    assert nan.threat.family == "fault" and nan.threat.param is None
    assert (nan.columns["finite"] == 0).all() and not nan.correct.any()
    assert (outs["float16"].columns["finite"] == 1).all()
    clean_pred = model.module(data.x).argmax(1).numpy()
    assert np.array_equal(outs["float16"].pred, clean_pred)
    again = {o.threat.name: o for o in fault_outcomes(suite, model, data, 30, seed=0)}
    assert np.array_equal(again["scale_255"].pred, outs["scale_255"].pred)
