"""Outcomes carry the label and the group columns; group metrics and
per-group paired tests checked against independent references (fairlearn's
MetricFrame and statsmodels' exact McNemar) on the stored per-sample outcomes;
the compare console (default, filters, worst-group pairing, sweeps) and the
gate's one "not measured" line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_overrides, write_checkpoint, write_npz
from fairlearn.metrics import (
    MetricFrame,
    count,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    equalized_odds_ratio,
    false_negative_rate,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.metrics import accuracy_score, precision_score
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from benchmark.commands.compare import compare_main
from benchmark.commands.gate import gate_main
from benchmark.compare import compare, format_text, select_sides
from benchmark.core.types import Outcome, Threat
from benchmark.record import RunRecord, outcomes_frame
from benchmark.store import Store
from metrics import groups as G

RATES = {
    "accuracy": accuracy_score,
    "selection_rate": selection_rate,
    "true_positive_rate": true_positive_rate,
    "false_positive_rate": false_positive_rate,
    "false_negative_rate": false_negative_rate,
    "precision": lambda y, p: precision_score(y, p, zero_division=0),
    "count": count,
}
FAIRNESS = {
    "demographic_parity_difference": demographic_parity_difference,
    "demographic_parity_ratio": demographic_parity_ratio,
    "equalized_odds_difference": equalized_odds_difference,
    "equalized_odds_ratio": equalized_odds_ratio,
}


def _statsmodels_p(a: np.ndarray, b: np.ndarray) -> float:
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    return float(mcnemar(table, exact=True).pvalue)


def binary_world(n: int = 240, seed: int = 0) -> tuple[np.ndarray, dict[str, pd.Series],
                                                       list[Outcome]]:
    """A binary task with two group features (colour, sex) and two versions
    under clean and one attack, where v2 is better on one colour."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    colour = pd.Series(rng.choice(["Black", "White"], n, p=[0.4, 0.6]), dtype=object)
    sex = pd.Series(rng.choice(["Female", "Male"], n, p=[0.3, 0.7]), dtype=object)
    outs = []
    for v, skill in (("v1", 0.75), ("v2", 0.85)):
        for threat in (Threat("clean", "clean"), Threat("attack", "fgsm", 0.1)):
            p_right = skill - (0.2 if threat.family == "attack" else 0.0)
            p_right = np.where((colour == "Black") & (v == "v1"), p_right - 0.15, p_right)
            pred = np.where(rng.random(n) < p_right, y, 1 - y)
            outs.append(Outcome(model="mlp", version=v, threat=threat, pred=pred,
                                correct=pred == y))
    cols = {"colour": colour, "sex": sex, "colour & sex": colour + " & " + sex}
    return y, cols, outs


def measurements_of(y: np.ndarray, cols: dict[str, pd.Series], outs: list[Outcome],
                    n_boot: int = 0) -> list[Any]:
    rows = []
    for name, col in cols.items():
        rows += G.group_metrics(outs, y, name, col, min_size=1, n_boot=n_boot, binary=True,
                                seed=0)
    return rows


def store_run(path: Path, run_id: str, y: np.ndarray, cols: dict[str, pd.Series],
              outs: list[Outcome], *, seed: int = 0, started: str = "2024-01-01T00:00:00",
              sweep: str | None = None) -> None:
    """Store a run the way the runner writes it: record + outcomes with label and groups."""
    ms = measurements_of(y, cols, outs)
    from metrics.robustness import accuracy_measurements

    ms += accuracy_measurements(outs)
    for m in ms:
        m.run = run_id
    record = RunRecord(
        run_id=run_id, name="synth", started=started, finished=started, config={"seed": seed},
        overrides=[], config_hash="h", run_key=run_id,
        models={f"mlp@{v}": {"name": "mlp", "version": v, "sha256": "0" * 64}
                for v in sorted({o.version for o in outs})},
        data={"name": "synth", "fingerprint": "f" * 64, "n": len(y), "classes": ["No", "Yes"]},
        seed=seed, device="cpu", env={}, measurements=ms, checks=[],
        extra={"sweep_id": sweep} if sweep else {})
    frame = outcomes_frame(outs, G.sample_frame(y, cols))
    with Store(path) as s:
        s.save_run(json.loads(json.dumps(record.as_dict(), default=str)), frame)


