"""CPU time after the attacks: the group-metric phase of a stored run and
``rtb compare`` on it, timed on the current code path, side by side in one run.

    python scripts/bench_post_attack.py RUN_DIR [--store PATH] [--repeat 3]
    python scripts/bench_post_attack.py --tabular [--outcomes 76]

RUN_DIR is a finished run directory (``record.json`` + ``outcomes.parquet``,
e.g. of the default ``rtb run``); its config is re-read and its data loaded,
and the per-sample outcomes are turned back into ``Outcome`` objects, so the
phase is timed on exactly what the run measured. ``--store`` names the store
holding that run, for the compare timings (in-process, i.e. after start-up,
and the whole ``rtb compare`` command as a user waits for it).

``--tabular`` times the same phase on a feature table without a stored
run: 1046 rows of the real arrests data (the size of a 20% test split),
groups colour, sex, employed, citizen, an age band and colour x sex, slice
discovery on the features, and ``--outcomes`` binary outcomes (default 76:
two versions under clean, 15 noise settings, 4 attacks x 3 budgets and 10
faults), each a seeded perturbation of a rule's predictions (attacks with
an ``eps_broken`` distance column, as the attack sweep writes it).

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
    parser.add_argument("run_dir", type=Path, nargs="?")
    parser.add_argument("--tabular", action="store_true")
    parser.add_argument("--outcomes", type=int, default=76)
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    ns = parser.parse_args()

    from benchmark.data import load_evalset
    from benchmark.schema import parse_run
    from metrics.bias import bias_measurements

    load_before = os.getloadavg()
    if ns.tabular:
        return tabular(ns, load_before)
    if ns.run_dir is None:
        parser.error("give RUN_DIR or --tabular")
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
                        f"{n_rows} compared rows, {n_lines} lines of default console text"))

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

    report(results, load_before, ns.repeat)
    return 0


def tabular(ns: argparse.Namespace, load_before: tuple[float, float, float]) -> int:
    import torch
    from sklego.datasets import load_arrests

    from benchmark.core.tabular import TabularSchema
    from benchmark.core.types import EvalSet
    from benchmark.schema.groups import parse_groups
    from metrics.bias import bias_measurements

    frame = load_arrests(as_frame=True).sample(n=1046, random_state=0).reset_index(drop=True)
    sensitive = ["colour", "sex", "employed", "citizen"]
    schema = TabularSchema.infer(frame, "released", sensitive=[*sensitive, "age"])
    features = frame.drop(columns=["released"])
    groups = frame[sensitive].copy()
    groups["age_band"] = pd.cut(frame["age"], [0, 18, 25, 35, 200], right=False).astype(str)
    y = (frame["released"] == "Yes").to_numpy(np.int64)
    data = EvalSet(name="arrests", x=torch.from_numpy(schema.encode(features)),
                   y=torch.from_numpy(y), classes=["No", "Yes"], groups=groups, schema=schema,
                   frame=features)
    rng = np.random.default_rng(0)
    base = (frame["checks"] <= 2).to_numpy(np.int64)
    threats = [("clean", "clean", None)]
    threats += [("corruption", f"{kind}_noise", float(sev)) for kind in ("gaussian", "flip",
                                                                          "missing")
                for sev in range(1, 6)]
    threats += [("attack", a, eps) for a in ("fgsm", "pgd", "lowprofool", "hopskipjump")
                for eps in (0.1, 0.2, 0.3)]
    threats += [("fault", f"fault_{i}", None) for i in range(10)]
    outcomes = []
    for j, (family, name, param) in enumerate(t for t in threats for _ in (0, 1)):
        if len(outcomes) >= ns.outcomes:
            break
        flip = rng.random(len(y)) < (0.0 if family == "clean" else 0.05 + 0.1 * rng.random())
        pred = np.where(flip, 1 - base, base)
        columns = {}
        if family == "attack":  # the smallest budget that broke each point
            columns["eps_broken"] = np.where(flip, param or 0.1, np.inf)
        outcomes.append(Outcome(model="arrests_mlp", version="v1" if j % 2 == 0 else "v2",
                                threat=Threat(family, name, param), pred=pred,
                                correct=pred == y, columns=columns))
    feats = {c: {"kind": "metadata", "column": c} for c in [*sensitive, "age_band"]}
    feats["colour_x_sex"] = {"kind": "intersection", "of": ["colour", "sex"]}
    spec = parse_groups({"features": feats, "min_size": 20, "n_boot": 50})
    print(f"tabular: {len(outcomes)} outcomes x {len(y)} samples, {len(feats)} group feature(s)")
    t, rows = best_of(ns.repeat, lambda: bias_measurements(spec, data, outcomes, seed=0,
                                                           num_classes=2))
    report([("group metrics, tabular (bias_measurements)", t,
             f"{len(rows)} measurements ({len(outcomes)} outcomes)")], load_before, ns.repeat)
    return 0


def report(results: list[tuple[str, float, str]], load_before: tuple[float, float, float],
           repeat: int) -> None:
    width = max(len(r[0]) for r in results)
    print(f"\n{'phase':<{width}}  {'seconds':>8}  what")
    for name, secs, what in results:
        print(f"{name:<{width}}  {secs:8.2f}  {what}")
    load_after = os.getloadavg()
    print(f"\nload average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} "
          f"({os.cpu_count()} cores); best of {repeat}")


if __name__ == "__main__":
    raise SystemExit(main())
