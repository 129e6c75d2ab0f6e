"""The SQLite results store: round trip, concurrent writers, a writer killed
mid-transaction, schema migration, rebuild from run directories, export.

Top-level imports stay light (no torch) because writer subprocesses import
``synth_run`` from this module.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from benchmark import store as store_mod
from benchmark.core.errors import StoreError
from benchmark.store import MIGRATIONS, SCHEMA_VERSION, Store, export, rebuild

TESTS = Path(__file__).resolve().parent


def synth_run(run_id: str, n: int = 50, versions: tuple[str, ...] = ("v1", "v2"), seed: int = 0,
              checks: list[dict[str, Any]] | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """A record dict (as in record.json) and its outcomes frame, from random
    per-sample outcomes; the measurements are computed from the outcomes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    frames, measurements = [], []
    for v in versions:
        for family, threat, param in (("clean", "clean", np.nan), ("attack", "fgsm", 0.1)):
            pred = np.where(rng.random(n) < 0.7, y, (y + 1) % 3)
            correct = pred == y
            cols: dict[str, Any] = {
                "model": "net", "version": v, "family": family, "threat": threat,
                "param": param, "sample": np.arange(n), "pred": pred, "correct": correct,
                "linf": np.where(family == "attack", rng.random(n), np.nan),
            }
            frames.append(pd.DataFrame(cols))
            measurements.append({
                "run": run_id, "model": "net", "version": v, "family": family, "threat": threat,
                "param": None if np.isnan(param) else param, "group_feature": "",
                "group_value": "", "metric": "accuracy", "value": float(correct.mean()), "n": n,
                "ci_low": None, "ci_high": None, "definition": "fraction correct",
            })
    record = {
        "schema": 1, "run_id": run_id, "name": "synth", "started": f"2024-01-01T00:00:{seed % 60:02d}",
        "finished": "2024-01-01T00:01:00", "config": {"seed": seed}, "overrides": [],
        "config_hash": f"c{seed}", "run_key": f"k{run_id}",
        "models": {f"net@{v}": {"name": "net", "version": v, "sha256": "0" * 64} for v in versions},
        "data": {"name": "synth", "fingerprint": "f" * 64, "n": n},
        "seed": seed, "device": "cpu", "measurements": measurements,
        "checks": checks or [], "extra": {},
    }
    return record, pd.concat(frames, ignore_index=True)


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["version", "family", "sample"]).reset_index(drop=True)


def test_round_trip(tmp_path: Path) -> None:
    record, outcomes = synth_run("r1", checks=[{"check": "nan", "status": "fail",
                                                "message": "3 NaN", "evidence": {"idx": [1]},
                                                "subject": "data"}])
    with Store(tmp_path / "s.sqlite") as s:
        assert s.save_run(record, outcomes) == "r1"
        assert s.record("r1") == record
        got = _sorted(s.outcomes("r1"))[list(outcomes.columns)]
        pd.testing.assert_frame_equal(got, _sorted(outcomes), check_dtype=False)
        m = s.measurements(["r1"])
        assert list(m["value"]) == [x["value"] for x in record["measurements"]]
        assert m["param"].isna().sum() == 2
        assert s.runs(model="net", version="v2")["run_id"].tolist() == ["r1"]
        assert s.runs(version="v9").empty
        assert s.models(["r1"])["key"].tolist() == ["net@v1", "net@v2"]
        c = s.checks(["r1"])
        assert c["status"].tolist() == ["fail"] and c["evidence"][0] == {"idx": [1]}
        assert s.has_run_key("kr1") and not s.has_run_key("nope")
        assert s.schema_version == SCHEMA_VERSION
        # saving the same run again replaces it, nothing is counted twice
        s.save_run(record, outcomes)
        assert len(s.outcomes("r1")) == len(outcomes)
        assert s.integrity_problems() == []


def test_resolve_run_prefix_and_errors(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as s:
        for rid in ("20240101-a", "20240101-b", "20240202-c"):
            s.save_run(*synth_run(rid, n=5))
        assert s.resolve_run("20240202") == "20240202-c"
        with pytest.raises(StoreError, match="ambiguous"):
            s.resolve_run("20240101")
        with pytest.raises(StoreError, match="Unknown run"):
            s.resolve_run("1999")
        with pytest.raises(StoreError, match="non-empty `run_id`"):
            s.save_run({"name": "x"})


def test_open_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="No results store"):
        Store(tmp_path / "missing.sqlite", create=False)
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="rtb results store"):
        Store(bad)
    with pytest.raises(StoreError, match="is a directory"):
        Store(tmp_path)
    newer = tmp_path / "newer.sqlite"
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this rtb"):
        Store(newer)


