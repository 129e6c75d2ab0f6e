"""The validation policy and the pre-run checks of data and model versions.

The policy (``conf/validation/*.yaml``, top-level ``validation`` section)
says which checks run, their thresholds, and what a failing check does:
``on_fail: stop`` ends ``rtb run`` before any threat with
``ValidationFailed`` (exit status 3), ``report`` only records it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmark.core.errors import UserError
from benchmark.core.specs import ModelSpec, ValidationPolicy
from benchmark.core.types import CheckResult, EvalSet, ModelUnderTest
from metrics.checks import get_check, list_checks

log = logging.getLogger(__name__)



class ValidationFailed(UserError):
    """A check failed under ``on_fail: stop``: the run ends before any threat.

    Exit status 3, so a CI step can tell failed validation (3) from a mistake
    in the config or files (2).
    """

    exit_code = 3

    def __init__(self, message: str, results: Sequence[CheckResult] = ()) -> None:
        super().__init__(message)
        self.results = list(results)


def _reference_stats(policy: ValidationPolicy, data: EvalSet,
                     model_specs: Sequence[ModelSpec]) -> dict[str, Any]:
    """Channel statistics the inputs should have: the policy's, else the
    training set's, else the models' declared normalization (if not identity)."""
    from metrics.data_checks import DECLARED, channel_means_stds

    if policy.reference_mean is not None and policy.reference_std is not None:
        return {"reference_mean": policy.reference_mean, "reference_std": policy.reference_std,
                "reference_source": "policy"}
    if data.train_x is not None and data.train_x.shape[1:] == data.x.shape[1:]:
        mean, std = channel_means_stds(data.train_x)
        return {"reference_mean": tuple(mean.tolist()), "reference_std": tuple(std.tolist()),
                "reference_source": "training set"}
    declared = {(m.mean, m.std) for m in model_specs
                if not (set(m.mean) == {0.0} and set(m.std) == {1.0})}
    if len(declared) == 1:
        mean_t, std_t = next(iter(declared))
        return {"reference_mean": mean_t, "reference_std": std_t, "reference_source": DECLARED}
    return {}


def data_context(policy: ValidationPolicy, data: EvalSet, models: Sequence[ModelUnderTest],
                 model_specs: Sequence[ModelSpec] = ()) -> Any:
    """The ``DataContext`` for ``data`` judged against what ``models`` declare."""
    from metrics.data_checks import DataContext

    shapes = {tuple(m.input_shape) for m in models}
    shape = next(iter(shapes)) if len(shapes) == 1 else None
    return DataContext.from_evalset(data, input_shape=shape, input_range=policy.input_range,
                                    **_reference_stats(policy, data, model_specs))


def run_data_checks(policy: ValidationPolicy, context: Any) -> list[CheckResult]:
    """Every data check the policy selects, on one ``DataContext``."""
    results = []
    for name in list_checks("data"):
        if not policy.runs(name):
            continue
        if name != "dtype_shape" and context.x.ndim != 4:
            continue  # every other data check reads N x C x H x W
        result = get_check(name)(context, **policy.thresholds.get(name, {}))
        result.subject = result.subject or f"data:{context.name}"
        results.append(result)
    return results


def run_model_checks(policy: ValidationPolicy, model: ModelUnderTest,
                     x: Any) -> list[CheckResult]:
    """Every model check the policy selects, on a probe drawn from ``x``;
    the model's mode, buffers, requires_grad and the random state are restored."""
    from metrics.model_checks import ModelContext, make_probe, preserved_state

    probe = make_probe(x, policy.probe_size, policy.input_range, model.input_shape)
    ctx = ModelContext(model=model, probe=probe)
    results = []
    with preserved_state(model.module, [model.device]):
        for name in list_checks("model"):
            if not policy.runs(name):
                continue
            result = get_check(name)(ctx, **policy.thresholds.get(name, {}))
            result.subject = model.key
            results.append(result)
    return results


def run_validation(policy: ValidationPolicy, data: EvalSet, models: Sequence[ModelUnderTest],
                   model_specs: Sequence[ModelSpec] = (), *, what: str = "all"
                   ) -> list[CheckResult]:
    """Data checks (``what`` in all | data) and model checks (all | model)."""
    results: list[CheckResult] = []
    if policy.data and what in ("all", "data"):
        results += run_data_checks(policy, data_context(policy, data, models, model_specs))
    if policy.model and what in ("all", "model"):
        for model in models:
            results += run_model_checks(policy, model, data.x)
    for r in results:
        log.log(logging.WARNING if r.status != "pass" else logging.DEBUG, "check %s %s: %s %s",
                r.subject, r.check, r.status, r.message)
    return results


def failure_message(results: Sequence[CheckResult], limit: int = 160) -> str:
    """One line naming every failed check with the start of its message."""
    parts = []
    for r in results:
        if r.status == "fail":
            msg = r.message if len(r.message) <= limit else r.message[: limit - 3] + "..."
            parts.append(f"{r.subject} {r.check} ({msg.rstrip('.')})")
    return "; ".join(parts)


def run_pre_checks(policy: ValidationPolicy | None, data: EvalSet,
                   models: Sequence[ModelUnderTest],
                   model_specs: Sequence[ModelSpec] = ()) -> list[CheckResult]:
    """The checks ``rtb run`` does before any threat; raises ``ValidationFailed``
    under ``on_fail: stop`` when one fails."""
    if policy is None:
        return []
    results = run_validation(policy, data, models, model_specs)
    failed = [r for r in results if r.status == "fail"]
    if failed and policy.on_fail == "stop":
        raise ValidationFailed(
            f"Validation failed before any attack: {failure_message(results)}. Expected every "
            f"check to pass (see `rtb validate` with the same overrides for the evidence, or "
            f"set validation=report_only to run anyway).", results)
    return results


def status_of(results: Sequence[CheckResult]) -> str:
    """fail if any fails, else warn if any warns, else pass."""
    statuses = {r.status for r in results}
    return "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"


def evidence_summary(results: Sequence[CheckResult]) -> dict[str, Any]:
    """JSON-ready results (numpy values made plain)."""

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, np.generic):
            return v.item()
        return v

    return {"status": status_of(results), "checks": [plain(r.as_dict()) for r in results]}
