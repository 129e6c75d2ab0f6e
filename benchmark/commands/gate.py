"""``rtb gate``: release rules against the store, for CI (exit 0 pass, 1 fail)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from benchmark.commands.store import add_store_option

GATE_HELP = """\
Check release rules against the results store and exit 0 (all hold), 1 (any
fails) or 2 (bad usage or bad rules). Nothing is re-run.

Rules (conf/gate/NAME.yaml or a YAML file; see conf/gate/default.yaml):
  floor:      {threat: pgd_linf, param: 0.1, metric: accuracy, min: 0.6}
  regression: {max_drop: 0.01, metric: accuracy, significant: true}
  disparity:  {max: 0.2, metric: accuracy, feature: class}
  checks:     {fail_on: [fail]}

Examples:
  rtb gate                                        # default rules, newest run
  rtb gate mnist_cnn@v2 --baseline mnist_cnn@v1 --rules default
  rtb gate --rules ci/gate.yaml --junit gate.xml --summary gate.md
"""


def gate_main(args: Sequence[str]) -> int:
    """``rtb gate``."""
    from benchmark.compare import parse_ref
    from benchmark.gate import ICONS, evaluate, junit_xml, load_rules, markdown_summary
    from benchmark.outputs import check_output_file, write_text
    from benchmark.store import open_store

    parser = argparse.ArgumentParser(prog="rtb gate", description=GATE_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("versions", nargs="*", metavar="NAME@VERSION",
                        help="candidate versions (default: the rules' candidates, else all but the baseline)")
    parser.add_argument("--rules", default="default", help="rules name in conf/gate/ or a YAML path")
    parser.add_argument("--baseline", default=None, metavar="NAME@VERSION",
                        help="baseline for regression rules (overrides the rules file)")
    parser.add_argument("--run", action="append", default=None, metavar="ID",
                        help="gate these runs (repeatable)")
    parser.add_argument("--sweep", default=None, metavar="ID", help="gate every run of a sweep")
    parser.add_argument("--junit", default=None, metavar="PATH", help="write JUnit XML here")
    parser.add_argument("--summary", default=None, metavar="PATH", help="write a Markdown summary here")
    add_store_option(parser)
    ns = parser.parse_args(args)
    if ns.run and ns.sweep:
        parser.error("choose --run or --sweep, not both")
    if ns.baseline:
        parse_ref(ns.baseline)
    for flag, out in (("--junit", ns.junit), ("--summary", ns.summary)):
        if out:
            check_output_file(f"the {flag} file", out)
    spec = load_rules(ns.rules)
    with open_store(ns.store, readonly=True) as store:
        results, ctx = evaluate(store, spec, versions=ns.versions, baseline=ns.baseline,
                                runs=ns.run, sweep=ns.sweep)
    groups_first = _group_tables(ctx.measurements)
    if groups_first:  # a run with fairness metrics (a feature table): the groups come first
        print(groups_first + "\n")
    names = [n for n, _ in spec.rules]
    for n, r in zip(names, results, strict=True):
        print(f"{ICONS[r.status]}  {n}: {r.message}")
        if r.status == "fail":
            for d in [d for d in r.details if d not in r.message][:10]:
                print(f"      {d}")
    failed = sum(r.status == "fail" for r in results)
    print(f"\nrtb gate: {'FAILED' if failed else 'passed'} "
          f"({len(results) - failed}/{len(results)} rules hold)")
    if ns.junit:
        write_text("the --junit file", ns.junit, junit_xml(results, names))
    if ns.summary:
        write_text("the --summary file", ns.summary, markdown_summary(results, names, ctx))
    return 1 if failed else 0


def _group_tables(frame: object) -> str:
    """The fairness differences (clean, with CIs) and the worst group per
    threat of the gated runs, when they hold fairness metrics; else ""."""
    import pandas as pd

    from benchmark.console import FAIRNESS_METRICS, fairness_table, worst_group_table
    from benchmark.core.types import Measurement

    if not isinstance(frame, pd.DataFrame) or frame.empty:
        return ""
    keep = frame[frame["metric"].isin([*FAIRNESS_METRICS, "accuracy_worst_group",
                                        "accuracy_best_group"])]
    if not keep["metric"].isin(list(FAIRNESS_METRICS)).any():
        return ""
    rows = []
    for r in keep.to_dict("records"):
        param = r.get("param")
        rows.append(Measurement(
            model=str(r["model"]), version=str(r["version"]), family=str(r["family"]),
            threat=str(r["threat"]), param=None if pd.isna(param) else float(param),
            metric=str(r["metric"]), value=float(r["value"]), n=int(r.get("n") or 0),
            group_feature=str(r.get("group_feature") or ""),
            group_value=str(r.get("group_value") or ""),
            ci_low=None if pd.isna(r.get("ci_low")) else float(r["ci_low"]),
            ci_high=None if pd.isna(r.get("ci_high")) else float(r["ci_high"])))
    return "\n\n".join(t for t in (fairness_table(rows), worst_group_table(rows, concise=True))
                         if t)