def test_migration_from_v1_keeps_runs_and_backfills_checks(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    record, _ = synth_run("old", n=4, checks=[{"check": "eval_mode", "status": "warn",
                                               "message": "m", "evidence": {}}])
    conn = sqlite3.connect(path, isolation_level=None)
    MIGRATIONS[0](conn)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO runs (run_id, name, record, stored_at) VALUES (?, ?, ?, ?)",
                 ("old", "synth", json.dumps(record), "2024"))
    conn.execute("INSERT INTO models VALUES ('old', 'net@v1', 'net', 'v1', NULL)")
    conn.close()
    with Store(path) as s:
        assert s.schema_version == SCHEMA_VERSION
        assert s.run_ids() == ["old"]
        assert s.runs(version="v1")["run_id"].tolist() == ["old"]
        checks = s.checks()
        assert checks[["run_id", "name", "status"]].values.tolist() == [["old", "eval_mode", "warn"]]
        s.save_run(*synth_run("new", n=4))  # the migrated schema takes new runs
        assert sorted(s.run_ids()) == ["new", "old"]


WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_store import synth_run
    from benchmark.store import Store
    wid, runs = int(sys.argv[1]), int(sys.argv[2])
    with Store({path!r}) as s:
        for i in range(runs):
            s.save_run(*synth_run(f"w{{wid}}-r{{i}}", n=40, seed=wid * 1000 + i))
    print("done", wid)
""")


@pytest.mark.slow
def test_eight_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    script = WRITER.format(tests=str(TESTS), path=str(path))
    writers, runs = 8, 15
    procs = [subprocess.Popen([sys.executable, "-c", script, str(w), str(runs)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w in range(writers)]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0 and out.startswith("done"), err
        assert "locked" not in err
    with Store(path) as s:
        expected = {f"w{w}-r{i}" for w in range(writers) for i in range(runs)}
        assert set(s.run_ids()) == expected
        counts = s._frame("SELECT run_id, count(*) AS n FROM outcomes GROUP BY run_id")
        assert len(counts) == len(expected) and set(counts["n"]) == {40 * 4}
        m = s._frame("SELECT run_id, count(*) AS n FROM measurements GROUP BY run_id")
        assert len(m) == len(expected) and set(m["n"]) == {4}
        assert s.integrity_problems() == []


def test_eight_writer_threads_lose_nothing(tmp_path: Path) -> None:
    """The same contention within one process (own connection per thread): fast enough for CI."""
    import threading

    path = tmp_path / "shared.sqlite"
    errors: list[BaseException] = []

    def write(wid: int) -> None:
        try:
            with Store(path) as s:
                for i in range(10):
                    s.save_run(*synth_run(f"t{wid}-{i}", n=20, seed=wid * 100 + i))
        except BaseException as exc:  # collected and re-raised by the test below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Store(path) as s:
        assert set(s.run_ids()) == {f"t{w}-{i}" for w in range(8) for i in range(10)}
        assert s._read("SELECT count(*) FROM outcomes")[0][0] == 80 * 20 * 4
        assert s.integrity_problems() == []


KILLED = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_store import synth_run
    import benchmark.store as st
    with st.Store({path!r}) as s:
        s.save_run(*synth_run("kept", n=30))
        real = st._outcome_rows
        def half_then_hang(run_id, frame):
            rows = list(real(run_id, frame))
            yield from rows[: len(rows) // 2]
            print("inside", flush=True)
            time.sleep(600)
            yield from rows[len(rows) // 2 :]
        st._outcome_rows = half_then_hang
        s.save_run(*synth_run("kept", n=30, seed=7))  # replacing a stored run
""")


