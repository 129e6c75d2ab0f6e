"""rtb monitor: sources, estimates, rules, the store, late labels, watch mode, bad input.

Tiny data (8x8 blobs, 3 classes) and the tiny trained MLP of conftest; the
CLI runs in process except where a process must be killed.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_evalset, tiny_overrides, write_checkpoint

from benchmark.cli import main as rtb
from benchmark.core.errors import ConfigError, UserError
from benchmark.monitor.estimate import cbpe, fit_calibrator, realised
from benchmark.monitor.sources import (
    TableColumns,
    WindowSize,
    directory_windows,
    log_windows,
    stable_files,
)

RULES_NO_MATCH = """\
drift: {alpha: 0.05, horizon: 10}
match: {enabled: false}
rules:
  - accuracy_floor: {min: 0.5, use: best}
  - drift: {feature: "*"}
  - check: {check: "*", status: fail}
"""


def write_window(path: Path, n: int = 60, seed: int = 1, labels: bool = True,
                 scale: float = 1.0, size: int = 8) -> Path:
    data = make_evalset(n=n, size=size, seed=seed)
    x = (data.x[:, 0].numpy() * scale).clip(0, 1)
    cols = {"y": data.y.numpy()} if labels else {}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, x=x.astype(np.float32), **cols)
    tmp.rename(path)
    return path


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, object]:
    ckpt = write_checkpoint(tmp_path / "tiny.pt")
    ref = write_window(tmp_path / "ref.npz", n=150, seed=100)
    overrides = [o for o in tiny_overrides(ckpt, ref) if not o.startswith("attack")]
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES_NO_MATCH)
    return {"tmp": tmp_path, "ref": ref, "overrides": overrides, "rules": rules,
            "store": tmp_path / "s.sqlite"}


def monitor(setup: dict[str, object], *args: str) -> int:
    return rtb(["monitor", *args, "--reference", str(setup["ref"]), "--rules",
                str(setup["rules"]), "--store", str(setup["store"]), *setup["overrides"]])


def table(store: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(store) as c:
        return c.execute(sql).fetchall()


# ----------------------------------------------------------------------------- sources

def test_directory_of_npz_csv_parquet_windows(tmp_path: Path) -> None:
    d = tmp_path / "w"
    d.mkdir()
    write_window(d / "a.npz", n=10)
    frame = pd.DataFrame({"f": np.arange(6.0), "y": [0, 1, 0, 1, 0, 1], "g": list("aabbab"),
                          "ts": pd.date_range("2026-01-01", periods=6, freq="h")})
    frame.to_csv(d / "b.csv", index=False)
    frame.to_parquet(d / "c.parquet", index=False)
    (d / "d.npz.tmp").write_bytes(b"half")  # never read
    (d / ".e.npz").write_bytes(b"hidden")
    cols = TableColumns(label="y", timestamp="ts", groups=("g",))
    ws = list(directory_windows(d, cols))
    assert [w.key for w in ws] == ["a.npz", "b.csv", "c.parquet"]
    assert ws[0].modality == "image" and ws[0].x.shape == (10, 1, 8, 8) and ws[0].has_labels
    for w in ws[1:]:
        assert w.modality == "tabular" and list(w.frame.columns) == ["f", "g"]
        assert list(w.groups["g"]) == list("aabbab") and w.y.tolist() == [0, 1, 0, 1, 0, 1]
    assert ws[1].content_hash != ws[2].content_hash  # the file's bytes


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_log_cut_by_rows_and_by_time_streams_every_row_once(tmp_path: Path, suffix: str) -> None:
    n = 1000
    frame = pd.DataFrame({"f": np.arange(n, dtype=float),
                          "ts": pd.Timestamp("2026-01-01") + pd.to_timedelta(
                              np.arange(n) * 7, unit="min")})
    path = tmp_path / f"log{suffix}"
    frame.to_parquet(path) if suffix == ".parquet" else frame.to_csv(path, index=False)
    cols = TableColumns(timestamp="ts")
    by_rows = list(log_windows(path, WindowSize.parse("300rows"), cols, chunk_rows=128))
    assert [len(w) for w in by_rows] == [300, 300, 300, 100]
    assert np.concatenate([w.frame["f"] for w in by_rows]).tolist() == frame["f"].tolist()
    by_hour = list(log_windows(path, WindowSize.parse("1h"), cols, chunk_rows=100))
    hours = frame["ts"].dt.floor("1h")
    assert [len(w) for w in by_hour] == hours.value_counts(sort=False).sort_index().tolist()
    assert by_hour[0].key == "time:2026-01-01T00:00:00+00:00"


def test_log_out_of_time_order_and_bad_window_size_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    pd.DataFrame({"f": [1, 2], "ts": ["2026-01-02", "2026-01-01"]}).to_csv(path, index=False)
    with pytest.raises(UserError, match="time order"):
        list(log_windows(path, WindowSize.parse("1h"), TableColumns(timestamp="ts")))
    with pytest.raises(UserError, match="positive duration"):
        WindowSize.parse("soon")


def test_stable_files_wait_for_a_file_to_stop_growing(tmp_path: Path) -> None:
    sizes: dict[Path, tuple[int, int]] = {}
    p = tmp_path / "a.npz"
    p.write_bytes(b"x" * 10)
    assert stable_files(tmp_path, sizes) == []           # first sight: not yet
    with open(p, "ab") as f:
        f.write(b"more")
    os.utime(p, ns=(time.time_ns(), time.time_ns() + 10**6))
    assert stable_files(tmp_path, sizes) == []           # still growing
    assert stable_files(tmp_path, sizes) == [p]          # held still for a poll


# ----------------------------------------------------------------------------- estimates

def test_cbpe_is_unbiased_when_confidence_is_calibrated() -> None:
    """Outcomes drawn as Bernoulli(true probability of the confidence): the
    estimate is near the realised accuracy and its interval covers it."""
    rng = np.random.default_rng(0)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        conf = rng.uniform(0.4, 1.0, n)
        return conf, rng.random(n) < conf ** 2  # P(correct | c) = c^2, not c
    cal = fit_calibrator(*draw(5000))
    covered = 0
    for _ in range(50):
        conf, correct = draw(400)
        e, r = cbpe(cal, conf), realised(correct)
        covered += e.ci_low <= r.value <= e.ci_high
        assert abs(e.value - r.value) < 0.08
    assert covered >= 42  # a 95% interval, 50 draws


def test_wilson_interval_matches_statsmodels() -> None:
    from statsmodels.stats.proportion import proportion_confint

    correct = np.array([1] * 37 + [0] * 13, dtype=bool)
    r = realised(correct)
    lo, hi = proportion_confint(37, 50, alpha=0.05, method="wilson")
    assert r.value == pytest.approx(0.74)
    assert (r.ci_low, r.ci_high) == pytest.approx((lo, hi), abs=1e-9)


# ----------------------------------------------------------------------------- rules

def test_rules_parse_errors_name_the_place() -> None:
    from benchmark.monitor.rules import parse_config

    with pytest.raises(ConfigError, match="Unknown rule kind 'floor' in `rules\\[0\\]`"):
        parse_config({"rules": [{"floor": {"min": 0.9}}]})
    with pytest.raises(ConfigError, match="rules\\[0\\].accuracy_floor.min"):
        parse_config({"rules": [{"accuracy_floor": {"min": 2}}]})
    with pytest.raises(ConfigError, match="Unknown config key `drift.alhpa`"):
        parse_config({"drift": {"alhpa": 0.1}, "rules": [{"drift": {}}]})


def _result(est: dict[str, float], share: float = 0.5, drifted: str = "",
            check: str = "pass") -> object:
    from benchmark.core.types import CheckResult
    from benchmark.monitor.engine import MetricRow, WindowResult
    from benchmark.monitor.sources import Window
    from metrics.drift import FeatureDrift

    res = WindowResult(Window(key="w", source="w"), 0)
    for k, v in est.items():
        res.metrics += [MetricRow(k, "estimated_accuracy", v),
                        MetricRow(k, "reference_accuracy", 0.9 if k == "m@v1" else 0.88)]
    res.metrics += [MetricRow("", "group_share", share, "site", "a"),
                    MetricRow("", "reference_share", 0.5, "site", "a")]
    res.drift = [FeatureDrift("brightness", "numerical", "ks", 0.5, drifted == "brightness",
                              p_value=1e-9 if drifted else 0.5, level=1e-3)]
    res.checks = [CheckResult("finite_values", check, "NaN found" if check == "fail" else "ok")]
    return res


def test_every_rule_kind_holds_and_fires() -> None:
    from benchmark.monitor.rules import parse_config

    cfg = parse_config({"rules": [
        {"accuracy_floor": {"min": 0.8, "use": "estimated"}},
        {"drift": {"feature": "bright*"}},
        {"check": {"check": "finite_*"}},
        {"group_shift": {"feature": "site", "max_share_change": 0.2}},
        {"better_version": {"margin": 0.05, "use": "estimated"}},
    ]})
    calm = cfg.evaluate(_result({"m@v1": 0.9, "m@v2": 0.88}))
    assert [a.status for a in calm] == ["pass"] * 5
    bad = cfg.evaluate(_result({"m@v1": 0.7, "m@v2": 0.85}, share=0.8, drifted="brightness",
                               check="fail"))
    assert [a.status for a in bad] == ["fail"] * 5
    assert "m@v1 estimated 0.700" in bad[0].message
    assert "m@v2 now better than m@v1" in bad[4].message


# ----------------------------------------------------------------------------- the command

def test_monitor_stores_windows_and_late_labels_fill_them_in(setup: dict) -> None:
    d = setup["tmp"] / "w"
    d.mkdir()
    for i in range(3):
        write_window(d / f"{i:02d}.npz", seed=10 + i, labels=False)
    assert monitor(setup, str(d), "--name", "t") == 0
    store = setup["store"]
    assert table(store, "SELECT count(*) FROM monitor_windows")[0][0] == 3
    assert table(store, "SELECT count(*) FROM monitor_metrics WHERE metric = "
                        "'realised_accuracy'")[0][0] == 0
    est = table(store, "SELECT value, ci_low, ci_high FROM monitor_metrics WHERE metric = "
                       "'estimated_accuracy' AND window = '00.npz' AND group_feature = ''")
    assert len(est) == 1 and est[0][1] <= est[0][0] <= est[0][2]
    before = table(store, "SELECT window, processed_at FROM monitor_windows ORDER BY seq")

    write_window(d / "00.npz", seed=10, labels=True)  # the labels of windows 00 and 01
    write_window(d / "01.npz", seed=11, labels=True)  # arrive
    time.sleep(1.1)
    assert monitor(setup, str(d), "--name", "t") == 0
    after = table(store, "SELECT window, processed_at FROM monitor_windows ORDER BY seq")
    assert [w for w, _ in after] == ["00.npz", "01.npz", "02.npz"]
    assert after[2] == before[2]                             # unchanged window skipped
    assert after[0] != before[0] and after[1] != before[1]   # the labelled ones redone
    real = table(store, "SELECT window, value FROM monitor_metrics WHERE metric = "
                        "'realised_accuracy' AND group_feature = ''")
    assert [w for w, _ in real] == ["00.npz", "01.npz"] and 0 <= real[0][1] <= 1
    assert table(store, "SELECT count(*) FROM monitor_metrics WHERE window = '01.npz' AND "
                        "metric = 'estimate_error'")[0][0] == 1
    assert table(store, "SELECT window, seq FROM monitor_windows ORDER BY seq") == [
        ("00.npz", 0), ("01.npz", 1), ("02.npz", 2)]  # redone windows keep their place


def test_alert_exit_1_with_junit_and_summary(setup: dict) -> None:
    d = setup["tmp"] / "w"
    d.mkdir()
    write_window(d / "00.npz", seed=3)
    write_window(d / "01.npz", seed=4, scale=0.3)  # a dark window: drift, accuracy falls
    junit, summary = setup["tmp"] / "a.xml", setup["tmp"] / "a.md"
    assert monitor(setup, str(d), "--name", "t", "--junit", str(junit),
                   "--summary", str(summary)) == 1
    xml = junit.read_text()
    assert 'name="00.npz: no drift on *"' in xml and "<failure" in xml
    alerts = table(setup["store"], "SELECT window, kind FROM monitor_alerts WHERE status = 'fail'")
    assert {w for w, _ in alerts} == {"01.npz"} and ("01.npz", "drift") in alerts
    assert "**01.npz**" in summary.read_text()


def test_report_monitor_writes_timelines(setup: dict, tmp_path: Path) -> None:
    d = setup["tmp"] / "w"
    d.mkdir()
    for i in range(2):
        write_window(d / f"{i:02d}.npz", seed=20 + i, scale=1.0 - 0.5 * i)
    monitor(setup, str(d), "--name", "t")
    out = tmp_path / "m.html"
    assert rtb(["report", "--monitor", "t", "--store", str(setup["store"]), "-o",
                str(out)]) == 0
    html = out.read_text()
    assert "00.npz" in html and "01.npz" in html and "estimated" in html


@pytest.mark.slow
def test_watch_picks_up_new_files_and_resumes_after_sigkill(setup: dict) -> None:
    d = setup["tmp"] / "in"
    d.mkdir()
    args = [sys.executable, "-m", "benchmark.cli", "monitor", "--watch", str(d), "--name", "w",
            "--max-windows", "4", "--poll", "0.2", "--reference", str(setup["ref"]),
            "--rules", str(setup["rules"]), "--store", str(setup["store"]), *setup["overrides"]]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        (d / "00.npz.tmp").write_bytes(b"still being written")  # never read
        for i in range(2):
            write_window(d / f"{i:02d}.npz", seed=30 + i)

        def stored() -> int:
            if not setup["store"].exists():
                return 0
            try:
                return int(table(setup["store"], "SELECT count(*) FROM monitor_windows")[0][0])
            except sqlite3.OperationalError:
                return 0
        deadline = time.monotonic() + 120
        while stored() < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert stored() == 2, proc.stderr.read().decode() if proc.poll() is not None else ""
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    first = table(setup["store"], "SELECT window, processed_at FROM monitor_windows ORDER BY seq")
    for i in range(2, 4):
        write_window(d / f"{i:02d}.npz", seed=30 + i)
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = table(setup["store"], "SELECT window, processed_at FROM monitor_windows ORDER BY seq")
    assert [w for w, _ in rows] == ["00.npz", "01.npz", "02.npz", "03.npz"]
    assert rows[:2] == first                      # resumed: nothing redone, nothing lost
    assert "stored" in done.stdout


# ----------------------------------------------------------------------------- bad input

def _one_line_exit_2(capsys: pytest.CaptureFixture[str], code: int, *needles: str) -> None:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("rtb: error:"), err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err


def test_unreadable_window_is_exit_2_one_line(setup: dict, capsys: pytest.CaptureFixture[str]
                                              ) -> None:
    d = setup["tmp"] / "w"
    d.mkdir()
    (d / "00.npz").write_text("not a zip")
    _one_line_exit_2(capsys, monitor(setup, str(d)), "00.npz", "not an .npz")


def test_window_of_another_shape_is_exit_2_one_line(setup: dict,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    d = setup["tmp"] / "w"
    d.mkdir()
    write_window(d / "00.npz", size=10)
    _one_line_exit_2(capsys, monitor(setup, str(d)), "00.npz", "[1, 8, 8]", "[1, 10, 10]")


def test_table_window_missing_a_group_column_is_exit_2(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    pd.DataFrame({"f": [1.0, 2.0]}).to_csv(p, index=False)
    with pytest.raises(UserError, match="group column"):
        list(directory_windows(tmp_path, TableColumns(groups=("site",))))


def test_unknown_rule_is_exit_2_one_line(setup: dict, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    setup["rules"].write_text("rules:\n  - accuracy_flor: {min: 0.9}\n")
    d = setup["tmp"] / "w"
    d.mkdir()
    _one_line_exit_2(capsys, monitor(setup, str(d)), "Unknown rule kind 'accuracy_flor'")


def test_unknown_rule_set_and_bad_arguments_are_exit_2(capsys: pytest.CaptureFixture[str],
                                                       tmp_path: Path) -> None:
    _one_line_exit_2(capsys, rtb(["monitor", str(tmp_path), "--rules", "nosuch"]),
                     "Unknown monitor rule set 'nosuch'", "default")
    _one_line_exit_2(capsys, rtb(["monitor", str(tmp_path / "log.csv"), "--window", "1h"]),
                     "does not exist")
    _one_line_exit_2(capsys, rtb(["monitor"]), "Expected a source")


def test_shipped_rule_sets_parse() -> None:
    from benchmark.monitor.rules import conf_monitor_dir, load_config

    names = sorted(p.stem for p in conf_monitor_dir().glob("*.yaml"))
    assert "default" in names
    for name in names:
        assert load_config(name).rules


def test_directory_ordered_by_timestamp(tmp_path: Path) -> None:
    x = np.zeros((2, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "a.npz", x=x, timestamp=np.array("2026-01-02T00:00:00"))
    np.savez(tmp_path / "b.npz", x=x, timestamp=np.array("2026-01-01T00:00:00"))
    assert [w.key for w in directory_windows(tmp_path, TableColumns())] == ["a.npz", "b.npz"]
    assert [w.key for w in directory_windows(tmp_path, TableColumns(), "timestamp")] == \
        ["b.npz", "a.npz"]
