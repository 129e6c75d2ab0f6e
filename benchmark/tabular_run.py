"""The feature-table side of a run: the threats of ``rtb run`` on a tabular
``EvalSet`` and its schema validation (``metrics.schema_checks``).

The runner calls ``tabular_threats`` instead of the image attacks and
suites when ``data.modality == "tabular"``; outcomes, measurements, the
record and the store are the same as for images.

Validation: before any threat, the evaluated frame is checked against the
training frame (under the run's ``validation.on_fail`` policy); and every
pipeline fault of the run is checked the same way, once (faults do not
depend on the version), giving one ``fault_caught`` result per fault that
names the checks that failed on the broken frame (it passes when the
fault is caught).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from functools import partial

import numpy as np

from attacks.tabular_attacks import run_tabular_attack
from attacks.tabular_faults import apply_tabular_fault, tabular_fault_applies
from attacks.tabular_suite import tabular_suite_outcomes
from benchmark.core.specs import FaultSuiteSpec, RunSpec
from benchmark.core.types import CheckResult, EvalSet, ModelUnderTest, Outcome, check_result
from metrics.validation import ValidationFailed, failure_message

log = logging.getLogger(__name__)

#: (id suffix, label, steps, outcomes) of one piece of a tabular run.
PieceArgs = tuple[str, str, int, Callable[[Callable[[], None]], Iterator[Outcome]]]


def applicable_faults(fault: FaultSuiteSpec | None, data: EvalSet) -> FaultSuiteSpec | None:
    """The fault suite without the faults the table has no column for."""
    if fault is None or data.schema is None:
        return fault
    keep = tuple(f for f in fault.faults if tabular_fault_applies(f.name, data.schema))
    for f in fault.faults:
        if f not in keep:
            log.debug("fault %s skipped: no column of %s it can break", f.name, data.name)
    return FaultSuiteSpec(name=fault.name, faults=keep, seed=fault.seed) if keep else None


def tabular_steps(spec: RunSpec, data: EvalSet) -> int:
    """Progress units per version: clean, each attack budget, each noise
    severity, each applicable fault."""
    steps = 1 + sum(len(a.eps) for a in spec.attacks.values())
    if spec.corruption is not None:
        steps += len(spec.corruption.corruptions) * len(spec.corruption.severities)
    fault = applicable_faults(spec.fault, data)
    return steps + (len(fault.faults) if fault is not None else 0)


def tabular_threats(spec: RunSpec, model: ModelUnderTest, data: EvalSet,
                    clean: Outcome) -> Iterator[PieceArgs]:
    """Every threat of the run against one version on a feature table."""
    for a in spec.attacks.values():
        yield (f"attack--{a.name}", a.name, len(a.eps),
               partial(run_tabular_attack, model, a, data, clean.pred, spec.seed,
                       spec.batch_size))
    fault = applicable_faults(spec.fault, data)
    for kind, corruption, flt in (("noise", spec.corruption, None), ("faults", None, fault)):
        suite = corruption or flt
        if suite is None:
            continue
        steps = (len(corruption.corruptions) * len(corruption.severities) if corruption
                 else len(flt.faults) if flt else 0)
        yield (f"{kind}--{suite.name}", f"{kind} {suite.name}", steps,
               partial(tabular_suite_outcomes, corruption, flt, model, data, spec.batch_size,
                       spec.seed))


def _schema_checks(data: EvalSet, frame: object, y: np.ndarray | None) -> list[CheckResult]:
    from metrics.schema_checks import run_schema_checks

    assert data.schema is not None and data.train_frame is not None
    y_ref = data.train_y.numpy() if data.train_y is not None else None
    return run_schema_checks(data.train_frame, frame, data.schema,  # type: ignore[arg-type]
                             y_ref=y_ref, y_batch=y)


def tabular_pre_checks(spec: RunSpec, data: EvalSet) -> list[CheckResult]:
    """Schema checks of the evaluated frame against the training frame; a
    failing check under ``on_fail: stop`` raises ``ValidationFailed``."""
    policy = spec.validation
    if policy is None or not policy.data or data.frame is None or data.train_frame is None:
        return []
    skip = set(policy.skip)
    results = [r for r in _schema_checks(data, data.frame, data.y.numpy()) if r.check not in skip]
    if any(r.status == "fail" for r in results) and policy.on_fail == "stop":
        raise ValidationFailed(
            f"Validation failed before any attack: {failure_message(results)}. Expected every "
            "schema check of the evaluated table against its training part to pass (set "
            "validation=report_only to run anyway).", results)
    return results


def fault_checks(spec: RunSpec, data: EvalSet) -> list[CheckResult]:
    """Per fault of the run: which schema checks fail on the broken frame
    (``pass``: the fault is caught; ``warn``: only warnings; ``fail``: not caught)."""
    fault = applicable_faults(spec.fault, data)
    if fault is None or data.schema is None or data.frame is None:
        return []
    seed = fault.seed if fault.seed is not None else spec.seed
    out = []
    for f in fault.faults:
        broken = apply_tabular_fault(f.name, data.frame, data.schema, seed, dict(f.params))
        results = _schema_checks(data, broken, data.y.numpy())
        failed = [r.check for r in results if r.status == "fail"]
        warned = [r.check for r in results if r.status == "warn"]
        status = "pass" if failed else "warn" if warned else "fail"   # pass: the fault is caught
        message = (f"caught by {', '.join(failed)}" if failed else
                   f"only warned by {', '.join(warned)}" if warned else "not caught")
        out.append(check_result("fault_caught", status, f"fault {f.name}: {message}",
                                f"fault {f.name}", fault=f.name, failed=failed, warned=warned,
                                columns=broken.attrs.get("tabular_fault", {}).get("columns", [])))
    return out
