"""``rtb mlflow-log``: copy recorded runs or a sweep into an MLflow tracking store."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from benchmark.core.errors import UserError
from benchmark.mlflow_log import DEFAULT_EXPERIMENT, DEFAULT_TRACKING_URI

HELP = """\
Log recorded runs to an MLflow tracking store (optional extra:
pip install 'robustness-testbench[mlflow]'). Each rtb run becomes one MLflow
parent run with one nested child run per model version; a sweep adds one run
above its jobs. Params: the full resolved config, flattened (attack.fgsm.eps,
data.n_samples, seed, ...). A child's metrics use keys like
acc.pgd_linf.eps_0.1 or acc.clean.class_3 (no spaces), the same for every
version. The parent's artifacts: record.json, outcomes.parquet, report.html
(stored where the experiment keeps artifacts; MLflow's default is ./mlruns).
Tags: rtb.kind (sweep | run | version), rtb.run_id, rtb.model_version,
rtb.sha256.<version>, rtb.config_hash, rtb.run_key, rtb.data_fingerprint,
rtb.git_commit. Runs already in the experiment (same rtb.run_id tag) are
skipped, so logging a sweep again adds only new jobs.

This command is the only writer: run it once after a run or sweep finished.

Examples:
  rtb mlflow-log outputs/2024-05-01/12-00-00-default
  rtb mlflow-log 20240501-120000-ab12cd34 --tracking-uri sqlite:///mlflow.db
  rtb mlflow-log --sweep multirun/2024-05-01/12-00-00-default
  rtb mlflow-log --sweep my-sweep-id --experiment robustness     # sweep id from the store
  mlflow ui --backend-store-uri sqlite:///mlflow.db              # then look at it
"""


def mlflow_log_main(args: Sequence[str]) -> int:
    """``rtb mlflow-log``: log runs or a sweep to MLflow."""
    from benchmark.mlflow_log import log_to_mlflow, require_mlflow, run_source, sweep_runs

    parser = argparse.ArgumentParser(prog="rtb mlflow-log", description=HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", metavar="RUN",
                        help="run directory (with record.json) or run id in the results store")
    parser.add_argument("--sweep", metavar="SWEEP",
                        help="a sweep directory (multirun/...) or sweep id in the store: one "
                             "parent run, one child per job")
    parser.add_argument("--tracking-uri", default=None,
                        help=f"MLflow tracking URI (default: $MLFLOW_TRACKING_URI or "
                             f"{DEFAULT_TRACKING_URI})")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT,
                        help=f"MLflow experiment name (default: {DEFAULT_EXPERIMENT})")
    parser.add_argument("--store", metavar="PATH", default=None,
                        help="results store file for run / sweep ids (default: $RTB_STORE or "
                             "./rtb.sqlite)")
    ns = parser.parse_args(args)
    if bool(ns.runs) == bool(ns.sweep):
        raise UserError("Expected either RUN... or --sweep SWEEP, but got "
                        + ("both." if ns.runs else "neither."))
    uri = ns.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    require_mlflow()  # fail on a missing MLflow before reading anything
    if ns.sweep:
        sweep_id, runs = sweep_runs(ns.sweep, ns.store)
    else:
        sweep_id, runs = None, [run_source(r, ns.store) for r in ns.runs]
    parent, logged = log_to_mlflow(runs, tracking_uri=uri, experiment=ns.experiment,
                                   sweep_id=sweep_id)
    if parent:
        print(f"sweep {sweep_id}: MLflow parent run {parent}")
    for item in logged:
        state = "already logged" if item.skipped else "logged"
        print(f"{item.run_id}: {state} as MLflow run {item.mlflow_run_id}"
              + (f" ({len(item.children)} version run(s))" if item.children else ""))
    print(f"tracking URI {uri}, experiment {ns.experiment!r}")
    return 0
