"""The run directory reader: what it accepts, and one ``RunDirError`` line
for each way a run reference can be wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from benchmark.core.errors import RunDirError, StoreError
from benchmark.rundir import (
    OUTCOMES_FILE,
    RECORD_FILE,
    find_run_dirs,
    read_run_dir,
    resolve_run_ref,
)


def _run_dir(path: Path, record: object, outcomes: pd.DataFrame | None = None) -> Path:
    path.mkdir(parents=True)
    (path / RECORD_FILE).write_text(json.dumps(record))
    if outcomes is not None:
        outcomes.to_parquet(path / OUTCOMES_FILE, index=False)
    return path


def test_reads_record_and_outcomes(tmp_path: Path) -> None:
    frame = pd.DataFrame({"sample": [0, 1], "correct": [True, False]})
    d = _run_dir(tmp_path / "r", {"run_id": "r1", "measurements": []}, frame)
    record, outcomes = read_run_dir(d)
    assert record["run_id"] == "r1"
    pd.testing.assert_frame_equal(outcomes, frame)
    run = resolve_run_ref(str(d / RECORD_FILE))
    assert (run.run_id, run.source) == ("r1", str(d))
    pd.testing.assert_frame_equal(run.outcomes(), frame)
    assert find_run_dirs([tmp_path]) == [d]


@pytest.mark.parametrize(("record", "message"), [
    ([1, 2], "holds a list"),
    ({"measurements": []}, "has no run_id"),
    ({"run_id": "x"}, "has no measurements"),
])
def test_not_a_run_record(tmp_path: Path, record: object, message: str) -> None:
    d = _run_dir(tmp_path / "r", record)
    with pytest.raises(RunDirError, match=message):
        read_run_dir(d)


@pytest.mark.parametrize(("ref", "message"), [
    ("empty", "holding record.json, but"),
    ("gone/run", "does not exist"),
    ("nosuchrun", "Unknown run 'nosuchrun'"),
])
def test_bad_references_are_one_error_type(tmp_path: Path, monkeypatch, ref: str,
                                           message: str) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RTB_STORE", str(tmp_path / "none.sqlite"))
    with pytest.raises(RunDirError, match=message) as exc:
        resolve_run_ref(ref)
    assert isinstance(exc.value, StoreError) and "\n" not in str(exc.value)
