"""Corruption and fault suites: their typed config sections, and their
per-sample outcomes for the runner.

``corruption:`` (``conf/corruption/*.yaml``) names corruptions, severities,
the parameter set and the baseline version for mCE; ``fault:``
(``conf/fault/*.yaml``) names faults with their parameters. The runner calls
``suite_steps``, ``suite_outcomes`` and nothing else from here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from attacks.corruptions import (
    PARAM_SETS,
    SEVERITIES,
    corrupt,
    list_corruptions,
    resolve_param_set,
    sample_keys,
)
from attacks.faults import fault_params, get_fault, list_faults
from benchmark.core.errors import ConfigError
from benchmark.core.forward import predict_finite
from benchmark.core.types import EvalSet, ModelUnderTest, Outcome, Threat

CORRUPTION_KEYS = ("name", "corruptions", "severities", "param_set", "baseline", "seed")
FAULT_KEYS = ("name", "faults", "seed")
#: Fault parameters the runner fills in itself.
RUNNER_FAULT_PARAMS = ("keys",)


@dataclass(frozen=True)
class CorruptionSuiteSpec:
    """Typed view of ``conf/corruption/<suite>.yaml``.

    ``baseline`` is the ``name@version`` that normalises CE and mCE;
    ``seed`` None means the run's seed.
    """

    name: str
    corruptions: tuple[str, ...]
    severities: tuple[int, ...] = SEVERITIES
    param_set: str = "auto"
    baseline: str | None = None
    seed: int | None = None


@dataclass(frozen=True)
class FaultSpec:
    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FaultSuiteSpec:
    """Typed view of ``conf/fault/<suite>.yaml``."""

    name: str
    faults: tuple[FaultSpec, ...]
    seed: int | None = None


def _fail(where: str, wanted: str, got: Any) -> ConfigError:
    return ConfigError(f"Expected `{where}` to be {wanted}, but got {got!r}.")


def _unknown(where: str, d: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    bad = sorted(k for k in d if k not in allowed)
    if bad:
        raise ConfigError(
            f"Unknown config key `{where}.{bad[0]}`; expected one of: {', '.join(allowed)}."
        )


def _seed(where: str, v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise _fail(where, "a non-negative integer or null", v)
    return v


def parse_corruption_suite(d: Any) -> CorruptionSuiteSpec:
    """Validate the ``corruption:`` section."""
    if not isinstance(d, Mapping):
        raise _fail("corruption", "a mapping (select a suite with corruption=NAME)", d)
    _unknown("corruption", d, CORRUPTION_KEYS)
    names = d.get("corruptions")
    known = list_corruptions()
    if names == "all":
        names = known
    if not isinstance(names, (list, tuple)) or not names:
        raise _fail("corruption.corruptions", "a non-empty list of corruption names", names)
    for n in names:
        if n not in known:
            raise ConfigError(
                f"Unknown corruption {n!r} in `corruption.corruptions`; expected one of: "
                f"{', '.join(known)}."
            )
    sev = d.get("severities", list(SEVERITIES))
    if isinstance(sev, int) and not isinstance(sev, bool):
        sev = [sev]
    if not isinstance(sev, (list, tuple)) or not sev or any(
        isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= 5 for s in sev
    ):
        raise _fail("corruption.severities", "a non-empty list of integers in 1..5", sev)
    param_set = d.get("param_set", "auto")
    if param_set not in PARAM_SETS:
        raise _fail("corruption.param_set", f"one of {', '.join(PARAM_SETS)}", param_set)
    baseline = d.get("baseline")
    if baseline is not None and (not isinstance(baseline, str) or baseline.count("@") != 1):
        raise _fail("corruption.baseline", "a model version as NAME@VERSION or null", baseline)
    return CorruptionSuiteSpec(
        name=str(d.get("name", "custom")),
        corruptions=tuple(dict.fromkeys(names)),
        severities=tuple(sorted(set(sev))),
        param_set=param_set,
        baseline=baseline,
        seed=_seed("corruption.seed", d.get("seed")),
    )


def parse_fault_suite(d: Any) -> FaultSuiteSpec:
    """Validate the ``fault:`` section; each fault's parameters are checked
    against its signature."""
    if not isinstance(d, Mapping):
        raise _fail("fault", "a mapping (select a suite with fault=NAME)", d)
    _unknown("fault", d, FAULT_KEYS)
    faults = d.get("faults")
    if isinstance(faults, (list, tuple)):
        faults = {f: {} for f in faults}
    if not isinstance(faults, Mapping) or not faults:
        raise _fail("fault.faults", "a non-empty mapping of fault name to parameters", faults)
    specs = []
    for name, params in faults.items():
        if name not in list_faults():
            raise ConfigError(
                f"Unknown fault {name!r} in `fault.faults`; expected one of: "
                f"{', '.join(list_faults())}."
            )
        params = dict(params or {})
        allowed = [k for k in fault_params(name) if k not in RUNNER_FAULT_PARAMS]
        for k in params:
            if k not in allowed:
                raise ConfigError(
                    f"Unknown parameter `fault.faults.{name}.{k}`; expected one of: "
                    f"{', '.join(allowed) or '(none)'}."
                )
        try:
            get_fault(name)(torch.zeros(1, 3, 4, 4), **params)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"Invalid parameters for fault {name!r}: {exc}") from None
        specs.append(FaultSpec(name=name, params=params))
    return FaultSuiteSpec(name=str(d.get("name", "custom")), faults=tuple(specs),
                          seed=_seed("fault.seed", d.get("seed")))


def suite_steps(extras: Mapping[str, Any]) -> int:
    """Progress units per model version for the corruption and fault suites."""
    steps = 0
    c = extras.get("corruption")
    if isinstance(c, CorruptionSuiteSpec):
        steps += len(c.corruptions) * len(c.severities)
    f = extras.get("fault")
    if isinstance(f, FaultSuiteSpec):
        steps += len(f.faults)
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
    y = data.y.numpy()
    h, w = data.x.shape[-2:]
    resolved = resolve_param_set(suite.param_set, int(h), int(w))
    s = suite.seed if suite.seed is not None else seed
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
                                    "suite": suite.name, "seed": s})
            yield _outcome(model, threat, y, preds, finite, dists)
            if on_step:
                on_step()


def _model_normalization(model: ModelUnderTest, model_specs: Mapping[str, Any]) -> dict[str, Any]:
    """The version's own mean/std when it has a non-trivial normalization."""
    for ms in model_specs.values():
        if getattr(ms, "ref", None) == model.key:
            mean, std = tuple(ms.mean), tuple(ms.std)
            if any(m != 0.0 for m in mean) or any(s != 1.0 for s in std):
                return {"mean": list(mean), "std": list(std)}
    return {}


