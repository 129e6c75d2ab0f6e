"""The per-sample outcomes of a small but complete run (attacks with and
without a budget, a corruption suite, every fault, both reference versions)
equal a fixture recorded before the code was restructured.

A change that alters what rtb computes, rather than where the code lives,
fails here. The fixture was written by the same overrides at commit f529918;
regenerate it only for an intended change of results, and say so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from conftest import CLIRunner

FIXTURE = Path(__file__).parent / "fixtures" / "pre_refactor_outcomes.parquet"
OVERRIDES = [
    "store=null",
    "data.n_samples=48",
    "corruption=noise",
    "corruption.severities=[1,5]",
    "fault=all",
    "attack=[fgsm,pgd_linf,deepfool]",
    "attack.pgd_linf.eps=[0.1,0.3]",
    "attack.pgd_linf.max_iter=10",
    "reliability.enabled=false",
]
KEYS = ["model", "version", "family", "threat", "param", "sample"]


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    df = df.assign(param=df["param"].fillna(-1.0))
    return df.sort_values(KEYS).reset_index(drop=True)


def test_outcomes_equal_the_pre_refactor_fixture(run_cli: CLIRunner, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_cli("run", *OVERRIDES, f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = _sorted(pd.read_parquet(out / "outcomes.parquet"))
    want = _sorted(pd.read_parquet(FIXTURE))
    assert len(got) == len(want)
    for col in KEYS + ["pred", "correct"]:
        assert got[col].tolist() == want[col].tolist(), col
    for col in [c for c in want.columns if c not in KEYS + ["pred", "correct"]]:
        assert col in got.columns, col
        np.testing.assert_allclose(got[col].to_numpy(float), want[col].to_numpy(float),
                                   rtol=1e-6, atol=1e-7, equal_nan=True, err_msg=col)
