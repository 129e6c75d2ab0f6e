"""`rtb reproduce`: a stored run re-runs to identical per-sample outcomes; a
changed checkpoint or dataset is refused (exit 2) before any work; a
difference is reported (exit 1) with the environment fields that differ."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_overrides, write_checkpoint, write_npz

from benchmark.cli import main
from benchmark.compose import compose_spec
from benchmark.record import OUTCOMES_FILE, RECORD_FILE
from benchmark.reproduce import (
    compare_outcomes,
    environment_diff,
    load_recorded,
)
from benchmark.runner import run_benchmark
from benchmark.store import open_store


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    """One tiny run (FGSM + PGD, two versions) written to a run dir and a store;
    tests that change its files put them back."""
    tmp_path = tmp_path_factory.mktemp("stored")
    ckpt = write_checkpoint(tmp_path / "tiny.pt")
    npz = write_npz(tmp_path / "tiny.npz")
    store = tmp_path / "rtb.sqlite"
    overrides = [*tiny_overrides(ckpt, npz, versions=("v1", "v2")),
                 "attack=[fgsm,pgd_linf]", "attack.pgd_linf.eps=[0.1]",
                 "attack.pgd_linf.max_iter=3", "~corruption", "~fault",
                 f"store={store}"]
    overrides = [o for o in overrides if not o.startswith(("attack=[fgsm]", "attack.fgsm"))]
    spec, resolved = compose_spec(overrides)
    run_dir = tmp_path / "run"
    result = run_benchmark(spec, run_dir, resolved_config=resolved, overrides=overrides,
                           progress=False)
    return {"run_id": result.record.run_id, "run_dir": run_dir, "store": store,
            "ckpt": ckpt, "npz": npz}


def test_reproduce_from_store_is_identical(stored_run, tmp_path, capsys) -> None:
    out = tmp_path / "again"
    code = main(["reproduce", str(stored_run["run_id"]), "--store", str(stored_run["store"]),
                 "--out", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert text.startswith("identical:") and "run key matches" in text
    # independent check: the re-run's parquet equals the recorded one, row for row
    before = pd.read_parquet(Path(stored_run["run_dir"]) / OUTCOMES_FILE)
    after = pd.read_parquet(out / OUTCOMES_FILE)
    assert len(before) == 2 * (1 + 4 + 1) * 30  # versions x (clean + fgsm eps + pgd eps) x n
    pd.testing.assert_frame_equal(before, after)
    # the reproduction is not a second result in the store
    with open_store(stored_run["store"], create=False) as s:
        assert s.run_ids() == [stored_run["run_id"]]
    assert json.loads((out / RECORD_FILE).read_text())["extra"]["reproduces"] == stored_run["run_id"]


def test_reproduce_accepts_a_run_dir(stored_run, tmp_path, capsys) -> None:
    code = main(["reproduce", str(stored_run["run_dir"]), "--out", str(tmp_path / "again"),
                 "--no-progress"])
    assert code == 0
    assert "identical" in capsys.readouterr().out


@contextmanager
def changed(path: Path, change: Callable[[Path], object]) -> Iterator[None]:
    """Change a file of the stored run for one test, then restore it."""
    saved = path.read_bytes()
    try:
        change(path)
        yield
    finally:
        path.write_bytes(saved)


def nudge_weights(path: Path) -> None:
    """Other weights in the same (still loadable) checkpoint file."""
    state = torch.load(path, weights_only=True)
    first = next(iter(state))
    state[first] = state[first] + 0.01
    torch.save(state, path)


def test_modified_checkpoint_is_refused_before_work(stored_run, tmp_path, capsys) -> None:
    out = tmp_path / "again"
    with changed(Path(stored_run["ckpt"]), nudge_weights):
        code = main(["reproduce", str(stored_run["run_id"]), "--store",
                     str(stored_run["store"]), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "checkpoint of tiny@v1 no longer matches its record" in err and "sha256" in err
    assert not out.exists()


def test_missing_checkpoint_is_refused(stored_run, capsys) -> None:
    with changed(Path(stored_run["ckpt"]), Path.unlink):
        code = main(["reproduce", str(stored_run["run_dir"])])
    assert code == 2
    assert "checkpoint of tiny@v1 is gone" in capsys.readouterr().err


def test_modified_data_is_refused(stored_run, tmp_path, capsys) -> None:
    out = tmp_path / "again"
    with changed(Path(stored_run["npz"]), lambda p: write_npz(p, seed=5)):
        code = main(["reproduce", str(stored_run["run_dir"]), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "data 'npz' no longer matches its record (fingerprint" in err
    assert not out.exists()


def test_a_difference_is_reported_with_exit_1(stored_run, tmp_path, capsys) -> None:
    run_dir = tmp_path / "copy"
    shutil.copytree(Path(stored_run["run_dir"]), run_dir)
    frame = pd.read_parquet(run_dir / OUTCOMES_FILE)
    frame.loc[0, "pred"] = (frame.loc[0, "pred"] + 1) % 3  # as if the record came from elsewhere
    frame.to_parquet(run_dir / OUTCOMES_FILE, index=False)
    record = json.loads((run_dir / RECORD_FILE).read_text())
    record["packages"]["torch"] = "0.0.1"
    (run_dir / RECORD_FILE).write_text(json.dumps(record))
    code = main(["reproduce", str(run_dir), "--out", str(tmp_path / "again"), "--no-progress"])
    text = capsys.readouterr().out
    assert code == 1
    assert text.startswith("DIFFERENT: 1 of 360 per-sample outcomes")
    assert "packages.torch: '0.0.1' ->" in text


def test_unknown_run_id(stored_run, capsys) -> None:
    code = main(["reproduce", "nope", "--store", str(stored_run["store"])])
    assert code == 2
    assert "Unknown run 'nope'" in capsys.readouterr().err


def test_dir_without_record(tmp_path, capsys) -> None:
    code = main(["reproduce", str(tmp_path)])
    assert code == 2
    assert "holding record.json" in capsys.readouterr().err


def _frame(pred: list[int], linf: list[float]) -> pd.DataFrame:
    n = len(pred)
    return pd.DataFrame({
        "model": ["m"] * n, "version": ["v1"] * n, "family": ["attack"] * n,
        "threat": ["fgsm"] * n, "param": [0.1] * n, "sample": np.arange(n),
        "pred": pred, "correct": [p == 0 for p in pred], "linf": linf,
    })


def test_compare_outcomes_counts_each_column_and_treats_nan_as_equal() -> None:
    a = _frame([0, 1, 2, 0], [0.1, np.nan, 0.1, 0.0])
    b = _frame([0, 1, 0, 0], [0.1, np.nan, 0.1, 0.05])
    c = compare_outcomes(a, b)
    assert (c.rows, c.differing_rows) == (4, 2)
    assert c.by_column == {"pred": 1, "correct": 1, "linf": 1}
    assert not c.identical
    assert compare_outcomes(a, a.sample(frac=1, random_state=0)).identical  # order does not matter
    short = compare_outcomes(a, b.iloc[:3])
    assert (short.missing_rows, short.extra_rows) == (1, 0)


def test_environment_diff_names_only_fields_both_records_have() -> None:
    old = {"packages": {"torch": "2.1", "numpy": "1.0"}, "env": {"torch_threads": 2, "argv": ["a"]}}
    new = {"packages": {"torch": "2.2", "numpy": "1.0"},
           "env": {"torch_threads": 1, "argv": ["b"], "mkl": True}}
    assert environment_diff(old, new) == ["packages.torch: '2.1' -> '2.2'",
                                          "env.torch_threads: 2 -> 1"]


def test_record_carries_the_environment_that_explains_differences(stored_run) -> None:
    rec = load_recorded(str(stored_run["run_dir"])).record
    for key in ("torch_threads", "torch_interop_threads", "torch_version", "torch_git", "device",
                "deterministic_algorithms", "cudnn_deterministic", "float32_matmul_precision",
                "omp_num_threads", "mkl_num_threads"):
        assert key in rec["env"], key
    assert rec["packages"]["torch"] and rec["packages"]["adversarial-robustness-toolbox"]