def by_key(rows: list[Any], version: str, threat: str) -> dict[tuple[str, str, str], Any]:
    return {(r.group_feature, r.group_value, r.metric): r for r in rows
            if r.version == version and r.threat == threat}


def test_stored_outcomes_carry_label_and_groups(tmp_path: Path) -> None:
    y, cols, outs = binary_world()
    store_run(tmp_path / "s.sqlite", "r1", y, cols, outs)
    with Store(tmp_path / "s.sqlite", readonly=True) as s:
        got = s.outcomes("r1")
    assert len(got) == len(outs) * len(y)
    for _, frame in got.groupby(["run_id", "version", "threat"]):
        frame = frame.sort_values("sample")
        np.testing.assert_array_equal(frame["label"].to_numpy(int), y)
        for name, col in cols.items():
            assert frame[name].tolist() == col.tolist()
    # the run directory's parquet has the same columns
    frame = outcomes_frame(outs, G.sample_frame(y, cols))
    assert {"sample", "label", "colour", "sex", "colour & sex"} <= set(frame.columns)


def test_group_metrics_equal_metricframe_on_stored_outcomes(tmp_path: Path) -> None:
    """Every rate per group and per intersection, and the fairness differences and
    ratios, against fairlearn computed here from what the store gives back."""
    y, cols, outs = binary_world(seed=3)
    store_run(tmp_path / "s.sqlite", "r1", y, cols, outs)
    with Store(tmp_path / "s.sqlite", readonly=True) as s:
        stored = s.outcomes("r1")
        ms = s.measurements(["r1"])
    for (v, t), frame in stored.groupby(["version", "threat"]):
        frame = frame.sort_values("sample")
        yt, yp = frame["label"].to_numpy(int), frame["pred"].to_numpy(int)
        mine = ms[(ms["version"] == v) & (ms["threat"] == t)]
        value = {(r.group_feature, r.group_value, r.metric): r.value for r in mine.itertuples()}
        for feature, sf in (("colour", frame["colour"]), ("sex", frame["sex"]),
                            ("colour & sex", [frame["colour"], frame["sex"]])):
            sfs = pd.concat(sf, axis=1) if isinstance(sf, list) else sf
            ref = MetricFrame(metrics=RATES, y_true=yt, y_pred=yp, sensitive_features=sfs)
            for g, row in ref.by_group.iterrows():
                name = " & ".join(g) if isinstance(g, tuple) else str(g)
                for metric in RATES:
                    assert value[(feature, name, metric)] == pytest.approx(row[metric]), (
                        feature, name, metric)
            for metric, fn in FAIRNESS.items():
                assert value[(feature, "", metric)] == pytest.approx(
                    fn(yt, yp, sensitive_features=sfs)), (feature, metric)
            assert value[(feature, "", "accuracy_difference_between_groups")] == \
                pytest.approx(ref.difference()["accuracy"])


def test_fairness_bootstrap_cis_equal_metricframe_and_wilson_never_collapses() -> None:
    y, cols, outs = binary_world(n=150, seed=5)
    rows = G.group_metrics(outs, y, "colour", cols["colour"], min_size=1, n_boot=12,
                           ci_quantiles=(0.05, 0.95), binary=True, seed=4)
    for o in outs:
        ref = MetricFrame(metrics={"selection_rate": selection_rate}, y_true=y, y_pred=o.pred,
                          sensitive_features=cols["colour"], n_boot=12,
                          ci_quantiles=[0.05, 0.95], random_state=4)
        mine = by_key(rows, o.version, o.threat.name) if o.threat.param is None else {
            (r.group_feature, r.group_value, r.metric): r for r in rows
            if r.version == o.version and r.param == o.threat.param}
        dp = mine[("colour", "", "demographic_parity_difference")]
        lo, hi = ref.difference_ci()
        assert (dp.ci_low, dp.ci_high) == (pytest.approx(lo["selection_rate"]),
                                           pytest.approx(hi["selection_rate"]))
        ratio = mine[("colour", "", "demographic_parity_ratio")]
        lo, hi = ref.ratio_ci()
        assert (ratio.ci_low, ratio.ci_high) == (pytest.approx(lo["selection_rate"]),
                                                 pytest.approx(hi["selection_rate"]))
    # accuracy 0 and 1 within a group: the Wilson interval keeps a width
    y = np.array([0, 1] * 15)
    perfect = Outcome("m", "v", Threat("clean", "clean"), y.copy(), np.ones(30, bool))
    wrong = Outcome("m", "w", Threat("clean", "clean"), 1 - y, np.zeros(30, bool))
    rows = G.group_metrics([perfect, wrong], y, "g", ["a"] * 30, min_size=1)
    for r in rows:
        if r.metric == "accuracy":
            lo, hi = proportion_confint(int(r.value * 30), 30, alpha=0.05, method="wilson")
            assert (r.ci_low, r.ci_high) == (pytest.approx(lo), pytest.approx(hi))
            assert r.ci_high - r.ci_low > 0.05