def fault_outcomes(
    suite: FaultSuiteSpec, model: ModelUnderTest, data: EvalSet, batch_size: int, seed: int,
    model_specs: Mapping[str, Any] | None = None, on_step: Callable[[], None] | None = None,
) -> Iterator[Outcome]:
    """Per-sample outcomes under each fault; a sample whose logits are not
    all finite counts as misclassified (its ``finite`` column says which)."""
    keys = sample_keys(data.x)
    y = data.y.numpy()
    norm = _model_normalization(model, model_specs or {})
    s = suite.seed if suite.seed is not None else seed
    for fault in suite.faults:
        fn = get_fault(fault.name)
        accepted = inspect.signature(fn).parameters
        params = dict(fault.params)
        for k, v in norm.items():
            if k in accepted and params.get(k) is None:
                params[k] = v
        if "seed" in accepted and "seed" not in params:
            params["seed"] = s
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


def suite_outcomes(spec: Any, model: ModelUnderTest, data: EvalSet,
                   on_step: Callable[[], None] | None = None) -> Iterator[Outcome]:
    """Every corruption and fault outcome of a run (``spec`` is the RunSpec)."""
    c = spec.extras.get("corruption")
    if isinstance(c, CorruptionSuiteSpec):
        yield from corruption_outcomes(c, model, data, spec.batch_size, spec.seed, on_step)
    f = spec.extras.get("fault")
    if isinstance(f, FaultSuiteSpec):
        yield from fault_outcomes(f, model, data, spec.batch_size, spec.seed, spec.models,
                                  on_step)
