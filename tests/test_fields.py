"""The core field validators: one message style, ConfigError only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from benchmark.core import fields as F
from benchmark.core.errors import ConfigError


@pytest.mark.parametrize(("check", "value", "message"), [
    (lambda v: F.integer("a.n", v, minimum=1), 0, "Expected `a.n` to be an integer >= 1, but got 0."),
    (lambda v: F.integer("a.n", v), True, "Expected `a.n` to be an integer, but got True."),
    (lambda v: F.number("a.x", v), "1", "Expected `a.x` to be a number, but got '1'."),
    (lambda v: F.finite_number("a.x", v), float("nan"), "Expected `a.x` to be a finite number, but got nan."),
    (lambda v: F.probability("a.p", v), 1.0, "Expected `a.p` to be a number in (0, 1), but got 1.0."),
    (lambda v: F.text("a.s", v), "", "Expected `a.s` to be a non-empty string, but got ''."),
    (lambda v: F.flag("a.b", v), 1, "Expected `a.b` to be true or false, but got 1."),
    (lambda v: F.mapping("a", v), [1], "Expected `a` to be a mapping, but got [1]."),
    (lambda v: F.numbers("a.v", v), [1, "x"], "Expected `a.v` to be a non-empty list of numbers, but got [1, 'x']."),
    (lambda v: F.numbers("a.v", v, item=F.number), [1, "x"], "Expected `a.v[1]` to be a number, but got 'x'."),
    (lambda v: F.seed("a.seed", v), -1, "Expected `a.seed` to be a non-negative integer or null, but got -1."),
    (lambda v: F.names("a.names", v), ["x", ""], "Expected `a.names` to be a list of names, but got ['x', '']."),
    (lambda v: F.choice("a.c", v, ("x", "y")), "z", "Expected `a.c` to be one of x, y, but got 'z'."),
])
def test_one_message_style(check: Callable[[Any], Any], value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        check(value)
    assert str(info.value) == message


def test_valid_values_pass_through() -> None:
    assert F.integer("n", 3, minimum=1) == 3
    assert F.numbers("v", [1, 2.5]) == (1.0, 2.5)
    assert F.seed("s", None) is None and F.names("n", None) is None
    assert F.optional_text("t", None) is None and F.probability("p", 0.5) == 0.5


def test_unknown_key_names_the_full_path_and_the_valid_keys() -> None:
    with pytest.raises(ConfigError) as info:
        F.check_keys("groups.slices", {"top": 1, "colour": 2}, ("top", "bins"))
    assert str(info.value) == ("Unknown config key `groups.slices.colour`; "
                               "expected one of: top, bins.")
    with pytest.raises(ConfigError, match="^Unknown config key `foo`;"):
        F.check_keys("", {"foo": 1}, ("name",))


def test_budgets_written_as_fractions() -> None:
    from benchmark.core.types import param_text, threat_label

    assert F.budget("eps", "8/255") == 8 / 255 and F.budget("eps", 0.3) == 0.3
    for bad in ("8/0", "a/255", "8/", True):
        with pytest.raises(ConfigError, match="a number or a fraction such as 8/255"):
            F.budget("eps", bad)
    assert [param_text(v) for v in (8 / 255, 2 / 255, 0.1, 0.3, 3.0, 0.0313725)] == [
        "8/255", "2/255", "0.1", "0.3", "3", "0.0313725"]
    assert threat_label("attack", "pgd_linf", 8 / 255) == "pgd_linf eps=8/255"
    assert threat_label("corruption", "fog", 3.0) == "fog severity=3"
