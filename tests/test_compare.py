"""``rtb compare``: a real run of tiny model versions, then the comparison;
p-values checked against statsmodels on the same counts; exclusions, groups,
bootstrap metrics, sweeps and error paths on stored synthetic runs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_overrides, write_checkpoint, write_npz
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from benchmark.commands.compare import compare_main
from benchmark.compare import compare, higher_is_better, select_sides
from benchmark.core.errors import StoreError
from benchmark.store import Store


def _statsmodels_p(a: np.ndarray, b: np.ndarray) -> float:
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    return float(mcnemar(table, exact=True).pvalue)


@pytest.mark.slow
def test_run_then_compare_prints_each_metric_with_mcnemar_p(tmp_path: Path, run_cli: Any) -> None:
    ckpt1 = write_checkpoint(tmp_path / "v1.pt", seed=0)
    ckpt2 = write_checkpoint(tmp_path / "v2.pt", seed=5)
    npz = write_npz(tmp_path / "d.npz", n=60)
    overrides = tiny_overrides(ckpt1, npz, versions=("v1", "v2"))
    v2_yaml = tmp_path / "tiny_conf" / "model" / "tiny_v2.yaml"
    v2_yaml.write_text(v2_yaml.read_text().replace(str(ckpt1), str(ckpt2)))
    r = run_cli("run", *overrides, "attack.fgsm.eps=[0.05,0.1,0.3]", "~corruption", "~fault")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "rtb.sqlite").is_file()

    table = run_cli("compare", "tiny@v1", "tiny@v2")
    assert table.returncode == 0, table.stderr
    js = run_cli("compare", "tiny@v1", "tiny@v2", "--format", "json")
    result = json.loads(js.stdout)
    run_dir = next(tmp_path.glob("outputs/*/*"))
    outcomes = pd.read_parquet(run_dir / "outcomes.parquet")
    record = json.loads((run_dir / "record.json").read_text())
    labels = {"clean", "fgsm eps=0.05", "fgsm eps=0.1", "fgsm eps=0.3"}
    # overall accuracy rows; group rows and other metrics are compared side by side
    rows = [r for r in result["rows"] if r["metric"] == "accuracy" and not r["group_feature"]]
    assert {row["label"] for row in rows} == labels
    overall = [m for m in record["measurements"]
               if m["metric"] == "accuracy" and not m["group_feature"]]
    assert len(overall) == 2 * len(labels)
    raw = []
    for row in rows:
        sel = (outcomes["threat"] == row["threat"]) & (
            outcomes["param"].isna() if row["param"] is None else outcomes["param"] == row["param"])
        a = outcomes[sel & (outcomes["version"] == "v1")].sort_values("sample")["correct"].to_numpy()
        b = outcomes[sel & (outcomes["version"] == "v2")].sort_values("sample")["correct"].to_numpy()
        assert row["test"] == "mcnemar"
        assert row["p_value"] == pytest.approx(_statsmodels_p(a, b), rel=1e-12)
        assert row["difference"] == pytest.approx(b.mean() - a.mean())
        raw.append(row["p_value"])
        # the console table shows this metric with its difference and p-value
        line = next(ln for ln in table.stdout.splitlines() if ln.startswith(row["label"] + " "))
        assert f"{row['difference']:+.3f}" in line and "mcnemar" in line
    tested = [r for r in result["rows"] if r["test"] == "mcnemar" and not r["group_feature"]]
    assert tested == rows  # overall: only the paired accuracy rows carry a test here
    adjusted = multipletests(raw, method="holm")[1]
    np.testing.assert_allclose([r["p_adjusted"] for r in rows], adjusted, rtol=1e-12)
    md = run_cli("compare", "tiny@v1", "tiny@v2", "--format", "markdown")
    assert md.returncode == 0 and "| fgsm eps=0.1 | accuracy |" in md.stdout


# ----------------------------------------------------------------------------- synthetic runs

ATTACK_CFG = {"fgsm": {"norm": "inf", "eps": [0.1], "eps_step_ratio": 1.0}}


def make_run(run_id: str, correct: dict[str, np.ndarray], *, fingerprint: str = "f" * 64,
             attack_cfg: dict[str, Any] | None = None, started: str = "2024-01-01T00:00:00",
             groups: np.ndarray | None = None, sweep: str | None = None,
             extra_metrics: bool = False) -> tuple[dict[str, Any], pd.DataFrame]:
    """A stored run: per-sample correctness per version for clean and fgsm@0.1;
    measurements computed from it (accuracy, per group when ``groups``, and
    mean_linf when ``extra_metrics``)."""
    frames, ms = [], []
    for v, corr in correct.items():
        n = len(corr)
        for family, threat, param in (("clean", "clean", None), ("attack", "fgsm", 0.1)):
            c = corr if family == "attack" else np.ones(n, bool)
            linf = np.linspace(0, 0.1, n) * (1.5 if v == "v2" else 1.0)
            cols: dict[str, Any] = {"model": "net", "version": v, "family": family,
                                    "threat": threat, "param": np.nan if param is None else param,
                                    "sample": np.arange(n), "pred": np.zeros(n, int),
                                    "correct": c, "linf": linf}
            if groups is not None:
                cols["group_size"] = groups.astype(float)
            frames.append(pd.DataFrame(cols))
            base = {"model": "net", "version": v, "family": family, "threat": threat,
                    "param": param, "n": n}
            ms.append({**base, "metric": "accuracy", "value": float(c.mean())})
            if groups is not None:
                for g in np.unique(groups):
                    sel = groups == g
                    ms.append({**base, "metric": "accuracy", "value": float(c[sel].mean()),
                               "group_feature": "size", "group_value": str(int(g)),
                               "n": int(sel.sum())})
            if extra_metrics and family == "attack":
                ms.append({**base, "metric": "mean_linf", "value": float(linf.mean())})
                ms.append({**base, "metric": "mce", "value": 0.5 if v == "v1" else 0.4})
    record = {
        "run_id": run_id, "name": "synth", "started": started, "finished": started,
        "config": {"attack": attack_cfg or ATTACK_CFG}, "run_key": run_id,
        "models": {f"net@{v}": {"name": "net", "version": v, "sha256": "0" * 64}
                   for v in correct},
        "data": {"name": "synth", "fingerprint": fingerprint, "n": len(next(iter(correct.values())))},
        "measurements": ms, "checks": [], "extra": {"sweep_id": sweep} if sweep else {},
    }
    return record, pd.concat(frames, ignore_index=True)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_compare_same_run_against_statsmodels(tmp_path: Path, rng: np.random.Generator) -> None:
    a = rng.random(200) < 0.6
    b = np.where(rng.random(200) < 0.3, True, a)
    groups = rng.integers(0, 2, 200)
    with Store(tmp_path / "s.sqlite") as s:
        s.save_run(*make_run("r1", {"v1": a, "v2": b}, groups=groups, extra_metrics=True))
        sides = select_sides(s, ["net@v1", "net@v2"])
        assert [(x.key, x.runs) for x in sides] == [("net@v1", ["r1"]), ("net@v2", ["r1"])]
        c = compare(s, sides, n_boot=200)
    by = {(r.label, r.metric, r.group): r for r in c.rows}
    fgsm = by[("fgsm eps=0.1", "accuracy", "")]
    assert fgsm.p_value == pytest.approx(_statsmodels_p(a, b), rel=1e-12)
    assert fgsm.discordant == (int(np.sum(a & ~b)), int(np.sum(~a & b)))
    assert fgsm.ci_low <= fgsm.difference <= fgsm.ci_high
    for g in (0, 1):
        row = by[("fgsm eps=0.1", "accuracy", f"size={g}")]
        sel = groups == g
        assert row.test == "mcnemar"
        assert row.p_value == pytest.approx(_statsmodels_p(a[sel], b[sel]), rel=1e-12)
    clean = by[("clean", "accuracy", "")]
    assert clean.p_value == 1.0 and not clean.significant
    linf = by[("fgsm eps=0.1", "mean_linf", "")]
    assert linf.test == "bootstrap" and linf.difference > 0 and linf.ci_low > 0
    mce = by[("fgsm eps=0.1", "mce", "")]
    assert mce.test == "none" and mce.difference == pytest.approx(-0.1)
    tested = [r.p_value for r in c.rows if math.isfinite(r.p_value)]
    np.testing.assert_allclose(sorted(r.p_adjusted for r in c.rows if math.isfinite(r.p_value)),
                               sorted(multipletests(tested, method="holm")[1]), rtol=1e-12)
    assert c.excluded == []


def test_compare_leaves_out_other_data_and_other_settings(tmp_path: Path,
                                                          rng: np.random.Generator) -> None:
    a, b = rng.random(50) < 0.5, rng.random(50) < 0.7
    with Store(tmp_path / "s.sqlite") as s:
        s.save_run(*make_run("a", {"v1": a}))
        s.save_run(*make_run("b", {"v2": b}, fingerprint="e" * 64, started="2024-01-02"))
        c = compare(s, select_sides(s, ["net@v1", "net@v2"]))
        assert c.rows == []
        assert {e.why for e in c.excluded} == {"different data (fingerprint ffffffffffff vs eeeeeeeeeeee)"}
        other = {"fgsm": {**ATTACK_CFG["fgsm"], "eps_step_ratio": 0.5}}
        s.save_run(*make_run("b", {"v2": b}, attack_cfg=other, started="2024-01-02"))
        c = compare(s, select_sides(s, ["net@v1", "net@v2"]))
        assert [r.label for r in c.rows] == ["clean"]  # clean has no settings to differ
        assert [(e.what, e.why) for e in c.excluded] == [
            ("fgsm eps=0.1 accuracy", "different fgsm settings: eps_step_ratio 1.0 vs 0.5")]


def test_compare_reports_metrics_measured_for_one_version_only(tmp_path: Path,
                                                               rng: np.random.Generator) -> None:
    a, b = rng.random(40) < 0.5, rng.random(40) < 0.5
    with Store(tmp_path / "s.sqlite") as s:
        rec, out = make_run("r", {"v1": a, "v2": b})
        rec["measurements"] = [m for m in rec["measurements"]
                               if not (m["version"] == "v2" and m["threat"] == "fgsm")]
        s.save_run(rec, out)
        c = compare(s, select_sides(s, ["net@v1", "net@v2"]))
    assert [(e.what, e.why) for e in c.excluded] == [
        ("fgsm eps=0.1 accuracy", "not measured for net@v2")]


def test_compare_sweep_pairs_runs_of_one_version_each(tmp_path: Path,
                                                      rng: np.random.Generator) -> None:
    a, b = rng.random(80) < 0.4, rng.random(80) < 0.9
    with Store(tmp_path / "s.sqlite") as s:
        s.save_run(*make_run("j0", {"v1": a}, sweep="sw"))
        s.save_run(*make_run("j1", {"v2": b}, sweep="sw", started="2024-01-01T00:01:00"))
        s.save_run(*make_run("elsewhere", {"v3": b}))
        sides = select_sides(s, [], sweep="sw")
        assert [x.key for x in sides] == ["net@v1", "net@v2"]
        c = compare(s, sides)
    fgsm = next(r for r in c.rows if r.threat == "fgsm")
    assert fgsm.runs == ("j0", "j1")
    assert fgsm.p_value == pytest.approx(_statsmodels_p(a, b), rel=1e-12)
    assert fgsm.significant and fgsm.improved


def test_compare_cli_formats_and_errors(tmp_path: Path, rng: np.random.Generator,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "s.sqlite"
    a, b = rng.random(100) < 0.3, rng.random(100) < 0.9
    with Store(store) as s:
        s.save_run(*make_run("20240101-r", {"v1": a, "v2": b}))
    assert compare_main(["--store", str(store), "--run", "2024"]) == 0
    text = capsys.readouterr().out
    assert "* better" in text and "mcnemar" in text
    assert compare_main(["--store", str(store), "net@v1", "net@v2", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["baseline"]["version"] == "v1"
    with pytest.raises(StoreError, match="No stored run holds 'net@v9'"):
        compare_main(["--store", str(store), "net@v1", "net@v9"])
    with pytest.raises(StoreError, match="NAME@VERSION"):
        compare_main(["--store", str(store), "net", "net@v2"])
    with pytest.raises(StoreError, match="at least two"):
        compare_main(["--store", str(store), "net@v1"])
    with pytest.raises(StoreError, match="No runs of sweep"):
        compare_main(["--store", str(store), "--sweep", "nope"])
    with pytest.raises(StoreError, match="No results store"):
        compare_main(["--store", str(tmp_path / "none.sqlite"), "net@v1", "net@v2"])
    with pytest.raises(SystemExit) as exc:
        compare_main(["--store", str(store), "--run", "x", "--sweep", "y"])
    assert exc.value.code == 2


def test_cli_error_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmark.cli import main

    assert main(["compare", "a@v1", "a@v2", "--store", str(tmp_path / "none.sqlite")]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [err.strip()]
    assert err.startswith("rtb: error: No results store")


def test_metric_direction() -> None:
    assert higher_is_better("accuracy") and higher_is_better("accuracy_ratio")
    assert not higher_is_better("mce") and not higher_is_better("accuracy_difference")
    assert not higher_is_better("error")
