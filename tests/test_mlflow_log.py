"""``rtb mlflow-log`` against a real local MLflow tracking store (SQLite),
read back with ``mlflow.search_runs``. MLflow is in the ``dev`` extra the
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
from benchmark.mlflow_log import NOT_INSTALLED, flatten_metrics, metric_key


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
    assert metric_key({**row, "family": "clean", "threat": "clean", "param": None}) == \
        "acc.clean.mnist_cnn_v2"
    assert metric_key({**row, "family": "corruption", "threat": "fog", "param": 3.0,
                       "group_feature": "sex", "group_value": "f@1", "metric": "mce"}) == \
        "mce.fog.sev_3.sex_f_1.mnist_cnn_v2"
    with pytest.raises(DataError, match="occurs twice"):
        flatten_metrics([row, dict(row)])
    assert flatten_metrics([{**row, "value": float("nan")}]) == {}


def test_run_is_logged_and_read_back(tmp_path: Path, capsys, uri: str) -> None:
    run_dir, outcomes = write_run(tmp_path, corruption=True)
    assert main(["mlflow-log", str(run_dir), "--tracking-uri", uri]) == 0
    df = _search(uri)
    assert len(df) == 1
    row = df.iloc[0]
    assert row["status"] == "FINISHED"
    # every metric equals a recomputation from the per-sample outcomes
    classes = np.arange(N) % CLASSES
    expected = {}
    for o in outcomes:
        t = o.threat
        param = "" if t.param is None else f".{'eps' if t.family == 'attack' else 'sev'}_{t.param:g}"
        expected[f"acc.{t.name}{param}.tiny_{o.version}"] = o.correct.mean()
        for g in range(CLASSES):
            expected[f"acc.{t.name}{param}.class_{g}.tiny_{o.version}"] = o.correct[classes == g].mean()
    logged = {c[len("metrics."):]: row[c] for c in df.columns
              if c.startswith("metrics.") and not np.isnan(row[c])}
    assert set(expected) <= set(logged)
    for key, value in expected.items():
        assert logged[key] == pytest.approx(value), key
    assert row["params.data.n_samples"] == "60" and row["params.seed"] == "0"
    assert row["params.rtb.data"] == "blobs"
    assert row["tags.rtb.config_hash"] == "c" * 64
    assert row["tags.rtb.model_versions"] == "tiny@v1 tiny@v2"
    assert row["tags.rtb.sha256.tiny_v1"] == "0" * 64 and row["tags.rtb.sha256.tiny_v2"] == "1" * 64
    assert row["tags.rtb.run_id"] == run_dir.name
    # logging the same run again adds nothing
    capsys.readouterr()
    assert main(["mlflow-log", str(run_dir), "--tracking-uri", uri]) == 0
    assert "already logged" in capsys.readouterr().out
    assert len(_search(uri)) == 1


def test_sweep_is_one_parent_with_a_child_per_job(tmp_path: Path, uri: str) -> None:
    sweep = tmp_path / "multirun" / "12-00-00-default"
    for job, version in enumerate(("v1", "v2", "v3")):
        write_run(tmp_path, versions=(version,), seed=job, run_id=f"2024010{job + 1}-000000-job",
                  corruption=False, groups=False, extra={"sweep_id": "sw1"},
                  root_dir=sweep / str(job))
    assert main(["mlflow-log", "--sweep", str(sweep), "--tracking-uri", uri]) == 0
    df = _search(uri)
    parents = df[df["tags.rtb.kind"] == "sweep"]
    assert len(parents) == 1 and parents.iloc[0]["tags.rtb.sweep_id"] == "sw1"
    children = df[df["tags.rtb.kind"] != "sweep"]
    assert len(children) == 3
    assert set(children["tags.mlflow.parentRunId"]) == {parents.iloc[0]["run_id"]}
    assert sorted(children["tags.rtb.model_version"]) == ["tiny@v1", "tiny@v2", "tiny@v3"]
    v3 = children[children["tags.rtb.model_version"] == "tiny@v3"].iloc[0]
    assert not np.isnan(v3["metrics.acc.clean.tiny_v3"])
    assert np.isnan(v3["metrics.acc.clean.tiny_v1"])
    # a job that finished later joins the same parent; the others are not logged twice
    write_run(tmp_path, versions=("v4",), seed=9, run_id="20240109-000000-job", corruption=False,
              groups=False, extra={"sweep_id": "sw1"}, root_dir=sweep / "3")
    assert main(["mlflow-log", "--sweep", str(sweep), "--tracking-uri", uri]) == 0
    df = _search(uri)
    assert (df["tags.rtb.kind"] == "sweep").sum() == 1
    assert len(df) == 5


def test_sweep_from_the_store(tmp_path: Path, uri: str) -> None:
    store = tmp_path / "rtb.sqlite"
    for job in range(2):
        d, _ = write_run(tmp_path, versions=("v1",), seed=job, run_id=f"2024010{job + 1}-x",
                         corruption=False, groups=False)
        store_mod.save_run_dir(store, d, sweep_id="sw2")
    assert main(["mlflow-log", "--sweep", "sw2", "--store", str(store), "--tracking-uri", uri]) == 0
    df = _search(uri)
    assert len(df) == 3 and (df["tags.mlflow.parentRunId"].dropna().nunique() == 1)
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
