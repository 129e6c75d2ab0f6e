"""rtb: a robustness testbench for deep models (runner, models, data, store,
compare, report, CLI)."""

__version__ = "0.1.0"
