"""Speed and memory of ``rtb monitor``, measured side by side in one run.

    python scripts/bench_monitor.py                 # all parts
    python scripts/bench_monitor.py --only image    # image | tabular | log | stable

* image: one window of 1000 mnist5k images through both reference versions
  (checks, drift, CBPE, threat match), against the bare forward pass;
* tabular: one window of 10 000 rows of the tabular reference versions;
* log: a Parquet log of about ``--log-gb`` GB streamed into windows in a
  child process, peak RSS against the window's own size;
* stable: the false-alarm rate of the drift rules on clean windows.

Prints the machine load (os.getloadavg) next to the figures.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load() -> str:
    a, b, c = os.getloadavg()
    return f"load {a:.2f} {b:.2f} {c:.2f} ({os.cpu_count() or 0} cores)"


def best_of(fn, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def image_part() -> None:
    import torch

    from benchmark.compose import compose_spec
    from benchmark.core.forward import forward_logits
    from benchmark.data import load_evalset
    from benchmark.models import load_model
    from benchmark.monitor.bench_lookup import BenchmarkMap
    from benchmark.monitor.engine import MonitorSettings, process_window
    from benchmark.monitor.reference import build_reference, ensure_library
    from benchmark.monitor.sources import Window

    spec, _ = compose_spec([])
    data = load_evalset(spec.data)
    models = [load_model(m, torch.device("cpu")) for m in spec.models.values()]
    ref = build_reference(data, models, "data:mnist5k")
    t = time.perf_counter()
    ensure_library(ref)
    lib_s = time.perf_counter() - t
    g = torch.Generator().manual_seed(1)
    x = data.x[torch.randint(0, len(data), (1000,), generator=g)]
    w = Window(key="bench", source="bench", x=x)
    s = MonitorSettings()
    window_s = best_of(lambda: process_window(ref, w, 0, s, BenchmarkMap(None)))
    fwd_s = best_of(lambda: [forward_logits(m, x) for m in models])
    print(f"image window, 1000 mnist images, {len(models)} versions: {window_s:.3f} s "
          f"(target <= 2 s; bare forward pass {fwd_s:.3f} s, ratio {window_s / fwd_s:.1f}x); "
          f"threat library built once per reference: {lib_s:.2f} s; {load()}")


def tabular_part() -> None:
    try:
        from benchmark.monitor.tabular import bench_window
    except ImportError:
        print("tabular window: skipped (no tabular reference versions in this build)")
        return
    window_s, fwd_s, n, versions = bench_window(10_000, best_of)
    print(f"tabular window, {n} rows, {versions} versions: {window_s:.3f} s (target <= 1 s; "
          f"bare encode + forward {fwd_s:.3f} s, ratio {window_s / fwd_s:.1f}x); {load()}")


def write_log(path: Path, gb: float, rows_per_group: int = 200_000) -> tuple[int, int]:
    """A Parquet log of ~``gb`` GB: a timestamp and 16 float/int features."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    cols = 16
    rows_total = int(gb * 1e9 / (8 * (cols + 1)))
    writer = None
    written = 0
    start = np.datetime64("2026-01-01T00:00:00")
    while written < rows_total:
        n = min(rows_per_group, rows_total - written)
        arrays = {"ts": pa.array(start + (np.arange(written, written + n) * 50).astype(
            "timedelta64[ms]"))}
        for j in range(cols):
            arrays[f"f{j}"] = pa.array(rng.normal(j, 1.0 + j / 8, n))
        table = pa.table(arrays)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, compression="none")
        writer.write_table(table)
        written += n
    assert writer is not None
    writer.close()
    return written, cols


