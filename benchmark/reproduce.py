"""``rtb reproduce RUN``: re-run a stored run from its record and say whether
the per-sample outcomes are identical.

The record carries the resolved config, seed, model sha256s and data
fingerprint. Before any work, every checkpoint and the data are checked
against them: a file that changed is refused with one line (exit 2), because
a re-run on other inputs would prove nothing. The re-run uses the recorded
thread count and writes its own record in a new directory; it is not added to
the store (nothing is counted twice). When outcomes differ, the environment
fields that differ (package versions, torch build, device, threads,
determinism flags) are listed to explain why.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.core.errors import CheckpointError, DataError, StoreError

log = logging.getLogger(__name__)

#: Outcome columns that identify a row; every other common column is compared.
ROW_KEY: tuple[str, ...] = ("model", "version", "family", "threat", "param", "sample")

#: Record sections whose differences may explain different outcomes.
ENV_SECTIONS: tuple[str, ...] = ("packages", "env")

#: Environment keys that differ between any two runs and explain nothing.
ENV_IGNORED: frozenset[str] = frozenset({"argv"})


@dataclass
class Recorded:
    """A stored run as reproduce needs it."""

    run_id: str
    record: dict[str, Any]
    outcomes: pd.DataFrame
    source: str


@dataclass
class Comparison:
    """Outcome-by-outcome comparison of a re-run with its record."""

    rows: int
    differing_rows: int
    by_column: dict[str, int]
    missing_rows: int
    extra_rows: int

    @property
    def identical(self) -> bool:
        return self.differing_rows == 0 and self.missing_rows == 0 and self.extra_rows == 0


# ----------------------------------------------------------------------------- loading

def load_recorded(ref: str, store: str | None = None) -> Recorded:
    """A run from a run directory (``record.json`` + ``outcomes.parquet``)
    or from the store by run id (or a unique prefix)."""
    from benchmark.rundir import resolve_run_ref

    run = resolve_run_ref(ref, store)
    return Recorded(run.run_id, run.record, run.outcomes(), run.source)


# ----------------------------------------------------------------------------- checks

def verify_checkpoints(record: Mapping[str, Any]) -> None:
    """Every recorded checkpoint still exists and has its recorded sha256."""
    from benchmark.models import sha256_file
    from benchmark.paths import resolve_path

    for key, m in (record.get("models") or {}).items():
        ckpt, want = m.get("checkpoint"), m.get("sha256")
        if not ckpt or not want:
            raise CheckpointError(
                f"Expected the record to name the checkpoint and sha256 of {key}, but got "
                f"checkpoint={ckpt!r}, sha256={want!r}."
            )
        path = resolve_path(str(ckpt))
        if not path.is_file():
            raise CheckpointError(
                f"Cannot reproduce: the checkpoint of {key} is gone ({str(path)!r} does not exist)."
            )
        got = sha256_file(path)
        if got != want:
            raise CheckpointError(
                f"Cannot reproduce: the checkpoint of {key} no longer matches its record "
                f"({str(path)!r} has sha256 {got[:16]}..., the record has {want[:16]}...)."
            )


def verify_data(record: Mapping[str, Any], data_fingerprint: str) -> None:
    want = (record.get("data") or {}).get("fingerprint")
    if want != data_fingerprint:
        name = (record.get("data") or {}).get("name", "?")
        raise DataError(
            f"Cannot reproduce: the data {name!r} no longer matches its record (fingerprint "
            f"{data_fingerprint[:16]}..., the record has {str(want)[:16]}...)."
        )


# ----------------------------------------------------------------------------- comparison

def _same(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Exact equality, with NaN equal to NaN."""
    if pd.api.types.is_float_dtype(a) or pd.api.types.is_float_dtype(b):
        x = a.to_numpy(dtype=np.float64)
        y = b.to_numpy(dtype=np.float64)
        return (x == y) | (np.isnan(x) & np.isnan(y))
    return (a.to_numpy() == b.to_numpy())


