"""Bad-input corpus: mistakes in configs and overrides (see ``badinput.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from badinput import Case, World, run_case

CASES = [
    Case("unknown key", "config", ("+foo=1",), "Unknown config key `foo`", run_overrides=True),
    Case("negative budget", "config", ("attack.fgsm.eps=[-0.1]",),
         "Expected `attack.fgsm.eps[0]` to be a non-negative number", run_overrides=True),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.klass}:{c.name}")
def test_bad_input(case: Case, world: World, tmp_path: Path) -> None:
    run_case(case, world, tmp_path)
