"""Attack overhead, measured side by side in one run.

1. PGD-Linf (10 steps, batch 128) on the mnist5k test images with the
   reference CNN: rtb (``attacks.budgets.run_attack``) against the floor (a bare
   torch loop of the same forward+backward passes on the same batches) and
   against ART's PGD called the plain way (a PyTorchClassifier around the
   model with trainable parameters, ``generate`` on numpy arrays).
2. A 5-point eps sweep with the early exit against five independent runs.
3. CIFAR-scale models (``--models resnet18 wrn28_10``, random weights,
   32x32x3 inputs, eval mode, frozen parameters as rtb loads them):
   PGD-Linf, APGD-CE and FGSM through rtb (``run_attack``) against each
   one's floor, side by side per batch; for PGD also ART called the plain
   way (trainable parameters) and ART with frozen parameters.

The floor, the same definition for every attack: a bare torch loop doing
only what any implementation of an attack of k gradient steps must do on a
batch: k forward+backward passes of the model (mean cross-entropy, gradient
with respect to the input only), each followed by the signed step and the
projection to the ball and [0, 1] (with a uniform random start for PGD and
APGD), then one forward pass scoring the final points. k is the attack's
step count: ``--cifar-steps`` for PGD and APGD (``max_iter``; APGD takes
one gradient per iteration), 1 for FGSM. Nothing else counts as the floor: building
the attack, numpy conversions, checking success and recording outcomes are
the attack loop's overhead.

The PGD timing of part 1 is the sum over batches of the best of ``--repeats``
per batch, the three contenders interleaved (the machine is shared and
noisy); the sweep timings are the best of ``--repeats`` whole runs. Part 3
runs rounds (every contender on every batch, interleaved) and prints both
the best-round totals and the median per-round ratio (``cifar_overhead``).

    python scripts/bench_attacks.py [--n 1000] [--repeats 3]
    python scripts/bench_attacks.py --part cifar --models resnet18 --cifar-n 32
    python scripts/bench_attacks.py --part cifar --models wrn28_10 --cifar-n 4
"""

from __future__ import annotations

import argparse
import copy
import os
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


def best_of(fn: Callable[[], object], repeats: int, clock: Callable[[], float] = time.perf_counter
            ) -> float:
    times = []
    for _ in range(repeats):
        t = clock()
        fn()
        times.append(clock() - t)
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
    ap.add_argument("--part", choices=("all", "pgd", "sweep", "cifar"), default="all")
    ap.add_argument("--models", nargs="+", choices=tuple(CIFAR_MODELS), default=list(CIFAR_MODELS),
                    help="CIFAR-scale models of part 3 (default: both)")
    ap.add_argument("--cifar-n", type=int, nargs="+", default=None,
                    help="points per CIFAR model, one per --models entry (default 32 for "
                         "resnet18, 4 for wrn28_10)")
    ap.add_argument("--cifar-batch", type=int, default=16, help="batch of part 3")
    ap.add_argument("--cifar-steps", type=int, default=10, help="PGD and APGD steps of part 3")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: torch's choice)")
    ap.add_argument("--eps", type=float, nargs=5, default=SWEEP,
                    help="the 5 budgets of the sweep")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.1f} (1 min), torch threads {torch.get_num_threads()}")
    if args.part in ("all", "cifar"):
        sizes = args.cifar_n or [CIFAR_N[m] for m in args.models]
        if len(sizes) != len(args.models):
            ap.error("--cifar-n needs one size per --models entry")
        for name, n in zip(args.models, sizes, strict=True):
            cifar_overhead(name, n, args.cifar_batch, args.cifar_steps, args.repeats)
        print(f"load average {os.getloadavg()[0]:.1f} at the end of part 3")
        if args.part == "cifar":
            return

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


# ------------------------------------------------------- CIFAR-scale models


