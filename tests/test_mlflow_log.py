"""``rtb mlflow-log`` against a real local MLflow tracking store (SQLite, with
artifacts in a local folder), read back with ``mlflow.search_runs`` and
``MlflowClient.list_artifacts``. MLflow is in the ``dev`` extra the
tests run with; the not-installed error is tested by hiding it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from test_report import CLASSES, N, write_run

from benchmark import store as store_mod
from benchmark.cli import main
from benchmark.core.errors import DataError
from benchmark.mlflow_log import NOT_INSTALLED, flatten_config, flatten_metrics, metric_key


@pytest.fixture(scope="module")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store, created once: creating its schema takes
    most of a test's time, copying the file takes none."""
    path = tmp_path_factory.mktemp("mlflow") / "template.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def uri(tmp_path: Path, mlflow_template: Path) -> str:
    """A fresh MLflow SQLite store for one test."""
    shutil.copyfile(mlflow_template, tmp_path / "mlflow.db")
    return _uri(tmp_path)


def _uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _search(uri: str):
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=["rtb"], output_format="pandas")


def test_metric_keys() -> None:
    row = {"metric": "accuracy", "threat": "pgd_linf", "family": "attack", "param": 0.1,
           "model": "mnist_cnn", "version": "v2", "group_feature": "", "value": 0.5}
    assert metric_key(row) == "acc.pgd_linf.eps_0.1.mnist_cnn_v2"
    assert metric_key(row, with_version=False) == "acc.pgd_linf.eps_0.1"
    assert metric_key({**row, "family": "clean", "threat": "clean", "param": None}) == \
        "acc.clean.mnist_cnn_v2"
    assert metric_key({**row, "family": "corruption", "threat": "fog", "param": 3.0,
                       "group_feature": "sex", "group_value": "f@1", "metric": "mce"}) == \
        "mce.fog.sev_3.sex_f_1.mnist_cnn_v2"
    # no spaces: a quantile group's name becomes valid key characters
    spaced = metric_key({**row, "group_feature": "brightness", "group_value": "Q1 [0.04, 0.09)"},
                        with_version=False)
    assert spaced == "acc.pgd_linf.eps_0.1.brightness_Q1__0.04__0.09_"
    # the worst group is keyed by its feature, so two versions share the key
    worst = {**row, "metric": "accuracy_worst_group", "group_feature": "class"}
    assert metric_key({**worst, "group_value": "3"}, False) == \
        metric_key({**worst, "group_value": "7"}, False) == "accuracy_worst_group.pgd_linf.eps_0.1.class"
    # a fairness difference over a feature has no group value
    assert metric_key({**row, "metric": "demographic_parity_difference", "family": "clean",
                       "threat": "clean", "param": None, "group_feature": "sex",
                       "group_value": ""}, False) == "demographic_parity_difference.clean.sex"
    with pytest.raises(DataError, match="occurs twice"):
        flatten_metrics([row, dict(row)])
    assert flatten_metrics([{**row, "value": float("nan")}]) == {}


def test_config_is_flattened_into_params() -> None:
    config = {"seed": 3, "data": {"name": "mnist", "n_samples": None, "root": "/d"},
              "attack": {"pgd_linf": {"eps": [0.1, 0.3], "_target_": "art.X"}},
              "fault": {"faults": [{"name": "nan", "params": {"p": 0.1}}]},
              "groups": {}, "deterministic": True, "hydra": {"x": 1}}
    assert flatten_config(config) == {
        "seed": "3", "data.name": "mnist", "data.n_samples": "null", "data.root": "/d",
        "attack.pgd_linf.eps": "[0.1, 0.3]", "attack.pgd_linf._target_": "art.X",
        "fault.faults.0.name": "nan", "fault.faults.0.params.p": "0.1", "groups": "{}",
        "deterministic": "true"}


def _artifacts(uri: str, run_id: str) -> set[str]:
    return {a.path for a in mlflow.MlflowClient(tracking_uri=uri).list_artifacts(run_id)}


