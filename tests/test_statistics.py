"""Paired statistics against statsmodels and scipy on random inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from metrics.robustness import wilson_interval
from metrics.statistics import (
    adjust_p_values,
    mcnemar_exact,
    paired_bootstrap,
    paired_mcnemar,
)
from metrics.statistics import wilson_interval as reexported


@pytest.mark.parametrize("seed", range(20))
def test_paired_mcnemar_matches_statsmodels_and_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    a = rng.random(n) < rng.uniform(0.2, 0.9)
    flip = rng.random(n) < rng.uniform(0.0, 0.4)
    b = np.where(flip, ~a, a)
    res = paired_mcnemar(a, b)
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    ref = mcnemar(table, exact=True)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-12, abs=1e-300)
    if res.b + res.c:
        assert res.p_value == pytest.approx(
            binomtest(res.b, res.b + res.c, 0.5).pvalue, rel=1e-9, abs=1e-300)
    assert res.difference == pytest.approx(b.mean() - a.mean())
    assert (res.correct_a, res.correct_b, res.n) == (a.sum(), b.sum(), n)


def test_mcnemar_edge_cases_and_errors() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(3, 3) == 1.0
    with pytest.raises(ValueError, match="Expected `b` to be a non-negative integer"):
        mcnemar_exact(-1, 2)
    with pytest.raises(ValueError, match="Expected `c` to be a non-negative integer"):
        mcnemar_exact(1, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="paired"):
        paired_mcnemar([True, False], [True])
    with pytest.raises(ValueError, match="booleans"):
        paired_mcnemar([0, 2], [1, 1])
    with pytest.raises(ValueError, match="one-dimensional"):
        paired_mcnemar(np.zeros((2, 2), bool), np.zeros((2, 2), bool))
    assert paired_mcnemar([1, 0, 1], [1, 1, 0]).p_value == mcnemar_exact(1, 1)


def test_paired_bootstrap_interval_and_pairing() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, 300)
    b = a + 0.5 + rng.normal(0, 0.05, 300)  # a large, consistent paired shift
    res = paired_bootstrap(np.mean, a, b, n_boot=500)
    assert res.difference == pytest.approx(np.mean(b) - np.mean(a))
    assert res.ci_low < res.difference < res.ci_high
    assert res.ci_low > 0.4 and res.p_value < 0.01
    # pairing matters: the paired interval is far narrower than the spread of a alone
    assert res.ci_high - res.ci_low < 0.1
    # with no difference, zero lies inside the interval and p is large
    null = paired_bootstrap(np.mean, a, a + rng.normal(0, 0.05, 300), n_boot=500)
    assert null.ci_low < 0 < null.ci_high and null.p_value > 0.05
    # reproducible under a seed
    assert paired_bootstrap(np.mean, a, b, n_boot=50, seed=3) == paired_bootstrap(
        np.mean, a, b, n_boot=50, seed=3)


def test_paired_bootstrap_errors() -> None:
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap(np.mean, np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="at least one"):
        paired_bootstrap(np.mean, np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="`n_boot`"):
        paired_bootstrap(np.mean, np.zeros(3), np.zeros(3), n_boot=0)
    with pytest.raises(ValueError, match="`confidence`"):
        paired_bootstrap(np.mean, np.zeros(3), np.zeros(3), confidence=1.5)
    res = paired_bootstrap(lambda x: math.nan, np.zeros(3), np.zeros(3), n_boot=5)
    assert math.isnan(res.ci_low) and math.isnan(res.p_value)


@pytest.mark.parametrize("method", ["holm", "bonferroni"])
@pytest.mark.parametrize("seed", range(5))
def test_adjust_p_values_matches_statsmodels(method: str, seed: int) -> None:
    p = np.random.default_rng(seed).random(12) ** 3
    ref = multipletests(p, method=method)[1]
    np.testing.assert_allclose(adjust_p_values(p, method), ref, rtol=1e-12)


def test_adjust_p_values_nan_and_errors() -> None:
    out = adjust_p_values([0.01, math.nan, 0.04], "holm")
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert adjust_p_values([0.2], "none") == [0.2]
    with pytest.raises(ValueError, match="Expected `method`"):
        adjust_p_values([0.1], "fdr")


def test_wilson_is_reused_not_duplicated() -> None:
    assert reexported is wilson_interval
