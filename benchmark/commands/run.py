"""``rtb run``: validate every job's config, then hand over to the Hydra app."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmark.commands.errors import error
from benchmark.core.errors import UserError

RUN_HELP_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c",
                  "--shell-completion", "-sc", "--version"}

TRUST_FLAG = "--trust-checkpoint"
#: A local torch.hub directory whose hubconf.py the user trusts to run.
TRUST_HUB_FLAG = "--trust-hub"


def split_trust_flags(args: Sequence[str], flag: str = TRUST_FLAG,
                      what: str = "a checkpoint path") -> tuple[list[str], list[str]]:
    """``(args without FLAG PATH, the trusted paths)`` (``--trust-checkpoint`` by default)."""
    rest: list[str] = []
    paths: list[str] = []
    it = iter(args)
    for a in it:
        if a == flag:
            path = next(it, None)
            if path is None:
                raise UserError(f"Expected `{flag}` to be followed by {what}, but got nothing.")
            paths.append(path)
        elif a.startswith(flag + "="):
            paths.append(a.split("=", 1)[1])
        else:
            rest.append(a)
    return rest, paths


RESUME_FLAG = "--resume"
#: Ask for the detailed console output (every severity, every check, the INFO log).
VERBOSE_FLAGS = ("-v", "--verbose", "--all")


def split_verbose_flags(args: Sequence[str]) -> tuple[list[str], bool]:
    """``(args without -v/--verbose/--all, whether one was given)``."""
    rest = [a for a in args if a not in VERBOSE_FLAGS]
    return rest, len(rest) != len(args)


def _saved_overrides(run_dir: Path) -> list[str]:
    """The Hydra and task overrides a run was started with, from ``.hydra/hydra.yaml``."""
    import yaml

    saved = run_dir / ".hydra" / "hydra.yaml"
    try:
        hydra = yaml.safe_load(saved.read_text())["hydra"]["overrides"]
        overrides = [*hydra.get("hydra", []), *hydra.get("task", [])]
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"Expected a run directory started by rtb run to resume, but cannot "
                        f"read the overrides in {str(saved)!r}: {exc!r}.") from None
    if not all(isinstance(o, str) for o in overrides):
        raise UserError(f"Expected {str(saved)!r} to hold a list of overrides, but got "
                        f"{overrides!r}.")
    return overrides


def resume_args(args: Sequence[str]) -> list[str]:
    """``args`` with ``--resume DIR`` replaced by the overrides the run in
    ``DIR`` was started with, plus ``hydra.run.dir=DIR``: the run starts
    again in its own directory and reuses its finished pieces. Overrides
    after the flag are kept (if they change the config, nothing is reused)."""
    args = list(args)
    if RESUME_FLAG not in args:
        return args
    i = args.index(RESUME_FLAG)
    if i + 1 >= len(args):
        raise UserError(f"Expected a run directory after {RESUME_FLAG}, but got nothing.")
    run_dir = Path(args[i + 1]).expanduser().resolve()
    # A run directory is a file like any other: what only the command line may
    # decide (allow_targets, Hydra callbacks and logging) is not taken from it.
    dropped = ("hydra.run.dir=", "hydra.sweep.dir=", "hydra.mode=", "allow_targets=",
               "hydra.callbacks", "hydra.job_logging", "hydra.hydra_logging")
    kept = [o for o in _saved_overrides(run_dir) if not o.lstrip("+~").startswith(dropped)]
    return [*args[:i], *kept, f"hydra.run.dir={run_dir}", *args[i + 2:]]


def run_main(args: Sequence[str]) -> int:
    """``rtb run``: validate every job's config, then hand over to Hydra."""
    from benchmark.compose import compose_spec, expand_for_validation
    from benchmark.outputs import check_run_outputs
    from benchmark.policy import check_user_config_files, config_dir_flags, normalize_overrides
    from benchmark.run_output import VERBOSE_ENV

    args, detailed = split_verbose_flags(args)
    if detailed:
        os.environ[VERBOSE_ENV] = "1"  # the job, and launcher subprocesses, read it from env
    try:
        args, trusted = split_trust_flags(args)
        args, hubs = split_trust_flags(args, TRUST_HUB_FLAG, "a torch.hub directory")
        if hubs:
            from benchmark.models import trust_hub_dirs

            trust_hub_dirs(hubs)  # the job reads it from env; a config file cannot say it
        args = resume_args(args)
        args = normalize_overrides(args)
        from benchmark.shard import expand_shard_args

        args = expand_shard_args(args)  # shards=N: one job per shard
        if trusted:
            from benchmark.models import trust_checkpoints

            trust_checkpoints(trusted)  # the job, and launcher subprocesses, read it from env
        if not RUN_HELP_FLAGS.intersection(args):
            check_user_config_files(config_dir_flags(args))
            hydra_groups = [a for a in args if a.startswith("hydra/")]
            for i, overrides in enumerate(expand_for_validation(args)):
                compose_spec(overrides, hydra_overrides=hydra_groups if i == 0 else None)
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
