"""The ``corruption`` and ``fault`` sections: which natural corruptions (at
which severities) and which pipeline faults a run applies."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from attacks.corruptions import PARAM_SETS, list_corruptions
from attacks.faults import fault_params, get_fault, list_faults
from attacks.tabular_faults import get_tabular_fault, tabular_fault_names
from attacks.tabular_noise import tabular_noise_names
from benchmark.core import fields as F
from benchmark.core.errors import ConfigError
from benchmark.core.specs import SEVERITIES, CorruptionSuiteSpec, FaultSpec, FaultSuiteSpec

CORRUPTION_KEYS = ("name", "corruptions", "severities", "param_set", "baseline", "seed")
FAULT_KEYS = ("name", "faults", "seed")
#: Fault parameters the runner fills in itself.
RUNNER_FAULT_PARAMS = ("keys",)


def parse_corruption_suite(d: Any) -> CorruptionSuiteSpec:
    """Validate the ``corruption:`` section."""
    d = F.mapping("corruption", d, "a mapping (select a suite with corruption=NAME)")
    F.check_keys("corruption", d, CORRUPTION_KEYS)
    names = d.get("corruptions")
    if names == "all":  # every image corruption
        names = list_corruptions()
    known = list_corruptions() + tabular_noise_names()
    if not isinstance(names, (list, tuple)) or not names:
        raise F.fail("corruption.corruptions", "a non-empty list of corruption names", names)
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
        isinstance(s, bool) or not isinstance(s, int) or s not in SEVERITIES for s in sev
    ):
        raise F.fail("corruption.severities", "a non-empty list of integers in 1..5", sev)
    param_set = d.get("param_set", "auto")
    F.choice("corruption.param_set", param_set, PARAM_SETS)
    baseline = d.get("baseline")
    if baseline is not None and (not isinstance(baseline, str) or baseline.count("@") != 1):
        raise F.fail("corruption.baseline", "a model version as NAME@VERSION or null", baseline)
    return CorruptionSuiteSpec(
        name=str(d.get("name", "custom")),
        corruptions=tuple(dict.fromkeys(names)),
        severities=tuple(sorted(set(sev))),
        param_set=param_set,
        baseline=baseline,
        seed=F.seed("corruption.seed", d.get("seed")),
    )


def _fault(name: str, params: Any) -> FaultSpec:
    """One fault, its parameters checked against its signature and by a dry run."""
    if name not in list_faults() and name not in tabular_fault_names():
        raise ConfigError(
            f"Unknown fault {name!r} in `fault.faults`; expected one of: "
            f"{', '.join(list_faults() + tabular_fault_names())}."
        )
    params = dict(params or {})
    if name in tabular_fault_names():  # a feature-table fault: checked against its parameters
        allowed_tab = sorted(get_tabular_fault(name).params)
        for k in params:
            if k not in allowed_tab:
                raise ConfigError(f"Unknown parameter `fault.faults.{name}.{k}`; expected one "
                                  f"of: {', '.join(allowed_tab) or '(none)'}.")
        return FaultSpec(name=name, params=params)
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
    return FaultSpec(name=name, params=params)


def parse_fault_suite(d: Any) -> FaultSuiteSpec:
    """Validate the ``fault:`` section; each fault's parameters are checked
    against its signature."""
    d = F.mapping("fault", d, "a mapping (select a suite with fault=NAME)")
    F.check_keys("fault", d, FAULT_KEYS)
    faults = d.get("faults")
    if isinstance(faults, (list, tuple)):
        faults = {f: {} for f in faults}
    if not isinstance(faults, Mapping) or not faults:
        raise F.fail("fault.faults", "a non-empty mapping of fault name to parameters", faults)
    return FaultSuiteSpec(name=str(d.get("name", "custom")),
                          faults=tuple(_fault(n, p) for n, p in faults.items()),
                          seed=F.seed("fault.seed", d.get("seed")))
