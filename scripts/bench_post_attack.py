"""CPU time after the attacks: the group-metric phase of a stored run and
``rtb compare`` on it, timed on the current code path, side by side in one run.

    python scripts/bench_post_attack.py RUN_DIR [--store PATH] [--repeat 3]

RUN_DIR is a finished run directory (``record.json`` + ``outcomes.parquet``,
e.g. of the default ``rtb run``); its config is re-read and its data loaded,
and the per-sample outcomes are turned back into ``Outcome`` objects, so the
phase is timed on exactly what the run measured. ``--store`` names the store
holding that run, for the compare timings (in-process, i.e. after start-up,
and the whole ``rtb compare`` command as a user waits for it).

Printed: seconds (best of ``--repeat``), what was computed (measurements,
compared rows, printed lines) so that two figures are comparable, and the
machine load (os.getloadavg) before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmark.core.types import Outcome, Threat  # noqa: E402
from benchmark.store import OUTCOME_BASE_COLUMNS  # noqa: E402

ID_COLUMNS = ("model", "version", "family", "threat", "param")


def load_outcomes(frame: pd.DataFrame, n: int) -> list[Outcome]:
    """The run's outcomes as ``Outcome`` objects, in stored order."""
    skip = set(OUTCOME_BASE_COLUMNS) | {"label"}
    outcomes = []
    frame = frame.copy()
    frame["_param"] = frame["param"].fillna(-1.0)
    for (model, version, family, threat, param), g in frame.groupby(
            ["model", "version", "family", "threat", "_param"], sort=False, dropna=False):
        g = g.sort_values("sample")
        if len(g) != n:
            continue
        extras = {c: g[c].to_numpy(float) for c in g.columns
                  if c not in skip and c != "_param" and pd.api.types.is_float_dtype(g[c])}
        outcomes.append(Outcome(
            model=str(model), version=str(version),
            threat=Threat(family=str(family), name=str(threat),
                          param=None if param == -1.0 else float(param)),
            pred=g["pred"].to_numpy(np.int64), correct=g["correct"].to_numpy(bool),
            columns=extras))
    return outcomes


def best_of(repeat: int, fn):  # type: ignore[no-untyped-def]
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    ns = parser.parse_args()

    from benchmark.data import load_evalset
    from benchmark.schema import parse_run
    from metrics.bias import bias_measurements

    load_before = os.getloadavg()
    record = json.loads((ns.run_dir / "record.json").read_text())
    spec = parse_run(record["config"], check_files=False)
    data = load_evalset(spec.data)
    outcomes = load_outcomes(pd.read_parquet(ns.run_dir / "outcomes.parquet"), len(data))
    num_classes = len(data.classes)
    print(f"run {record['run_id']}: {len(outcomes)} outcomes x {len(data)} samples, "
          f"{len(spec.groups.features) if spec.groups else 0} group feature(s)")

    results: list[tuple[str, float, str]] = []
    t, rows = best_of(ns.repeat, lambda: bias_measurements(
        spec.groups, data, outcomes, seed=spec.seed, num_classes=num_classes))
    results.append(("group metrics (bias_measurements)", t,
                    f"{len(rows)} measurements ({len(outcomes)} outcomes)"))

    if ns.store is not None:
        from benchmark.compare import compare, format_text, select_sides
        from benchmark.store import open_store

        def in_process() -> tuple[int, int]:
            with open_store(ns.store, readonly=True) as store:
                sides = select_sides(store, ["mnist_cnn@v1", "mnist_cnn@v2"])
                c = compare(store, sides)
            return len(c.rows), len(format_text(c).splitlines())

        t, (n_rows, n_lines) = best_of(ns.repeat, in_process)
        results.append(("compare, in process (after start-up)", t,
                        f"{n_rows} compared rows, {n_lines} lines of full text"))

        def command() -> int:
            res = subprocess.run([sys.executable, "-m", "benchmark.cli", "compare",
                                  "mnist_cnn@v1", "mnist_cnn@v2", "--store", str(ns.store)],
                                 cwd=ROOT, capture_output=True, text=True, check=False,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
            if res.returncode:
                print(res.stderr, file=sys.stderr)
            return len(res.stdout.splitlines())

        t, lines = best_of(ns.repeat, command)
        results.append(("rtb compare, whole command", t, f"{lines} lines printed"))

    width = max(len(r[0]) for r in results)
    print(f"\n{'phase':<{width}}  {'seconds':>8}  what")
    for name, secs, what in results:
        print(f"{name:<{width}}  {secs:8.2f}  {what}")
    load_after = os.getloadavg()
    print(f"\nload average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} "
          f"({os.cpu_count()} cores); best of {ns.repeat}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
