"""Square Attack under Linf (Andriushchenko et al., "Square Attack: a
query-efficient black-box adversarial attack via random search", ECCV 2020),
as AutoAttack's ``standard`` version runs it: untargeted, margin loss,
``p_init`` 0.8 with the paper's step schedule, 5000 queries.

The search starts from vertical stripes of ``+-eps`` and then, per query and
per point still standing, redraws one square window (its side shrinking on
the schedule) to ``x +- eps`` per channel, keeping the candidate when it
lowers the margin ``z_y - max_{k != y} z_k``. One forward pass per query on
the points still standing, in torch on the model's device; ART's
``SquareAttack`` spends three (the whole batch's prediction and the loss
before and after) and draws one window for the whole batch.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from art.attacks.attack import EvasionAttack
from art.estimators.classification.classifier import ClassifierMixin
from art.estimators.estimator import BaseEstimator
from torch import nn

from attacks.torch_attack import check_linf, check_number, check_positive_ints, module_and_device

#: (queries up to, fraction of p_init): the paper's schedule for the window size.
_SCHEDULE = ((10, 1.0), (50, 1 / 2), (200, 1 / 4), (500, 1 / 8), (1000, 1 / 16),
             (2000, 1 / 32), (4000, 1 / 64), (6000, 1 / 128), (8000, 1 / 256))


def window_fraction(p_init: float, query: int) -> float:
    """The fraction of the image a new window covers at ``query``."""
    for upto, share in _SCHEDULE:
        if query <= upto:
            return p_init * share
    return p_init / 512


def _margin(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        z = module(x).float()
    own = z.gather(1, y[:, None])[:, 0]
    return own - z.scatter(1, y[:, None], -math.inf).amax(1)


class SquareLinf(EvasionAttack):
    """Untargeted Square Attack under Linf on NCHW images: ``generate(x, y)``
    with the true classes as ``y``; every example lies in the eps ball and
    [0, 1]."""

    attack_params = EvasionAttack.attack_params + [
        "eps", "norm", "max_iter", "p_init", "nb_restarts", "batch_size", "verbose"]
    _estimator_requirements = (BaseEstimator, ClassifierMixin)

    def __init__(self, estimator: Any, eps: float = 0.3, norm: Any = "inf",
                 max_iter: int = 5000, p_init: float = 0.8, nb_restarts: int = 1,
                 batch_size: int = 256, verbose: bool = False) -> None:
        super().__init__(estimator=estimator)
        self.eps = eps
        self.norm = norm
        self.max_iter = max_iter
        self.p_init = p_init
        self.nb_restarts = nb_restarts
        self.batch_size = batch_size
        self.verbose = verbose
        self._check_params()

    def _check_params(self) -> None:
        check_linf(self.eps, self.norm, "this Square Attack is the Linf one")
        check_positive_ints(self, ("max_iter", "nb_restarts", "batch_size"))
        p = self.p_init
        check_number("p_init", p, isinstance(p, (int, float)) and 0 < p <= 1,
                     "a number in (0, 1]")

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs: Any) -> np.ndarray:
        module, device = module_and_device(self.estimator)
        xt = torch.from_numpy(np.asarray(x, dtype=np.float32)).to(device)
        if y is None:
            with torch.no_grad():
                labels = module(xt).argmax(1)
        else:
            y = np.asarray(y)
            labels = torch.from_numpy(y.argmax(1) if y.ndim == 2 else y).to(device).long()
        return self.perturb(module, xt, labels).cpu().numpy()

    def perturb(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The search on torch tensors (NCHW); restarts only on the points
        still standing."""
        out = x.clone()
        standing = torch.ones(len(x), dtype=torch.bool, device=x.device)
        for _ in range(self.nb_restarts):
            todo = torch.nonzero(standing)[:, 0]
            for start in range(0, len(todo), self.batch_size):
                idx = todo[start : start + self.batch_size]
                adv, margin = self._single_run(module, x[idx], y[idx])
                out[idx] = adv
                standing[idx] = margin > 0
            if not bool(standing.any()):
                break
        return out

    def _single_run(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, h, w = x.shape
        eps = float(self.eps)
        dev = x.device
        stripes = torch.sign(2 * torch.rand(n, c, 1, w, device=dev) - 1)
        # x + eps and x - eps in the image range, once: every value the search
        # writes is one of the two, so "nothing changed" is an exact comparison
        hi, lo = (x + eps).clamp(0.0, 1.0), (x - eps).clamp(0.0, 1.0)
        best = torch.where(stripes > 0, hi, lo)
        margin = _margin(module, best, y)
        rows, cols = torch.arange(h, device=dev), torch.arange(w, device=dev)
        for query in range(1, self.max_iter):
            standing = margin > 0
            k = int(standing.sum())
            if not k:
                break
            whole = k == n  # every point stands: no gathers, updates in place
            todo = None if whole else torch.nonzero(standing)[:, 0]
            side = int(round(math.sqrt(window_fraction(self.p_init, query) * h * w)))
            side = min(max(side, 1), h - 1, w - 1)
            top = torch.randint(0, h - side, (k,), device=dev)
            left = torch.randint(0, w - side, (k,), device=dev)
            inside = (((rows[None, :] >= top[:, None]) & (rows[None, :] < top[:, None] + side))
                      [:, :, None]
                      & ((cols[None, :] >= left[:, None]) & (cols[None, :] < left[:, None] + side))
                      [:, None, :])[:, None]  # (k, 1, h, w)
            up = torch.rand(k, c, 1, 1, device=dev) > 0.5
            xh, xl, cur = (hi, lo, best) if todo is None else (hi[todo], lo[todo], best[todo])
            cand = torch.where(inside, torch.where(up, xh, xl), cur)
            same = torch.eq(cand, cur).reshape(k, -1).all(1)  # nothing changed: flip the sign
            if bool(same.any()):
                flipped = torch.where(inside, torch.where(up, xl, xh), cur)
                cand = torch.where(same.view(k, 1, 1, 1), flipped, cand)
            new = _margin(module, cand, y if todo is None else y[todo])
            if todo is None:
                better = new < margin
                best = torch.where(better.view(k, 1, 1, 1), cand, best)
                margin = torch.where(better, new, margin)
            else:
                better = new < margin[todo]
                best[todo[better]] = cand[better]
                margin[todo[better]] = new[better]
        return best, margin