def _normalize(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out["version"] = out["version"].astype(str)
    out["param"] = out["param"].astype(float).fillna(-1.0)
    out["sample"] = out["sample"].astype(np.int64)
    out["correct"] = out["correct"].astype(bool)
    return out


def compare_outcomes(recorded: pd.DataFrame, rerun: pd.DataFrame) -> Comparison:
    """Row-by-row comparison on (model, version, threat, param, sample); every
    other column both frames have (pred, correct, norms, ...) must be equal."""
    a, b = _normalize(recorded), _normalize(rerun)
    keys = list(ROW_KEY)
    merged = a.merge(b, on=keys, how="outer", suffixes=("_rec", "_new"), indicator=True)
    both = merged[merged["_merge"] == "both"]
    columns = [c for c in a.columns if c in b.columns and c not in keys]
    by_column: dict[str, int] = {}
    bad = np.zeros(len(both), dtype=bool)
    for c in columns:
        diff = ~_same(both[f"{c}_rec"], both[f"{c}_new"])
        if diff.any():
            by_column[c] = int(diff.sum())
        bad |= diff
    return Comparison(
        rows=len(both),
        differing_rows=int(bad.sum()),
        by_column=by_column,
        missing_rows=int((merged["_merge"] == "left_only").sum()),
        extra_rows=int((merged["_merge"] == "right_only").sum()),
    )


def environment_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``"section.key: old -> new"`` for each environment field that differs."""
    lines = []
    for section in ENV_SECTIONS:
        a, b = old.get(section) or {}, new.get(section) or {}
        for k in sorted(set(a) & set(b)):  # a field an older record lacks explains nothing
            if k not in ENV_IGNORED and a[k] != b[k]:
                lines.append(f"{section}.{k}: {a.get(k)!r} -> {b.get(k)!r}")
    return lines


# ----------------------------------------------------------------------------- reproduce

@dataclass
class Reproduction:
    run_id: str
    new_run_id: str
    out_dir: Path
    comparison: Comparison
    run_key_equal: bool
    env_diff: list[str]


def reproduce(recorded: Recorded, out_dir: Path, *, progress: bool = True,
              allow_targets: tuple[str, ...] = ()) -> Reproduction:
    """Check inputs against the record, re-run it, compare outcomes.

    The record is a file like any config: its own ``allow_targets`` are
    replaced by ``allow_targets`` (the caller's command line), and its
    ``_target_``s pass the same policy as a run's (``parse_run``)."""
    import torch

    from benchmark.data import load_evalset
    from benchmark.record import outcomes_frame
    from benchmark.runner import run_benchmark
    from benchmark.schema import parse_run

    record = recorded.record
    config = record.get("config")
    if not isinstance(config, dict):
        raise StoreError(f"Expected the record of {recorded.run_id} to hold its config, but it has none.")
    checked = {**config, "allow_targets": list(allow_targets)}
    # files are checked against the record next, with messages that name the change
    spec = replace(parse_run(checked, check_files=False), store=None)  # not a new result
    verify_checkpoints(record)
    verify_data(record, load_evalset(spec.data).fingerprint)
    threads = (record.get("env") or {}).get("torch_threads")
    if isinstance(threads, int) and threads > 0:
        torch.set_num_threads(threads)
    result = run_benchmark(spec, out_dir, resolved_config=config,
                           overrides=list(record.get("overrides") or []), progress=progress,
                           extra={"reproduces": recorded.run_id})
    new = result.record.as_dict()
    return Reproduction(
        run_id=recorded.run_id,
        new_run_id=result.record.run_id,
        out_dir=out_dir,
        comparison=compare_outcomes(recorded.outcomes, outcomes_frame(result.outcomes)),
        run_key_equal=new.get("run_key") == record.get("run_key"),
        env_diff=environment_diff(record, new),
    )


def format_reproduction(r: Reproduction) -> str:
    c = r.comparison
    if c.identical:
        head = (f"identical: all {c.rows} per-sample outcomes of run {r.run_id} are reproduced "
                f"exactly (re-run {r.new_run_id})")
    else:
        cols = ", ".join(f"{k}: {v}" for k, v in sorted(c.by_column.items())) or "none"
        head = (f"DIFFERENT: {c.differing_rows} of {c.rows} per-sample outcomes of run {r.run_id} "
                f"differ in the re-run {r.new_run_id} (by column: {cols}); "
                f"{c.missing_rows} missing, {c.extra_rows} new")
    lines = [head, f"run key {'matches' if r.run_key_equal else 'differs from'} the record",
             f"re-run record: {r.out_dir}"]
    if r.env_diff:
        lines.append("environment differences (may explain a difference):")
        lines.extend(f"  {d}" for d in r.env_diff)
    else:
        lines.append("environment: same package versions, torch build, device, threads and flags")
    return "\n".join(lines)
