"""Corruption and fault suites: their per-sample outcomes for the runner.

``corruption:`` (``conf/corruption/*.yaml``) names corruptions, severities,
the parameter set and the baseline version for mCE; ``fault:``
(``conf/fault/*.yaml``) names faults with their parameters (both parsed in
``benchmark.schema.suites``). The runner calls ``suite_steps``,
``suite_outcomes`` and nothing else from here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch

from attacks.corruptions import (
    corrupt,
    corruption_notes,
    corruption_threads,
    resolve_param_set,
    sample_keys,
)
from attacks.faults import get_fault
from benchmark.core.forward import predict_finite
from benchmark.core.specs import CorruptionSuiteSpec, FaultSpec, FaultSuiteSpec, ModelSpec
from benchmark.core.types import EvalSet, ModelUnderTest, Outcome, Threat


def suite_steps(corruption: CorruptionSuiteSpec | None, fault: FaultSuiteSpec | None) -> int:
    """Progress units per model version for the corruption and fault suites."""
    steps = 0
    if corruption is not None:
        steps += len(corruption.corruptions) * len(corruption.severities)
    if fault is not None:
        steps += len(fault.faults)
    return steps


def _outcome(model: ModelUnderTest, threat: Threat, y: np.ndarray, preds: list[np.ndarray],
             finite: list[np.ndarray], dists: dict[str, list[np.ndarray]]) -> Outcome:
    pred = np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)
    ok = np.concatenate(finite) if finite else np.zeros(0, dtype=bool)
    columns = {"finite": ok.astype(np.float64)}
    columns.update({k: np.concatenate(v) if v else np.zeros(0) for k, v in dists.items()})
    return Outcome(model=model.name, version=model.version, threat=threat, pred=pred,
                   correct=(pred == y) & ok, columns=columns)


def _distances(a: torch.Tensor, b: torch.Tensor) -> dict[str, np.ndarray]:
    d = (a - b).flatten(1).float()
    return {"linf": d.abs().amax(1).cpu().numpy().astype(np.float64),
            "l2": d.norm(dim=1).cpu().numpy().astype(np.float64)}


def corruption_outcomes(
    suite: CorruptionSuiteSpec, model: ModelUnderTest, data: EvalSet, batch_size: int,
    seed: int, on_step: Callable[[], None] | None = None,
) -> Iterator[Outcome]:
    """Per-sample outcomes of every (corruption, severity) of the suite.

    Each sample's noise is seeded by (seed, corruption, severity, sample
    content): the same under any batch size, order or model version.
    """
    keys = sample_keys(data.x)
    h, w = data.x.shape[-2:]
    resolved = resolve_param_set(suite.param_set, int(h), int(w))
    s = suite.seed if suite.seed is not None else seed
    # the pass (corruptions and the forward passes between them) runs on the
    # thread count chosen for its batches, set once: switching per batch
    # leaves the other thread spinning while the batch runs on one
    with corruption_threads(data.x[:batch_size]):  # once for the pass, see there
        yield from _corruption_pass(suite, model, data, batch_size, s, keys, resolved, on_step)


def _corruption_pass(suite: CorruptionSuiteSpec, model: ModelUnderTest, data: EvalSet,
                     batch_size: int, s: int, keys: list[str], resolved: str,
                     on_step: Callable[[], None] | None) -> Iterator[Outcome]:
    y = data.y.numpy()
    for name in suite.corruptions:
        for sev in suite.severities:
            preds: list[np.ndarray] = []
            finite: list[np.ndarray] = []
            dists: dict[str, list[np.ndarray]] = {"linf": [], "l2": []}
            for i in range(0, len(y), batch_size):
                clean = data.x[i : i + batch_size].to(model.device)
                xc = corrupt(clean, name, sev, seed=s, keys=keys[i : i + batch_size],
                             param_set=resolved, batch_size=batch_size)
                p, f = predict_finite(model, xc, batch_size)
                preds.append(p)
                finite.append(f)
                for k, v in _distances(xc, clean).items():
                    dists[k].append(v)
            threat = Threat(family="corruption", name=name, param=float(sev),
                            params={"severity": sev, "param_set": resolved,
                                    "suite": suite.name, "seed": s,
                                    **corruption_notes(name, sev)})
            yield _outcome(model, threat, y, preds, finite, dists)
            if on_step:
                on_step()


def _model_normalization(model: ModelUnderTest, model_specs: Mapping[str, ModelSpec]
                         ) -> dict[str, Any]:
    """The version's own mean/std when it has a non-trivial normalization."""
    for ms in model_specs.values():
        if ms.ref == model.key:
            mean, std = tuple(ms.mean), tuple(ms.std)
            if any(m != 0.0 for m in mean) or any(s != 1.0 for s in std):
                return {"mean": list(mean), "std": list(std)}
    return {}


