"""FAB-T: the targeted Fast Adaptive Boundary attack under Linf (Croce & Hein,
"Minimally distorted adversarial examples with a fast adaptive boundary
attack", ICML 2020), as AutoAttack's ``standard`` version runs it.

Each step linearises the boundary between the point's class ``y`` and the
target ``t`` at the current iterate ``x_k`` (the hyperplane where the
first-order model of ``z_t - z_y`` is zero) and projects onto it, inside the
box [0, 1], two points: ``x_k`` and the original ``x_0``. The next iterate
mixes the two overshot projections, ``(1 - a)(x_k + eta d_k) + a (x_0 + eta
d_0)``, with ``a = min(|d_k| / (|d_k| + |d_0|), alpha_max)``: a large step
from ``x_k`` while it is far from the boundary, a pull towards ``x_0`` near
it. When an iterate is misclassified (any class but ``y``) it is kept if it is
the closest so far and pulled back towards ``x_0`` by ``beta``, so the search
walks along the boundary towards the original point. Restarts after the first
start at a random point of the ball of radius ``eps / 2``.

The Linf projection onto a hyperplane inside the box has a closed form: moving
each coordinate by at most ``r`` in the direction of its weight, as far as the
box allows, changes the linear function by a piecewise-linear, increasing
amount in ``r``; the smallest ``r`` that reaches the hyperplane is found by
sorting the coordinates' room to the box once per row (``_linf_to_plane``).

Everything runs batch by batch on the model's device. While few iterates
are misclassified, one forward and backward pass per iteration gives both the
prediction at the new iterate and the gradient for the next step (only the
points pulled back after a success need another pass); while many are, a
prediction pass and then a gradient pass at the pulled-back points is cheaper. Only a point misclassified within
``eps`` counts: the others are returned unchanged, and a point stops
iterating once it has one such example (``stop_at_eps``), since AutoAttack
asks whether a point can be broken within ``eps``, not for its minimal
distortion.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from art.attacks.attack import EvasionAttack
from art.estimators.classification.classifier import ClassGradientsMixin, ClassifierMixin
from art.estimators.estimator import BaseEstimator
from torch import nn

from attacks.torch_attack import (
    check_linf,
    check_number,
    check_positive_ints,
    module_and_device,
    param_error,
)

#: Smallest step size kept apart from zero in the mixing weight (as in the paper's code).
_TINY = 1e-8
#: Below this share of pulled-back points one pass gives the prediction and the
#: gradient (plus a pass for those points); above, a prediction pass then a
#: gradient pass is cheaper (a backward pass costs about two forward passes).
_EAGER_BELOW = 1 / 3


def _linf_to_plane(p: torch.Tensor, w: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Per row, the smallest-Linf ``d`` with ``w . d = c`` and ``p + d`` in
    [0, 1]; where the box cannot reach the plane, the largest move towards it.

    ``p``, ``w``: (n, m); ``c``: (n,)."""
    side = torch.where(c < 0, -1.0, 1.0).to(w.dtype)
    v = w * side[:, None]
    need = c.abs()
    room = torch.where(v > 0, 1.0 - p, p).clamp_min(0.0)
    room_s, order = room.sort(dim=1)
    a_s = v.abs().gather(1, order)
    part = a_s * room_s
    done = part.cumsum(1)  # coordinates up to j saturated at their room
    rest = a_s.flip(1).cumsum(1).flip(1)  # weight of coordinates j.. (still moving at r)
    reach = done + room_s * (rest - a_s)  # the change when r = room_s[:, j]
    enough = reach >= need[:, None]
    j = enough.to(torch.int8).argmax(1, keepdim=True)  # the first breakpoint that reaches
    before = (done - part).gather(1, j)[:, 0]
    r = (need - before) / rest.gather(1, j)[:, 0].clamp_min(1e-12)
    r = torch.where(enough.any(1), r, room_s[:, -1])
    return torch.sign(v) * torch.minimum(room, r[:, None])


