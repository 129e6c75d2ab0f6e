"""Sweeps: the `sweep:` config section, thread caps per launcher, sweep ids,
job counts, collision-free sweep dirs, the content key, and real multiruns
(sequential; joblib and submitit's local executor on 2 versions x 2 attacks x
2 eps lists) whose every job reaches the store and `rtb compare --sweep`."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from conftest import make_evalset, make_model, tiny_overrides

from benchmark.compose import compose_spec
from benchmark.core.errors import ConfigError
from benchmark.core.specs import SweepSpec
from benchmark.runner import run_key
from benchmark.schema import parse_sweep
from benchmark.sweep import (
    JOB_FILE,
    SUMMARY_CSV,
    SUMMARY_MD,
    SWEEP_FILE,
    auto_threads,
    count_jobs,
    eta,
    summary_metrics,
    sweep_id_for,
)

ATTACK_OPTION = """\
defaults:
  - {attack}
  - _self_

{attack}:
  eps: {eps}
{extra}"""

EPS_LISTS = {"lo": "[0.05, 0.1]", "hi": "[0.2, 0.3]"}


def sweep_overrides(ckpt: Path, npz: Path, store: Path) -> list[str]:
    """Tiny two-version overrides plus attack options ``{fgsm,pgd_linf}_{lo,hi}``
    (each attack with two eps lists) in the tiny config dir."""
    base = [o for o in tiny_overrides(ckpt, npz, versions=("v1", "v2"))
            if not o.startswith("attack")]
    attack_dir = ckpt.parent / "tiny_conf" / "attack"
    attack_dir.mkdir(parents=True, exist_ok=True)
    for attack, extra in (("fgsm", ""), ("pgd_linf", "  max_iter: 3\n")):
        for level, eps in EPS_LISTS.items():
            (attack_dir / f"{attack}_{level}.yaml").write_text(
                ATTACK_OPTION.format(attack=attack, eps=eps, extra=extra))
    return [*base, f"store={store}"]


FULL_SWEEP = ["model=[tiny_v1],[tiny_v2]",
              "attack=[fgsm_lo],[fgsm_hi],[pgd_linf_lo],[pgd_linf_hi]"]


def sweep_dir_of(root: Path) -> Path:
    (path,) = {p.parent for p in root.rglob(SWEEP_FILE)}
    return path


def stored_runs(store: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(store) as conn:
        return conn.execute("SELECT run_id, run_key, sweep_id FROM runs").fetchall()


def check_sweep(run_cli, tmp_path: Path, store: Path, jobs: int, stdout: str) -> str:
    """Every job ran once, reached the store with the sweep id, has its logs;
    ``rtb compare --sweep`` reads every job's run."""
    sweep_dir = sweep_dir_of(tmp_path / "multirun")
    info = json.loads((sweep_dir / SWEEP_FILE).read_text())
    sweep_id = info["sweep_id"]
    assert info["jobs"] == jobs
    assert f"sweep {sweep_id}: {jobs} ran, 0 skipped" in stdout
    runs = stored_runs(store)
    assert len(runs) == jobs and {r[2] for r in runs} == {sweep_id}
    assert len({r[1] for r in runs}) == jobs  # distinct content keys
    job_files = sorted(sweep_dir.glob(f"*/{JOB_FILE}"))
    assert len(job_files) == jobs
    for path in job_files:
        job = json.loads(path.read_text())
        assert job["status"] == "ran" and job["sweep_id"] == sweep_id
        assert "Evaluating" in (path.parent / "app.log").read_text()  # job log in the job dir
    assert (sweep_dir / SUMMARY_MD).is_file() and (sweep_dir / SUMMARY_CSV).is_file()
    res = run_cli("compare", "--sweep", sweep_id, "--store", str(store))
    assert res.returncode == 0, res.stderr
    assert "run(s) " in res.stdout  # the header names the first runs; json lists them all
    res = run_cli("compare", "--sweep", sweep_id, "--store", str(store), "--format", "json")
    assert res.returncode == 0, res.stderr
    compared = {r for row in json.loads(res.stdout)["rows"] for r in row["runs"]}
    assert compared == {run_id for run_id, _, _ in runs}
    return sweep_id


