"""``rtb monitor``: every window of production data checked, drift-tested,
scored per model version without labels, and matched to a benchmark threat."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

EPILOG = """\
sources (one of):
  DIR            a directory of window files, one per window, in name order
                 (--order timestamp: by their timestamp): .npz images (x, and
                 optionally y, pred, group_NAME arrays, a scalar timestamp) or
                 .csv/.parquet tables
  LOG            one .parquet/.csv log cut into windows: --window 1000rows, or
                 --window 1h with --timestamp COLUMN (streamed in chunks)
  --watch DIR    process each new file of DIR as it lands (polling), until
                 --max-windows or Ctrl-C; files named *.tmp or .hidden, or still
                 growing, are never read
  --demo         build an offline stream from mnist5k (or data=arrests with
                 'model=[arrests_mlp_v1,arrests_mlp_v2]' --rules arrests): clean
                 windows, a rising corruption or noise, a group-mix shift, then a
                 pipeline fault; monitor it and score what was found (exit 0 when
                 the demo's acceptance points hold)

per window and model version: data or schema checks, drift of every property
or feature, of the outputs and of the group mix (corrected over features and
windows), the accuracy estimated without labels (CBPE, with an interval),
realised accuracy when labels exist, and the benchmark threat x severity
that best explains the shift, with each version's accuracy under it from a
stored benchmark run. Alerts: rules in conf/monitor/ (--rules NAME or FILE).
Labels that arrive later: re-run on the same windows; a changed window is
processed again, an unchanged one is skipped (so a killed monitor resumes).

exit status: 0 every rule holds, 1 a rule failed on some window, 2 bad usage
(arguments, config, files)

examples:
  rtb monitor --demo
  rtb monitor --demo data=arrests 'model=[arrests_mlp_v1,arrests_mlp_v2]' --rules arrests
  rtb monitor windows/ --name prod 'model=[mnist_cnn_v1,mnist_cnn_v2]'
  rtb monitor traffic.parquet --window 1h --timestamp ts --label y --name prod
  rtb monitor --watch incoming/ --max-windows 24 --name prod --junit alerts.xml
  rtb report --monitor prod
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rtb monitor", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Monitor windows of production data against a reference: checks, drift, "
                    "accuracy per version without labels, the shift matched to the benchmark.",
        epilog=EPILOG)
    p.add_argument("args", nargs="*", metavar="SOURCE|OVERRIDE",
                   help="a directory of windows or a log file, and Hydra overrides as for "
                        "`rtb run` (data=..., model=[...])")
    p.add_argument("--name", help="monitor name in the store (default: the source's name)")
    p.add_argument("--reference", default="data", metavar="REF",
                   help="labelled reference: `data` (the config's eval set, default), an "
                        ".npz/.csv/.parquet file, or run:RUN_ID (a stored run's data)")
    p.add_argument("--rules", default="default", metavar="NAME|FILE",
                   help="alert rules: conf/monitor/NAME.yaml or a YAML file (default: default)")
    p.add_argument("--window", metavar="SIZE", help="log windows: 1000rows, 30min, 1h, 1d")
    p.add_argument("--timestamp", metavar="COLUMN", help="timestamp column of tables and logs")
    p.add_argument("--label", metavar="COLUMN", help="label column of tables (optional)")
    p.add_argument("--group", action="append", default=[], metavar="COLUMN",
                   help="group column of tables (repeatable)")
    p.add_argument("--served", metavar="COLUMN", help="column of logged predictions")
    p.add_argument("--order", choices=("name", "timestamp"), default="name",
                   help="order of a directory's windows (default: name)")
    p.add_argument("--watch", type=Path, metavar="DIR", help="poll DIR for new window files")
    p.add_argument("--max-windows", type=int, metavar="N", help="stop after N windows")
    p.add_argument("--poll", type=float, default=1.0, metavar="S",
                   help="watch: seconds between polls (default 1)")
    p.add_argument("--idle", type=float, metavar="S",
                   help="watch: stop after S seconds without a new file")
    p.add_argument("--store", metavar="PATH", help="results store (default $RTB_STORE or "
                   "rtb.sqlite)")
    p.add_argument("--benchmark-run", metavar="RUN",
                   help="stored run for each version's accuracy under the matched threat "
                        "(default: the newest run with corruptions or faults of the versions)")
    p.add_argument("--junit", type=Path, metavar="FILE", help="write the alerts as JUnit XML")
    p.add_argument("--summary", type=Path, metavar="FILE", help="write a Markdown summary")
    p.add_argument("--demo", action="store_true", help="build and monitor the offline demo stream")
    p.add_argument("--demo-dir", type=Path, metavar="DIR",
                   help="demo: where the stream is written (default: a new temporary directory)")
    p.add_argument("--demo-corruption", default="fog", metavar="NAME",
                   help="demo: the planted corruption (default: fog)")
    p.add_argument("--demo-fault", default=None, metavar="NAME",
                   help="demo: the planted pipeline fault (default: scale_255 for images, "
                        "unit_change for arrests)")
    p.add_argument("--trust-checkpoint", action="append", default=[], metavar="PATH",
                   help="fully unpickle this checkpoint (it can run code); repeatable")
    return p


def monitor_main(args: Sequence[str]) -> int:
    """``rtb monitor`` (see --help)."""
    parser = build_parser()
    try:
        ns = parser.parse_intermixed_args(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    from benchmark.monitor.app import main

    return main(ns)
