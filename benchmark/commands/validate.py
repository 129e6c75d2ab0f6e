"""``rtb validate``: data and model checks before a run, or drift of a new batch."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

EPILOG = """\
what is checked (rtb validate --list shows every check and its thresholds):
  data   dtype and shape, NaN/Inf, values outside [0, 1], 0-255 or already
         normalized inputs, channel statistics and order (BGR) against the
         training set or the models' declared normalization, constant images,
         exact and near duplicates (within the set, and with the training set),
         labels outside the classes, classes never seen, class imbalance,
         brightness/contrast/sharpness outliers
  model  eval mode, determinism, batch invariance (BatchNorm or dropout left
         in training mode), finite outputs, output size, logits vs
         probabilities, usable input gradients
  drift  with --reference and --batch: per image property and predicted class
         (KS / chi-squared tests for up to --small-sample samples, Wasserstein /
         Jensen-Shannon distances with a threshold beyond), and an MMD test on
         each model version's logits

overrides choose the data, model versions and policy as in `rtb run`;
thresholds come from conf/validation/ (validation=NAME, or
validation.thresholds.CHECK.NAME=VALUE).

exit status: 0 pass (warnings allowed), 1 a check failed or drift found,
2 bad usage (arguments, config, files)

examples:
  rtb validate                                   # mnist5k + both reference versions
  rtb validate --only data data=npz data.root=batch.npz
  rtb validate --only model 'model=[mnist_cnn_v2]'
  rtb validate --reference ref.npz --batch new.npz 'model=[mnist_cnn_v1]'
  rtb validate --reference ref.npz --batch new.npz --no-model --json drift.json
  rtb validate validation.thresholds.class_imbalance.warn_ratio=5

.npz files hold x (N x H x W, N x H x W x C or N x C x H x W; uint8 or
floats in [0, 1]) and optionally y; for checks also train_x (the training
images, reference for channel statistics, leakage and outliers).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rtb validate", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check the data and the model versions before a run, or a new batch "
                    "of inputs for drift against a reference set.",
        epilog=EPILOG)
    p.add_argument("overrides", nargs="*", metavar="OVERRIDE",
                   help="Hydra overrides as for `rtb run` (data=..., model=[...], validation=...)")
    p.add_argument("--only", choices=("data", "model"),
                   help="run only the data checks or only the model checks")
    p.add_argument("--reference", type=Path, metavar="REF.npz",
                   help="reference set for drift (with --batch)")
    p.add_argument("--batch", type=Path, metavar="NEW.npz",
                   help="new batch to compare with --reference")
    p.add_argument("--no-model", action="store_true",
                   help="drift: image properties only, no model outputs")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="drift: family-wise significance level of the tests (default 0.05)")
    p.add_argument("--small-sample", type=int, default=1000, metavar="N",
                   help="drift: use tests up to N samples per side, distances beyond "
                        "(default 1000)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write every result to FILE")
    p.add_argument("--trust-checkpoint", action="append", default=[], metavar="PATH",
                   help="fully unpickle this checkpoint (it can run code); repeatable")
    p.add_argument("--trust-hub", action="append", default=[], metavar="DIR",
                   help="run this local torch.hub directory's hubconf.py; repeatable")
    p.add_argument("--list", action="store_true", help="list the checks and their thresholds")
    p.add_argument("--failures-only", action="store_true",
                   help="print only the checks that did not pass")
    return p


def validate_main(args: Sequence[str]) -> int:
    """``rtb validate``: data and model checks, or drift (see --help)."""
    parser = build_parser()
    try:
        ns = parser.parse_args(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    # torch and the checks load only once the arguments are known good
    from benchmark.validate_cmd import checks_main, drift_main, list_text

    if ns.list:
        print(list_text())
        return 0
    if ns.trust_checkpoint:
        from benchmark.models import trust_checkpoints

        trust_checkpoints(ns.trust_checkpoint)
    if ns.trust_hub:
        from benchmark.models import trust_hub_dirs

        trust_hub_dirs(ns.trust_hub)
    if (ns.reference is None) != (ns.batch is None):
        print("rtb validate: error: --reference and --batch go together (drift of a batch "
              "against a reference set).", file=sys.stderr)
        return 2
    if ns.reference is not None:
        if ns.only:
            print("rtb validate: error: --only applies to the checks, not to drift "
                  "(--reference/--batch).", file=sys.stderr)
            return 2
        return drift_main(ns)
    return checks_main(ns)