# ----------------------------------------------------------------------------- config

def test_parse_sweep_defaults_and_values() -> None:
    assert parse_sweep({"id": None, "skip_existing": "auto", "threads": "auto"}) == SweepSpec()
    assert parse_sweep({"id": "s1", "skip_existing": False, "threads": 2}) == SweepSpec(
        id="s1", skip_existing=False, threads=2)


@pytest.mark.parametrize(("section", "message"), [
    ([1], "Expected `sweep` to be a mapping"),
    ({"thread": 1}, "Unknown config key `sweep.thread`"),
    ({"id": "a/b"}, "Expected `sweep.id` to be a non-empty name without '/'"),
    ({"skip_existing": "yes"}, "Expected `sweep.skip_existing` to be true, false or auto"),
    ({"threads": 0}, "Expected `sweep.threads` to be a positive integer or auto"),
    ({"threads": True}, "Expected `sweep.threads` to be a positive integer or auto"),
])
def test_parse_sweep_rejects_bad_values(section, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_sweep(section)


def test_sweep_section_reaches_the_run_spec(tiny_files) -> None:
    ckpt, npz = tiny_files
    spec, _ = compose_spec([*tiny_overrides(ckpt, npz), "sweep.threads=1"])
    assert spec.sweep == SweepSpec(threads=1)
    with pytest.raises(ConfigError, match="sweep.threads"):
        compose_spec([*tiny_overrides(ckpt, npz), "sweep.threads=-1"])


def test_auto_threads_splits_the_cores_between_parallel_jobs() -> None:
    cpus = os.cpu_count() or 1
    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert auto_threads({"_target_": joblib, "n_jobs": 2}) == max(1, cpus // min(2, cpus))
    assert auto_threads({"_target_": joblib, "n_jobs": -1}) == 1
    slurm = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert auto_threads({"_target_": slurm, "cpus_per_task": 4}) == 4
    ray = "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
    assert auto_threads({"_target_": ray, "ray": {"remote": {"num_cpus": 3}}}) == 3
    basic = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    assert auto_threads({"_target_": basic}) is None and auto_threads(None) is None


def test_sweep_id_ignores_how_and_where_a_sweep_runs() -> None:
    content = ["model=[a],[b]", "attack.fgsm.eps=[0.1],[0.3]"]
    sid = sweep_id_for("default", content)
    assert sid.startswith("default-")
    assert sweep_id_for("default", [*reversed(content), "hydra/launcher=parallel",
                                    "hydra.launcher.n_jobs=2", "sweep.threads=1",
                                    "store=/x.sqlite"]) == sid
    assert sweep_id_for("default", [*content, "seed=1"]) != sid
    assert sweep_id_for("other", content) != sid


def test_count_jobs_is_the_product_of_the_sweeps() -> None:
    assert count_jobs(["model=[a],[b]", "attack=x,y,z", "seed=0"]) == 6
    assert count_jobs(["seed=0"]) == 1
    assert count_jobs(["seed=0,1"], {"batch_size": "16,32,64"}) == 6
    assert count_jobs(["seed=range(0,3)"]) == len(range(0, 3))
    assert count_jobs(["lr=interval(0,1)"]) is None  # not a basic sweep: count unknown


def test_eta_from_mean_job_time() -> None:
    assert eta(2, 8, 20.0) == "ETA 0:01:00"
    assert eta(8, 8, 80.0) == "ETA 0:00:00"
    assert eta(0, 8, 5.0) == "ETA ?" and eta(3, None, 5.0) == "ETA ?"


def test_summary_metrics_pick_clean_and_worst_attack() -> None:
    values = {0.1: 0.8, 0.2: 0.55, 0.3: 0.6}
    ms = [{"metric": "accuracy", "model": "m", "version": "v1", "family": "clean",
           "threat": "clean", "param": None, "value": 0.9, "group_feature": ""}]
    ms += [{"metric": "accuracy", "model": "m", "version": "v1", "family": "attack",
            "threat": "pgd", "param": e, "value": v, "group_feature": ""} for e, v in values.items()]
    ms.append({"metric": "accuracy", "model": "m", "version": "v1", "family": "attack",
               "threat": "pgd", "param": 0.3, "value": 0.0, "group_feature": "class"})
    (row,) = summary_metrics(ms)
    worst_eps = min(values, key=values.__getitem__)
    assert row == {"model": "m@v1", "clean": 0.9, "worst": values[worst_eps],
                   "worst_threat": f"pgd eps={worst_eps:g}"}


def test_run_key_leaves_out_paths_store_sweep_and_hydra() -> None:
    models, data = [make_model()], make_evalset()
    resolved = {"name": "a", "seed": 0, "data": {"name": "npz", "root": "/a/x.npz"},
                "model": {"tiny_v1": {"checkpoint": "/a/m.pt", "version": "v1"}},
                "store": "a.sqlite", "sweep": {"threads": None}}
    moved = {"name": "b", "seed": 0, "data": {"name": "npz", "root": "/b/x.npz"},
             "model": {"tiny_v1": {"checkpoint": "/b/m.pt", "version": "v1"}},
             "store": "b.sqlite", "sweep": {"threads": 2}, "hydra": {"launcher": "x"}}
    assert run_key(resolved, models, data) == run_key(moved, models, data)
    assert run_key({**resolved, "seed": 1}, models, data) != run_key(resolved, models, data)
    assert run_key(resolved, [make_model(version="v2")], data) != run_key(resolved, models, data)
    assert run_key(resolved, models, make_evalset(seed=3)) != run_key(resolved, models, data)


def test_sweep_dirs_of_two_sweeps_in_the_same_second_differ() -> None:
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import setup_globals

    setup_globals()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="conf", version_base="1.3"):
            first = compose(config_name="config", return_hydra_config=True)
            second = compose(config_name="config", return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    a, b = str(first.hydra.sweep.dir), str(second.hydra.sweep.dir)
    assert a == str(first.hydra.sweep.dir)  # resolved once per sweep: jobs agree on it
    assert a != b


# ----------------------------------------------------------------------------- multiruns

def test_sequential_sweep_small(run_cli, tiny_files, tmp_path) -> None:
    """Fast variant: two jobs with the default launcher."""
    ckpt, npz = tiny_files
    store = tmp_path / "rtb.sqlite"
    res = run_cli("run", "-m", *sweep_overrides(ckpt, npz, store), "model=[tiny_v1],[tiny_v2]",
                  "attack=[fgsm_lo]")
    assert res.returncode == 0, res.stderr[-3000:]
    check_sweep(run_cli, tmp_path, store, 2, res.stdout)
    assert "job 2/2 done" in res.stderr + res.stdout


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [
    ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"],
    ["hydra/launcher=slurm_local"],
], ids=["joblib", "submitit_local"])
def test_full_sweep_with_parallel_launchers(run_cli, tiny_files, tmp_path, launcher) -> None:
    """2 versions x 2 attacks x 2 eps lists = 8 jobs."""
    ckpt, npz = tiny_files
    store = tmp_path / "rtb.sqlite"
    res = run_cli("run", "-m", *sweep_overrides(ckpt, npz, store), *FULL_SWEEP, *launcher)
    assert res.returncode == 0, res.stderr[-3000:]
    check_sweep(run_cli, tmp_path, store, 8, res.stdout)
    sweep_dir = sweep_dir_of(tmp_path / "multirun")
    threads = {json.loads(p.read_text())["threads"] for p in sweep_dir.glob(f"*/{JOB_FILE}")}
    cpus = os.cpu_count() or 1
    assert threads == {max(1, cpus // min(2, cpus)) if "parallel" in launcher[0] else 1}
