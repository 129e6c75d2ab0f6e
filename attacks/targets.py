"""Target-selection rules of targeted attacks, by name.

A rule takes the clean logits, the true labels and a seeded generator and
returns one target class per sample, never the true class.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

TargetRule = Callable[[torch.Tensor, torch.Tensor, np.random.Generator], torch.Tensor]

TARGET_RULES: dict[str, TargetRule] = {}


def register_target_rule(name: str) -> Callable[[TargetRule], TargetRule]:
    """Register a target-selection rule under ``name``; a duplicate name raises."""

    def wrap(fn: TargetRule) -> TargetRule:
        if name in TARGET_RULES:
            raise ValueError(f"Expected a new target rule name, but {name!r} is registered.")
        TARGET_RULES[name] = fn
        return fn

    return wrap


def get_target_rule(name: str) -> TargetRule:
    if name not in TARGET_RULES:
        raise ValueError(
            f"Expected `target` to be one of {', '.join(sorted(TARGET_RULES))}, but got {name!r}."
        )
    return TARGET_RULES[name]


@register_target_rule("random")
def random_target(logits: torch.Tensor, y: torch.Tensor, gen: np.random.Generator) -> torch.Tensor:
    """A uniformly drawn class other than the true one."""
    k = logits.shape[1]
    shift = torch.from_numpy(gen.integers(1, k, size=len(y)))
    return (y + shift) % k


@register_target_rule("least_likely")
def least_likely_target(logits: torch.Tensor, y: torch.Tensor,
                        gen: np.random.Generator) -> torch.Tensor:
    """The class the model finds least likely on the clean input."""
    masked = logits.clone()
    masked[torch.arange(len(y)), y] = torch.inf
    return masked.argmin(1)


@register_target_rule("next")
def next_target(logits: torch.Tensor, y: torch.Tensor, gen: np.random.Generator) -> torch.Tensor:
    """The next class index (wrapping around)."""
    return (y + 1) % logits.shape[1]
