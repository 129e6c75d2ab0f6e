"""Slice discovery: a planted weak slice comes first; with no weakness nothing
is significant at the stated false-discovery rate; the tests and the FDR
correction equal scipy's and statsmodels' own."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import BandNet, make_evalset, make_model
from scipy.stats import fisher_exact
from statsmodels.stats.multitest import multipletests
from torch import nn

from benchmark.core.specs import SliceSpec
from benchmark.core.types import EvalSet, Outcome, Threat
from benchmark.runner import clean_outcome
from metrics import slices as S
from metrics.properties import compute_properties


def varied_evalset(n: int = 300, seed: int = 0) -> EvalSet:
    """Blobs with a random brightness offset per image, and a metadata column."""
    data = make_evalset(n=n, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = (data.x + torch.rand(n, 1, 1, 1, generator=g) * 0.3).clamp(0, 1)
    rng = np.random.default_rng(seed)
    groups = pd.DataFrame({"site": rng.choice(["north", "south", "east"], size=n)})
    return EvalSet(name="varied", x=x, y=data.y, classes=data.classes, groups=groups)


class FailsWhenBright(nn.Module):
    """Accurate, except on images brighter than ``threshold``: it then answers
    the next class."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.net = BandNet()
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        bright = x.flatten(1).mean(1) > self.threshold
        return torch.where(bright[:, None], logits.roll(1, dims=1), logits)


def candidates(data: EvalSet, spec: SliceSpec) -> dict[str, pd.Series]:
    return S.candidate_slices(spec, data, compute_properties(data.x))


def test_planted_bright_slice_is_reported_first() -> None:
    data = varied_evalset()
    brightness = compute_properties(data.x, ["brightness"])["brightness"]
    model = make_model(FailsWhenBright(float(np.quantile(brightness, 0.8))))
    clean = clean_outcome(model, data, 64)
    assert 0.75 <= clean.accuracy <= 0.85
    spec = SliceSpec(enabled=True, bins=5, min_size=30, fdr=0.05)
    report = S.discover_slices(clean.correct, candidates(data, spec), min_size=30, fdr=0.05)
    first = report.slices[0]
    assert (first.feature, first.value[:2]) == ("brightness", "Q5")
    assert first.accuracy == 0.0 and first.n == 60
    assert first.gap == pytest.approx(-clean.accuracy) and first.q_value < 1e-6
    rows = S.slice_measurements([clean], candidates(data, spec), spec)
    gaps = [r for r in rows if r.metric == "slice_accuracy_gap"]
    assert gaps[0].group_feature == "slice:brightness" and gaps[0].group_value == first.value
    assert gaps[0].ci_low <= gaps[0].value <= gaps[0].ci_high
    assert len(gaps) <= spec.top


def test_no_planted_weakness_reports_nothing_at_the_fdr_level() -> None:
    """Under the global null, BH keeps P(any discovery) <= fdr: over 40 random
    outcomes at most a few may report a slice (expected <= 2)."""
    data = varied_evalset(seed=3)
    spec = SliceSpec(enabled=True, bins=5, pairs=True, min_size=30)
    cands = candidates(data, spec)
    rng = np.random.default_rng(0)
    with_discoveries = sum(
        bool(S.discover_slices(rng.random(len(data)) < 0.7, cands, min_size=30,
                               fdr=0.05).slices)
        for _ in range(40)
    )
    assert with_discoveries <= 6


def test_a_correct_model_on_clean_data_reports_nothing() -> None:
    data = varied_evalset(seed=4)
    clean = clean_outcome(make_model(), data, 64)
    spec = SliceSpec(enabled=True)
    rows = S.slice_measurements([clean], candidates(data, spec), spec)
    (count,) = [r for r in rows if r.metric == "slices_significant"]
    assert count.value == 0 and len(rows) == 1


@pytest.mark.parametrize("seed", [0, 1])
def test_p_and_q_values_equal_fisher_and_benjamini_hochberg(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 240
    feature = pd.Series(rng.choice(["a", "b", "c", "d"], size=n), dtype=object)
    other = pd.Series(rng.choice(["u", "v"], size=n), dtype=object)
    correct = rng.random(n) < np.where(feature == "a", 0.45, 0.8)
    report = S.discover_slices(correct, {"f": feature, "g": other}, min_size=10, fdr=0.5)
    tables, labels = [], []
    for name, col in (("f", feature), ("g", other)):
        for v in pd.unique(col):
            m = (col == v).to_numpy()
            tables.append([[correct[m].sum(), (~correct[m]).sum()],
                           [correct[~m].sum(), (~correct[~m]).sum()]])
            labels.append((name, v))
    p = np.array([fisher_exact(t, alternative="less")[1] for t in tables])
    q = multipletests(p, method="fdr_bh")[1]
    assert report.candidates == len(labels)
    want = {lab: (pv, qv) for lab, pv, qv in zip(labels, p, q, strict=True) if qv <= 0.5}
    got = {(s.feature, s.value): (s.p_value, s.q_value) for s in report.slices}
    assert set(got) == set(want) and ("f", "a") in got
    for lab, (pv, qv) in want.items():
        assert got[lab] == (pytest.approx(pv), pytest.approx(qv))
    assert [s.gap for s in report.slices] == sorted(s.gap for s in report.slices)


def test_min_size_and_whole_data_slices_are_not_candidates() -> None:
    n = 100
    col = pd.Series(["tiny"] * 5 + ["rest"] * 95, dtype=object)
    whole = pd.Series(["all"] * n, dtype=object)
    correct = np.r_[np.zeros(5, bool), np.ones(95, bool)]
    report = S.discover_slices(correct, {"c": col, "w": whole}, min_size=10)
    assert report.candidates == 1 and not report.slices
    assert S.discover_slices(correct, {"c": col}, min_size=5).slices[0].value == "tiny"


def test_candidates_cover_properties_metadata_label_and_pairs() -> None:
    data = varied_evalset(n=90)
    props = compute_properties(data.x)
    cols = S.candidate_slices(SliceSpec(pairs=True), data, props)
    assert {"brightness", "site", "class", "brightness & site"} <= set(cols)
    assert "colourfulness" not in cols  # constant on grayscale: no partition
    only = S.candidate_slices(SliceSpec(properties=("contrast",), metadata=(), label=False),
                              data, props)
    assert list(only) == ["contrast"]


def test_argument_errors() -> None:
    col = {"f": pd.Series(["a", "b"], dtype=object)}
    with pytest.raises(ValueError, match="Expected `min_size` to be a positive integer"):
        S.discover_slices(np.ones(2, bool), col, min_size=0)
    with pytest.raises(ValueError, match=r"Expected `fdr` to be a float in \(0, 1\)"):
        S.discover_slices(np.ones(2, bool), col, fdr=1.0)
    with pytest.raises(ValueError, match="Expected slice column 'f' to have 3 entries"):
        S.discover_slices(np.ones(3, bool), col)


def test_measurements_for_every_outcome() -> None:
    data = varied_evalset(n=120)
    y = data.y.numpy()
    outs = [Outcome("m", v, Threat("attack", "pgd", 0.1), y, np.ones(len(y), bool))
            for v in ("v1", "v2")]
    spec = SliceSpec(enabled=True)
    rows = S.slice_measurements(outs, candidates(data, spec), spec)
    assert [(r.version, r.metric) for r in rows] == [("v1", "slices_significant"),
                                                     ("v2", "slices_significant")]