def test_writer_killed_mid_transaction_leaves_store_consistent(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED.format(tests=str(TESTS), path=str(path))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.strip() == "inside", proc.stderr.read() if proc.stderr else ""
        assert Path(str(path) + "-wal").exists()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    record, outcomes = synth_run("kept", n=30)
    with Store(path, timeout=10) as s:
        assert s.integrity_problems() == []
        assert s.run_ids() == ["kept"]
        assert s.record("kept") == record  # the first version, untouched
        assert len(s.outcomes("kept")) == len(outcomes)
        s.save_run(*synth_run("after", n=3))  # no stale lock
        assert sorted(s.run_ids()) == ["after", "kept"]


def _write_run_dir(run_dir: Path, run_id: str, seed: int = 0) -> dict[str, Any]:
    from benchmark.record import OUTCOMES_FILE, RECORD_FILE

    record, outcomes = synth_run(run_id, n=10, seed=seed)
    run_dir.mkdir(parents=True)
    (run_dir / RECORD_FILE).write_text(json.dumps(record))
    outcomes.to_parquet(run_dir / OUTCOMES_FILE, index=False)
    return record


def test_rebuild_from_run_dirs(tmp_path: Path) -> None:
    a = _write_run_dir(tmp_path / "outputs" / "d1" / "t1", "a", seed=1)
    _write_run_dir(tmp_path / "multirun" / "d1" / "0", "b", seed=2)
    path = tmp_path / "s.sqlite"
    with Store(path) as s:
        s.save_run(*synth_run("only_in_store", n=3))
    assert sorted(rebuild(path, [tmp_path / "outputs", tmp_path / "multirun"])) == ["a", "b"]
    with Store(path) as s:
        assert set(s.run_ids()) == {"a", "b", "only_in_store"}
        assert s.record("a") == a
        assert s.runs()["run_dir"].str.endswith("t1").sum() == 1
    rebuild(path, [tmp_path / "outputs"], fresh=True)
    with Store(path) as s:
        assert s.run_ids() == ["a"]
        assert len(s.outcomes("a")) == 10 * 4
    with pytest.raises(StoreError, match="does not exist"):
        rebuild(path, [tmp_path / "nowhere"])


def test_export_csv_parquet_and_frame(tmp_path: Path) -> None:
    record, outcomes = synth_run("r1", n=12)
    with Store(tmp_path / "s.sqlite") as s:
        s.save_run(record, outcomes)
        assert export(s, "outcomes", tmp_path / "o.parquet") == len(outcomes)
        back = pd.read_parquet(tmp_path / "o.parquet")
        pd.testing.assert_frame_equal(_sorted(back)[list(outcomes.columns)], _sorted(outcomes),
                                      check_dtype=False)
        assert export(s, "measurements", tmp_path / "m.csv") == 4
        m = pd.read_csv(tmp_path / "m.csv")
        assert m["value"].tolist() == [x["value"] for x in record["measurements"]]
        # an empty group value reads back the same from both formats: missing
        assert export(s, "measurements", tmp_path / "m.parquet") == 4
        mp = pd.read_parquet(tmp_path / "m.parquet")
        for col in ("group_feature", "group_value"):
            assert m[col].isna().tolist() == mp[col].isna().tolist()
            assert m[col].isna().any()
            assert m[col].dropna().astype(str).tolist() == mp[col].dropna().astype(str).tolist()
        runs = s.frame("runs")
        assert json.loads(runs["record"][0]) == record
        with pytest.raises(StoreError, match="export format"):
            export(s, "runs", tmp_path / "r.xlsx")
        with pytest.raises(StoreError, match="Unknown store table"):
            s.frame("secrets")


def test_store_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str]) -> None:
    from benchmark.cli import main

    with Store(tmp_path / "s.sqlite") as s:
        s.save_run(*synth_run("20240101-x", n=5))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(store_mod.STORE_ENV, str(tmp_path / "s.sqlite"))
    assert main(["store", "list"]) == 0
    out = capsys.readouterr().out
    assert "20240101-x" in out and "net@v1 net@v2" in out
    assert main(["store", "export", "outcomes", "o.csv", "--run", "2024"]) == 0
    assert len(pd.read_csv(tmp_path / "o.csv")) == 20
    assert main(["store", "info"]) == 0
    assert "outcomes: 20 rows" in capsys.readouterr().out
    assert main(["store", "list", "--store", str(tmp_path / "none.sqlite")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rtb: error: No results store") and len(err.strip().splitlines()) == 1
    (tmp_path / "outputs").mkdir()
    _write_run_dir(tmp_path / "outputs" / "day" / "run", "from_dir")
    assert main(["store", "rebuild"]) == 0
    with Store(tmp_path / "s.sqlite") as s:
        assert sorted(s.run_ids()) == ["20240101-x", "from_dir"]


def test_resolve_store_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(store_mod.STORE_ENV, raising=False)
    assert store_mod.resolve_store_path() == tmp_path / "rtb.sqlite"
    monkeypatch.setenv(store_mod.STORE_ENV, "sub/x.sqlite")
    assert store_mod.resolve_store_path() == tmp_path / "sub" / "x.sqlite"
    assert store_mod.resolve_store_path("/abs/y.sqlite") == Path("/abs/y.sqlite")


def test_busy_store_times_out_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    Store(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with Store(path, timeout=0.3) as s, pytest.raises(StoreError, match="stayed busy"):
            s.save_run(*synth_run("x", n=2))
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_save_run_dir_failure_names_the_safe_run_dir(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _write_run_dir(run_dir, "r1")
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match="the run's files are safe in .*rtb store rebuild"):
        store_mod.save_run_dir(bad, run_dir)
    assert store_mod.save_run_dir(tmp_path / "good.sqlite", run_dir) == "r1"
