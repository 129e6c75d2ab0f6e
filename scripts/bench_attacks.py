"""Attack overhead, measured side by side in one run.

1. PGD-Linf (10 steps, batch 128) on the mnist5k test images with the
   reference CNN: rtb (``attacks.budgets.run_attack``) against the floor (a bare
   torch loop of the same forward+backward passes on the same batches) and
   against ART's PGD called the plain way (a PyTorchClassifier around the
   model with trainable parameters, ``generate`` on numpy arrays).
2. A 5-point eps sweep with the early exit against five independent runs.

Each PGD timing is the sum over batches of the best of ``--repeats`` per
batch, the three contenders interleaved (the machine is shared and noisy);
the sweep timings are the best of ``--repeats`` whole runs.

    python scripts/bench_attacks.py [--n 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from attacks.art_adapter import ArtAdapter
from attacks.budgets import PointState, attack_step, independent_outcome, predict, run_attack
from benchmark.compose import compose_spec
from benchmark.core.specs import AttackSpec
from benchmark.core.types import EvalSet, ModelUnderTest
from benchmark.data import load_evalset
from benchmark.models import load_model

EPS = 0.3
STEPS = 10
BATCH = 128
SWEEP = (0.1, 0.15, 0.2, 0.25, 0.3)  # the MNIST budgets of the benchmark, eps 0.1 to 0.3


def best_of(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def floor(model: ModelUnderTest, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Bare PGD-Linf: random start, STEPS x (forward, CE, input gradient, sign
    step, projection) per batch of BATCH."""
    out = []
    step = eps / 4
    for i in range(0, len(x), BATCH):
        xb, yb = x[i : i + BATCH], y[i : i + BATCH]
        adv = (xb + torch.empty_like(xb).uniform_(-eps, eps)).clamp(0, 1)
        for _ in range(STEPS):
            adv.requires_grad_(True)
            loss = nn.functional.cross_entropy(model.module(adv), yb)
            (grad,) = torch.autograd.grad(loss, adv)
            with torch.no_grad():
                adv = adv + step * grad.sign()
                adv = (xb + (adv - xb).clamp(-eps, eps)).clamp(0, 1)
        out.append(adv.detach())
    return torch.cat(out)


