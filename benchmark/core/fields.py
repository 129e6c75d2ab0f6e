"""The field validators every config parser uses, with one message style.

A wrong value raises ``ConfigError`` with one line saying where, what was
expected and what arrived: ``Expected `where` to be WANTED, but got GOT.``;
a stray key lists the valid ones: ``Unknown config key `a.b`; expected one
of: x, y.``
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from benchmark.core.errors import ConfigError


def fail(where: str, wanted: str, got: Any) -> ConfigError:
    """The error for ``where`` holding ``got`` instead of ``wanted`` (to raise)."""
    return ConfigError(f"Expected `{where}` to be {wanted}, but got {got!r}.")


def check_keys(where: str, d: Mapping[str, Any], allowed: tuple[str, ...] | list[str],
               noun: str = "config key") -> None:
    """Refuse the first (sorted) key of ``d`` not in ``allowed``; ``where`` is
    the section's dotted path ('' for the top level)."""
    unknown = sorted(str(k) for k in d if k not in allowed)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"Unknown {noun} `{prefix}{unknown[0]}`; expected one of: {', '.join(allowed)}."
        )


def mapping(where: str, v: Any, wanted: str = "a mapping") -> Mapping[str, Any]:
    """A mapping (a config section)."""
    if not isinstance(v, Mapping):
        raise fail(where, wanted, v)
    return v


def integer(where: str, v: Any, minimum: int | None = None, wanted: str | None = None) -> int:
    """An integer (a bool is not one), at least ``minimum`` when given;
    ``wanted`` replaces the wording of both failures."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise fail(where, wanted or "an integer", v)
    if minimum is not None and v < minimum:
        raise fail(where, wanted or f"an integer >= {minimum}", v)
    return v


def optional_integer(where: str, v: Any, minimum: int, wanted: str) -> int | None:
    """None, or an integer of at least ``minimum`` (``wanted`` names both)."""
    return None if v is None else integer(where, v, minimum, wanted)


def seed(where: str, v: Any) -> int | None:
    """An optional seed: a non-negative integer, or None for the run's seed."""
    return optional_integer(where, v, 0, "a non-negative integer or null")


def number(where: str, v: Any, wanted: str = "a number") -> float:
    """An int or float (not a bool), as a float."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise fail(where, wanted, v)
    return float(v)


def budget(where: str, v: Any) -> float:
    """A number, or a fraction written ``a/b`` (``8/255``; Hydra hands it over
    as a string), as a float."""
    if isinstance(v, str) and "/" in v:
        a, _, b = v.partition("/")
        try:
            num, den = float(a), float(b)
        except ValueError:
            raise fail(where, "a number or a fraction such as 8/255", v) from None
        if den == 0 or not (math.isfinite(num) and math.isfinite(den)):
            raise fail(where, "a number or a fraction such as 8/255", v)
        return num / den
    return number(where, v, "a number or a fraction such as 8/255")


def finite_number(where: str, v: Any) -> float:
    """A number that is neither infinite nor NaN."""
    value = number(where, v, "a finite number")
    if not math.isfinite(value):
        raise fail(where, "a finite number", v)
    return value


def probability(where: str, v: Any) -> float:
    """A number strictly between 0 and 1 (a level, a rate)."""
    value = number(where, v, "a number in (0, 1)")
    if not 0.0 < value < 1.0:
        raise fail(where, "a number in (0, 1)", v)
    return value


def text(where: str, v: Any) -> str:
    """A non-empty string."""
    if not isinstance(v, str) or not v:
        raise fail(where, "a non-empty string", v)
    return v


def optional_text(where: str, v: Any) -> str | None:
    """None, or a non-empty string."""
    return None if v is None else text(where, v)


def flag(where: str, v: Any) -> bool:
    """``true`` or ``false`` (not 0/1, not "yes")."""
    if not isinstance(v, bool):
        raise fail(where, "true or false", v)
    return v


def numbers(where: str, v: Any, *, item: Callable[[str, Any], float] | None = None,
            wanted: str = "a non-empty list of numbers") -> tuple[float, ...]:
    """A non-empty list of numbers. Without ``item`` a bad element rejects the
    whole list; with it each element is checked as ``where[i]``."""
    if not isinstance(v, (list, tuple)) or not v:
        raise fail(where, wanted, v)
    if item is not None:
        return tuple(item(f"{where}[{i}]", x) for i, x in enumerate(v))
    if any(isinstance(e, bool) or not isinstance(e, (int, float)) for e in v):
        raise fail(where, wanted, v)
    return tuple(float(e) for e in v)


def names(where: str, v: Any) -> tuple[str, ...] | None:
    """None, or a list of non-empty strings."""
    if v is None:
        return None
    if not isinstance(v, (list, tuple)) or not all(isinstance(s, str) and s for s in v):
        raise fail(where, "a list of names", v)
    return tuple(v)


def choice(where: str, v: Any, options: tuple[str, ...] | list[str], wanted: str | None = None
           ) -> str:
    """One of ``options`` (``wanted`` overrides the 'one of a, b' wording)."""
    if v not in options:
        raise fail(where, wanted or f"one of {', '.join(options)}", v)
    return str(v)
