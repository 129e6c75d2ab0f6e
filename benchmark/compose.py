"""Composing the Hydra config outside a Hydra app: for validation before a
run starts, for ``rtb list``, and for commands that re-run a recorded config.

Hydra's own errors are turned into one line naming what was wrong, what
was expected and what arrived.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from benchmark.core.errors import ConfigError

if TYPE_CHECKING:
    from benchmark.core.specs import RunSpec

#: The installed configs: the ``conf`` package beside ``benchmark``, found by
#: path rather than by import so that a user's own ``conf/`` directory in the
#: working directory can never shadow it.
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
CONFIG_NAME = "config"


def conf_dir() -> Path:
    """The installed ``conf`` package directory."""
    return CONF_DIR


def group_options(group: str) -> list[str]:
    """Names of the configs in one config group (``conf/<group>/*.yaml``)."""
    d = conf_dir() / group
    if not d.is_dir():
        return []
    return sorted(p.stem for p in d.glob("*.yaml"))


def read_option(group: str, option: str) -> dict[str, Any]:
    """The raw YAML of one option of a group, without composing."""
    data = yaml.safe_load((conf_dir() / group / f"{option}.yaml").read_text()) or {}
    return data if isinstance(data, dict) else {}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def hydra_error_message(exc: BaseException, overrides: list[str]) -> str:
    """One readable line for an exception raised while composing."""
    from hydra.errors import MissingConfigException, OverrideParseException

    if isinstance(exc, MissingConfigException):
        missing = getattr(exc, "missing_cfg_file", None) or ""
        group, _, option = str(missing).rpartition("/")
        if group:
            options = group_options(group)
            return (
                f"Unknown {group} {option!r}; expected one of: {', '.join(options)} "
                f"(see `rtb list`)."
            )
        return _one_line(str(exc).split("Available options")[0])
    if isinstance(exc, OverrideParseException):
        return f"Could not parse override: {_one_line(str(exc))}"
    msg = str(exc)
    cause = exc.__cause__
    if cause is not None and "not in struct" in str(cause):
        key = str(cause).split("'")[1] if "'" in str(cause) else str(cause)
        full = next((ln.split("full_key:", 1)[1].strip() for ln in str(cause).splitlines()
                     if "full_key:" in ln), key)
        near = _nearest_keys(full, overrides)
        hint = f" Did you mean: {', '.join(near)}?" if near else ""
        return (
            f"Unknown config key `{full}` in the overrides; expected a key of the composed "
            f"config (see `rtb run --cfg job`), or +KEY=VALUE to add one.{hint}"
        )
    if cause is not None:
        msg = f"{msg.splitlines()[0]} {cause}"
    return _one_line(msg)


def _nearest_keys(full_key: str, overrides: list[str], n: int = 3) -> list[str]:
    """Up to ``n`` valid keys at the level of ``full_key`` that look like it."""
    import difflib

    from benchmark.policy import override_key

    parent, _, leaf = full_key.rpartition(".")
    try:
        cfg = _compose([o for o in overrides if override_key(o) != full_key])
        node = OmegaConf.select(cfg, parent) if parent else cfg
    except Exception:  # the hint is optional; the message stands without it
        return []
    if not isinstance(node, DictConfig):
        return []
    keys = [str(k) for k in node]
    return [f"{parent}.{k}" if parent else k for k in difflib.get_close_matches(leaf, keys, n=n)]


def _compose(overrides: list[str], with_hydra: bool = False) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name=CONFIG_NAME, overrides=overrides,
                                 return_hydra_config=with_hydra)
    finally:
        GlobalHydra.instance().clear()


def hydra_section(cfg: DictConfig) -> dict[str, Any]:
    """The composed ``hydra`` node as plain data, unresolved (its run-time values are unset)."""
    node = cfg.get("hydra")
    out = OmegaConf.to_container(node, resolve=False) if isinstance(node, DictConfig) else {}
    return {str(k): v for k, v in out.items()} if isinstance(out, dict) else {}


def compose(overrides: list[str], with_hydra: bool = False) -> DictConfig:
    """Compose ``conf/config.yaml`` with ``overrides`` (no sweeps); ``with_hydra``
    keeps the ``hydra`` node. Every ``hydra.searchpath`` directory must exist."""
    from hydra.core.global_hydra import GlobalHydra

    from benchmark.policy import normalize_overrides, searchpath_dirs

    overrides = normalize_overrides(overrides)
    searchpath_dirs(overrides)
    try:
        return _compose(overrides, with_hydra)
    except ConfigError:
        raise
    except Exception as exc:  # Hydra raises several unrelated types
        raise ConfigError(hydra_error_message(exc, overrides)) from None
    finally:
        GlobalHydra.instance().clear()


def to_container(cfg: DictConfig) -> dict[str, Any]:
    try:
        out = OmegaConf.to_container(_without_hydra(cfg), resolve=True, throw_on_missing=True)
    except Exception as exc:  # interpolation and missing-value errors
        raise ConfigError(f"Could not resolve the config: {_one_line(str(exc))}") from None
    assert isinstance(out, dict)
    return {str(k): v for k, v in out.items() if k != "hydra"}


def _without_hydra(cfg: DictConfig) -> DictConfig:
    if "hydra" not in cfg:
        return cfg
    copy = cfg.copy()
    with open_dict(copy):
        del copy["hydra"]
    return copy


def compose_spec(overrides: list[str], check_files: bool = True,
                 hydra_overrides: list[str] | None = None) -> tuple[RunSpec, dict[str, Any]]:
    """Compose, check what the user's files may do (``benchmark.policy``) and
    validate into a ``RunSpec``; ``hydra_overrides`` (e.g. ``hydra/launcher=X``)
    join the composition only for the check of the ``hydra`` node."""
    # The schema pulls torch in (via data and models); `rtb list` and `rtb gate` need none of it.
    from benchmark.policy import (
        check_allow_targets_source,
        check_hydra_section,
        check_user_config_files,
        normalize_overrides,
        searchpath_dirs,
    )
    from benchmark.schema import parse_run

    overrides = normalize_overrides(overrides)
    check_user_config_files(searchpath_dirs(overrides))
    cfg = compose([*overrides, *(hydra_overrides or [])], with_hydra=True)
    check_hydra_section(hydra_section(cfg))
    if hydra_overrides:
        cfg = compose(overrides)
    check_allow_targets_source(cfg, overrides)
    resolved = to_container(cfg)
    return parse_run(resolved, check_files=check_files), resolved


def expand_for_validation(args: list[str]) -> list[list[str]]:
    """Override lists that together try every value of every sweep once.

    The first list takes the first value of each sweep; each further list
    changes one sweep to another value. Hydra-internal overrides and flags
    are left out: they do not change the run's config.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    plain = [
        a for a in args
        if not a.startswith("-")
        and (a.startswith("hydra.searchpath") or not a.startswith(("hydra.", "hydra/")))
    ]
    try:
        parsed = OverridesParser.create().parse_overrides(plain)
    except Exception as exc:
        raise ConfigError(f"Could not parse override: {_one_line(str(exc))}") from None
    fixed: list[str] = []
    sweeps: list[tuple[str, list[str]]] = []
    for ov in parsed:
        if ov.is_sweep_override():
            values = list(ov.sweep_string_iterator())
            sweeps.append((f"{ov.get_key_element()}=", values))
        else:
            fixed.append(ov.input_line or "")
    if not sweeps:
        return [fixed]
    first = [prefix + values[0] for prefix, values in sweeps]
    combos = [fixed + first]
    for i, (prefix, values) in enumerate(sweeps):
        for v in values[1:]:
            combo = list(first)
            combo[i] = prefix + v
            combos.append(fixed + combo)
    return [list(c) for c in dict.fromkeys(tuple(c) for c in combos)]


__all__ = [
    "compose",
    "compose_spec",
    "conf_dir",
    "expand_for_validation",
    "group_options",
    "read_option",
    "to_container",
]