def test_group_rows_get_mcnemar_equal_to_statsmodels(tmp_path: Path) -> None:
    y, cols, outs = binary_world(seed=7)
    store_run(tmp_path / "s.sqlite", "r1", y, cols, outs)
    with Store(tmp_path / "s.sqlite", readonly=True) as s:
        c = compare(s, select_sides(s, ["mlp@v1", "mlp@v2"]), n_boot=50)
    pred = {(o.version, o.threat.name): o.pred for o in outs}
    checked = set()
    for r in c.rows:
        if not r.group_feature or r.test != "mcnemar":
            continue
        pa, pb = pred[("v1", r.threat)], pred[("v2", r.threat)]
        value = r.group_baseline if r.metric.endswith("_group") else r.group_value
        sel = (cols[r.group_feature] == value).to_numpy().copy()
        if r.metric.startswith("accuracy"):
            a, b = pa == y, pb == y
        elif r.metric == "selection_rate":
            a, b = pa == 1, pb == 1
        elif r.metric == "true_positive_rate":
            sel &= y == 1
            a, b = pa == 1, pb == 1
        elif r.metric == "false_positive_rate":
            sel &= y == 0
            a, b = pa == 1, pb == 1
        else:
            assert r.metric == "false_negative_rate"
            sel &= y == 1
            a, b = pa != 1, pb != 1
        assert r.p_value == pytest.approx(_statsmodels_p(a[sel], b[sel]), rel=1e-12), r
        checked.add(r.metric)
    assert {"accuracy", "selection_rate", "true_positive_rate", "false_positive_rate",
            "false_negative_rate"} <= checked
    assert not any(r.test != "none" for r in c.rows if r.metric == "precision")
    worst = [r for r in c.rows if r.metric == "accuracy_worst_group"]
    assert worst and all(r.group_value == "" and r.group_baseline for r in worst)
    assert not any("worst_group" in e.what for e in c.excluded)


