"""``rtb report``: an HTML or Markdown report of recorded runs."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

REPORT_HELP = """\
Write a report of one run, or a comparison of model versions, from recorded
results (never re-runs a model): a verdict box (the gate's result with
--gate, each version's clean accuracy, worst robust accuracy per attack, mCE
and worst-group accuracy, the significant changes), accuracy per threat with
95% intervals, CE/mCE,
robust accuracy versus eps, corruption x severity heatmaps, group disparity
charts, the validation and reliability checks, and the provenance (config,
overrides, checksums, data fingerprint, package versions, git commit, device).

HTML is one self-contained file (plots inline, no network needed to view it);
Markdown writes the plots as PNG files into FILE_files/ next to it.

Examples:
  rtb report outputs/2024-05-01/12-00-00-default           # -> report.html
  rtb report outputs/.../12-00-00-default -o v1-vs-v2.md   # Markdown (by suffix)
  rtb report 20240501-120000-ab12cd34 --format markdown -o r.md   # run id from the store
  rtb report RUN_DIR --compare mnist_cnn@v2 mnist_cnn@v1   # only these versions, this order
  rtb report --compare mnist_cnn@v1 mnist_cnn@v2           # newest stored runs of them
  rtb report RUN_A RUN_B                                   # several runs in one report
  rtb report RUN_DIR --gate default                        # verdict with conf/gate/default.yaml
  rtb report --monitor prod -o prod.html                   # timelines of `rtb monitor --name prod`
"""


def report_main(args: Sequence[str]) -> int:
    """``rtb report``: write an HTML or Markdown report."""
    from benchmark.report_html import (
        WRITERS,
        build_report,
        check_report_path,
        load_runs,
        report_format,
        write_report,
    )

    parser = argparse.ArgumentParser(prog="rtb report", description=REPORT_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", metavar="RUN",
                        help="run directory (with record.json) or run id / unique prefix in the store")
    parser.add_argument("--compare", nargs="+", metavar="VERSION", default=[],
                        help="versions to show, in order (NAME@VERSION, or VERSION when unique); "
                             "without RUN, the newest stored runs holding them")
    parser.add_argument("--format", choices=sorted(WRITERS), default=None,
                        help="output format (default: from the -o suffix, else html)")
    parser.add_argument("-o", "--output", metavar="FILE", default=None,
                        help="output file (default: report.html or report.md)")
    parser.add_argument("--title", default=None, help="report title")
    parser.add_argument("--gate", metavar="RULES", default=None,
                        help="release rules (conf/gate/NAME or a YAML path) whose result the "
                             "verdict box shows, evaluated on the report's runs")
    parser.add_argument("--store", metavar="PATH", default=None,
                        help="results store file for run ids (default: $RTB_STORE or ./rtb.sqlite)")
    parser.add_argument("--monitor", metavar="NAME", default=None,
                        help="timelines of a monitor (`rtb monitor --name NAME`) instead of runs")
    ns = parser.parse_args(args)
    fmt = report_format(ns.output, ns.format)
    out = Path(ns.output or ("report.md" if fmt == "markdown" else "report.html")).expanduser()
    if ns.monitor is not None:
        from benchmark.report_monitor import write_monitor_report

        written = write_monitor_report(ns.store, ns.monitor, out, fmt)
        print(f"report: {written[0]} (monitor {ns.monitor})")
        return 0
    check_report_path(out, fmt)
    if ns.gate is not None:  # bad rules are refused before any work
        from benchmark.gate import load_rules

        load_rules(ns.gate)
    runs = load_runs(ns.runs, ns.compare, ns.store)
    report = build_report(runs, ns.compare, ns.title, gate=ns.gate)
    written = write_report(report, out, fmt)
    print(f"report: {written[0]} ({len(report.plots)} plot(s)"
          + (f", {len(written) - 1} image file(s)" if len(written) > 1 else "") + ")")
    return 0