class _Block(nn.Module):
    """Pre-activation wide residual block (Zagoruyko & Komodakis, 2016)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.short = None if cin == cout and stride == 1 else nn.Conv2d(cin, cout, 1, stride,
                                                                        bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = torch.relu(self.bn1(x))
        y = self.conv2(torch.relu(self.bn2(self.conv1(o))))
        return y + (x if self.short is None else self.short(o))


def wide_resnet(depth: int = 28, widen: int = 10, num_classes: int = 10) -> nn.Module:
    """WideResNet-depth-widen for 32x32 inputs (the RobustBench CIFAR shape)."""
    n = (depth - 4) // 6
    widths = [16, 16 * widen, 32 * widen, 64 * widen]
    layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)]
    for g in range(3):
        for i in range(n):
            layers.append(_Block(widths[g] if i == 0 else widths[g + 1], widths[g + 1],
                                 (1 if g == 0 else 2) if i == 0 else 1))
    layers += [nn.BatchNorm2d(widths[3]), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Linear(widths[3], num_classes)]
    return nn.Sequential(*layers)


def resnet18_cifar(num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18 with the CIFAR stem (3x3 conv, no max pool)."""
    import torchvision

    m = torchvision.models.resnet18(num_classes=num_classes)
    m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    m.maxpool = nn.Identity()
    return m


CIFAR_MODELS: dict[str, Callable[[], nn.Module]] = {"resnet18": resnet18_cifar,
                                                     "wrn28_10": wide_resnet}
CIFAR_N = {"resnet18": 32, "wrn28_10": 4}


def cifar_model(name: str) -> ModelUnderTest:
    torch.manual_seed(0)
    module = CIFAR_MODELS[name]().eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return ModelUnderTest(name=name, version="random", module=module, sha256="0" * 64,
                          num_classes=10, input_shape=(3, 32, 32), device=torch.device("cpu"))


def floor_loop(model: ModelUnderTest, x: torch.Tensor, y: torch.Tensor, eps: float,
               steps: int, random_start: bool) -> np.ndarray:
    """The floor of an Linf attack of ``steps`` gradient steps: per step one
    forward+backward, a sign step and the projection; then one scoring pass."""
    adv = x.clone()
    if random_start:
        adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = nn.functional.cross_entropy(model.module(adv), y)
        (grad,) = torch.autograd.grad(loss, adv)
        with torch.no_grad():
            adv = (x + (adv + eps / 4 * grad.sign() - x).clamp(-eps, eps)).clamp(0, 1)
    with torch.no_grad():
        return model.module(adv).argmax(1).numpy()


def art_pgd(model: ModelUnderTest, x: np.ndarray, y: np.ndarray, eps: float, steps: int,
            batch: int, trainable: bool) -> np.ndarray:
    from art.attacks.evasion import ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier

    module = copy.deepcopy(model.module) if trainable else model.module
    for p in module.parameters():
        p.requires_grad_(trainable)
    clf = PyTorchClassifier(model=module, loss=nn.CrossEntropyLoss(),
                            input_shape=tuple(model.input_shape),
                            nb_classes=model.num_classes, clip_values=(0.0, 1.0))
    attack = ProjectedGradientDescentPyTorch(clf, norm=np.inf, eps=eps, eps_step=eps / 4,
                                             max_iter=steps, num_random_init=1,
                                             batch_size=batch, verbose=False)
    return attack.generate(x=x, y=y)


