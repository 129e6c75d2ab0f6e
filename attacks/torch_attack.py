"""What rtb's own torch attacks (``fab.py``, ``square.py``) share: their
parameter checks, with one message shape, and the model and device behind an
ART estimator."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn


def param_error(name: str, expected: str, got: Any) -> ValueError:
    return ValueError(f"expected `{name}` to be {expected}, but got {got!r}")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_linf(eps: Any, norm: Any, what: str) -> None:
    """``eps`` a finite non-negative number and ``norm`` Linf (``what``: why)."""
    if not _number(eps) or not (math.isfinite(eps) and eps >= 0):
        raise param_error("eps", "a non-negative number", eps)
    if str(norm).lower() not in ("inf", "np.inf") and norm != np.inf:
        raise param_error("norm", f"inf ({what})", norm)


def check_positive_ints(obj: Any, names: tuple[str, ...]) -> None:
    for name in names:
        v = getattr(obj, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise param_error(name, "a positive integer", v)


def check_number(name: str, v: Any, ok: bool, words: str) -> None:
    """``v`` a number for which ``ok`` (its range test) holds."""
    if not _number(v) or not ok:
        raise param_error(name, words, v)


def module_and_device(estimator: Any) -> tuple[nn.Module, torch.device]:
    """The torch module behind an ART estimator and the device of its parameters."""
    module = estimator.model
    param = next(iter(module.parameters()), None)
    return module, (param.device if param is not None else torch.device("cpu"))
