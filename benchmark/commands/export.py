"""``rtb export adversarial``: a run's kept perturbed inputs as a dataset."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

EXPORT_HELP = """\
Write the perturbed inputs a run kept in its example gallery (broken points,
the worst group's points, points where versions disagree) for one version,
threat and budget, with true labels and predictions.

  npz (default): arrays x (the exact float inputs), y, classes, and 2-D
                 predictions / clean_predictions / sample; reloads with
                 rtb run data=npz data.root=FILE.npz
  png:           DIR/<class>/NNNN-sampleI.png (the image_folder layout) and
                 DIR/index.csv; 8-bit pixels, so predictions may differ

Examples:
  rtb export adversarial outputs/DATE/TIME-default --threat pgd_linf --eps 0.3 \\
      --version mnist_cnn@v2 -o adv.npz
  rtb export adversarial RUN_DIR --threat fgsm --eps 0.1 --format png -o adv_png/
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtb export", description=EXPORT_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["adversarial"],
                        help="what to export: adversarial (the gallery's perturbed inputs)")
    parser.add_argument("run", metavar="RUN", help="a run directory (or its record.json)")
    parser.add_argument("--threat", required=True, help="attack, corruption or fault name")
    parser.add_argument("--eps", type=float, default=None,
                        help="budget (or severity) of the threat; needed when the run has several")
    parser.add_argument("--version", default=None, metavar="NAME@VERSION",
                        help="the version attacked; needed when the run has several")
    parser.add_argument("--format", choices=["npz", "png"], default="npz")
    parser.add_argument("-o", "--output", required=True, help="output .npz file or PNG directory")
    return parser


def export_main(args: Sequence[str]) -> int:
    """``rtb export``."""
    ns = build_parser().parse_args(args)
    from benchmark.export import export_examples  # torch: only once the arguments are good

    path, sel = export_examples(ns.run, ns.threat, ns.eps, ns.version, Path(ns.output),
                                ns.format)
    print(f"exported {len(sel.rows)} example(s) of {sel.version} under {sel.threat} "
          f"({'no param' if sel.param != sel.param else f'{sel.param:g}'}) to {path}")
    return 0
