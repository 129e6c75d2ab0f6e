"""The run record: provenance plus metrics in ``record.json``, and the
per-sample outcomes in ``outcomes.parquet``, both in the Hydra run directory
(the layout and its reader live in ``benchmark.rundir``; this is the writer).

These files are the source of truth from which the store can be rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from benchmark.core.types import CheckResult, Measurement, Outcome
from benchmark.rundir import OUTCOMES_FILE, RECORD_FILE

RECORD_SCHEMA = 1

TRACKED_PACKAGES = (
    "robustness-testbench",
    "torch",
    "torchvision",
    "adversarial-robustness-toolbox",
    "numpy",
    "fairlearn",
    "hydra-core",
    "omegaconf",
    "pandas",
    "scipy",
    "scikit-learn",
)


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_state() -> dict[str, Any]:
    """Commit and dirty flag of the checkout rtb's code lives in, if any."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here, capture_output=True, text=True, timeout=10,
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def environment(device: torch.device) -> dict[str, Any]:
    """What explains a numeric difference between two runs of the same config."""
    env: dict[str, Any] = {
        "device": str(device),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "torch_cuda": torch.version.cuda,
        "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "argv": sys.argv,
    }
    env.update(torch_build())
    return env


def torch_build() -> dict[str, Any]:
    """How torch was built and how it is set to compute (reproduction diffs)."""
    return {
        "torch_version": torch.__version__,
        "torch_git": getattr(torch.version, "git_version", None),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "mkl": torch.backends.mkl.is_available(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "cudnn_version": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "mkl_num_threads": os.environ.get("MKL_NUM_THREADS"),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "python_hash_seed": os.environ.get("PYTHONHASHSEED"),
    }


def config_hash(resolved: dict[str, Any]) -> str:
    """Content hash of a resolved config (key order does not matter)."""
    blob = json.dumps(resolved, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class RunRecord:
    """Everything a run leaves behind, before it is written."""

    run_id: str
    name: str
    started: str
    finished: str
    config: dict[str, Any]
    overrides: list[str]
    config_hash: str
    run_key: str
    models: dict[str, dict[str, Any]]
    data: dict[str, Any]
    seed: int
    device: str
    packages: dict[str, str] = field(default_factory=package_versions)
    git: dict[str, Any] = field(default_factory=git_state)
    env: dict[str, Any] = field(default_factory=dict)
    measurements: list[Measurement] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": RECORD_SCHEMA,
            "run_id": self.run_id,
            "name": self.name,
            "started": self.started,
            "finished": self.finished,
            "config": self.config,
            "overrides": self.overrides,
            "config_hash": self.config_hash,
            "run_key": self.run_key,
            "models": self.models,
            "data": self.data,
            "seed": self.seed,
            "device": self.device,
            "packages": self.packages,
            "git": self.git,
            "env": self.env,
            "measurements": [
                {**m.as_dict(), "run": self.run_id} for m in self.measurements
            ],
            "checks": [c.as_dict() for c in self.checks],
            "extra": self.extra,
        }


def outcomes_frame(outcomes: list[Outcome], samples: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-sample outcomes in long form: one row per (model, threat, sample).

    ``samples`` (one row per sample, in sample order) adds what describes the
    sample under every threat: its true ``label`` and one text column per
    group feature, so paired tests per group need nothing else."""
    frames = []
    for o in outcomes:
        n = len(o.pred)
        cols: dict[str, Any] = {
            "model": np.full(n, o.model, dtype=object),
            "version": np.full(n, o.version, dtype=object),
            "family": np.full(n, o.threat.family, dtype=object),
            "threat": np.full(n, o.threat.name, dtype=object),
            "param": np.full(n, np.nan if o.threat.param is None else o.threat.param),
            "sample": np.arange(n, dtype=np.int64),
            "pred": np.asarray(o.pred, dtype=np.int64),
            "correct": np.asarray(o.correct, dtype=bool),
        }
        if samples is not None and len(samples) == n:
            for k in samples.columns:
                cols[k] = samples[k].to_numpy()
        for k, v in o.columns.items():
            cols[k] = np.asarray(v, dtype=np.float64)
        frames.append(pd.DataFrame(cols))
    if not frames:
        return pd.DataFrame(columns=["model", "version", "family", "threat", "param", "sample",
                                     "pred", "correct"])
    return pd.concat(frames, ignore_index=True)


def write_record(out_dir: Path, record: RunRecord, outcomes: list[Outcome],
                 samples: pd.DataFrame | None = None) -> Path:
    """Write ``record.json`` and ``outcomes.parquet`` atomically into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = outcomes_frame(outcomes, samples)
    tmp = out_dir / (OUTCOMES_FILE + ".tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, out_dir / OUTCOMES_FILE)
    path = out_dir / RECORD_FILE
    tmp = out_dir / (RECORD_FILE + ".tmp")
    tmp.write_text(json.dumps(record.as_dict(), indent=2, default=_json_default))
    os.replace(tmp, path)
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (Path, torch.device)):
        return str(obj)
    return repr(obj)

