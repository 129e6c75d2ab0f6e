"""``rtb validate``: the data and model checks alone, or drift between a
reference set and a new batch, for a CI step or a schedule.

Exit status: 0 when nothing failed (warnings allowed), 1 when a check
failed or a feature drifted, 2 for a mistake in the arguments, config or files.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.core.errors import DataError, UserError
from benchmark.core.specs import RunSpec, ValidationPolicy
from benchmark.core.types import CheckResult, ModelUnderTest


def list_text() -> str:
    from benchmark.console import format_table
    from metrics.checks import get_check, list_checks

    rows = []
    for name in list_checks():
        c = get_check(name)
        thresholds = ", ".join(f"{k}={v}" for k, v in c.defaults.items()) or "-"
        rows.append([name, c.kind, c.doc, thresholds])
    return format_table(["check", "kind", "what", "thresholds (defaults)"], rows, align="llll")


def read_npz(path: Path, what: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x (as float NCHW; uint8 divided by 255, other values kept as they are)
    and optional y from an .npz, for drift."""
    from benchmark.data import _to_nchw, read_npz_arrays

    arrays = read_npz_arrays(what, path, "array x and optional y")
    if "x" not in arrays:
        raise DataError(f"{what}: expected an array x in {str(path)!r}, but got "
                        f"{sorted(arrays)}.")
    x = _to_nchw(arrays["x"], what)
    y = arrays.get("y")
    yt = None if y is None else torch.from_numpy(np.asarray(y).astype(np.int64).reshape(-1))
    if yt is not None and len(yt) != len(x):
        raise DataError(f"{what}: expected one label per image ({len(x)}), but got {len(yt)}.")
    return x, yt


def _load(overrides: list[str], need_models: bool
          ) -> tuple[RunSpec, ValidationPolicy, list[ModelUnderTest]]:
    """Compose the config, its validation policy and (when needed) the model versions."""
    from benchmark.compose import compose_spec
    from benchmark.models import load_model, resolve_device

    spec, _ = compose_spec(overrides)
    policy = spec.validation or ValidationPolicy()
    device = resolve_device(spec.device)
    models = [load_model(m, device) for m in spec.models.values()] if need_models else []
    return spec, policy, models


def _print_results(results: Sequence[CheckResult], failures_only: bool) -> str:
    from benchmark.console import checks_detail
    from metrics.validation import status_of

    status = status_of(results)
    if results:
        print(checks_detail(results, all_checks=not failures_only))
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "warn", "fail")}
    print(f"\nvalidation: {status.upper()} ({counts['pass']} pass, {counts['warn']} warn, "
          f"{counts['fail']} fail)")
    return status


def _write_json(path: Path | None, results: Sequence[CheckResult], **extra: Any) -> None:
    if path is None:
        return
    from benchmark.record import _json_default
    from metrics.validation import evidence_summary

    path.write_text(json.dumps({**evidence_summary(results), **extra}, indent=2,
                               default=_json_default))


def checks_main(ns: argparse.Namespace) -> int:
    from benchmark.data import load_evalset
    from metrics.validation import run_validation

    spec, policy, models = _load(ns.overrides, need_models=True)
    # Out-of-range values are read as they are: they are what the checks diagnose.
    data_spec = replace(spec.data, options={**spec.data.options, "check_range": False})
    data = load_evalset(data_spec)
    policy = replace(policy, data=True, model=True)
    results = run_validation(policy, data, models, list(spec.models.values()),
                             what=ns.only or "all")
    status = _print_results(results, ns.failures_only)
    _write_json(ns.json, results, data={"name": data.name, "n": len(data),
                                        "fingerprint": data.fingerprint})
    return 1 if status == "fail" else 0


def drift_main(ns: argparse.Namespace) -> int:
    from benchmark.core.forward import forward_logits
    from metrics.data_checks import DataContext, channel_means_stds
    from metrics.drift import DriftConfig, ModelLogits, drift_report
    from metrics.validation import run_data_checks

    try:
        cfg = DriftConfig(alpha=ns.alpha, small_sample=ns.small_sample)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    ref_x, _ = read_npz(ns.reference, "--reference")
    new_x, new_y = read_npz(ns.batch, "--batch")
    spec, policy, models = _load(ns.overrides, need_models=not ns.no_model)
    if ref_x.shape[1:] != new_x.shape[1:]:
        result = CheckResult("drift:shape", "fail",
                             f"batch samples have shape {list(new_x.shape[1:])}, the reference "
                             f"{list(ref_x.shape[1:])}.", subject="drift")
        _print_results([result], ns.failures_only)
        _write_json(ns.json, [result])
        return 1
    shape = models[0].input_shape if models else None
    classes = [str(i) for i in range(models[0].num_classes)] if models else (
        [str(i) for i in range(int(new_y.max()) + 1)] if new_y is not None and len(new_y) else [])
    ref_mean, ref_std = channel_means_stds(ref_x)
    ctx = DataContext(x=new_x, y=new_y, classes=classes, name="batch", input_shape=shape,
                      input_range=policy.input_range, train_x=ref_x,
                      reference_mean=tuple(ref_mean.tolist()),
                      reference_std=tuple(ref_std.tolist()), reference_source="reference set")
    results = run_data_checks(replace(policy, skip=(*policy.skip, "train_overlap")), ctx)
    usable = [m for m in models if tuple(m.input_shape) == tuple(ref_x.shape[1:])]
    if models and not usable:
        raise DataError(f"Expected --reference and --batch images of a model's input shape "
                        f"{list(models[0].input_shape)}, but got {list(ref_x.shape[1:])} "
                        "(use --no-model for image properties only).")
    logits = {m.key: ModelLogits(forward_logits(m, torch.nan_to_num(ref_x), spec.batch_size),
                                 forward_logits(m, torch.nan_to_num(new_x), spec.batch_size),
                                 m.num_classes) for m in usable}
    report = drift_report(ref_x, new_x, logits, cfg)
    results += report.as_checks()
    status = _print_results(results, ns.failures_only)
    if report.drifted:
        print(f"drifted: {', '.join(report.drifted)}")
    _write_json(ns.json, results, drifted=report.drifted, n_reference=report.n_reference,
                n_batch=report.n_batch)
    return 1 if status == "fail" else 0
