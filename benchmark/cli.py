"""The ``rtb`` command.

``rtb run`` is the Hydra app (overrides pass through); the other
subcommands read configs or the store and never re-run a model.
A mistake in the user's own input is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from benchmark.compare import compare_main
from benchmark.core.errors import UserError
from benchmark.gate import gate_main
from benchmark.store import store_main

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

Examples:
  rtb run                                   # default: mnist_cnn@v1 vs @v2, FGSM + PGD
  rtb run data.n_samples=200 'attack.pgd_linf.eps=[0.1,0.2]'
  rtb run 'model=[mnist_cnn_v1]' attack=fgsm
  rtb run -m 'model=glob(*)'                # one job per model version
  rtb run data=cifar10 data.root=~/data/cifar 'model=[my_resnet]'
  rtb list
"""

RUN_HELP_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c",
                  "--shell-completion", "-sc", "--version"}


def error(message: str, code: int = 2) -> int:
    print(f"rtb: error: {message}", file=sys.stderr)
    return code


def run_main(args: Sequence[str]) -> int:
    """``rtb run``: validate every job's config, then hand over to Hydra."""
    from benchmark.compose import compose_spec, expand_for_validation

    args = list(args)
    if not RUN_HELP_FLAGS.intersection(args):
        try:
            for overrides in expand_for_validation(args):
                compose_spec(overrides)
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


def list_main(args: Sequence[str]) -> int:
    """``rtb list``: what the config groups offer."""
    from benchmark.compose import group_options, read_option
    from benchmark.console import format_table

    parser = argparse.ArgumentParser(prog="rtb list", description=list_main.__doc__)
    parser.add_argument("group", nargs="?", help="only this config group (data, model, attack, ...)")
    ns = parser.parse_args(args)
    groups = [ns.group] if ns.group else ["data", "model", "attack", "corruption", "fault"]
    for group in groups:
        options = group_options(group)
        if not options:
            return error(f"Unknown config group {group!r}; expected one of: data, model, attack, "
                         "corruption, fault.")
        rows = []
        for opt in options:
            body = read_option(group, opt)
            if group == "model":
                inner = body.get(opt, body)
                rows.append([opt, f"{inner.get('name')}@{inner.get('version')}",
                             str(inner.get("checkpoint", ""))])
            elif group == "attack":
                inner = body.get(opt, body)
                rows.append([opt, str(inner.get("_target_", "")).removeprefix("art.attacks.evasion."),
                             f"eps={inner.get('eps')}"])
            elif group == "data":
                rows.append([opt, str(body.get("loader", opt)),
                             "built-in" if not body.get("root") and body.get("loader") in
                             ("mnist5k", "digits") else "needs data.root"])
            elif group == "corruption":
                rows.append([opt, f"{len(body.get('corruptions') or [])} corruptions",
                             f"severities={body.get('severities')} baseline={body.get('baseline')}"])
            elif group == "fault":
                rows.append([opt, f"{len(body.get('faults') or {})} faults",
                             ", ".join(body.get("faults") or {})])
            else:
                rows.append([opt, "", ""])
        print(f"\n{group} (select with {group}=NAME" +
              (f" or {group}=[A,B]" if group in ("model", "attack") else "") + ")")
        print(format_table(["option", "what", "details"], rows, align="lll"))
    return 0


def report_main(args: Sequence[str]) -> int:
    """``rtb report`` (benchmark.report_html); imported on use, it loads matplotlib."""
    from benchmark.report_html import report_main as main_

    return main_(args)


def mlflow_log_main(args: Sequence[str]) -> int:
    """``rtb mlflow-log`` (benchmark.mlflow_log); imported on use, MLflow is optional."""
    from benchmark.mlflow_log import mlflow_log_main as main_

    return main_(args)


def validate_main(args: Sequence[str]) -> int:
    """``rtb validate`` (benchmark.validate_cmd): checks alone, or drift."""
    from benchmark.validate_cmd import validate_main as main_

    return main_(args)


def reproduce_main(args: Sequence[str]) -> int:
    """``rtb reproduce`` (benchmark.reproduce)."""
    from benchmark.reproduce import reproduce_main as main_

    return main_(args)


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "run": run_main,
    "list": list_main,
    "reproduce": reproduce_main,
    "store": store_main,
    "compare": compare_main,
    "gate": gate_main,
    "report": report_main,
    "mlflow-log": mlflow_log_main,
    "validate": validate_main,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(DESCRIPTION)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        return error(
            f"Unknown command {command!r}; expected one of: {', '.join(COMMANDS)} (rtb --help)."
        )
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[command](rest)
    except UserError as exc:
        return error(str(exc), exc.exit_code)


if __name__ == "__main__":
    sys.exit(main())
