"""Which classes a config may name: the one ``_target_`` check, and the one
place that resolves a checked target to its class.

A config file is not a way to run arbitrary code, so a ``_target_`` must
start with an allowed prefix and import; everything that builds an object
from a config (models, ART attacks) goes through here.
"""

from __future__ import annotations

import importlib
from typing import Any

from benchmark.core.errors import ConfigError
from benchmark.core.fields import fail

#: Prefixes a ``_target_`` may start with.
ALLOWED_TARGET_PREFIXES: tuple[str, ...] = (
    "art.",
    "torchvision.",
    "torch.nn.",
    "benchmark.",
    "attacks.",
    "metrics.",
)


def check_target(where: str, target: Any) -> str:
    """Accept a ``_target_`` only under the allowed prefixes and only if it imports."""
    resolve_target(where, target)
    return str(target)


def resolve_target(where: str, target: Any) -> Any:
    """The object a ``_target_`` names, after the prefix check (``ConfigError``
    in one line when refused or not importable)."""
    if not isinstance(target, str) or not target:
        raise fail(where, "a dotted class path", target)
    if not target.startswith(ALLOWED_TARGET_PREFIXES):
        raise ConfigError(
            f"Refusing `{where}` = {target!r}: a _target_ must start with one of "
            f"{', '.join(ALLOWED_TARGET_PREFIXES)}."
        )
    module_name, _, attr = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ConfigError(
            f"Expected `{where}` to name an importable class, but module {module_name!r} "
            "cannot be imported."
        ) from None
    if not hasattr(module, attr):
        raise ConfigError(
            f"Expected `{where}` to name an importable class, but {module_name!r} has no {attr!r}."
        )
    return getattr(module, attr)
