"""AutoAttack in the reference protocol's order (Croce & Hein 2020, ``standard``).

ART's ``AutoAttack`` runs every listed attack untargeted, then (``targeted``)
every targetable one against each other class in class-index order, counting
a targeted run as a success only when the target class is hit. The reference
protocol instead runs its attacks in order, each on the points still
standing: APGD-CE, APGD-T (targeted DLR loss, against each of the top ``k``
classes of the clean logits), FAB-T (``attacks.fab``, against the same
targets), Square (``attacks.square``); a point is broken when it is misclassified within eps,
whatever the class. ``ProtocolAutoAttack`` does that with the listed attacks:
a nested attack configured ``targeted: true`` runs once per target class,
ranks 2 to ``n_target_classes + 1`` of the clean logits; the others run
untargeted. With ``n_target_classes`` 0 (the default) it is ART's own
``AutoAttack``.

The ART adapter runs the nested attacks through its own ``generate``, so
APGD-CE and APGD-T (ART's algorithm with the cross-entropy or the targeted
DLR loss) take its one-pass torch loop and the points stay tensors on the model's
device between attacks. How many points each attack broke is logged (logger
``attacks.autoattack``, level INFO), one record per attack and target rank.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

#: Runs one nested attack on tensors: (attack, x, labels or targets) -> raw examples.
Runner = Callable[[Any, torch.Tensor, torch.Tensor], torch.Tensor]
#: The model's logits for a batch of tensors.
Logits = Callable[[torch.Tensor], torch.Tensor]


def protocol_autoattack_class() -> type:
    """ART's ``AutoAttack`` with the reference protocol's order and success rule."""
    from art.attacks.evasion import AutoAttack

    class ProtocolAutoAttack(AutoAttack):  # type: ignore[misc]
        def __init__(self, estimator: Any, norm: Any = np.inf, eps: float = 0.3,
                     eps_step: float = 0.1, attacks: list[Any] | None = None,
                     batch_size: int = 32, estimator_orig: Any = None, targeted: bool = False,
                     parallel_pool_size: int = 0, n_target_classes: int = 0) -> None:
            super().__init__(estimator, norm=norm, eps=eps, eps_step=eps_step, attacks=attacks,
                             batch_size=batch_size, estimator_orig=estimator_orig,
                             targeted=targeted, parallel_pool_size=parallel_pool_size)
            if (not isinstance(n_target_classes, int) or isinstance(n_target_classes, bool)
                    or n_target_classes < 0):
                raise ValueError("expected `n_target_classes` to be a non-negative integer, "
                                 f"but got {n_target_classes!r}")
            self.n_target_classes = n_target_classes

        def generate(self, x: np.ndarray, y: np.ndarray | None = None,
                     **kwargs: Any) -> np.ndarray:
            if self.n_target_classes <= 0 or y is None:
                return super().generate(x, y, **kwargs)
            y = np.asarray(y)
            labels = torch.from_numpy(y.argmax(1) if y.ndim == 2 else y).long()
            nb = self.estimator.nb_classes

            def run(attack: Any, xs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
                onehot = np.eye(nb, dtype=np.float32)[goal.numpy()]
                return torch.from_numpy(np.asarray(attack.generate(x=xs.numpy(), y=onehot),
                                                   dtype=np.float32))

            def logits(xs: torch.Tensor) -> torch.Tensor:
                return torch.from_numpy(self.estimator_orig.predict(
                    xs.numpy(), batch_size=self.batch_size))

            xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
            return protocol_generate(self, xt, labels, run, logits).numpy()

    return ProtocolAutoAttack


def is_protocol(attack: Any) -> bool:
    """Whether ``attack`` is a ``ProtocolAutoAttack`` that runs the reference order."""
    return type(attack).__name__ == "ProtocolAutoAttack" and attack.n_target_classes > 0


def label(attack: Any) -> str:
    """The reference's name for a nested attack (apgd-ce, apgd-t, fab-t, square, ...)."""
    name = type(attack).__name__
    targeted = bool(getattr(attack, "targeted", False))
    if name == "AutoProjectedGradientDescent":
        loss = {"cross_entropy": "ce", "difference_logits_ratio": "dlr"}.get(
            str(attack.loss_type), str(attack.loss_type))
        return "apgd-t" if targeted else f"apgd-{loss}"
    if name == "FABTargeted":
        return "fab-t"
    if name in ("SquareAttack", "SquareLinf"):
        return "square"
    return f"{name}{'-t' if targeted else ''}"


def _within(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: Any) -> torch.Tensor:
    order = math.inf if str(norm) in ("inf", "np.inf") or norm == np.inf else float(norm)
    size = torch.linalg.vector_norm((x_adv - x).reshape(len(x), -1), ord=order, dim=1)
    return (1 - 1e-4) * size <= eps


def _batched(logits: Logits, x: torch.Tensor, batch: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([logits(x[i : i + batch]) for i in range(0, len(x), batch)])


def protocol_generate(aa: Any, x: torch.Tensor, labels: torch.Tensor, run: Runner,
                      logits: Logits) -> torch.Tensor:
    """The reference order over ``aa.attacks``: each runs on the points still
    standing; a targeted one once per top class (rank 2, 3, ... of the clean
    logits); a point falls when an example within eps is misclassified."""
    x = x.float()
    labels = labels.to(x.device).long()
    clean = _batched(logits, x, aa.batch_size).to(x.device)
    x_adv = x.clone()
    standing = clean.argmax(1) == labels
    ranked = clean.argsort(dim=1, descending=True)  # the reference sorts the clean output
    k = min(int(aa.n_target_classes), clean.shape[1] - 1)
    for attack in aa.attacks:
        targeted = bool(getattr(attack, "targeted", False))
        for rank in (range(2, k + 2) if targeted else [None]):
            idx = torch.nonzero(standing)[:, 0]
            if not len(idx):
                return x_adv
            goal = labels[idx] if rank is None else ranked[idx, rank - 1]
            start = time.perf_counter()
            adv = run(attack, x[idx], goal).to(x.device, torch.float32).reshape(x[idx].shape)
            pred = _batched(logits, adv, aa.batch_size).argmax(1).to(x.device)
            fell = (pred != labels[idx]) & _within(adv, x[idx], float(aa.eps), aa.norm)
            x_adv[idx[fell]] = adv[fell]
            standing[idx[fell]] = False
            log.info("%s%s broke %d of %d points still standing in %.1f s", label(attack),
                     "" if rank is None else f" (target rank {rank})", int(fell.sum()), len(idx),
                     time.perf_counter() - start)
    return x_adv
