"""``rtb reproduce RUN``: re-run a stored run and compare its per-sample outcomes."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from benchmark.commands.store import add_store_option

REPRODUCE_HELP = """\
Re-run a stored run from its record and compare the per-sample outcomes.

RUN is a run id (or a unique prefix) in the store, or a run directory holding
record.json. Checkpoints and data are checked against the recorded sha256 and
fingerprint first; a mismatch is refused (exit 2). Exit 0 when every outcome
is identical, 1 when any differs.

Examples:
  rtb reproduce 20240101-120000-ab12cd34
  rtb reproduce outputs/2024-01-01/12-00-00-default
"""


def reproduce_main(args: Sequence[str]) -> int:
    """``rtb reproduce RUN``."""
    from benchmark.reproduce import format_reproduction, load_recorded, reproduce

    parser = argparse.ArgumentParser(prog="rtb reproduce", description=REPRODUCE_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run id (or unique prefix) in the store, or a run directory")
    add_store_option(parser)
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="directory for the re-run's record (default: reproduce/RUN-TIME)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    ns = parser.parse_args(args)
    recorded = load_recorded(ns.run, ns.store)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = Path(ns.out) if ns.out else Path("reproduce") / f"{recorded.run_id}-{stamp}"
    result = reproduce(recorded, out_dir, progress=not ns.no_progress)
    print(format_reproduction(result))
    return 0 if result.comparison.identical else 1
