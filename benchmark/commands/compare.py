"""``rtb compare``: versions side by side from the store, with paired statistics."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from benchmark.commands.store import add_store_option

COMPARE_HELP = """\
Compare model versions from the results store, metric by metric, on the same
samples: each version's value, the difference, a paired test and a marker
(*) for the changes that are significant after adjusting for the number of
tests. Nothing is re-run.

What is shown: by default the overall rows (one per threat and metric with a
paired test) and, per threat, how many group rows changed significantly and
the largest change; --all prints every row (groups, worst group per feature,
left-out metrics); --metric and --threat select rows and print them in full.
Worst- and best-group rows are keyed by the metric, with the group each
version names in the group column ("class=4 -> 8").

Which runs: by default the newest run that holds all the named versions (or
the newest run of each); --run restricts to given runs; --sweep takes every
run of a sweep: each metric is the mean +- sd over the paired runs (the same
run, or runs of the same seed), and its paired test pools them. Only measurements on the same data fingerprint and the same
threat settings are compared; the rest is listed under "left out" with why.

Tests: accuracy-type metrics use McNemar's exact test (binomial test on the
samples one version gets right and the other wrong) plus a paired bootstrap
interval of the difference; mean_/median_ metrics of a per-sample column use
a paired bootstrap. Group rows (feature=value) get the same tests on the
group's samples (accuracy, and for binary tasks the selection rate, TPR,
FPR and FNR, read from the outcomes' label and group columns); corruption
errors (mCE) appear side by side with the rest.

Examples:
  rtb compare mnist_cnn@v1 mnist_cnn@v2
  rtb compare mnist_cnn@v1 mnist_cnn@v2 --format markdown > compare.md
  rtb compare --run 20240101-120000-ab12cd34          # all versions of one run
  rtb compare mnist_cnn@v1 mnist_cnn@v2 --all
  rtb compare mnist_cnn@v1 mnist_cnn@v2 --metric accuracy_worst_group --threat pgd_linf
  rtb compare --sweep my-sweep --format json
"""


def build_parser(prog: str = "rtb compare", description: str = COMPARE_HELP) -> argparse.ArgumentParser:
    """The parser of ``rtb compare`` without ``--format``: versions, runs, test settings, store."""
    from metrics.statistics import ADJUSTMENTS

    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("versions", nargs="*", metavar="NAME@VERSION",
                        help="versions to compare; the first is the baseline")
    parser.add_argument("--run", action="append", default=None, metavar="ID",
                        help="read from this run (repeatable; a unique prefix is enough)")
    parser.add_argument("--sweep", default=None, metavar="ID", help="read every run of this sweep")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level (0.05)")
    parser.add_argument("--adjust", choices=sorted(ADJUSTMENTS), default="holm",
                        help="multiple-comparison adjustment of the p-values (holm)")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (1000)")
    parser.add_argument("--metric", action="append", default=None, metavar="NAME",
                        help="only this metric (repeatable), e.g. accuracy_worst_group")
    parser.add_argument("--threat", action="append", default=None, metavar="NAME",
                        help="only this threat, by name (pgd_linf) or label ('fgsm eps=0.1'); "
                             "repeatable")
    add_store_option(parser)
    return parser


def compare_main(args: Sequence[str]) -> int:
    """``rtb compare``."""
    from benchmark.compare import FORMATS, compare, filter_rows, format_text, select_sides
    from benchmark.store import open_store

    parser = build_parser()
    parser.add_argument("--format", choices=sorted(FORMATS), default="table",
                        help="table (console), markdown or json")
    parser.add_argument("--all", action="store_true",
                        help="every row, group rows and left-out metrics included (the table "
                             "shows only overall rows and significant changes by default)")
    ns = parser.parse_args(args)
    if ns.run and ns.sweep:
        parser.error("choose --run or --sweep, not both")
    if ns.n_boot < 1:
        parser.error(f"expected --n-boot to be a positive integer, but got {ns.n_boot}")
    with open_store(ns.store, readonly=True) as store:
        sides = select_sides(store, ns.versions, runs=ns.run, sweep=ns.sweep)
        result = compare(store, sides, alpha=ns.alpha, adjust=ns.adjust, n_boot=ns.n_boot,
                         every_run=ns.sweep is not None)
    if ns.metric or ns.threat:
        result = filter_rows(result, metrics=ns.metric or (), threats=ns.threat or ())
    if ns.format == "table":
        print(format_text(result, full=bool(ns.all or ns.metric or ns.threat)))
    else:
        print(FORMATS[ns.format](result))
    return 0
