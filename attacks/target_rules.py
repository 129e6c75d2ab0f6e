"""Target-selection rules of targeted attacks, by name.

A rule takes the clean logits, the true labels and a seeded generator and
returns one target class per sample, never the true class.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from benchmark.core.registry import Registry

TargetRule = Callable[[torch.Tensor, torch.Tensor, np.random.Generator], torch.Tensor]

TARGET_RULES: Registry[TargetRule] = Registry(
    "target rule", duplicate="Expected a new {kind} name, but {name!r} is registered.",
    unknown="Expected `target` to be one of {valid}, but got {name!r}.")


def register_target_rule(name: str) -> Callable[[TargetRule], TargetRule]:
    """Register a target-selection rule under ``name``; a duplicate name raises."""
    return TARGET_RULES.register(name)


def get_target_rule(name: str) -> TargetRule:
    return TARGET_RULES.get(name)


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
