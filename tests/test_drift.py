"""Drift: brightened or noisier batches are flagged with the property named,
fresh samples of the same distribution are not; each statistic agrees with
an independent computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_evalset, make_model

from benchmark.core.forward import forward_logits
from benchmark.core.types import ModelUnderTest
from metrics.drift import (
    DriftConfig,
    ModelLogits,
    categorical_drift,
    drift_report,
    mmd_drift,
    numerical_drift,
)


def sample(n: int, seed: int) -> torch.Tensor:
    """Blobs of 3 classes in random order (a fresh draw of one distribution)."""
    d = make_evalset(n=n, size=12, seed=seed)
    return d.x[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]


def model_logits(models: list[ModelUnderTest], ref: torch.Tensor,
                 new: torch.Tensor) -> dict[str, ModelLogits]:
    """What the caller of ``drift_report`` computes: each version's logits on both sets."""
    return {m.key: ModelLogits(forward_logits(m, torch.nan_to_num(ref), 256),
                               forward_logits(m, torch.nan_to_num(new), 256), m.num_classes)
            for m in models}


def brighten(x: torch.Tensor) -> torch.Tensor:
    return (x + 0.15).clamp(0, 1)


def add_noise(x: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return (x + 0.15 * torch.randn(x.shape, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("n", [200, 3000])  # a KS test; a Wasserstein threshold (noise ~0.05 at 3000)
def test_fresh_sample_is_not_flagged(n: int) -> None:
    ref, new = sample(n, 0), sample(n, 1)
    report = drift_report(ref, new, model_logits([make_model(size=12)], ref, new))
    assert report.drifted == [], [f.as_check().message for f in report.features]
    tests = {f.test for f in report.features}
    assert ("ks" in tests) == (n <= 1000) and ("wasserstein" in tests) == (n > 1000)


@pytest.mark.parametrize("n", [200, 3000])
def test_brightened_batch_is_flagged_with_brightness_named(n: int) -> None:
    report = drift_report(sample(n, 0), brighten(sample(n, 1)))
    assert "brightness" in report.drifted
    feature = next(f for f in report.features if f.feature == "brightness")
    assert feature.batch_mean == pytest.approx(feature.reference_mean + 0.15, abs=0.03)
    assert "brightness" in feature.as_check().check and feature.as_check().status == "fail"


@pytest.mark.parametrize("n", [200, 3000])
def test_noisier_batch_is_flagged_with_sharpness_named(n: int) -> None:
    report = drift_report(sample(n, 0), add_noise(sample(n, 1)))
    assert "sharpness" in report.drifted


def test_model_outputs_drift_when_the_classes_shift() -> None:
    model = make_model(size=12)
    ref = make_evalset(n=300, size=12, seed=0)
    new = make_evalset(n=300, size=12, seed=1)
    only_zero = new.x[new.y == 0]
    report = drift_report(ref.x, only_zero, model_logits([model], ref.x, only_zero))
    assert {"predicted_class[tiny@v1]", "logits[tiny@v1]"} <= set(report.drifted)
    same = drift_report(ref.x, new.x, model_logits([model], ref.x, new.x))
    assert same.drifted == []


def test_bonferroni_level_and_test_choice() -> None:
    cfg = DriftConfig(alpha=0.05, small_sample=100)
    rng = np.random.default_rng(0)
    small = numerical_drift("f", rng.normal(size=100), rng.normal(size=100), cfg, n_tests=5)
    assert small.test == "ks" and small.level == pytest.approx(0.01)
    large = numerical_drift("f", rng.normal(size=101), rng.normal(size=200), cfg, n_tests=5)
    assert large.test == "wasserstein" and large.threshold == 0.1 and large.p_value is None
    cat = categorical_drift("c", rng.integers(0, 3, 500), rng.integers(0, 3, 500), cfg)
    assert cat.test == "jensen_shannon"


def test_wasserstein_matches_sorted_difference() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=2000), rng.normal(0.3, 1.2, size=2000)
    expected = np.abs(np.sort(a) - np.sort(b)).mean() / a.std()
    f = numerical_drift("f", a, b, DriftConfig())
    assert f.distance == pytest.approx(expected, rel=1e-9)
    assert f.drifted


def test_jensen_shannon_and_chi2_match_their_formulas() -> None:
    from scipy.stats import chi2

    ref = np.repeat([0, 1, 2], [50, 30, 20])
    new = np.repeat([0, 1, 2], [20, 30, 50])
    p, q = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.3, 0.5])
    m = (p + q) / 2
    js = np.sqrt(0.5 * (p * np.log2(p / m)).sum() + 0.5 * (q * np.log2(q / m)).sum())
    table = np.array([[50, 30, 20], [20, 30, 50]])
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    stat = ((table - expected) ** 2 / expected).sum()
    f = categorical_drift("c", ref, new, DriftConfig())
    assert f.distance == pytest.approx(js, rel=1e-9)
    assert f.statistic == pytest.approx(stat, rel=1e-9)
    assert f.p_value == pytest.approx(chi2.sf(stat, 2), rel=1e-6)
    assert f.drifted


def test_mmd_statistic_matches_a_direct_computation() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(30, 4, generator=g), torch.randn(40, 4, generator=g) + 1.0
    z = torch.cat([a, b]).double()
    d2 = torch.cdist(z, z).pow(2)
    bw = d2[~torch.eye(70, dtype=torch.bool)].median()
    k = torch.exp(-d2 / bw)
    expected = k[:30, :30].mean() + k[30:, 30:].mean() - 2 * k[:30, 30:].mean()
    f = mmd_drift("logits", a, b, DriftConfig(mmd_permutations=99))
    assert f.statistic == pytest.approx(float(expected), rel=1e-6)
    assert f.drifted and f.p_value == pytest.approx(0.01)
    same = mmd_drift("logits", a, torch.randn(40, 4, generator=g), DriftConfig())
    assert not same.drifted


@pytest.mark.parametrize("kwargs, message", [
    ({"alpha": 0.0}, "Expected `alpha` in (0, 1), but got 0.0."),
    ({"small_sample": 0}, "Expected `small_sample` to be a positive integer, but got 0."),
    ({"js_threshold": -1.0}, "Expected `js_threshold` to be a positive float, but got -1.0."),
    ({"mmd_permutations": 0}, "Expected `mmd_permutations` >= 1"),
])
def test_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        DriftConfig(**kwargs)
    assert message in str(err.value)


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="the reference's sample shape"):
        drift_report(torch.rand(5, 1, 8, 8), torch.rand(5, 1, 6, 6))
    with pytest.raises(ValueError, match="N x C x H x W"):
        drift_report(torch.rand(5, 8, 8), torch.rand(5, 8, 8))
    with pytest.raises(ValueError, match="at least 2 samples"):
        numerical_drift("f", np.zeros(1), np.zeros(5), DriftConfig())
