"""The generic name -> item registry, and that every registry of the project is one."""

from __future__ import annotations

import pytest

from attacks.corruptions import CORRUPTIONS
from attacks.diagnostics import ATTACK_FLAGS, MODEL_FLAGS
from attacks.faults import FAULTS
from attacks.target_rules import TARGET_RULES
from benchmark.core.errors import ConfigError, DataError
from benchmark.core.registry import Registry
from benchmark.data import LOADERS
from metrics.checks import list_checks
from metrics.checks_registry import _CHECKS
from metrics.groups import FEATURE_KINDS
from metrics.properties import PROPERTIES


def _abc() -> Registry[int]:
    reg: Registry[int] = Registry("widget")
    for i, name in enumerate(["b", "c", "a"]):
        reg.add(name, i)
    return reg


def test_register_decorator_returns_item_and_registers_it() -> None:
    reg: Registry[object] = Registry("widget")

    @reg.register("f")
    def f() -> int:
        return 1

    assert f() == 1 and reg.get("f") is f
    assert "f" in reg and "g" not in reg and len(reg) == 1


def test_names_sorted_iteration_in_registration_order() -> None:
    reg = _abc()
    assert reg.names() == ["a", "b", "c"]
    assert list(reg) == ["b", "c", "a"]
    assert reg.values() == [0, 1, 2]
    assert reg.items() == [("b", 0), ("c", 1), ("a", 2)]


def test_duplicate_raises_on_add_and_on_register() -> None:
    reg = _abc()
    with pytest.raises(ValueError, match=r"^A widget named 'a' is already registered\.$"):
        reg.add("a", 9)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("b")
    deco = reg.register("d")
    reg.add("d", 4)
    with pytest.raises(ValueError, match="'d' is already registered"):
        deco(5)
    assert reg.get("d") == 4


def test_unknown_name_lists_valid_names_with_configured_error() -> None:
    reg = _abc()
    with pytest.raises(ValueError) as exc:
        reg.get("z")
    assert type(exc.value) is ValueError
    assert str(exc.value) == "Unknown widget 'z'; expected one of: a, b, c."

    custom: Registry[int] = Registry(
        "gadget", error=DataError, duplicate="{name!r} twice ({kind})",
        unknown="No {kind} {name!r} among {valid}.", listed=lambda: ["y", "x"])
    custom.add("x", 1)
    with pytest.raises(DataError) as exc2:
        custom.get("q")
    assert str(exc2.value) == "No gadget 'q' among y, x."
    with pytest.raises(ValueError, match=r"^'x' twice \(gadget\)$"):
        custom.add("x", 2)


def test_unregister() -> None:
    reg = _abc()
    del reg["b"]
    assert reg.names() == ["a", "c"]
    with pytest.raises(KeyError):
        del reg["b"]


# The project's registries: name, registry, error type of an unknown name.
PROJECT = [
    ("loaders", LOADERS, DataError),
    ("faults", FAULTS, ValueError),
    ("corruptions", CORRUPTIONS, ValueError),
    ("target rules", TARGET_RULES, ValueError),
    ("properties", PROPERTIES, ValueError),
    ("checks", _CHECKS, ConfigError),
    ("feature kinds", FEATURE_KINDS, ValueError),
    ("model flags", MODEL_FLAGS, ValueError),
    ("attack flags", ATTACK_FLAGS, ValueError),
]


@pytest.mark.parametrize(("label", "reg", "error"), PROJECT, ids=[p[0] for p in PROJECT])
def test_project_registries_contract(label: str, reg: Registry[object],
                                     error: type[Exception]) -> None:
    list_checks()  # the built-in checks are registered (metrics.checks)
    assert isinstance(reg, Registry) and len(reg) > 0
    first = next(iter(reg))
    assert reg.get(first) is dict(reg.items())[first]
    with pytest.raises(ValueError, match="registered"):
        reg.add(first, object())
    with pytest.raises(error) as exc:
        reg.get("no-such-name")
    assert type(exc.value) is error
    assert "'no-such-name'" in str(exc.value) and first in str(exc.value)