def test_compare_console_default_filters_and_all(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    y, cols, outs = binary_world(seed=1)
    store = tmp_path / "s.sqlite"
    store_run(store, "r1", y, cols, outs)
    assert compare_main(["--store", str(store), "mlp@v1", "mlp@v2"]) == 0
    default = capsys.readouterr().out
    lines = default.splitlines()
    assert len(lines) <= 40
    assert "overall: mlp@v2 against mlp@v1" in default and "--all lists them" in default
    header = next(ln for ln in lines if ln.startswith("threat "))
    assert header.split()[-1] == "change"  # no unnamed column
    assert compare_main(["--store", str(store), "mlp@v1", "mlp@v2", "--all"]) == 0
    full = capsys.readouterr().out
    assert len(full.splitlines()) > len(lines) and "colour=Black" in full
    assert compare_main(["--store", str(store), "mlp@v1", "mlp@v2", "--metric",
                         "accuracy_worst_group", "--threat", "fgsm"]) == 0
    only = capsys.readouterr().out
    body = [ln for ln in only.splitlines() if ln.startswith("fgsm ")]
    assert body and all("accuracy_worst_group" in ln for ln in body)
    assert len(body) == len(cols)  # one per group feature: the versions pair


def test_compare_sweep_reads_every_job_mean_sd_paired_per_seed(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    accs = {}
    for seed in range(3):
        y, cols, outs = binary_world(seed=10 + seed)
        store_run(store, f"job{seed}", y, cols, outs, seed=seed, sweep="sw",
                  started=f"2024-01-01T00:0{seed}:00")
        accs[seed] = {o.version: o.correct for o in outs if o.threat.family == "clean"}
    with Store(store, readonly=True) as s:
        sides = select_sides(s, [], sweep="sw")
        c = compare(s, sides, every_run=True, n_boot=50)
    row = next(r for r in c.rows if r.threat == "clean" and r.metric == "accuracy"
               and not r.group_feature)
    a = np.array([accs[k]["v1"].mean() for k in range(3)])
    b = np.array([accs[k]["v2"].mean() for k in range(3)])
    assert row.n_runs == 3
    assert row.value_baseline == pytest.approx(a.mean())
    assert row.sd_baseline == pytest.approx(a.std(ddof=1))
    assert row.sd_difference == pytest.approx((b - a).std(ddof=1))
    pooled_a = np.concatenate([accs[k]["v1"] for k in range(3)])
    pooled_b = np.concatenate([accs[k]["v2"] for k in range(3)])
    assert row.p_value == pytest.approx(_statsmodels_p(pooled_a, pooled_b), rel=1e-12)
    assert "+-" in format_text(c)


def test_gate_prints_not_measured_once(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    y, cols, outs = binary_world(seed=2)
    store = tmp_path / "s.sqlite"
    store_run(store, "r1", y, cols, outs)
    rules = tmp_path / "rules.yaml"
    rules.write_text("baseline: mlp@v1\ncandidates: [mlp@v2]\nrules:\n"
                     "  - floor: {threat: fgsm, param: 0.1, metric: no_such_metric, min: 0.5}\n"
                     "  - regression: {max_drop: 0.01, significant: true, groups: true}\n")
    assert gate_main(["--store", str(store), "--rules", str(rules)]) == 1
    out = capsys.readouterr().out
    assert out.count("not measured") == 1


@pytest.mark.slow
def test_run_writes_label_and_group_columns_and_groups_match_metricframe(
        run_cli: Any, tmp_path: Path) -> None:
    """A real binary run: the outcomes (parquet and store) carry label and group
    columns, and the stored group metrics equal fairlearn on them."""
    ckpt = write_checkpoint(tmp_path / "bin.pt", classes=2)
    site = np.array(["north", "south", "east"] * 20)
    npz = write_npz(tmp_path / "bin.npz", n=60, classes=2, site=site)
    res = run_cli("run", *tiny_overrides(ckpt, npz, classes=2, versions=("v1", "v2")),
                  "groups=none", "+groups.features.site.kind=metadata",
                  "+groups.features.site.column=site", "+groups.features.class.kind=label",
                  "+groups.min_size=5", "+groups.n_boot=0", "reliability.enabled=false",
                  "validation=report_only", "attack.fgsm.eps=[0.1]",
                  "~corruption", "~fault")  # one outcome per (version, threat)
    assert res.returncode == 0, res.stderr[-2000:]
    run_dir = next(tmp_path.glob("outputs/*/*"))
    parquet = pd.read_parquet(run_dir / "outcomes.parquet")
    with Store(tmp_path / "rtb.sqlite", readonly=True) as s:
        (run_id,) = s.runs()["run_id"]
        stored, ms = s.outcomes(run_id), s.measurements([run_id])
    for frame in (parquet, stored):
        assert {"sample", "label", "site", "class"} <= set(frame.columns)
    for (v, t), frame in stored.groupby(["version", "threat"]):
        frame = frame.sort_values("sample")
        yt, yp = frame["label"].to_numpy(int), frame["pred"].to_numpy(int)
        ref = MetricFrame(metrics=RATES, y_true=yt, y_pred=yp,
                          sensitive_features=frame["site"].to_numpy())
        mine = ms[(ms["version"] == v) & (ms["threat"] == t) & (ms["group_feature"] == "site")]
        value = {(r.group_value, r.metric): r.value for r in mine.itertuples()}
        for g, row in ref.by_group.iterrows():
            for metric in RATES:
                if (str(g), metric) in value:
                    assert value[(str(g), metric)] == pytest.approx(row[metric])
        assert value[("", "equalized_odds_difference")] == pytest.approx(
            equalized_odds_difference(yt, yp, sensitive_features=frame["site"].to_numpy()))