def test_run_is_one_parent_with_a_child_per_version(tmp_path: Path, capsys, uri: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlruns
    run_dir, outcomes = write_run(tmp_path, corruption=True)
    assert main(["mlflow-log", str(run_dir), "--tracking-uri", uri]) == 0
    df = _search(uri)
    parents = df[df["tags.rtb.kind"] == "run"]
    children = df[df["tags.rtb.kind"] == "version"]
    assert len(df) == 3 and len(parents) == 1 and len(children) == 2
    parent = parents.iloc[0]
    assert parent["status"] == "FINISHED" and parent["tags.rtb.run_id"] == run_dir.name
    assert set(children["tags.mlflow.parentRunId"]) == {parent["run_id"]}
    assert sorted(children["tags.rtb.model_version"]) == ["tiny@v1", "tiny@v2"]
    # the full resolved config, flattened, not only the overrides
    for row in (parent, *[c for _, c in children.iterrows()]):
        assert row["params.seed"] == "0" and row["params.data.name"] == "blobs"
        assert row["params.note"] == "<b>not markup</b>"
        assert row["params.rtb.overrides"] == "data.n_samples=60 seed=0"
    assert parent["tags.rtb.config_hash"] == "c" * 64
    assert parent["tags.rtb.model_versions"] == "tiny@v1 tiny@v2"
    assert parent["tags.rtb.sha256.tiny_v1"] == "0" * 64
    # every child metric equals a recomputation from the per-sample outcomes,
    # under a key without the version (the same key for both children)
    classes = np.arange(N) % CLASSES
    metric_cols = [c for c in df.columns if c.startswith("metrics.")]
    assert metric_cols and not any(" " in c for c in metric_cols)
    for version in ("v1", "v2"):
        child = children[children["tags.rtb.model_version"] == f"tiny@{version}"].iloc[0]
        assert child["tags.rtb.sha256"] == ("0" if version == "v1" else "1") * 64
        logged = {c[len("metrics."):]: child[c] for c in metric_cols if not np.isnan(child[c])}
        checked = 0
        for o in outcomes:
            if o.version != version:
                continue
            t = o.threat
            param = "" if t.param is None else \
                f".{'eps' if t.family == 'attack' else 'sev'}_{t.param:g}"
            assert logged[f"acc.{t.name}{param}"] == pytest.approx(o.correct.mean())
            for g in range(CLASSES):
                assert logged[f"acc.{t.name}{param}.class_{g}"] == \
                    pytest.approx(o.correct[classes == g].mean())
            checked += 1
        assert checked == 13
    assert np.isnan(parent["metrics.acc.clean"])
    # the three artifacts on the parent, and they read back
    assert _artifacts(uri, parent["run_id"]) == {"record.json", "outcomes.parquet", "report.html"}
    got = Path(mlflow.artifacts.download_artifacts(run_id=parent["run_id"], tracking_uri=uri,
                                                   dst_path=str(tmp_path / "dl")))
    import json

    import pandas as pd

    assert json.loads((got / "record.json").read_text())["run_id"] == run_dir.name
    assert len(pd.read_parquet(got / "outcomes.parquet")) == sum(len(o.pred) for o in outcomes)
    assert "rtb report" in (got / "report.html").read_text()
    # logging the same run again adds nothing
    capsys.readouterr()
    assert main(["mlflow-log", str(run_dir), "--tracking-uri", uri]) == 0
    assert "already logged" in capsys.readouterr().out
    assert len(_search(uri)) == 3


def test_sweep_is_one_run_above_the_jobs(tmp_path: Path, uri: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "multirun" / "12-00-00-default"
    for job, version in enumerate(("v1", "v2", "v3")):
        write_run(tmp_path, versions=(version,), seed=job, run_id=f"2024010{job + 1}-000000-job",
                  corruption=False, groups=False, extra={"sweep_id": "sw1"},
                  root_dir=sweep / str(job))
    assert main(["mlflow-log", "--sweep", str(sweep), "--tracking-uri", uri]) == 0
    df = _search(uri)
    sweeps = df[df["tags.rtb.kind"] == "sweep"]
    assert len(sweeps) == 1 and sweeps.iloc[0]["tags.rtb.sweep_id"] == "sw1"
    jobs = df[df["tags.rtb.kind"] == "run"]
    assert len(jobs) == 3 and set(jobs["tags.mlflow.parentRunId"]) == {sweeps.iloc[0]["run_id"]}
    versions = df[df["tags.rtb.kind"] == "version"]
    assert sorted(versions["tags.rtb.model_version"]) == ["tiny@v1", "tiny@v2", "tiny@v3"]
    assert set(versions["tags.mlflow.parentRunId"]) == set(jobs["run_id"])
    v3 = versions[versions["tags.rtb.model_version"] == "tiny@v3"].iloc[0]
    assert not np.isnan(v3["metrics.acc.clean"])
    for rid in jobs["run_id"]:
        assert _artifacts(uri, rid) == {"record.json", "outcomes.parquet", "report.html"}
    # a job that finished later joins the same sweep run; the others are not logged twice
    write_run(tmp_path, versions=("v4",), seed=9, run_id="20240109-000000-job", corruption=False,
              groups=False, extra={"sweep_id": "sw1"}, root_dir=sweep / "3")
    assert main(["mlflow-log", "--sweep", str(sweep), "--tracking-uri", uri]) == 0
    df = _search(uri)
    assert (df["tags.rtb.kind"] == "sweep").sum() == 1
    assert (df["tags.rtb.kind"] == "run").sum() == 4 and len(df) == 9


def test_sweep_from_the_store(tmp_path: Path, uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "rtb.sqlite"
    for job in range(2):
        d, _ = write_run(tmp_path, versions=("v1",), seed=job, run_id=f"2024010{job + 1}-x",
                         corruption=False, groups=False)
        store_mod.save_run_dir(store, d, sweep_id="sw2")
    assert main(["mlflow-log", "--sweep", "sw2", "--store", str(store), "--tracking-uri", uri]) == 0
    df = _search(uri)
    assert len(df) == 5 and (df["tags.rtb.kind"] == "version").sum() == 2
    job = df[df["tags.rtb.kind"] == "run"].iloc[0]
    assert _artifacts(uri, job["run_id"]) == {"record.json", "outcomes.parquet", "report.html"}
    assert main(["mlflow-log", "2024010", "--store", str(store), "--tracking-uri", uri]) == 2


@pytest.mark.parametrize("case", ["no_source", "both", "bad_uri", "empty_sweep", "missing_sweep",
                                  "unknown_sweep"])
def test_error_paths_exit_2_with_one_line(tmp_path: Path, capsys, case: str, uri: str) -> None:
    run_dir, _ = write_run(tmp_path, corruption=False, groups=False)
    (tmp_path / "empty").mkdir()
    args, expected = {
        "no_source": ([], "got neither"),
        "both": ([str(run_dir), "--sweep", str(tmp_path)], "got both"),
        "bad_uri": ([str(run_dir), "--tracking-uri", "nosuchscheme://x"],
                    "Expected a usable MLflow tracking URI"),
        "empty_sweep": (["--sweep", str(tmp_path / "empty")], "has none"),
        "missing_sweep": (["--sweep", str(tmp_path / "gone" / "x")], "does not exist"),
        "unknown_sweep": (["--sweep", "nosweep"], "Unknown sweep 'nosweep'"),
    }[case]
    code = main(["mlflow-log", *args, "--store", str(tmp_path / "none.sqlite"),
                 *([] if "--tracking-uri" in args else ["--tracking-uri", uri])])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rtb: error: ") and expected in lines[0], lines


def test_missing_mlflow_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    """Without the optional extra: one line naming the install command, exit 2."""
    run_dir, _ = write_run(tmp_path, corruption=False, groups=False)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # makes `import mlflow` fail
    assert main(["mlflow-log", str(run_dir), "--tracking-uri", _uri(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"rtb: error: {NOT_INSTALLED}"
    assert not (tmp_path / "mlflow.db").exists()
