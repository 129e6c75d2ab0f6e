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
fingerprint first; a mismatch is refused (exit 2). The record's config is
checked like a config file: a _target_ outside the places where rtb builds an
object is refused, its allow_targets are ignored (use --allow-target), and a
checkpoint that needs full unpickling is refused unless --trust-checkpoint
names it. Exit 0 when every outcome is identical, 1 when any differs.

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
    parser.add_argument("--trust-checkpoint", action="append", default=[], metavar="PATH",
                        help="fully unpickle this checkpoint (it can run code); repeatable. "
                             "A record never trusts a checkpoint by itself")
    parser.add_argument("--trust-hub", action="append", default=[], metavar="DIR",
                        help="run this local torch.hub directory's hubconf.py; repeatable. "
                             "A record never trusts a hub directory by itself")
    parser.add_argument("--allow-target", action="append", default=[], metavar="PREFIX",
                        help="module prefix whose nn.Module classes may be architectures "
                             "(as allow_targets of rtb run; never read from the record)")
    ns = parser.parse_args(args)
    import os

    from benchmark.models import TRUST_ENV, TRUST_HUB_ENV, trust_checkpoints, trust_hub_dirs

    os.environ.pop(TRUST_ENV, None)  # only this command line trusts a checkpoint
    os.environ.pop(TRUST_HUB_ENV, None)  # or a hub directory
    trust_checkpoints(ns.trust_checkpoint)
    trust_hub_dirs(ns.trust_hub)
    recorded = load_recorded(ns.run, ns.store)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = Path(ns.out) if ns.out else Path("reproduce") / f"{recorded.run_id}-{stamp}"
    result = reproduce(recorded, out_dir, progress=not ns.no_progress,
                       allow_targets=tuple(ns.allow_target))
    print(format_reproduction(result))
    return 0 if result.comparison.identical else 1
