"""The whole run schema: the core sections of ``benchmark.config`` plus the
optional sections that each capability parses itself (corruption suites,
faults, groups, validation policy, reliability flags, sweeps).

This module sits above everything it wires together, so that the
capabilities may import the core specs without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attacks.corruption_suite import parse_corruption_suite, parse_fault_suite
from benchmark.config import (
    TOP_LEVEL_KEYS,
    RunSpec,
    _bool,
    _fail,
    _int,
    _mapping,
    _str,
    _unknown_key,
    parse_attack,
    parse_data,
    parse_model,
)
from benchmark.core.errors import ConfigError
from benchmark.sweep import parse_sweep
from metrics.groups import parse_groups
from metrics.reliability import parse_reliability
from metrics.validation import parse_validation


def parse_run(cfg: Any, check_files: bool = True) -> RunSpec:
    """Validate a composed config (a plain, resolved dict) into a ``RunSpec``."""
    cfg = _mapping("config", cfg)
    _unknown_key("", cfg, TOP_LEVEL_KEYS + tuple(EXTRA_SECTIONS))
    data = parse_data(cfg.get("data"))
    models_cfg = _mapping("model", cfg.get("model") or {})
    if not models_cfg:
        raise ConfigError("Expected at least one model version (model=[NAME,...]), but got none.")
    models = {k: parse_model(k, v, check_files) for k, v in models_cfg.items()}
    shapes = {m.input_shape for m in models.values()}
    input_shape = next(iter(shapes)) if len(shapes) == 1 else None
    attacks_cfg = _mapping("attack", cfg.get("attack") or {})
    attacks = {k: parse_attack(k, v, input_shape) for k, v in attacks_cfg.items()}
    device = _str("device", cfg.get("device", "auto"))
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise _fail("device", "auto, cpu or cuda", device)
    store = cfg.get("store")
    if store is not None:
        store = _str("store", store)
    extras = {k: EXTRA_SECTIONS[k](cfg[k]) for k in EXTRA_SECTIONS if cfg.get(k) is not None}
    return RunSpec(
        data=data,
        models=models,
        attacks=attacks,
        name=_str("name", cfg.get("name", "default")),
        seed=_int("seed", cfg.get("seed", 0), minimum=0),
        device=device,
        batch_size=_int("batch_size", cfg.get("batch_size", 256), minimum=1),
        deterministic=_bool("deterministic", cfg.get("deterministic", True)),
        store=store,
        extras=extras,
    )


#: Parsers for the optional config sections (corruption suites, faults, groups,
#: validation policy, ...), by top-level key; each returns its typed spec,
#: found in ``RunSpec.extras`` under the same key.
EXTRA_SECTIONS: dict[str, Callable[[Any], Any]] = {
    "sweep": parse_sweep,
    "corruption": parse_corruption_suite,
    "fault": parse_fault_suite,
    "validation": parse_validation,
    "groups": parse_groups,
    "reliability": parse_reliability,
}
