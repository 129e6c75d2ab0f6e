"""The ``rtb`` command.

``rtb run`` is the Hydra app (overrides pass through); the other
subcommands read configs or the store and never re-run a model.
A mistake in the user's own input is one line on stderr and exit status 2.

Each subcommand lives in its own module under ``benchmark.commands``, imported
only when it runs: ``rtb --help``, ``rtb --version`` and ``rtb list`` load
neither torch nor ART.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from benchmark.commands.errors import error
from benchmark.core.errors import UserError

log = logging.getLogger(__name__)

DESCRIPTION = """\
rtb - robustness testbench: find where a model fails (adversarial attacks,
corruptions, pipeline faults, groups served worse) and whether a new version
fails less.

Commands:
  run      run a benchmark; Hydra overrides pass through (rtb run --help)
  list     list datasets, model versions and attacks from the config groups
  reproduce  re-run a stored run from its record; are the outcomes identical?
  store    list, export or rebuild the results store (rtb store --help)
  compare  compare versions with paired statistics (rtb compare --help)
  gate     check release rules (conf/gate/) for CI; exit 0 pass, 1 fail (rtb gate --help)
  report   HTML or Markdown report of a run or a version comparison (rtb report --help)
  mlflow-log  log a run or a sweep to an MLflow tracking store (optional extra `mlflow`)
  validate data and model checks, or drift of a batch (rtb validate --help); exit 1 on failure
  monitor  windows of production data: drift, accuracy without labels, matched threat (rtb monitor --help)
  export   write a run's kept adversarial examples as npz or PNGs (rtb export --help)

Examples:
  rtb run                                   # default: mnist_cnn@v1 vs @v2, FGSM + PGD
  rtb run data.n_samples=200 'attack.pgd_linf.eps=[0.1,0.2]'
  rtb run 'model=[mnist_cnn_v1]' attack=fgsm
  rtb run -m 'model=glob(*)'                # one job per model version
  rtb run data=cifar10 data.root=~/data/cifar 'model=[my_resnet]'
  rtb run --resume outputs/DATE/TIME-NAME   # finish a killed run in its own directory
  rtb list
  rtb --version
"""

#: Subcommand -> (module under ``benchmark.commands``, its entry point).
COMMAND_MODULES: dict[str, tuple[str, str]] = {
    "run": ("run", "run_main"),
    "list": ("list_cmd", "list_main"),
    "reproduce": ("reproduce", "reproduce_main"),
    "store": ("store", "store_main"),
    "compare": ("compare", "compare_main"),
    "gate": ("gate", "gate_main"),
    "report": ("report", "report_main"),
    "mlflow-log": ("mlflow_log", "mlflow_log_main"),
    "validate": ("validate", "validate_main"),
    "monitor": ("monitor", "monitor_main"),
    "export": ("export", "export_main"),
}
COMMANDS = tuple(COMMAND_MODULES)


def command(name: str) -> Callable[[Sequence[str]], int]:
    """The entry point of subcommand ``name``, importing its module now."""
    module, func = COMMAND_MODULES[name]
    entry: Callable[[Sequence[str]], int] = getattr(
        importlib.import_module(f"benchmark.commands.{module}"), func)
    return entry


def version() -> str:
    """The installed distribution's version, else the package's own."""
    from importlib import metadata

    try:
        return metadata.version("robustness-testbench")
    except metadata.PackageNotFoundError:
        from benchmark import __version__

        return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """``rtb ARGS``: dispatch to a subcommand; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(DESCRIPTION)
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"rtb {version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMAND_MODULES:
        return error(
            f"Unknown command {name!r}; expected one of: {', '.join(COMMANDS)} (rtb --help)."
        )
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return command(name)(rest)
    except UserError as exc:
        return error(str(exc), exc.exit_code)


if __name__ == "__main__":
    sys.exit(main())
