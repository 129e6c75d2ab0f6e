"""rtb: a robustness testbench for deep models (runner, models, data, store,
compare, report, CLI).

``from benchmark import evaluate`` is the Python API (``benchmark.api``); it
is imported on first use, so ``import benchmark`` (and ``rtb --help``) loads
neither torch nor pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmark.api import Evaluation, evaluate, tensors_evalset

__version__ = "0.1.0"

#: Names of the Python API, imported from ``benchmark.api`` on first access.
API_NAMES = ("Evaluation", "evaluate", "tensors_evalset")

__all__ = ["Evaluation", "__version__", "evaluate", "tensors_evalset"]


def __getattr__(name: str) -> Any:
    if name in API_NAMES:
        from benchmark import api

        return getattr(api, name)
    raise AttributeError(f"module 'benchmark' has no attribute {name!r}")