def log_child(path: str, window_rows: int) -> None:
    """Child process: stream the log into windows, drift-test each against the
    first window; print windows, rows, peak RSS (MiB), seconds."""
    import pandas as pd

    from benchmark.monitor.sources import TableColumns, WindowSize, log_windows
    from metrics.drift import DriftConfig, numerical_drift

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    n_windows = rows = 0
    ref: pd.DataFrame | None = None
    biggest = 0
    cfg = DriftConfig()
    for w in log_windows(Path(path), WindowSize(rows=window_rows), TableColumns(timestamp="ts"),
                         chunk_rows=65536):
        assert w.frame is not None
        biggest = max(biggest, int(w.frame.memory_usage(deep=True).sum()))
        if ref is None:
            ref = w.frame.sample(5000, random_state=0)
        for c in w.frame.columns[:4]:
            numerical_drift(c, ref[c].to_numpy(), w.frame[c].to_numpy()[:20000], cfg, 4)
        n_windows += 1
        rows += len(w)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(n_windows, rows, f"{base:.0f}", f"{peak:.0f}", f"{biggest / 2**20:.1f}",
          f"{time.perf_counter() - t:.1f}")


def write_arrests_log(path: Path, gb: float, rows_per_group: int = 200_000) -> int:
    """An arrests-like Parquet log of ~``gb`` GB: the test rows resampled, with a
    timestamp and the label column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchmark.compose import compose_spec
    from benchmark.data import load_evalset

    spec, _ = compose_spec(["data=arrests"])
    d = load_evalset(spec.data)
    assert d.frame is not None and d.schema is not None
    base = d.frame.assign(**{d.schema.target: np.asarray(d.schema.classes)[d.y.numpy()]})
    rng = np.random.default_rng(0)
    writer = None
    written, size = 0, 0
    start = np.datetime64("2026-01-01T00:00:00")
    while size < gb * 1e9:
        part = base.iloc[rng.integers(0, len(base), rows_per_group)].reset_index(drop=True)
        part["ts"] = start + (np.arange(written, written + len(part)) * 10).astype(
            "timedelta64[ms]")
        table = pa.Table.from_pandas(part, preserve_index=False)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, compression="none",
                                      use_dictionary=False)
        writer.write_table(table)
        written += len(part)
        size = path.stat().st_size if path.exists() else 0
        size = max(size, int(written * table.nbytes / len(part)))
    assert writer is not None
    writer.close()
    return written


def monitor_child(path: str, window_rows: int, store: str) -> None:
    """Child process: the whole `rtb monitor` over the log; print peak RSS (MiB)."""
    from benchmark.cli import main as rtb

    t = time.perf_counter()
    code = rtb(["monitor", path, "--window", f"{window_rows}rows", "--label", "released",
                "--timestamp", "ts", "--rules", "arrests", "--store", store, "--name", "bench",
                "data=arrests", "model=[arrests_mlp_v1,arrests_mlp_v2]"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"RESULT {code} {peak:.0f} {time.perf_counter() - t:.1f}")


def monitor_log_part(gb: float, window_rows: int) -> None:
    """The full monitor (arrests versions) over a ~``gb`` GB Parquet log."""
    with tempfile.TemporaryDirectory(prefix="rtb-bench-log-") as d:
        path = Path(d) / "log.parquet"
        rows = write_arrests_log(path, gb)
        size = path.stat().st_size
        out = subprocess.run([sys.executable, __file__, "--monitor-child", str(path),
                              "--window-rows", str(window_rows), "--store",
                              str(Path(d) / "s.sqlite")], capture_output=True, text=True,
                             cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")), "")
        if not line:
            print("monitor over the log failed:", out.stderr.strip().splitlines()[-1:])
            return
        _, code, peak, secs = line.split()
        n_windows = sum(1 for ln in out.stdout.splitlines() if "rows:" in ln)
        print(f"rtb monitor over an arrests Parquet log of {size / 1e9:.2f} GB ({rows} rows): "
              f"{n_windows} windows of {window_rows} rows in {secs} s (exit {code}); peak RSS "
              f"{peak} MiB for the whole process; {load()}")


def log_part(gb: float, window_rows: int) -> None:
    with tempfile.TemporaryDirectory(prefix="rtb-bench-log-") as d:
        path = Path(d) / "log.parquet"
        t = time.perf_counter()
        rows, cols = write_log(path, gb)
        size = path.stat().st_size
        write_s = time.perf_counter() - t
        out = subprocess.run([sys.executable, __file__, "--log-child", str(path),
                              "--window-rows", str(window_rows)], capture_output=True,
                             text=True, check=True, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        n, r, base, peak, win_mib, secs = out.stdout.split()
        print(f"parquet log {size / 1e9:.2f} GB ({rows} rows x {cols + 1} columns, written in "
              f"{write_s:.0f} s): {n} windows of {window_rows} rows streamed in {secs} s; "
              f"peak RSS {peak} MiB (interpreter + libraries before the log: {base} MiB; "
              f"growth {float(peak) - float(base):.0f} MiB for one window of {win_mib} MiB; log size / "
              f"growth {size / 2**20 / max(1.0, float(peak) - float(base)):.1f}x); "
              f"{load()}")


def stable_part(windows: int) -> None:
    """Clean windows resampled from the held-out half of mnist5k's test split."""
    import torch

    from benchmark.compose import compose_spec
    from benchmark.core.types import EvalSet
    from benchmark.data import load_evalset
    from benchmark.models import load_model
    from benchmark.monitor.bench_lookup import BenchmarkMap
    from benchmark.monitor.engine import MonitorSettings, process_window
    from benchmark.monitor.reference import build_reference
    from benchmark.monitor.rules import load_config
    from benchmark.monitor.sources import Window

    spec, _ = compose_spec([])
    data = load_evalset(spec.data)
    models = [load_model(m, torch.device("cpu")) for m in spec.models.values()]
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(data))
    ref_idx, pool = perm[: len(data) // 2], perm[len(data) // 2:]
    t_ref = torch.from_numpy(np.sort(ref_idx))
    ref = build_reference(EvalSet("ref", data.x[t_ref], data.y[t_ref], data.classes), models,
                          "ref")
    cfg = load_config("default")
    s = MonitorSettings(match=False, horizon=cfg.settings.horizon, alpha=cfg.settings.alpha)
    alarms = tests = 0
    rule_fails = 0
    for i in range(windows):
        idx = torch.from_numpy(np.sort(rng.choice(pool, 250, replace=False)))
        w = Window(key=str(i), source="stable", x=data.x[idx], y=data.y[idx].numpy())
        res = process_window(ref, w, i, s, BenchmarkMap(None))
        alerts = cfg.evaluate(res)
        tests += len(res.drift)
        alarms += bool(res.drifted)
        rule_fails += any(a.status == "fail" for a in alerts)
    raw = MonitorSettings(match=False, horizon=1, alpha=0.05)
    raw_alarms = 0
    rng = np.random.default_rng(1)
    for i in range(windows):
        idx = torch.from_numpy(np.sort(rng.choice(pool, 250, replace=False)))
        w = Window(key=str(i), source="stable", x=data.x[idx], y=data.y[idx].numpy())
        res = process_window(ref, w, i, raw, BenchmarkMap(None))
        raw_alarms += bool(res.drifted)
    print(f"stable stream, {windows} clean windows of 250 mnist5k images ({tests // windows} "
          f"drift tests each): windows with a drift alarm {alarms}/{windows} corrected over "
          f"features and {cfg.settings.horizon} windows (alpha {cfg.settings.alpha}), "
          f"{raw_alarms}/{windows} corrected over features only; windows failing any default "
          f"rule {rule_fails}/{windows}; {load()}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=("image", "tabular", "log", "monitor-log", "stable"))
    p.add_argument("--log-gb", type=float, default=1.0)
    p.add_argument("--window-rows", type=int, default=100_000)
    p.add_argument("--stable-windows", type=int, default=40)
    p.add_argument("--log-child")
    p.add_argument("--monitor-child")
    p.add_argument("--store")
    ns = p.parse_args()
    if ns.log_child:
        log_child(ns.log_child, ns.window_rows)
        return
    if ns.monitor_child:
        monitor_child(ns.monitor_child, ns.window_rows, ns.store)
        return
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1)))
    if ns.only in (None, "image"):
        image_part()
    if ns.only in (None, "tabular"):
        tabular_part()
    if ns.only in (None, "log"):
        for gb in (ns.log_gb / 4, ns.log_gb):  # the peak must not grow with the log
            log_part(gb, ns.window_rows)
    if ns.only in (None, "monitor-log"):
        monitor_log_part(ns.log_gb, ns.window_rows)
    if ns.only in (None, "stable"):
        stable_part(ns.stable_windows)


if __name__ == "__main__":
    main()