def art_plain(model: ModelUnderTest, x: np.ndarray, y: np.ndarray, eps: float) -> np.ndarray:
    """ART's PGD as a user would call it: trainable weights, numpy in and out."""
    from art.attacks.evasion import ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier

    module = copy.deepcopy(model.module)
    for p in module.parameters():
        p.requires_grad_(True)
    clf = PyTorchClassifier(model=module, loss=nn.CrossEntropyLoss(),
                            input_shape=tuple(model.input_shape),
                            nb_classes=model.num_classes, clip_values=(0.0, 1.0))
    attack = ProjectedGradientDescentPyTorch(clf, norm=np.inf, eps=eps, eps_step=eps / 4,
                                             max_iter=STEPS, num_random_init=1,
                                             batch_size=BATCH, verbose=False)
    return attack.generate(x=x, y=y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--part", choices=("all", "pgd", "sweep"), default="all")
    ap.add_argument("--eps", type=float, nargs=5, default=SWEEP,
                    help="the 5 budgets of the sweep")
    args = ap.parse_args()

    spec, _ = compose_spec([f"data.n_samples={args.n}", "model=[mnist_cnn_v1]",
                            "attack=[pgd_linf]", f"attack.pgd_linf.max_iter={STEPS}",
                            "attack.pgd_linf.eps_step_ratio=0.25",
                            f"attack.pgd_linf.eps=[{EPS}]", f"batch_size={BATCH}"])
    data = load_evalset(spec.data)
    model = load_model(spec.models["mnist_cnn_v1"], torch.device("cpu"))
    pgd: AttackSpec = spec.attacks["pgd_linf"]
    adapter = ArtAdapter(model, BATCH)
    clean = predict(model, data.x, BATCH)
    keep = torch.from_numpy(np.flatnonzero(clean == data.y.numpy()))
    xs, ys = data.x[keep], data.y[keep]  # the points every contender attacks
    print(f"PGD-Linf eps={EPS}, {STEPS} steps, batch {BATCH}, {len(xs)} of {len(data)} "
          f"clean-correct mnist5k test images, {model.key}, torch threads "
          f"{torch.get_num_threads()}, best of {args.repeats}")

    if args.part != "sweep":
        pgd_overhead(args, model, adapter, pgd, xs, ys, keep, clean)
    if args.part != "pgd":
        sweep_cost(args, data, adapter, pgd, clean)


def pgd_overhead(args: argparse.Namespace, model: ModelUnderTest, adapter: ArtAdapter,
                 pgd: AttackSpec, xs: torch.Tensor, ys: torch.Tensor, keep: torch.Tensor,
                 clean: np.ndarray) -> None:
    # Interleaved per batch of BATCH points, best of `repeats` per batch: a
    # burst of load on the shared machine then hits one batch, not a contender.
    best = {"floor": [], "rtb": [], "art": []}
    for i in range(0, len(xs), BATCH):
        xb, yb = xs[i : i + BATCH], ys[i : i + BATCH]
        cb = clean[keep[i : i + BATCH].numpy()]
        runs: dict[str, Callable[[], object]] = {
            "floor": lambda xb=xb, yb=yb: floor(model, xb, yb, EPS),
            "rtb": lambda xb=xb, yb=yb, cb=cb: list(run_attack(adapter, pgd, xb, yb, cb, 0)),
            "art": lambda xb=xb, yb=yb: art_plain(model, xb.numpy(), yb.numpy(), EPS),
        }
        times: dict[str, float] = {k: float("inf") for k in runs}
        for _ in range(args.repeats):
            for k, fn in runs.items():
                times[k] = min(times[k], best_of(fn, 1))
        for k, t in times.items():
            best[k].append(t)
    t_floor, t_rtb, t_art = (sum(best[k]) for k in ("floor", "rtb", "art"))
    print(f"  floor (bare torch loop)   {t_floor:7.2f} s   1.00x")
    print(f"  rtb                       {t_rtb:7.2f} s   {t_rtb / t_floor:.2f}x floor")
    print(f"  ART called the plain way  {t_art:7.2f} s   {t_art / t_floor:.2f}x floor")



def sweep_cost(args: argparse.Namespace, data: EvalSet, adapter: ArtAdapter, pgd: AttackSpec,
               clean: np.ndarray) -> None:
    sweep = AttackSpec(**{**pgd.__dict__, "eps": tuple(args.eps)})
    # Per eps, interleaved and best of `repeats`: the early exit attacks the
    # points still standing (state copied so each repeat does the same work),
    # an independent run attacks every clean-correct point.
    state = PointState.start(data.y.numpy(), clean)
    t_exit = t_indep = 0.0
    n_exit = n_indep = 0
    for eps in sweep.eps:
        n_exit += int(state.alive.sum())
        n_indep += int((clean == data.y.numpy()).sum())
        te = ti = float("inf")
        for _ in range(args.repeats):
            trial = copy.deepcopy(state)
            te = min(te, best_of(lambda trial=trial, eps=eps: attack_step(
                adapter, sweep, eps, data.x, data.y, trial, 0), 1))
            ti = min(ti, best_of(lambda eps=eps: independent_outcome(
                adapter, sweep, eps, data.x, data.y, clean, 0), 1))
        attack_step(adapter, sweep, eps, data.x, data.y, state, 0)
        t_exit, t_indep = t_exit + te, t_indep + ti
    print(f"5-point sweep eps={list(sweep.eps)}")
    print(f"  five independent runs     {t_indep:7.2f} s   1.00x   ({n_indep} points attacked)")
    print(f"  with early exit           {t_exit:7.2f} s   {t_exit / t_indep:.2f}x   ({n_exit} points "
          f"attacked: {n_exit / n_indep:.2f}x)")


if __name__ == "__main__":
    main()
