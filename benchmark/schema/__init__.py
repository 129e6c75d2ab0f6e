"""The structured schema of a run: the composed Hydra config is turned into
the typed, frozen specs of ``benchmark.core.specs`` here, before any work
starts.

Every problem raises ``ConfigError`` with one line (``benchmark.core.fields``
words them all): where, what was expected, what arrived. One module per
section; ``parse_run`` wires them together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from benchmark.core import fields as F
from benchmark.core.errors import ConfigError
from benchmark.core.specs import ModelSpec, RunSpec
from benchmark.core.targets import check_config_targets
from benchmark.schema.attacks import parse_attack, parse_ensemble
from benchmark.schema.groups import parse_feature, parse_groups, parse_slices
from benchmark.schema.models import parse_data, parse_model
from benchmark.schema.policies import (
    parse_reliability,
    parse_shard,
    parse_store,
    parse_sweep,
    parse_validation,
)
from benchmark.schema.suites import parse_corruption_suite, parse_fault_suite

__all__ = [
    "TOP_LEVEL_KEYS",
    "parse_allow_targets",
    "parse_attack",
    "parse_corruption_suite",
    "parse_data",
    "parse_ensemble",
    "parse_fault_suite",
    "parse_feature",
    "parse_groups",
    "parse_model",
    "parse_reliability",
    "parse_run",
    "parse_shard",
    "parse_slices",
    "parse_store",
    "parse_sweep",
    "parse_validation",
]

#: Every top-level key of a run config.
TOP_LEVEL_KEYS: tuple[str, ...] = (
    "name",
    "seed",
    "device",
    "batch_size",
    "deterministic",
    "data",
    "model",
    "attack",
    "store",
    "sweep",
    "shards",
    "shard",
    "corruption",
    "fault",
    "validation",
    "groups",
    "reliability",
    "allow_targets",
)


T = TypeVar("T")


def _optional(cfg: Mapping[str, Any], key: str, parse: Callable[[Any], T]) -> T | None:
    """``parse`` of an optional section, None when it is absent or null."""
    return None if cfg.get(key) is None else parse(cfg[key])


def _run_name(v: Any) -> str:
    """The run's name: it names the run directory, so one plain path component."""
    name = F.text("name", v)
    if (any(c in name for c in "/\\") or ".." in name or name.strip() in ("", ".")
            or any(not c.isprintable() for c in name)):
        raise F.fail("name", "a run name without path separators, '..' or control characters "
                     "(it names the run directory)", name)
    return name


def parse_run(cfg: Any, check_files: bool = True,
              prebuilt: Mapping[str, ModelSpec] | None = None) -> RunSpec:
    """Validate a composed config (a plain, resolved dict) into a ``RunSpec``;
    ``prebuilt`` are the specs of the Python API's own modules, keyed as in
    ``cfg["model"]`` (their entries there describe them and are not parsed)."""
    cfg = F.mapping("config", cfg)
    F.check_keys("", cfg, TOP_LEVEL_KEYS)
    allow = parse_allow_targets(cfg.get("allow_targets"))
    # Before anything else reads the config: no _target_ outside the places
    # where rtb builds an object, and none of the wrong kind.
    check_config_targets(cfg, allow)
    data = parse_data(cfg.get("data"), check_files)
    models_cfg = F.mapping("model", cfg.get("model") or {})
    if not models_cfg:
        raise ConfigError("Expected at least one model version (model=[NAME,...]), but got none.")
    prebuilt = prebuilt or {}
    models = {k: prebuilt[k] if k in prebuilt else parse_model(k, v, check_files, allow)
              for k, v in models_cfg.items()}
    shapes = {m.input_shape for m in models.values()}
    input_shape = next(iter(shapes)) if len(shapes) == 1 else None
    attacks_cfg = F.mapping("attack", cfg.get("attack") or {})
    attacks = {k: parse_attack(k, v, input_shape) for k, v in attacks_cfg.items()}
    device = F.text("device", cfg.get("device", "auto"))
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise F.fail("device", "auto, cpu or cuda", device)
    return RunSpec(
        data=data,
        models=models,
        attacks=attacks,
        name=_run_name(cfg.get("name", "default")),
        seed=F.integer("seed", cfg.get("seed", 0), minimum=0),
        device=device,
        batch_size=F.integer("batch_size", cfg.get("batch_size", 256), minimum=1),
        deterministic=F.flag("deterministic", cfg.get("deterministic", True)),
        store=parse_store(cfg.get("store")),
        corruption=_optional(cfg, "corruption", parse_corruption_suite),
        fault=_optional(cfg, "fault", parse_fault_suite),
        groups=_optional(cfg, "groups", parse_groups),
        validation=_optional(cfg, "validation", parse_validation),
        reliability=parse_reliability(cfg.get("reliability")),
        sweep=_optional(cfg, "sweep", parse_sweep),
        shard=parse_shard(cfg.get("shards"), cfg.get("shard")),
        allow_targets=allow,
    )


def parse_allow_targets(v: Any) -> tuple[str, ...]:
    """``allow_targets``: module prefixes (``mypkg.nets``) whose nn.Module
    classes may serve as architectures."""
    if v is None:
        return ()
    if not isinstance(v, (list, tuple)):
        raise F.fail("allow_targets", "a list of module prefixes such as [mypkg.nets]", v)
    out = []
    for i, p in enumerate(v):
        p = F.text(f"allow_targets[{i}]", p).rstrip(".")
        parts = p.split(".")
        if not all(part.isidentifier() and not part.startswith("_") for part in parts):
            raise F.fail(f"allow_targets[{i}]", "a dotted module prefix such as mypkg.nets", p)
        out.append(p)
    return tuple(out)
