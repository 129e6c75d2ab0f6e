"""Resume and deduplication: a sweep killed after some jobs, run again, runs
only the missing jobs; the store holds each job exactly once."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import tiny_overrides

from benchmark.compose import compose_spec
from benchmark.runner import run_benchmark
from benchmark.sweep import JOB_FILE, SWEEP_FILE, JobSkipped, complete_run, skip_hook

#: Jobs in the order the basic sweeper runs them: (v1, 1 step), (v1, 40 steps),
#: (v2, 1 step), (v2, 40 steps). The kill lands while a 40-step job runs.
SWEEP = ["model=[tiny_v1],[tiny_v2]", "attack=[pgd_linf]", "attack.pgd_linf.eps=[0.1]",
         "attack.pgd_linf.max_iter=1,40"]
JOBS = 4


def overrides(ckpt: Path, npz: Path, store: Path) -> list[str]:
    base = [o for o in tiny_overrides(ckpt, npz, versions=("v1", "v2"))
            if not o.startswith("attack")]
    return ["-m", *base, *SWEEP, f"store={store}"]


def runs_by_key(store: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with sqlite3.connect(store) as conn:
        for run_id, key in conn.execute("SELECT run_id, run_key FROM runs"):
            out.setdefault(key, []).append(run_id)
    return out


def rtb(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.Popen([sys.executable, "-m", "benchmark.cli", "run", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def kill_after_first_job(proc: subprocess.Popen[str], root: Path, timeout: float = 300) -> None:
    """SIGKILL the sweep (and its children) as soon as one job has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if any(root.rglob(JOB_FILE)):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.02)
    raise AssertionError(f"sweep ended or stalled before a job finished: {proc.communicate()}")


@pytest.mark.slow
def test_interrupted_sweep_resumes_with_only_the_missing_jobs(tiny_files, tmp_path) -> None:
    ckpt, npz = tiny_files
    store = tmp_path / "rtb.sqlite"
    args = overrides(ckpt, npz, store)

    first = rtb(*args, cwd=tmp_path)
    kill_after_first_job(first, tmp_path / "multirun")
    before = runs_by_key(store)
    assert 1 <= len(before) < JOBS  # interrupted: some jobs done, not all

    second = rtb(*args, cwd=tmp_path)
    out, err = second.communicate(timeout=600)
    assert second.returncode == 0, err[-3000:]

    after = runs_by_key(store)
    assert len(after) == JOBS
    assert all(len(ids) == 1 for ids in after.values())  # each job stored exactly once
    for key, ids in before.items():
        assert after[key] == ids  # the finished jobs were not run again

    (sweep_dir,) = {p.parent for p in (tmp_path / "multirun").rglob(SWEEP_FILE)
                    if (p.parent / "summary.md").exists()}
    jobs = [json.loads(p.read_text()) for p in sweep_dir.glob(f"*/{JOB_FILE}")]
    ran = {j["run_id"] for j in jobs if j["status"] == "ran"}
    skipped = {j["run_id"] for j in jobs if j["status"] == "skipped"}
    assert skipped == {ids[0] for ids in before.values()}
    assert ran == {ids[0] for key, ids in after.items() if key not in before}
    first_sweep = json.loads(next((tmp_path / "multirun").rglob(SWEEP_FILE)).read_text())
    assert f"{JOBS - len(before)} ran, {len(before)} skipped" in out
    assert first_sweep["sweep_id"] in out  # the re-run continues the same sweep id
    with sqlite3.connect(store) as conn:
        sweep_ids = {r[0] for r in conn.execute("SELECT sweep_id FROM runs")}
    assert sweep_ids == {first_sweep["sweep_id"]}


@pytest.mark.slow
def test_skip_existing_off_runs_again(run_cli, tiny_files, tmp_path) -> None:
    """A single run never skips (auto = off outside sweeps); a sweep with
    sweep.skip_existing=false runs a stored job again."""
    ckpt, npz = tiny_files
    store = tmp_path / "rtb.sqlite"
    base = [o for o in tiny_overrides(ckpt, npz) if not o.startswith("attack.fgsm")]
    single = [*base, "attack.fgsm.eps=[0.1]", f"store={store}"]
    assert run_cli("run", *single).returncode == 0
    assert run_cli("run", *single).returncode == 0
    assert sum(len(v) for v in runs_by_key(store).values()) == 2
    res = run_cli("run", "-m", *single, "sweep.skip_existing=true")
    assert res.returncode == 0 and "0 ran, 1 skipped" in res.stdout
    res = run_cli("run", "-m", *single, "sweep.skip_existing=false")
    assert res.returncode == 0 and "1 ran, 0 skipped" in res.stdout
    assert sum(len(v) for v in runs_by_key(store).values()) == 3


def test_key_hook_skips_a_stored_job_before_any_threat(tiny_files, tmp_path) -> None:
    ckpt, npz = tiny_files
    store = tmp_path / "rtb.sqlite"
    spec, resolved = compose_spec([*tiny_overrides(ckpt, npz), f"store={store}"])
    assert complete_run(str(store), "no-such-key") is None  # no store file yet
    first = run_benchmark(spec, tmp_path / "a", resolved_config=resolved, progress=False,
                          on_key=skip_hook(str(store)))
    with pytest.raises(JobSkipped) as info:
        run_benchmark(spec, tmp_path / "b", resolved_config=resolved, progress=False,
                      on_key=skip_hook(str(store)))
    assert info.value.run_id == first.record.run_id
    assert info.value.run_key == first.record.run_key
    assert not (tmp_path / "b").exists()  # nothing ran, nothing written
    assert runs_by_key(store) == {first.record.run_key: [first.record.run_id]}
