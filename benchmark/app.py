"""The Hydra application behind ``rtb run`` and ``python -m benchmark``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from benchmark.compose import CONF_DIR, to_container
from benchmark.console import run_summary
from benchmark.core.errors import UserError
from benchmark.schema import parse_run

log = logging.getLogger(__name__)


def task(cfg: DictConfig) -> dict[str, Any]:
    """One job: validate, run, record, show; returns what the sweep callback reads."""
    from benchmark.run_output import console_log_level, quiet_run, verbose
    from benchmark.runner import run_benchmark
    from benchmark.shard import ShardStored
    from benchmark.sweep import JobSkipped, job_for_hydra

    logging.getLogger("art").setLevel(logging.WARNING)
    console_log_level(verbose())
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    try:
        resolved = to_container(cfg)
        spec = parse_run(resolved)
        job = job_for_hydra(spec, hc)
        with quiet_run():
            result = run_benchmark(spec, out_dir, resolved_config=resolved,
                                   overrides=list(hc.overrides.task),
                                   on_key=job.key_hook, extra=job.record_extra)
    except JobSkipped as skipped:
        print(f"skipped: {skipped}")
        return job.skipped(skipped)
    except ShardStored as stored:
        print(f"shard: {stored}")
        return job.result("ran", "", None)
    except UserError as exc:
        print(f"rtb: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    print()
    print(run_summary(result.measurements, result.record.checks, detailed=verbose(),
                      tabular=result.evalset.modality == "tabular"))
    print(f"\nrecord: {out_dir / 'record.json'}")
    if not verbose():
        print(f"details: rtb run ... -v, or rtb report {out_dir}")
    return job.result("ran", result.record.run_id, result.record.as_dict())


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def hydra_app(cfg: DictConfig) -> dict[str, Any]:
    return task(cfg)
