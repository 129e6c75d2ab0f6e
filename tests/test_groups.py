"""Group metrics: equal to fairlearn's MetricFrame computed independently on
the same per-sample outcomes; group definitions, config and error cases."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_evalset, tiny_overrides
from fairlearn.metrics import (
    MetricFrame,
    count,
    demographic_parity_difference,
    equalized_odds_difference,
)
from sklearn.metrics import accuracy_score
from statsmodels.stats.proportion import proportion_confint

from benchmark.console import worst_group_table
from benchmark.core.errors import ConfigError, DataError
from benchmark.core.types import EvalSet, Measurement, Outcome, Threat
from benchmark.record import RECORD_FILE
from benchmark.schema import groups as SG
from metrics import bias as B
from metrics import groups as G
from metrics.properties import compute_properties

SUMMARY = {
    "accuracy_overall": lambda mf: mf.overall["accuracy"],
    "accuracy_worst_group": lambda mf: mf.group_min()["accuracy"],
    "accuracy_best_group": lambda mf: mf.group_max()["accuracy"],
    "accuracy_difference_between_groups": lambda mf: mf.difference()["accuracy"],
    "accuracy_difference_to_overall": lambda mf: mf.difference(method="to_overall")["accuracy"],
    "accuracy_ratio_between_groups": lambda mf: mf.ratio()["accuracy"],
    "accuracy_ratio_to_overall": lambda mf: mf.ratio(method="to_overall")["accuracy"],
}
SUMMARY_CI = {
    "accuracy_overall": lambda mf: mf.overall_ci,
    "accuracy_worst_group": lambda mf: mf.group_min_ci(),
    "accuracy_best_group": lambda mf: mf.group_max_ci(),
    "accuracy_difference_between_groups": lambda mf: mf.difference_ci(),
    "accuracy_difference_to_overall": lambda mf: mf.difference_ci(method="to_overall"),
    "accuracy_ratio_between_groups": lambda mf: mf.ratio_ci(),
    "accuracy_ratio_to_overall": lambda mf: mf.ratio_ci(method="to_overall"),
}


def random_outcomes(n: int, classes: int, k: int, seed: int) -> tuple[np.ndarray,
                                                                        list[Outcome]]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    outs = []
    for j in range(k):
        pred = np.where(rng.random(n) < rng.uniform(0.3, 0.95), y, rng.integers(0, classes, n))
        outs.append(Outcome(model="m", version=f"v{j % 2}",
                            threat=Threat("attack", "pgd", 0.1 * j), pred=pred,
                            correct=pred == y))
    return y, outs


def rows_of(rows: list[Measurement], o: Outcome, metric: str) -> dict[str, Measurement]:
    return {r.group_value: r for r in rows if r.metric == metric and r.threat == o.threat.name
            and r.param == o.threat.param and r.version == o.version}


def as_kind(values: np.ndarray, kind: str):
    return {"list": list, "ndarray": np.asarray, "series": pd.Series}[kind](values)


@pytest.mark.parametrize("kind", ["list", "ndarray", "series"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_metrics_equal_an_independent_metricframe(kind: str, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    y, outs = random_outcomes(n=int(rng.integers(60, 200)), classes=3, k=3, seed=seed)
    sf = rng.choice(np.array(["a", "b", "c", "d"]), size=len(y), p=[0.4, 0.3, 0.2, 0.1])
    rows = G.group_metrics(outs, as_kind(y, kind), "site", as_kind(sf, kind), min_size=1)
    for o in outs:
        ref = MetricFrame(metrics={"accuracy": accuracy_score, "count": count}, y_true=y,
                          y_pred=o.pred, sensitive_features=sf)
        acc, cnt = rows_of(rows, o, "accuracy"), rows_of(rows, o, "count")
        assert set(acc) == set(map(str, ref.by_group.index))
        for g, v in ref.by_group["accuracy"].items():
            assert acc[str(g)].value == pytest.approx(v)
            assert acc[str(g)].n == cnt[str(g)].value == ref.by_group["count"][g]
        for metric, fn in SUMMARY.items():
            (row,) = rows_of(rows, o, metric).values()
            assert row.value == pytest.approx(fn(ref)), metric
            assert row.group_feature == "site" and row.ci_low is None
        (worst,) = rows_of(rows, o, "accuracy_worst_group")
        assert worst == str(ref.by_group["accuracy"].idxmin())


def test_summary_bootstrap_cis_equal_fairlearns_own_and_groups_get_wilson() -> None:
    y, outs = random_outcomes(n=150, classes=4, k=2, seed=7)
    sf = np.random.default_rng(7).choice(["x", "y", "z"], size=len(y))
    rows = G.group_metrics(outs, y, "f", sf, min_size=1, n_boot=15,
                           ci_quantiles=(0.05, 0.95), seed=3)
    for o in outs:
        ref = MetricFrame(metrics={"accuracy": accuracy_score}, y_true=y, y_pred=o.pred,
                          sensitive_features=sf, n_boot=15, ci_quantiles=[0.05, 0.95],
                          random_state=3)
        acc = rows_of(rows, o, "accuracy")
        for g in ref.by_group.index:  # group accuracy: Wilson, not the bootstrap
            k = int(np.sum(o.correct[sf == g]))
            lo, hi = proportion_confint(k, int(np.sum(sf == g)), alpha=0.1, method="wilson")
            assert (acc[g].ci_low, acc[g].ci_high) == (pytest.approx(lo), pytest.approx(hi))
        for metric, fn in SUMMARY_CI.items():
            (row,) = rows_of(rows, o, metric).values()
            lo, hi = fn(ref)
            assert (row.ci_low, row.ci_high) == (pytest.approx(lo["accuracy"]),
                                                 pytest.approx(hi["accuracy"])), metric


def test_binary_task_adds_parity_and_equalized_odds() -> None:
    y, outs = random_outcomes(n=120, classes=2, k=1, seed=4)
    sf = np.random.default_rng(4).choice(["p", "q"], size=len(y))
    rows = G.group_metrics(outs, y, "f", sf, min_size=1, binary=True)
    (dp,) = rows_of(rows, outs[0], "demographic_parity_difference").values()
    (eo,) = rows_of(rows, outs[0], "equalized_odds_difference").values()
    assert dp.value == pytest.approx(demographic_parity_difference(
        y, outs[0].pred, sensitive_features=sf))
    assert eo.value == pytest.approx(equalized_odds_difference(
        y, outs[0].pred, sensitive_features=sf))
    assert not rows_of(G.group_metrics(outs, y, "f", sf, min_size=1), outs[0],
                       "equalized_odds_difference")


def test_too_small_groups_are_reported_not_dropped() -> None:
    y, outs = random_outcomes(n=100, classes=3, k=1, seed=5)
    sf = np.array(["big"] * 60 + ["mid"] * 35 + ["tiny"] * 5, dtype=object)
    rows = G.group_metrics(outs, y, "f", sf, min_size=10)
    (small,) = rows_of(rows, outs[0], "too_small").values()
    assert small.group_value == "tiny" and small.n == 5
    assert small.definition == G.MSG_TOO_SMALL.format(n=5, min_size=10)
    keep = sf != "tiny"
    ref = MetricFrame(metrics=accuracy_score, y_true=y[keep], y_pred=outs[0].pred[keep],
                      sensitive_features=sf[keep])
    assert set(rows_of(rows, outs[0], "accuracy")) == {"big", "mid"}
    (worst,) = rows_of(rows, outs[0], "accuracy_worst_group").values()
    assert worst.value == pytest.approx(ref.group_min()) and worst.n == 95
    only_small = G.group_metrics(outs, y, "f", sf, min_size=1000)
    assert {r.metric for r in only_small} == {"too_small"} and len(only_small) == 3


def evalset_with(n: int = 60, **columns: object) -> EvalSet:
    data = make_evalset(n=n)
    data.groups = pd.DataFrame(columns)
    return data


def spec_of(features: dict, **kw: object) -> G.GroupsSpec:
    return SG.parse_groups({"features": features, **kw})


def test_missing_value_raises_or_forms_a_missing_group() -> None:
    site = np.array(["a", "b", None, "a"] * 15, dtype=object)
    data = evalset_with(site=site)
    feats = {"site": {"kind": "metadata", "column": "site"}}
    with pytest.raises(DataError) as err:
        G.sensitive_features(spec_of(feats), data)
    assert str(err.value) == G.MSG_MISSING.format(feature="site", count=15, first=2)
    with pytest.raises(DataError):
        G.check_groups(spec_of(feats), data)
    col = G.sensitive_features(spec_of(feats, missing="group"), data)["site"]
    assert (col == G.MISSING_VALUE).sum() == 15 and set(col) == {"a", "b", "missing"}


def test_unknown_column_raises_with_valid_columns() -> None:
    data = evalset_with(site=np.array(["a", "b"] * 30))
    spec = spec_of({"sex": {"kind": "metadata", "column": "sex"}})
    with pytest.raises(DataError) as err:
        G.check_groups(spec, data)
    assert str(err.value) == G.MSG_UNKNOWN_COLUMN.format(
        feature="sex", column="sex", source="the group columns of dataset 'blobs'", valid="site")


def test_csv_metadata_by_row_and_by_id(tmp_path: Path) -> None:
    data = evalset_with(n=6, sid=np.array([10, 11, 12, 13, 14, 15]))
    by_row = tmp_path / "rows.csv"
    pd.DataFrame({"sex": list("ffmmfm")}).to_csv(by_row, index=False)
    col = G.sensitive_features(spec_of({"sex": {"kind": "metadata", "column": "sex",
                                                "csv": str(by_row)}}), data)["sex"]
    assert list(col) == list("ffmmfm")
    by_id = tmp_path / "ids.csv"
    pd.DataFrame({"sid": [15, 14, 13, 12, 11, 10], "sex": list("abcdef")}).to_csv(by_id,
                                                                                  index=False)
    col = G.sensitive_features(spec_of({"sex": {"kind": "metadata", "column": "sex",
                                                "csv": str(by_id), "on": "sid"}}), data)["sex"]
    assert list(col) == list("fedcba")


def test_csv_errors(tmp_path: Path) -> None:
    data = evalset_with(n=6, sid=np.arange(6))
    short = tmp_path / "short.csv"
    pd.DataFrame({"sex": list("ff"), "sid": [1, 1]}).to_csv(short, index=False)
    feat = {"kind": "metadata", "column": "sex", "csv": str(short)}
    with pytest.raises(DataError) as err:
        G.check_groups(spec_of({"sex": feat}), data)
    assert str(err.value) == G.MSG_CSV_LENGTH.format(feature="sex", path=str(short), n=6, rows=2)
    with pytest.raises(DataError) as err:
        G.check_groups(spec_of({"sex": {**feat, "on": "sid"}}), data)
    assert str(err.value) == G.MSG_CSV_DUPLICATE_KEYS.format(feature="sex", on="sid",
                                                             path=str(short), key=1)
    missing = str(tmp_path / "nope.csv")
    with pytest.raises(DataError) as err:
        G.check_groups(spec_of({"sex": {**feat, "csv": missing}}), data)
    assert str(err.value).startswith(G.MSG_CSV_UNREADABLE.format(
        feature="sex", path=missing, reason="")[:-2])


def test_label_property_and_intersection_features() -> None:
    data = make_evalset(n=60)
    spec = spec_of({
        "class": {"kind": "label"},
        "bright": {"kind": "property", "property": "brightness", "bins": 3},
        "cut": {"kind": "property", "property": "brightness", "edges": [0.3, 0.4]},
        "both": {"kind": "intersection", "of": ["class", "bright"]},
    })
    cols = G.sensitive_features(spec, data)
    assert list(cols) == ["class", "bright", "cut", "both"]
    assert list(cols["class"]) == [data.classes[i] for i in data.y.tolist()]
    b = compute_properties(data.x, ["brightness"])["brightness"]
    ranks = pd.Series(b).rank(method="first")
    assert cols["bright"].value_counts().tolist() == [20, 20, 20]
    for label in cols["bright"].unique():
        members = b[cols["bright"] == label]
        assert label.startswith(f"Q{int(ranks[cols['bright'] == label].min() // 20) + 1} ")
        assert members.min() >= float(label.split("[")[1].split(",")[0]) - 1e-3
    want_cut = np.where(b < 0.3, "< 0.3", np.where(b < 0.4, "[0.3, 0.4)", ">= 0.4"))
    assert list(cols["cut"]) == list(want_cut)
    assert list(cols["both"]) == [f"{a} & {c}" for a, c in zip(cols["class"], cols["bright"],
                                                               strict=True)]


def test_bin_values_keeps_nan_missing_and_handles_constant_input() -> None:
    col = G.bin_values(np.array([1.0, np.nan, 2.0, 3.0]), bins=2)
    assert col.isna().tolist() == [False, True, False, False]
    const = G.bin_values(np.ones(5), bins=4)
    assert const.nunique() == 1


@pytest.mark.parametrize(("cfg", "message"), [
    ({"feature": {}}, "Unknown config key `groups.feature`; expected one of: "
     + ", ".join(SG.GROUPS_KEYS) + "."),
    ({"features": {"a": {"kind": "colour"}}},
     "Expected `groups.features.a.kind` to be one of label, metadata, property, intersection, "
     "but got 'colour'."),
    ({"features": {"a": {"kind": "property", "property": "glow", "bins": 3}}}, None),
    ({"features": {"a": {"kind": "property", "property": "brightness"}}},
     "Expected exactly one of `groups.features.a.bins` (quantile bins) or "
     "`groups.features.a.edges` (cut points), but got bins=None, edges=None."),
    ({"features": {"a": {"kind": "property", "property": "brightness", "edges": [2, 1]}}},
     "Expected `groups.features.a.edges` to be strictly increasing cut points, "
     "but got [2.0, 1.0]."),
    ({"features": {"a": {"kind": "metadata"}}},
     "Missing `groups.features.a.column`; a metadata group names its column."),
    ({"features": {"a": {"kind": "label"}, "b": {"kind": "intersection", "of": ["a", "c"]}}},
     "Expected `groups.features.b.of` to be names among a, b, but got 'c'."),
    ({"missing": "drop"}, "Expected `groups.missing` to be one of error, group, but got 'drop'."),
    ({"min_size": 0}, "Expected `groups.min_size` to be an integer >= 1, but got 0."),
    ({"slices": {"fdr": 1.5}}, "Expected `groups.slices.fdr` to be a number in (0, 1), "
     "but got 1.5."),
])
def test_bad_groups_config_raises_config_error(cfg: dict, message: str | None) -> None:
    with pytest.raises(ConfigError) as err:
        SG.parse_groups(cfg)
    if message is not None:
        assert str(err.value) == message


@pytest.mark.parametrize("option", ["default", "none", "discover"])
def test_shipped_groups_options_parse(option: str) -> None:
    from benchmark.compose import read_option

    spec = SG.parse_groups(read_option("groups", option))
    if option == "default":
        assert [f.name for f in spec.features] == ["class", "stroke_thickness", "brightness"]
        assert spec.slices.enabled
    else:
        assert spec.features == ()


def test_worst_group_table_picks_lowest_over_features() -> None:
    def m(version: str, feature: str, value: str, v: float) -> Measurement:
        return Measurement(model="m", version=version, family="attack", threat="pgd", param=0.1,
                           metric="accuracy_worst_group", value=v, n=10, group_feature=feature,
                           group_value=value)

    table = worst_group_table([m("v1", "class", "3", 0.4), m("v1", "bright", "Q4", 0.2),
                                 m("v2", "class", "1", 0.7)])
    assert "0.200 bright=Q4" in table and "0.700 class=1" in table and "pgd eps=0.1" in table
    assert worst_group_table([]) == ""


def test_bias_measurements_of_none_is_empty() -> None:
    y, outs = random_outcomes(n=30, classes=3, k=1, seed=0)
    assert B.bias_measurements(None, make_evalset(n=30), outs) == []


@pytest.mark.slow
def test_run_records_group_robust_accuracy_with_cis_per_version(run_cli, tiny_files,
                                                                tmp_path: Path) -> None:
    """`rtb run` with the default groups: per-class and per-property accuracy
    with CIs for every version and threat, and the worst group on the console."""
    ckpt, npz = tiny_files
    res = run_cli("run", *tiny_overrides(ckpt, npz, versions=("v1", "v2")), "groups.min_size=5",
                  "groups.n_boot=10", "groups.slices.min_size=5")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "worst group per threat" in res.stdout and "fgsm eps=0.3" in res.stdout
    (record_path,) = (tmp_path / "outputs").rglob(RECORD_FILE)
    ms = json.loads(record_path.read_text())["measurements"]
    for version in ("v1", "v2"):
        for threat, param in (("clean", None), ("fgsm", 0.1), ("fgsm", 0.3)):
            for feature in ("class", "stroke_thickness", "brightness"):
                rows = [m for m in ms if m["version"] == version and m["threat"] == threat
                        and m["param"] == param and m["group_feature"] == feature
                        and m["metric"] == "accuracy"]
                assert rows, (version, threat, feature)
                for r in rows:
                    assert r["ci_low"] is not None and r["ci_low"] <= r["ci_high"]
                    assert 0.0 <= r["value"] <= 1.0 and r["n"] >= 5
    assert any(m["metric"] == "boundary_error" for m in ms)
    assert any(m["metric"] == "slices_significant" for m in ms)


@pytest.mark.slow
def test_run_with_unknown_group_column_stops_with_one_line(run_cli, tiny_files) -> None:
    ckpt, npz = tiny_files
    res = run_cli("run", *tiny_overrides(ckpt, npz), "groups=none",
                  "+groups.features.site.kind=metadata", "+groups.features.site.column=site")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("rtb: error: Group feature 'site': "
                                                          "expected a column 'site'")
    assert "Traceback" not in res.stderr


def test_properties_group_on_rgb_images() -> None:
    g = torch.Generator().manual_seed(0)
    data = EvalSet(name="rgb", x=torch.rand(40, 3, 8, 8, generator=g),
                   y=torch.arange(40) % 2, classes=["a", "b"])
    spec = spec_of({"colour": {"kind": "property", "property": "colourfulness", "bins": 2}})
    col = G.sensitive_features(spec, data)["colour"]
    assert col.value_counts().tolist() == [20, 20]
    assert not math.isnan(float(compute_properties(data.x, ["colourfulness"])["colourfulness"]
                                .mean()))


def test_binary_metrics_follow_the_model_classes_not_the_labels_present() -> None:
    from benchmark.core.specs import FeatureSpec, GroupsSpec

    y, outs = random_outcomes(n=40, classes=2, k=1, seed=0)
    data = EvalSet(name="d", x=torch.zeros(40, 1, 2, 2), y=torch.from_numpy(y), classes=["0", "1"])
    spec = GroupsSpec(features=(FeatureSpec(name="class", kind="label"),), min_size=5, n_boot=0)
    cols = G.sensitive_features(spec, data, {})
    binary = G.group_measurements(spec, data, outs, cols, num_classes=2)
    assert any(m.metric == "demographic_parity_difference" for m in binary)
    outs[0].pred[:3] = 7  # a 10-class model predicts classes the labels never show
    rows = G.group_measurements(spec, data, outs, cols, num_classes=10)
    assert rows and not any(m.metric == "demographic_parity_difference" for m in rows)


def test_run_on_two_of_ten_classes_reaches_group_metrics(run_cli, tmp_path: Path) -> None:
    """An npz whose labels cover 2 of the model's 10 classes runs to the end."""
    from conftest import write_checkpoint, write_npz

    ckpt = write_checkpoint(tmp_path / "ten.pt", size=10, classes=10)
    npz = write_npz(tmp_path / "two.npz", n=30, size=10, classes=2)
    res = run_cli("run", *tiny_overrides(ckpt, npz, size=10, classes=10), "groups.min_size=5",
                  "groups.n_boot=0", "groups.slices.enabled=false", "reliability.enabled=false",
                  "validation=report_only", "attack.fgsm.eps=[0.1]", "store=null")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    (record_path,) = (tmp_path / "outputs").rglob(RECORD_FILE)
    ms = json.loads(record_path.read_text())["measurements"]
    assert any(m["group_feature"] == "class" and m["metric"] == "accuracy" for m in ms)
    assert not any(m["metric"] == "demographic_parity_difference" for m in ms)