def cifar_overhead(name: str, n: int, batch: int, steps: int, repeats: int) -> None:
    """Each attack through rtb against its floor, side by side.

    One round runs every contender once on every batch, the contenders
    interleaved per batch (in reverse order on odd rounds, so a drift of the
    machine's speed favours none). FGSM takes one gradient step where the
    others take ``steps``: it gets ``steps`` times the rounds, so that its
    timings add up to as much time as theirs. Every contender runs once
    untimed first. Printed per contender: the sum over batches of its best
    round (CPU s, and that against the floor's), and the median over rounds
    of its round time against the floor's in the same round; "all s" is the
    CPU time of all its rounds. Times are CPU
    seconds of the process (all its threads): on a shared machine wall time
    also counts the time other jobs hold the cores."""
    model = cifar_model(name)
    eps = 8 / 255
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 32, 32, generator=g)
    clean = predict(model, x, batch)
    y = torch.from_numpy(clean.copy())  # every point starts correct: attacked in full
    attacks = {
        "pgd_linf": (AttackSpec(name="pgd_linf",
                                target="art.attacks.evasion.ProjectedGradientDescentPyTorch",
                                eps=(eps,), norm=float("inf"), eps_step_ratio=0.25,
                                kwargs={"max_iter": steps, "num_random_init": 1}), steps, True),
        "apgd_ce": (AttackSpec(name="apgd_ce",
                               target="art.attacks.evasion.AutoProjectedGradientDescent",
                               eps=(eps,), norm=float("inf"), eps_step_ratio=0.25,
                               kwargs={"max_iter": steps, "nb_random_init": 1,
                                       "loss_type": "cross_entropy"}), steps, True),
        "fgsm": (AttackSpec(name="fgsm", target="art.attacks.evasion.FastGradientMethod",
                            eps=(eps,), norm=float("inf"), eps_step_ratio=1.0, kwargs={}), 1, False),
    }
    adapter = ArtAdapter(model, batch)
    print(f"\n{name} (random weights, {sum(p.numel() for p in model.module.parameters()) / 1e6:.1f}M "
          f"parameters), {n} points 32x32x3, batch {batch}, eps 8/255; load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"  {'attack':10s} {'contender':26s} {'rounds':>6s} {'all s':>7s} {'CPU s':>7s} "
          f"{'x floor':>8s} {'median x':>9s}")
    floor_key = "floor (bare torch loop)"
    for label, (spec, k, rand) in attacks.items():
        runs: dict[str, Callable[[torch.Tensor, torch.Tensor, np.ndarray], object]] = {
            floor_key: lambda xb, yb, cb, k=k, rand=rand: floor_loop(model, xb, yb, eps, k, rand),
            "rtb": lambda xb, yb, cb, spec=spec: list(run_attack(adapter, spec, xb, yb, cb, 0)),
        }
        if label == "pgd_linf":
            runs["ART, plain"] = lambda xb, yb, cb: art_pgd(model, xb.numpy(), yb.numpy(), eps,
                                                            steps, batch, True)
            runs["ART, frozen parameters"] = lambda xb, yb, cb: art_pgd(
                model, xb.numpy(), yb.numpy(), eps, steps, batch, False)
        rounds = repeats * max(1, steps // k)
        batches = [(x[i : i + batch], y[i : i + batch], clean[i : i + batch])
                   for i in range(0, n, batch)]
        for fn in runs.values():  # warm-up: one-time imports, builds and caches
            fn(*batches[0])
        best = {key: [float("inf")] * len(batches) for key in runs}
        per_round = {key: [0.0] * rounds for key in runs}
        for r in range(rounds):
            order = list(runs) if r % 2 == 0 else list(runs)[::-1]
            for b, (xb, yb, cb) in enumerate(batches):
                for key in order:
                    t = best_of(lambda fn=runs[key], xb=xb, yb=yb, cb=cb: fn(xb, yb, cb), 1,
                                time.process_time)
                    best[key][b] = min(best[key][b], t)
                    per_round[key][r] += t
        base = sum(best[floor_key])
        for key in runs:
            ratios = [t / f for t, f in zip(per_round[key], per_round[floor_key], strict=True)]
            print(f"  {label if key == floor_key else '':10s} {key:26s} {rounds:6d} "
                  f"{sum(per_round[key]):7.1f} {sum(best[key]):7.2f} "
                  f"{sum(best[key]) / base:7.2f}x {float(np.median(ratios)):8.2f}x")


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