def _fault_params(suite: FaultSuiteSpec, fault: FaultSpec, model: ModelUnderTest, seed: int,
                  model_specs: Mapping[str, ModelSpec] | None) -> dict[str, Any]:
    """The arguments a fault is called with: its own, the version's
    normalization where it takes one, and the suite's seed."""
    accepted = inspect.signature(get_fault(fault.name)).parameters
    params = dict(fault.params)
    for k, v in _model_normalization(model, model_specs or {}).items():
        if k in accepted and params.get(k) is None:
            params[k] = v
    if "seed" in accepted and "seed" not in params:
        params["seed"] = suite.seed if suite.seed is not None else seed
    return params


def fault_outcomes(
    suite: FaultSuiteSpec, model: ModelUnderTest, data: EvalSet, batch_size: int, seed: int,
    model_specs: Mapping[str, ModelSpec] | None = None, on_step: Callable[[], None] | None = None,
) -> Iterator[Outcome]:
    """Per-sample outcomes under each fault; a sample whose logits are not
    all finite counts as misclassified (its ``finite`` column says which)."""
    keys = sample_keys(data.x)
    y = data.y.numpy()
    for fault in suite.faults:
        fn = get_fault(fault.name)
        accepted = inspect.signature(fn).parameters
        params = _fault_params(suite, fault, model, seed, model_specs)
        preds: list[np.ndarray] = []
        finite: list[np.ndarray] = []
        for i in range(0, len(y), batch_size):
            xb = data.x[i : i + batch_size].to(model.device)
            extra = {"keys": keys[i : i + batch_size]} if "keys" in accepted else {}
            p, f = predict_finite(model, fn(xb, **params, **extra), batch_size)
            preds.append(p)
            finite.append(f)
        threat = Threat(family="fault", name=fault.name, param=None,
                        params={**params, "suite": suite.name})
        yield _outcome(model, threat, y, preds, finite, {})
        if on_step:
            on_step()


def suite_outcomes(corruption: CorruptionSuiteSpec | None, fault: FaultSuiteSpec | None,
                   model: ModelUnderTest, data: EvalSet, batch_size: int, seed: int,
                   model_specs: Mapping[str, ModelSpec] | None = None,
                   on_step: Callable[[], None] | None = None) -> Iterator[Outcome]:
    """Every corruption and fault outcome of a run against one model version."""
    if corruption is not None:
        yield from corruption_outcomes(corruption, model, data, batch_size, seed, on_step)
    if fault is not None:
        yield from fault_outcomes(fault, model, data, batch_size, seed, model_specs, on_step)


def threat_inputs(corruption: CorruptionSuiteSpec | None, fault: FaultSuiteSpec | None,
                  model: ModelUnderTest, data: EvalSet, idx: np.ndarray, threat: Threat,
                  seed: int, model_specs: Mapping[str, ModelSpec] | None = None
                  ) -> torch.Tensor:
    """The inputs of samples ``idx`` under one corruption or fault of the run,
    on the CPU: the same values the suite evaluated (per-sample seeds from
    each sample's content, so a subset gets what the whole set got)."""
    keys = sample_keys(data.x)
    sel = [keys[int(i)] for i in idx]
    x = data.x[torch.from_numpy(np.asarray(idx, dtype=np.int64))].to(model.device)
    if threat.family == "corruption" and corruption is not None:
        h, w = data.x.shape[-2:]
        s = corruption.seed if corruption.seed is not None else seed
        out = corrupt(x, threat.name, int(threat.param or 0), seed=s, keys=sel,
                      param_set=resolve_param_set(corruption.param_set, int(h), int(w)))
        return out.detach().cpu()
    if threat.family == "fault" and fault is not None:
        recorded = {k: v for k, v in threat.params.items() if k != "suite"}
        named = [f for f in fault.faults if f.name == threat.name]
        spec = next((f for f in named
                     if _fault_params(fault, f, model, seed, model_specs) == recorded), named[0])
        fn = get_fault(spec.name)
        params = _fault_params(fault, spec, model, seed, model_specs)
        extra = {"keys": sel} if "keys" in inspect.signature(fn).parameters else {}
        return fn(x, **params, **extra).detach().cpu()
    raise ValueError(f"Expected a corruption or fault of the run, but got {threat.family} "
                     f"{threat.name!r}.")
