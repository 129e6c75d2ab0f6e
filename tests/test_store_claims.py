"""Job claims (the store's ``jobs`` table): one claim of a key wins, a stale or
dead claim is taken over, failed and abandoned jobs are listed; identical
sweeps started together store each job exactly once. Also read-only opens of
older stores."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import tiny_overrides
from test_store import synth_run

from benchmark.store import MIGRATIONS, SCHEMA_VERSION, Store, fail_claim, job_owner


def _keyed_run(run_id: str, key: str) -> tuple[dict, object]:
    record, outcomes = synth_run(run_id, n=3)
    return {**record, "run_key": key}, outcomes


def test_two_claims_of_one_key_one_wins(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with Store(path) as a, Store(path) as b:
        first = a.claim_job("k1", "hostA:1")
        second = b.claim_job("k1", "hostB:2")
    assert (first.outcome, second.outcome) == ("claimed", "running")
    assert second.owner == "hostA:1"


def test_concurrent_claims_from_threads_one_wins(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    Store(path).close()
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def claim(i: int) -> None:
        with Store(path) as s:
            barrier.wait()
            outcomes.append(s.claim_job("same", f"otherhost:{i}").outcome)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["claimed"] + ["running"] * 7


def test_stale_and_dead_claims_are_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with Store(path) as s:
        assert s.claim_job("k", "otherhost:1").outcome == "claimed"
        assert s.claim_job("k", "me:2", stale_after=60).outcome == "running"
        assert s.jobs(stale_after=60)["status"].tolist() == ["running"]
        assert s.jobs(stale_after=0)["status"].tolist() == ["abandoned"]
        assert s.claim_job("k", "me:2", stale_after=0).outcome == "claimed"
        assert s.jobs()["owner"].tolist() == ["me:2"]
        # a process of this host that no longer exists holds no claim
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout.strip()
        owner = f"{job_owner().rpartition(':')[0]}:{dead}"
        assert s.claim_job("k2", owner).outcome == "claimed"
        assert s.jobs().set_index("run_key").loc["k2", "status"] == "abandoned"
        assert s.claim_job("k2", "me:2").outcome == "claimed"


def test_stored_run_completes_its_claim_and_later_claims_skip(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with Store(path) as s:
        assert s.claim_job("key1", "me:1").outcome == "claimed"
        s.save_run(*_keyed_run("r1", "key1"))
        jobs = s.jobs()
        assert jobs[["run_key", "state", "run_id"]].values.tolist() == [["key1", "complete", "r1"]]
        got = s.claim_job("key1", "other:2")
        assert (got.outcome, got.run_id) == ("complete", "r1")
        assert not s.heartbeat("key1", "me:1")  # the claim is no longer running


def test_failed_job_is_listed_and_taken_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from benchmark.cli import main

    path = tmp_path / "s.sqlite"
    with Store(path) as s:
        s.save_run(*_keyed_run("r1", "done-key"))
        assert s.claim_job("failing-key-123", job_owner()).outcome == "claimed"
        assert s.claim_job("abandoned-key", "elsewhere:7").outcome == "claimed"
        s._write(lambda c: c.execute("UPDATE jobs SET heartbeat = 0 WHERE run_key = ?",
                                     ("abandoned-key",)))
    fail_claim(path, "failing-key-123", RuntimeError("boom"))
    fail_claim(path, "no-such-key", "ignored")  # no claim of ours: nothing happens
    with Store(path) as s:
        states = s.jobs().set_index("run_key")
    assert states.loc["failing-key-123", "status"] == "failed"
    assert states.loc["failing-key-123", "error"] == "RuntimeError: boom"
    assert states.loc["abandoned-key", "status"] == "abandoned"
    assert main(["store", "list", "--store", str(path)]) == 0
    out = capsys.readouterr().out
    assert "r1" in out and "failing-key-" in out and "failed" in out and "boom" in out
    assert "abandoned" in out and "elsewhere:7" in out and "done-key" not in out
    with Store(path) as s:
        assert s.claim_job("failing-key-123", "other:3").outcome == "claimed"


def test_read_only_open_of_an_older_store(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A v1 store is read as it is by readers, and migrated only by a writer."""
    import json

    from benchmark.cli import main

    path = tmp_path / "old.sqlite"
    record, _ = synth_run("old", n=2)
    conn = sqlite3.connect(path, isolation_level=None)
    MIGRATIONS[0](conn)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO runs (run_id, name, record, stored_at) VALUES (?, ?, ?, ?)",
                 ("old", "synth", json.dumps(record), "2024"))
    conn.close()
    before = path.read_bytes()
    with Store(path, readonly=True) as s:
        assert s.schema_version == 1 and s.run_ids() == ["old"]
        assert s.checks().empty and s.jobs().empty
    assert main(["store", "list", "--store", str(path)]) == 0
    assert main(["store", "info", "--store", str(path)]) == 0
    out = capsys.readouterr().out
    assert "old" in out and "schema version: 1" in out and "migrates it" in out
    assert path.read_bytes() == before
    with Store(path) as s:
        assert s.schema_version == SCHEMA_VERSION


@pytest.mark.slow
def test_identical_sweeps_started_together_store_each_job_once(tiny_files, tmp_path) -> None:
    ckpt, npz = tiny_files
    store = tmp_path / "rtb.sqlite"
    base = [o for o in tiny_overrides(ckpt, npz) if not o.startswith("attack.fgsm")]
    args = ["run", "-m", *base, "attack.fgsm.eps=[0.1]", "seed=0,1,2", f"store={store}",
            "sweep.skip_existing=true"]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    procs = [subprocess.Popen([sys.executable, "-m", "benchmark.cli", *args], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (_out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-2000:]
    with sqlite3.connect(store) as conn:
        keys = [r[0] for r in conn.execute("SELECT run_key FROM runs")]
        states = [r[0] for r in conn.execute("SELECT state FROM jobs")]
    assert len(keys) == 3 and len(set(keys)) == 3, keys
    assert states == ["complete"] * 3
    ran = sum(int(out.split(" ran,")[0].rsplit(" ", 1)[-1]) for out, _ in results
              if " ran," in out)
    assert ran == 3, [out[-600:] for out, _ in results]
