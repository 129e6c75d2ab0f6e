"""rtb monitor on feature tables: a tiny inferred schema and a linear model in
process; the arrests versions through the CLI (slow)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from benchmark.core.errors import DataError
from benchmark.core.tabular import TabularSchema
from benchmark.core.types import EvalSet, ModelUnderTest
from benchmark.monitor.bench_lookup import BenchmarkMap
from benchmark.monitor.engine import MonitorSettings, process_window
from benchmark.monitor.reference import build_reference
from benchmark.monitor.rules import parse_config
from benchmark.monitor.sources import TableColumns, directory_windows


def table(n: int, seed: int, shift: float = 0.0, share_a: float = 0.5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1 = rng.normal(shift, 1.0, n)
    site = np.where(rng.random(n) < share_a, "a", "b")
    label = np.where(x1 + rng.normal(0, 0.5, n) > 0, "yes", "no")
    return pd.DataFrame({"x1": x1, "x2": rng.normal(0, 1, n), "site": site, "label": label})


class Threshold(nn.Module):
    """Reads column 0 (x1): logits (-x1, x1) * 3."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = torch.nan_to_num(x[:, :1].float())
        return torch.cat([-3 * v, 3 * v], 1)


@pytest.fixture
def ref() -> object:
    frame = table(600, 0)
    schema = TabularSchema.infer(frame, "label", sensitive=["site"])
    feats = frame.drop(columns=["label"])
    y = torch.tensor([schema.classes.index(v) for v in frame["label"]])
    data = EvalSet(name="t", x=torch.from_numpy(schema.encode(feats)), y=y,
                   classes=list(schema.classes), groups=feats[["site"]].astype(str),
                   schema=schema, frame=feats)
    m = ModelUnderTest(name="thr", version="v1", module=Threshold().eval(), sha256="0" * 64,
                       num_classes=2, input_shape=(3,), device=torch.device("cpu"))
    return build_reference(data, [m], "t")


def run(ref: object, frame: pd.DataFrame) -> object:
    from benchmark.monitor.sources import frame_window

    w = frame_window(frame, "w", "mem", TableColumns(label="label"))
    return process_window(ref, w, 0, MonitorSettings(horizon=10), BenchmarkMap(None))


def test_clean_table_window_holds_and_shifted_one_fires(ref: object) -> None:
    cfg = parse_config({"rules": [{"drift": {"feature": "x1"}},
                                  {"group_shift": {"feature": "site", "max_share_change": 0.2}},
                                  {"check": {}}]})
    clean = run(ref, table(400, 1))
    assert [a.status for a in cfg.evaluate(clean)] == ["pass", "pass", "pass"]
    real = clean.value("thr@v1", "realised_accuracy")
    est = clean.value("thr@v1", "estimated_accuracy")
    assert real is not None and est is not None and abs(est - real) < 0.06
    assert clean.value("thr@v1", "realised_accuracy", "site", "a") is not None
    shifted = run(ref, table(400, 2, shift=1.5, share_a=0.9))
    assert [a.status for a in cfg.evaluate(shifted)][:2] == ["fail", "fail"]
    assert "x1" in shifted.drifted and "group_mix[site]" in shifted.drifted


def test_tabular_fault_is_matched(ref: object) -> None:
    from attacks.tabular_faults import apply_tabular_fault

    frame = table(400, 3)
    broken = apply_tabular_fault("unit_change", frame.drop(columns=["label"]),
                                 ref.data.schema, seed=1).assign(label=frame["label"])
    res = run(ref, broken)
    assert res.match is not None and res.match["name"] == "unit_change"


def test_window_missing_a_schema_column_is_a_data_error(ref: object) -> None:
    with pytest.raises(DataError, match="expected the schema's columns \\['x2'\\]"):
        run(ref, table(50, 4).drop(columns=["x2"]))


def test_image_window_against_a_table_reference_is_a_data_error(ref: object,
                                                               tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", x=np.zeros((3, 8, 8), dtype=np.float32))
    w = next(directory_windows(tmp_path, TableColumns()))
    with pytest.raises(DataError, match="expected tabular data"):
        process_window(ref, w, 0, MonitorSettings(), BenchmarkMap(None))


@pytest.mark.slow
def test_arrests_csv_windows_and_parquet_log_through_the_cli(tmp_path: Path) -> None:
    from benchmark.cli import main as rtb
    from benchmark.compose import compose_spec
    from benchmark.data import load_evalset

    spec, _ = compose_spec(["data=arrests"])
    d = load_evalset(spec.data)
    f = d.frame.assign(released=np.asarray(d.schema.classes)[d.y.numpy()])
    f.iloc[:500].to_csv(tmp_path / "ref.csv", index=False)
    wins = tmp_path / "w"
    wins.mkdir()
    f.iloc[500:800].to_csv(wins / "00.csv", index=False)
    f.iloc[800:1100].drop(columns=["released"]).to_parquet(wins / "01.parquet")  # no labels
    log = tmp_path / "log.parquet"
    f.iloc[500:1100].assign(ts=pd.date_range("2026-01-01", periods=600, freq="30s")).to_parquet(
        log)
    common = ["--reference", str(tmp_path / "ref.csv"), "--rules", "arrests", "--store",
              str(tmp_path / "s.sqlite"), "data=arrests", "model=[arrests_mlp_v1,arrests_mlp_v2]"]
    assert rtb(["monitor", str(wins), "--name", "dir", *common]) in (0, 1)
    assert rtb(["monitor", str(log), "--window", "1h", "--timestamp", "ts", "--label",
                "released", "--name", "log", *common]) in (0, 1)
    with sqlite3.connect(tmp_path / "s.sqlite") as c:
        rows = c.execute("SELECT monitor, window, n, has_labels FROM monitor_windows "
                         "ORDER BY monitor, seq").fetchall()
    assert rows == [("dir", "00.csv", 300, 1), ("dir", "01.parquet", 300, 0),
                    *[("log", f"time:2026-01-01T{h:02d}:00:00+00:00", 120, 1) for h in range(5)]]


@pytest.mark.slow
def test_arrests_demo_meets_its_acceptance_points(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from benchmark.cli import main as rtb

    code = rtb(["monitor", "--demo", "data=arrests", "model=[arrests_mlp_v1,arrests_mlp_v2]",
                "--rules", "arrests", "--demo-dir", str(tmp_path / "demo"), "--store",
                str(tmp_path / "s.sqlite")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("PASS  ") == 6 and "FAIL  " not in out
