"""The registry of validation checks: one function per check, by name.

A check is a plain function ``(context, **thresholds) -> CheckResult``.
Its keyword-only parameters are its thresholds: their defaults are the
check's defaults, and a policy may override them by name
(``conf/validation/*.yaml``). A duplicate name raises; an unknown name
lists the valid ones.

This module is a leaf: it does not import the check modules (they import
``register_check`` from here). Import ``metrics.checks`` for the registry
with the built-in checks loaded.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from benchmark.core.errors import ConfigError
from benchmark.core.registry import Registry
from benchmark.core.types import CheckResult

CheckKind = Literal["data", "model"]
CHECK_KINDS: tuple[str, ...] = ("data", "model")

CheckFn = Callable[..., CheckResult]


@dataclass(frozen=True)
class RegisteredCheck:
    """One check: its name, what it looks at, what it does, its thresholds."""

    name: str
    kind: str
    fn: CheckFn
    doc: str
    defaults: dict[str, Any]

    def __call__(self, context: Any, **thresholds: Any) -> CheckResult:
        result = self.fn(context, **thresholds)
        if result.status not in ("pass", "warn", "fail"):
            raise ValueError(
                f"Expected check {self.name!r} to return status pass, warn or fail, "
                f"but got {result.status!r}."
            )
        return result


_CHECKS: Registry[RegisteredCheck] = Registry(
    "check", error=ConfigError, listed=lambda: list_checks())


def register_check(name: str, kind: str) -> Callable[[CheckFn], CheckFn]:
    """Register ``fn`` as check ``name`` of ``kind`` (data | model)."""
    if kind not in CHECK_KINDS:
        raise ValueError(f"Expected `kind` to be one of {CHECK_KINDS}, but got {kind!r}.")

    def deco(fn: CheckFn) -> CheckFn:
        _CHECKS.check_new(name)
        params = inspect.signature(fn).parameters.values()
        defaults = {
            p.name: p.default for p in params
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty
        }
        doc = (inspect.getdoc(fn) or "").split("\n\n")[0].replace("\n", " ")
        _CHECKS.add(name, RegisteredCheck(name=name, kind=kind, fn=fn, doc=doc, defaults=defaults))
        return fn

    return deco


def list_checks(kind: str | None = None) -> list[str]:
    """Names of the registered checks (of one kind if given): data checks, then
    model checks, each in registration order (independent of import order)."""
    kinds = CHECK_KINDS if kind is None else (kind,)
    return [n for k in kinds for n, c in _CHECKS.items() if c.kind == k]


def get_check(name: str) -> RegisteredCheck:
    """The check registered as ``name``; an unknown name lists the valid ones."""
    return _CHECKS.get(name)
