"""Schema checks and tabular drift on a production-sized window, side by side
with pandas' own profile of the same frames, in one run.

Builds a reference and a batch of ``--rows`` rows x 10 columns (4 real, 3
integer, 3 categorical; a few percent missing), then times, best of
``--repeats`` interleaved rounds: ``run_schema_checks`` (each check, and all
together, labels included), ``tabular_drift`` (every feature), and as a
yardstick ``DataFrame.describe(include="all")`` plus ``duplicated()`` on
both frames (what a minimal profile costs). Prints thread CPU time and wall
time, the ratio to the yardstick, and the machine load.

    python scripts/bench_schema_checks.py               # 10 000 rows, a few seconds
    python scripts/bench_schema_checks.py --rows 100000 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from benchmark.core.tabular import TabularSchema
from metrics.schema_checks import (
    TABULAR_CHECKS,
    SchemaCheckConfig,
    TabularContext,
    run_schema_checks,
    tabular_drift,
)


def table(n: int, seed: int) -> pd.DataFrame:
    g = np.random.default_rng(seed)
    age = g.integers(18, 90, n)
    city = g.choice(["Lyon", "Nice", "Paris", "Lille", "Brest"], n)
    income = g.normal(30000, 8000, n) + 200 * age + 9000 * (city == "Paris")
    frame = pd.DataFrame({
        "age": age, "income": np.round(income, 2), "debt": np.round(g.lognormal(8, 1, n), 2),
        "score": g.normal(0, 1, n), "ratio": g.beta(2, 5, n), "children": g.poisson(1.2, n),
        "cards": g.integers(0, 6, n), "city": city, "owner": g.choice(["no", "yes"], n),
        "channel": g.choice(["web", "shop", "phone"], n, p=[0.6, 0.3, 0.1])})
    for col in ("debt", "channel"):
        frame.loc[g.random(n) < 0.03, col] = None
    frame["label"] = np.where(income + g.normal(0, 5000, n) > 45000, "yes", "no")
    return frame


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    c0, w0 = time.thread_time(), time.perf_counter()
    fn()
    return time.thread_time() - c0, time.perf_counter() - w0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    ref, batch = table(args.rows, 0), table(args.rows, 1)
    schema = TabularSchema.infer(ref, "label")
    cfg = SchemaCheckConfig()

    def profile() -> None:
        for f in (ref, batch):
            f.describe(include="all")
            f.duplicated()

    jobs: dict[str, Callable[[], object]] = {
        "pandas describe + duplicated (yardstick)": profile,
        "run_schema_checks (all 11)": lambda: run_schema_checks(ref, batch, schema),
        "tabular_drift (10 features)": lambda: tabular_drift(ref, batch, schema),
        "checks + drift": lambda: (run_schema_checks(ref, batch, schema),
                                   tabular_drift(ref, batch, schema)),
        "  context (encode both frames)": lambda: TabularContext.build(ref, batch, schema, cfg),
    }
    ctx = TabularContext.build(ref, batch, schema, cfg)
    for name, check in TABULAR_CHECKS.items():
        jobs[f"  check {name}"] = (lambda c=check: c.fn(ctx))
    best: dict[str, tuple[float, float]] = {k: (np.inf, np.inf) for k in jobs}
    for _ in range(args.repeats):
        for name, fn in jobs.items():
            cpu, wall = timed(fn)
            best[name] = (min(best[name][0], cpu), min(best[name][1], wall))
    base = best["pandas describe + duplicated (yardstick)"][0]
    print(f"{args.rows} rows x {len(schema.columns)} columns, reference and batch; "
          f"best of {args.repeats}")
    print(f"{'':44s} {'cpu ms':>8s} {'wall ms':>8s} {'x yardstick':>12s}")
    for name, (cpu, wall) in best.items():
        print(f"{name:44s} {cpu * 1e3:8.1f} {wall * 1e3:8.1f} {cpu / base:12.2f}")
    print(f"load average (1, 5, 15 min): {', '.join(f'{v:.2f}' for v in os.getloadavg())} "
          f"on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
