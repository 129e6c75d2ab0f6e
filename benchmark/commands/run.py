"""``rtb run``: validate every job's config, then hand over to the Hydra app."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from benchmark.commands.errors import error
from benchmark.core.errors import UserError

RUN_HELP_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c",
                  "--shell-completion", "-sc", "--version"}


def run_main(args: Sequence[str]) -> int:
    """``rtb run``: validate every job's config, then hand over to Hydra."""
    from benchmark.compose import compose_spec, expand_for_validation
    from benchmark.outputs import check_run_outputs

    args = list(args)
    if not RUN_HELP_FLAGS.intersection(args):
        try:
            for overrides in expand_for_validation(args):
                compose_spec(overrides)
            check_run_outputs(args)
        except UserError as exc:
            return error(str(exc), exc.exit_code)
    from benchmark.app import hydra_app

    saved = sys.argv
    sys.argv = ["rtb run", *args]
    try:
        hydra_app()
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else error(exc.code, 1)
    finally:
        sys.argv = saved
    return 0