def _in(v: object, lo: float, hi: float) -> bool:
    return isinstance(v, (int, float)) and lo <= v <= hi


class FABTargeted(EvasionAttack):
    """FAB-T under Linf: ``generate(x, y)`` takes the target classes as ``y``
    (one-hot or indices); each point's own class is the model's prediction on
    ``x``. Returns, per point, an example misclassified within ``eps``, or the
    point itself. ``max_iter`` is the reference's ``n_iter`` (ART's name, so
    rtb's iteration-doubling check reaches it); the defaults are the
    reference's for FAB-T."""

    attack_params = EvasionAttack.attack_params + [
        "eps", "norm", "targeted", "max_iter", "n_restarts", "alpha_max", "eta", "beta",
        "batch_size", "stop_at_eps", "verbose",
    ]
    _estimator_requirements = (BaseEstimator, ClassGradientsMixin, ClassifierMixin)

    def __init__(self, estimator: Any, eps: float = 0.3, norm: Any = "inf",
                 targeted: bool = True, max_iter: int = 100, n_restarts: int = 1,
                 alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9,
                 batch_size: int = 256, stop_at_eps: bool = True, verbose: bool = False) -> None:
        super().__init__(estimator=estimator)
        self.eps = eps
        self.norm = norm
        self._targeted = targeted
        self.max_iter = max_iter
        self.n_restarts = n_restarts
        self.alpha_max = alpha_max
        self.eta = eta
        self.beta = beta
        self.batch_size = batch_size
        self.stop_at_eps = stop_at_eps
        self.verbose = verbose
        self._check_params()

    def _check_params(self) -> None:
        check_linf(self.eps, self.norm, "FAB-T here is the Linf attack")
        if self._targeted is not True:
            raise param_error("targeted", "true (FAB-T is targeted; the targets come as labels)",
                              self._targeted)
        check_positive_ints(self, ("max_iter", "n_restarts", "batch_size"))
        for name, lo, hi, words in (("alpha_max", 0.0, 1.0, "a number in [0, 1]"),
                                    ("beta", 0.0, 1.0, "a number in [0, 1]"),
                                    ("eta", 1.0, math.inf,
                                     "a number of at least 1 (the overshoot)")):
            v = getattr(self, name)
            check_number(name, v, _in(v, lo, hi), words)
        if not isinstance(self.stop_at_eps, bool):
            raise param_error("stop_at_eps", "true or false", self.stop_at_eps)

    # ------------------------------------------------------------------ entry points

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs: Any) -> np.ndarray:
        if y is None:
            raise ValueError("FAB-T needs the target classes as `y`.")
        module, device = self._module()
        xt = torch.from_numpy(np.asarray(x, dtype=np.float32)).to(device)
        y = np.asarray(y)
        target = torch.from_numpy(y.argmax(1) if y.ndim == 2 else y).to(device).long()
        source = self._predict(module, xt)
        return self.perturb(xt, source, target).cpu().numpy()

    def perturb(self, x: torch.Tensor, source: torch.Tensor, target: torch.Tensor
                ) -> torch.Tensor:
        """FAB-T on torch tensors on the model's device: ``source`` the points'
        classes, ``target`` the classes to aim at. Restarts run only on the
        points not yet broken within ``eps``."""
        module, device = self._module()
        x = x.to(device, torch.float32)
        source, target = source.to(device).long(), target.to(device).long()
        out = x.clone()
        broken = torch.zeros(len(x), dtype=torch.bool, device=device)
        aimable = source != target
        for restart in range(self.n_restarts):
            todo = torch.nonzero(~broken & aimable)[:, 0]
            for start in range(0, len(todo), self.batch_size):
                idx = todo[start : start + self.batch_size]
                adv, dist = self._single_run(module, x[idx], source[idx], target[idx],
                                             restart > 0)
                ok = dist <= self.eps
                out[idx[ok]] = adv[ok]
                broken[idx[ok]] = True
        return out

    # ------------------------------------------------------------------ internals

    def _module(self) -> tuple[nn.Module, torch.device]:
        return module_and_device(self.estimator)

    @staticmethod
    def _predict(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(x).argmax(1)

    @staticmethod
    def _margin(module: nn.Module, x: torch.Tensor, source: torch.Tensor, target: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predictions, ``z_t - z_y`` and its gradient at ``x``, in one pass."""
        xg = x.detach().requires_grad_(True)
        with torch.enable_grad():
            z = module(xg).float()
            diff = z.gather(1, target[:, None])[:, 0] - z.gather(1, source[:, None])[:, 0]
            (grad,) = torch.autograd.grad(diff.sum(), xg)
        return z.detach().argmax(1), diff.detach(), grad.detach()

    def _single_run(self, module: nn.Module, x0: torch.Tensor, source: torch.Tensor,
                    target: torch.Tensor, random_start: bool
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One run on a batch: the closest misclassified example found and its
        Linf distance (inf where none was found)."""
        n = len(x0)
        view = (n,) + (1,) * (x0.ndim - 1)
        best = torch.full((n,), math.inf, device=x0.device)
        adv = x0.clone()
        x1 = x0.clone()
        if random_start:
            t = 2 * torch.rand(x0.shape, device=x0.device) - 1
            size = t.reshape(n, -1).abs().amax(1).clamp_min(1e-12).view(view)
            x1 = (x0 + 0.5 * float(self.eps) * t / size).clamp(0.0, 1.0)
        live = torch.arange(n, device=x0.device)
        _, diff, grad = self._margin(module, x1, source, target)
        share = 0.0  # of the last step's points that were misclassified
        for it in range(self.max_iter):
            last = it == self.max_iter - 1
            xk, xo, m = x1[live], x0[live], len(live)
            w = grad.reshape(m, -1)
            c_k = -diff  # reach the plane from the iterate ...
            c_o = -diff - (w * (xo - xk).reshape(m, -1)).sum(1)  # ... and from the original
            d = _linf_to_plane(torch.cat((xk.reshape(m, -1), xo.reshape(m, -1))),
                               torch.cat((w, w)), torch.cat((c_k, c_o)))
            d_k, d_o = d[:m].reshape(xk.shape), d[m:].reshape(xk.shape)
            a = d.abs().amax(1).clamp_min(_TINY)
            alpha = (a[:m] / (a[:m] + a[m:])).clamp(0.0, float(self.alpha_max))
            alpha = alpha.view((m,) + view[1:])
            x1[live] = ((xk + self.eta * d_k) * (1 - alpha)
                        + (xo + self.eta * d_o) * alpha).clamp(0.0, 1.0)
            # the gradient comes with the prediction while few points get pulled
            # back (they need another pass); else a prediction, then the gradient
            eager = not last and share < _EAGER_BELOW
            if eager:
                pred, diff, grad = self._margin(module, x1[live], source[live], target[live])
            else:
                pred = self._predict(module, x1[live])
            hit = pred != source[live]
            share = float(hit.float().mean())
            rows = live[hit]
            if len(rows):
                size = (x1[rows] - x0[rows]).reshape(len(rows), -1).abs().amax(1)
                closer = size < best[rows]
                adv[rows[closer]] = x1[rows[closer]]
                best[rows[closer]] = size[closer]
                x1[rows] = x0[rows] + (x1[rows] - x0[rows]) * self.beta  # back towards x0
            if last:
                break
            if self.stop_at_eps and len(rows):
                keep = ~(best[live] <= self.eps)
                live, hit = live[keep], hit[keep]
                if eager:
                    diff, grad = diff[keep], grad[keep]
                if not len(live):
                    break
            if not eager:
                _, diff, grad = self._margin(module, x1[live], source[live], target[live])
            elif bool(hit.any()):  # the pulled-back points need their margin there
                back = live[hit]
                _, d2, g2 = self._margin(module, x1[back], source[back], target[back])
                diff[hit], grad[hit] = d2, g2
        return adv, best
