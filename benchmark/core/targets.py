"""Which classes a config may name: the one ``_target_`` policy, and the one
place that resolves a checked target to its class.

A config file, a record or a checkpoint is not a way to run code. A
``_target_`` may appear only where rtb builds an object, and there it must
name an object of the right kind:

- ``model.*.architecture``: an ``nn.Module`` class or a torchvision model
  builder (under ``benchmark.nets``, ``benchmark.tabular_models``, ``torch.nn``, ``torchvision.models``
  or a prefix of the user's ``allow_targets``);
- ``attack.*`` (ensemble members and nested attack maps included): a subclass
  of ART's ``EvasionAttack`` under ``art.attacks.evasion``, or one of rtb's
  own listed in ``KNOWN_ATTACKS`` (FAB-T, Square under Linf);
- ``hydra.callbacks.*``: a known callback class; ``hydra.launcher`` and
  ``hydra.sweeper``: a Hydra launcher/sweeper of a known plugin module.

A string is checked against its kind's module roots first, so nothing
arbitrary is imported; only then is it imported and its object checked (a
class of the right base, never a module, ``__builtins__`` or an
underscore-prefixed name). ``check_config_targets`` walks a whole config and
refuses a ``_target_`` anywhere else.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from benchmark.core.errors import ConfigError
from benchmark.core.fields import fail

ARCHITECTURE = "architecture"
ATTACK = "attack"
CALLBACK = "callback"
LAUNCHER = "launcher"
SWEEPER = "sweeper"

#: Module roots a ``_target_`` of each kind must lie under.
TARGET_ROOTS: dict[str, tuple[str, ...]] = {
    ARCHITECTURE: ("benchmark.nets", "benchmark.tabular_models", "torch.nn", "torchvision.models"),
    ATTACK: ("art.attacks.evasion",),
    CALLBACK: ("benchmark.sweep",),
    LAUNCHER: (
        "hydra._internal.core_plugins.basic_launcher",
        "hydra_plugins.hydra_joblib_launcher",
        "hydra_plugins.hydra_submitit_launcher",
        "hydra_plugins.hydra_ray_launcher",
    ),
    SWEEPER: ("hydra._internal.core_plugins.basic_sweeper",),
}

#: rtb's own attack classes (exact paths, outside the roots above; each must
#: still be an ART ``EvasionAttack`` subclass): FAB-T, which ART lacks, and
#: the Linf Square Attack as AutoAttack runs it.
KNOWN_ATTACKS: tuple[str, ...] = ("attacks.fab.FABTargeted", "attacks.square.SquareLinf")

#: Known callback classes (``hydra.callbacks.*``).
KNOWN_CALLBACKS: tuple[str, ...] = ("benchmark.sweep.SweepCallback",)

#: What each kind is, for messages.
KIND_WORDS: dict[str, str] = {
    ARCHITECTURE: "an nn.Module class or torchvision model builder",
    ATTACK: "an ART evasion attack class",
    CALLBACK: "a known Hydra callback class (benchmark.sweep.SweepCallback)",
    LAUNCHER: "a Hydra launcher class (basic, joblib, submitit or ray)",
    SWEEPER: "a Hydra sweeper class (basic)",
}

WHERE_ALLOWED = (
    "a _target_ is allowed only at model.*.architecture (an nn.Module class or torchvision "
    "model), attack.* (an ART evasion attack class), hydra.callbacks.* and hydra.launcher."
)

#: Kept for callers that list the roots; every kind's roots together.
ALLOWED_TARGET_PREFIXES: tuple[str, ...] = tuple(
    dict.fromkeys(r + "." for roots in TARGET_ROOTS.values() for r in roots))

_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


def _roots(kind: str, allow: Sequence[str]) -> tuple[str, ...]:
    extra = tuple(a.rstrip(".") for a in allow) if kind == ARCHITECTURE else ()
    return TARGET_ROOTS[kind] + extra


def _refuse(where: str, target: Any, why: str) -> ConfigError:
    return ConfigError(f"Refusing `{where}` = {target!r}: {why}")


def _check_string(where: str, target: Any, kind: str, allow: Sequence[str]) -> str:
    if not isinstance(target, str) or not target:
        raise fail(where, "a dotted class path", target)
    roots = _roots(kind, allow)
    if not _DOTTED.match(target):
        raise _refuse(where, target, f"expected {KIND_WORDS[kind]} (a dotted class path).")
    if kind == ATTACK and target in KNOWN_ATTACKS:
        return target.rsplit(".", 1)[0]
    root = next((r for r in roots if target.startswith(r + ".")), None)
    if root is None:
        raise _refuse(where, target, f"expected {KIND_WORDS[kind]} under "
                      f"{', '.join(roots)}.")
    if any(part.startswith("_") for part in target[len(root) + 1:].split(".")):
        raise _refuse(where, target, f"expected {KIND_WORDS[kind]}, not a private name.")
    return root


def _import(where: str, target: str, root: str) -> Any:
    """The object at ``target``: the longest importable module under ``root``, then attributes."""
    parts = target.split(".")
    obj: Any = None
    n = len(parts) - 1
    while n >= len(root.split(".")):
        try:
            obj = importlib.import_module(".".join(parts[:n]))
            break
        except ImportError:
            n -= 1
    else:
        raise ConfigError(
            f"Expected `{where}` to name an importable class, but module "
            f"{'.'.join(parts[:-1])!r} cannot be imported."
        )
    for i, attr in enumerate(parts[n:], start=n):
        if not hasattr(obj, attr):
            raise ConfigError(
                f"Expected `{where}` to name an importable class, but "
                f"{'.'.join(parts[:i])!r} has no {attr!r}."
            )
        obj = getattr(obj, attr)
    return obj


def _is_torchvision_builder(obj: Any) -> bool:
    import torchvision.models as tvm

    name = getattr(obj, "__name__", "")
    if not callable(obj) or isinstance(obj, type) or name not in tvm.list_models():
        return False
    return tvm.get_model_builder(name) is obj


def _kind_ok(kind: str, obj: Any, target: str) -> bool:
    if kind == ARCHITECTURE:
        from torch import nn

        return (isinstance(obj, type) and issubclass(obj, nn.Module)) or _is_torchvision_builder(obj)
    if not isinstance(obj, type):
        return False
    if kind == ATTACK:
        from art.attacks import EvasionAttack

        return issubclass(obj, EvasionAttack) and obj is not EvasionAttack
    if kind == CALLBACK:
        return f"{obj.__module__}.{obj.__qualname__}" in KNOWN_CALLBACKS or target in KNOWN_CALLBACKS
    if kind == LAUNCHER:
        from hydra.plugins.launcher import Launcher

        return issubclass(obj, Launcher) and obj is not Launcher
    if kind == SWEEPER:
        from hydra.plugins.sweeper import Sweeper

        return issubclass(obj, Sweeper) and obj is not Sweeper
    return False


def resolve_target(where: str, target: Any, kind: str = ATTACK,
                   allow: Sequence[str] = ()) -> Any:
    """The object a ``_target_`` of ``kind`` names, after the root check and
    before it is built: refused in one line (``ConfigError``) unless it is of
    the right kind."""
    root = _check_string(where, target, kind, allow)
    obj = _import(where, target, root)
    if not _kind_ok(kind, obj, target):
        raise _refuse(where, target, f"expected {KIND_WORDS[kind]}, but it is "
                      f"{'a module' if type(obj).__name__ == 'module' else type(obj).__name__}.")
    return obj


def check_target(where: str, target: Any, kind: str = ATTACK, allow: Sequence[str] = ()) -> str:
    """``target`` when it resolves to an object of ``kind`` (see ``resolve_target``)."""
    resolve_target(where, target, kind, allow)
    return str(target)


# ----------------------------------------------------------------------------- whole configs

def is_attack_map(value: Any) -> bool:
    """A mapping of nested attacks (AutoAttack's ``attacks``): every entry has a ``_target_``."""
    return (isinstance(value, Mapping) and bool(value)
            and all(isinstance(v, Mapping) and "_target_" in v for v in value.values()))


def _kind_at(path: tuple[str, ...]) -> str | None:
    """Which kind of ``_target_`` the mapping at ``path`` may hold."""
    if len(path) == 3 and path[0] == "model" and path[2] == "architecture":
        return ARCHITECTURE
    if len(path) == 2 and path[0] == "attack":
        return ATTACK
    if len(path) == 3 and path[:2] == ("hydra", "callbacks"):
        return CALLBACK
    if path == ("hydra", "launcher"):
        return LAUNCHER
    if path == ("hydra", "sweeper"):
        return SWEEPER
    return None


def check_config_targets(cfg: Mapping[str, Any], allow: Sequence[str] = ()) -> None:
    """Refuse any ``_target_`` of ``cfg`` (at any depth, in any section) that
    is not at a place where rtb builds an object, or is not of that place's kind."""

    def walk(node: Any, path: tuple[str, ...], kind: str | None) -> None:
        if isinstance(node, Mapping):
            if "_target_" in node:
                where = ".".join((*path, "_target_"))
                if kind is None:
                    raise _refuse(where, node["_target_"], WHERE_ALLOWED)
                target = node["_target_"]
                if isinstance(target, str) and "${" in target:
                    raise _refuse(where, target, "a _target_ must be a literal class path.")
                check_target(where, target, kind, allow)
            for key, value in node.items():
                sub = (*path, str(key))
                if kind == ATTACK and key == "members" and isinstance(value, Mapping):
                    for m, member in value.items():
                        walk(member, (*sub, str(m)), ATTACK)
                    continue
                if kind == ATTACK and is_attack_map(value):
                    for s, nested in value.items():
                        walk(nested, (*sub, str(s)), ATTACK)
                    continue
                walk(value, sub, _kind_at(sub))
        elif isinstance(node, (list, tuple)):
            for i, item in enumerate(node):
                walk(item, (*path[:-1], f"{path[-1]}[{i}]") if path else (f"[{i}]",), None)

    walk(cfg, (), None)


__all__ = [
    "ALLOWED_TARGET_PREFIXES",
    "ARCHITECTURE",
    "ATTACK",
    "CALLBACK",
    "KNOWN_ATTACKS",
    "KNOWN_CALLBACKS",
    "LAUNCHER",
    "SWEEPER",
    "TARGET_ROOTS",
    "WHERE_ALLOWED",
    "check_config_targets",
    "check_target",
    "is_attack_map",
    "resolve_target",
]
