"""Group metrics, fairness differences and slice discovery on a feature table:
the real Toronto arrests data (scikit-lego's bundled copy), binary task
["No", "Yes"], sensitive columns as groups."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from fairlearn.metrics import MetricFrame, equalized_odds_ratio, selection_rate

from benchmark.core.tabular import TabularSchema
from benchmark.core.types import EvalSet, Outcome, Threat
from benchmark.schema import groups as SG
from metrics import bias as B
from metrics import slices as S

SENSITIVE = ["colour", "sex", "employed", "citizen"]


@pytest.fixture(scope="module")
def arrests() -> EvalSet:
    from sklego.datasets import load_arrests

    frame = load_arrests(as_frame=True).iloc[:600].reset_index(drop=True)
    schema = TabularSchema.infer(frame, "released", sensitive=SENSITIVE)
    features = frame.drop(columns=["released"])
    y = (frame["released"] == "Yes").to_numpy(np.int64)
    return EvalSet(name="arrests", x=torch.from_numpy(schema.encode(features)),
                   y=torch.from_numpy(y), classes=["No", "Yes"],
                   groups=frame[SENSITIVE].reset_index(drop=True), schema=schema,
                   frame=features)


def rule_outcomes(data: EvalSet) -> list[Outcome]:
    """Two rule-based "versions" and a shifted input, as per-sample outcomes."""
    f = data.frame
    assert f is not None
    y = data.y.numpy()
    preds = {
        ("v1", "clean"): (f["checks"] <= 2).to_numpy(np.int64),
        ("v2", "clean"): ((f["checks"] <= 3) & (f["employed"] == "Yes")).to_numpy(np.int64),
        ("v1", "age_in_months"): ((f["checks"] <= 2) & (f["age"] * 12 < 300)).to_numpy(np.int64),
    }
    return [Outcome("rules", v, Threat("clean" if t == "clean" else "fault", t), p, p == y)
            for (v, t), p in preds.items()]


def spec() -> SG.GroupsSpec:
    feats = {c: {"kind": "metadata", "column": c} for c in SENSITIVE}
    feats["colour_x_sex"] = {"kind": "intersection", "of": ["colour", "sex"]}
    return SG.parse_groups({"features": feats, "min_size": 20, "n_boot": 10,
                            "slices": {"enabled": True, "min_size": 30, "bins": 4,
                                       "label": False}})


def test_tabular_group_rows_for_every_outcome_and_feature(arrests: EvalSet) -> None:
    outs = rule_outcomes(arrests)
    rows = B.bias_measurements(spec(), arrests, outs, seed=0, num_classes=2)
    y = arrests.y.numpy()
    for o in outs:
        mine = [r for r in rows if r.version == o.version and r.threat == o.threat.name]
        for feature in [*SENSITIVE, "colour_x_sex"]:
            got = {(r.group_value, r.metric): r for r in mine if r.group_feature == feature}
            for metric in ("demographic_parity_difference", "equalized_odds_ratio"):
                r = got[("", metric)]
                assert r.ci_low is not None and r.ci_low <= r.ci_high
            col = arrests.groups[feature] if feature in SENSITIVE else (
                arrests.groups["colour"] + " & " + arrests.groups["sex"])
            ref = MetricFrame(metrics={"selection_rate": selection_rate}, y_true=y,
                              y_pred=o.pred, sensitive_features=col)
            for g, v in ref.by_group["selection_rate"].items():
                if (str(g), "selection_rate") in got:
                    assert got[(str(g), "selection_rate")].value == pytest.approx(v)
            keep = col.map(col.value_counts()).to_numpy() >= 20  # groups.min_size
            assert got[("", "equalized_odds_ratio")].value == pytest.approx(
                equalized_odds_ratio(y[keep], o.pred[keep], sensitive_features=col[keep]))
    # the fault outcome gets the robustness disparity against v1's clean pass
    assert any(r.metric == "boundary_error" and r.threat == "age_in_months" for r in rows)


def test_slice_discovery_bins_numeric_features_and_uses_categories(arrests: EvalSet) -> None:
    s = spec().slices
    cands = S.candidate_slices(s, arrests, {})
    assert {"age", "year", "checks", "colour", "sex"} <= set(cands)
    assert all(v.startswith("Q") for v in cands["age"].unique())
    assert set(cands["colour"]) == set(pd.unique(arrests.frame["colour"]))
    # checks <= 2 predicts "released" much worse where checks are many: discovery finds it
    outs = rule_outcomes(arrests)
    rows = S.slice_measurements(outs[:1], cands, s)
    found = [r for r in rows if r.metric == "slice_accuracy_gap"]
    assert found and all(r.value < 0 for r in found)
