"""The one evaluation forward pass: logits of a model version on a set of inputs.

Clean evaluation, attacks, corruptions, faults, checks and drift all score
inputs through these functions, so batching, device moves and the dtype of
the logits are the same everywhere. The module is assumed to be in eval mode
(``benchmark.models.load_model`` puts it there); nothing here changes its mode.
Gradients are the exception: ``input_gradient`` is the one differentiable pass.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from benchmark.core.types import ModelUnderTest

#: Batch size when the caller does not give one.
DEFAULT_BATCH_SIZE = 512


@torch.no_grad()
def forward_logits(model: ModelUnderTest, x: torch.Tensor,
                   batch_size: int = DEFAULT_BATCH_SIZE) -> torch.Tensor:
    """float32 logits of ``x`` (on any device), batch by batch on ``model.device``,
    returned on the CPU; an empty ``x`` gives an empty (0, num_classes) tensor."""
    if batch_size < 1:
        raise ValueError(f"Expected `batch_size` to be a positive integer, but got {batch_size}.")
    out = [model.module(x[i : i + batch_size].to(model.device)).float().cpu()
           for i in range(0, len(x), batch_size)]
    if not out:
        return torch.empty(0, model.num_classes)
    return torch.cat(out)


def predict(model: ModelUnderTest, x: torch.Tensor,
            batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """Predicted classes (int64) of ``x`` by the forward pass above."""
    return forward_logits(model, x, batch_size).argmax(1).numpy()


def predict_finite(model: ModelUnderTest, x: torch.Tensor,
                   batch_size: int = DEFAULT_BATCH_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Predicted classes and, per sample, whether all its logits were finite
    (a NaN input can give NaN logits, whose argmax means nothing)."""
    logits = forward_logits(model, x, batch_size)
    return logits.argmax(1).numpy(), torch.isfinite(logits).all(1).numpy()


def input_gradient(model: ModelUnderTest, x: torch.Tensor,
                   objective: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor | None:
    """Gradient of ``objective(float32 logits)`` (a scalar) with respect to ``x``,
    in one batch on ``model.device``; None when the output does not depend on
    the input through autograd. Errors of the module or of autograd propagate."""
    xg = x.detach().to(model.device).clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model.module(xg).float()
        (grad,) = torch.autograd.grad(objective(logits), xg, allow_unused=True)
    return grad
