"""The Hydra application behind ``rtb run`` and ``python -m benchmark``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from benchmark.compose import to_container
from benchmark.config import parse_run
from benchmark.errors import UserError
from benchmark.report import accuracy_table

log = logging.getLogger(__name__)


def task(cfg: DictConfig) -> None:
    """One job: validate, run, record, show."""
    from benchmark.runner import run_benchmark

    logging.getLogger("art").setLevel(logging.WARNING)
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    try:
        resolved = to_container(cfg)
        spec = parse_run(resolved)
        result = run_benchmark(spec, out_dir, resolved_config=resolved,
                               overrides=list(hc.overrides.task))
    except UserError as exc:
        print(f"rtb: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    print()
    print(accuracy_table(result.measurements))
    print(f"\nrecord: {out_dir / 'record.json'}")


@hydra.main(config_path="pkg://conf", config_name="config", version_base="1.3")
def hydra_app(cfg: DictConfig) -> None:
    task(cfg)
