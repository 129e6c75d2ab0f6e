"""AutoAttack: rtb's `autoattack_standard` (and the light `autoattack`) against
the reference implementation (fra31/auto-attack, version "standard") on the
same samples, side by side in one run.

    python scripts/bench_autoattack.py [--reference-dir PATH] [--n 200] [--eps 0.3] [--threads T]
                                       [--rounds R]

The reference is imported as the `autoattack` package: installed, or from a
local checkout given by --reference-dir or $RTB_AUTOATTACK_REF (the folder
holding `autoattack/`). Without it, only rtb's side runs and the comparison is
reported as skipped. Prints both robust accuracies, the points each
sub-attack broke (rtb's from its log, the reference's from its verbose log),
the per-sample disagreements (indices into the fixed mnist5k subset, and
which side broke the point), both wall times and their ratio, torch's thread
count and the machine load.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import logging
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attacks.art_adapter import ArtAdapter
from attacks.budgets import run_attack
from benchmark.compose import compose_spec, read_option
from benchmark.core.forward import predict
from benchmark.data import load_evalset
from benchmark.models import load_model

REF_ENV = "RTB_AUTOATTACK_REF"
#: The reference's verbose line per batch: "<attack> - 1/1 - 5 out of 40 successfully perturbed".
REF_LINE = re.compile(r"^(\S+) - \d+/\d+ - (\d+) out of (\d+) successfully perturbed")
#: ... and after each attack: "robust accuracy after APGD-CE: 80.00% (total time 12.3 s)".
REF_TIME = re.compile(r"^robust accuracy after (\S+): .*\(total time ([\d.]+) s\)")


def load_reference(path: str | None) -> Any | None:
    """The reference's ``AutoAttack`` class, or None when it is not importable."""
    if path:
        sys.path.insert(0, str(Path(path).expanduser().resolve()))
    try:
        return importlib.import_module("autoattack").AutoAttack
    except ImportError:
        return None


class _Broke(logging.Handler):
    """Counts the points each nested attack broke, from ``attacks.autoattack``'s log."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.counts: Counter[str] = Counter()
        self.seconds: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        args: tuple[Any, ...] = record.args if isinstance(record.args, tuple) else ()
        if len(args) == 5:
            name = str(args[0])
            self.counts[name] += int(args[2])
            self.seconds[name] = self.seconds.get(name, 0.0) + float(args[4])


def ours(config: str, model: Any, x: torch.Tensor, y: torch.Tensor, clean: np.ndarray,
         eps: float, seed: int, batch: int) -> tuple[np.ndarray, float, _Broke]:
    spec, _ = compose_spec(["model=[mnist_cnn_v2]", f"attack=[{config}]",
                            f"attack.{config}.eps=[{eps}]"])
    attack = spec.attacks[config]
    logger = logging.getLogger("attacks.autoattack")
    handler, level = _Broke(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        start = time.perf_counter()
        (outcome,) = list(run_attack(ArtAdapter(model, batch), attack, x, y, clean, seed))
        took = time.perf_counter() - start
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return np.asarray(outcome.correct, dtype=bool), took, handler


def reference(cls: Any, model: Any, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int,
              batch: int) -> tuple[np.ndarray, float, Counter[str], dict[str, float]]:
    log = io.StringIO()
    with contextlib.redirect_stdout(log):  # its verbose log: the points each attack broke
        adversary = cls(model.module, norm="Linf", eps=eps, version="standard", device="cpu",
                        seed=seed, verbose=True)
    start = time.perf_counter()
    with contextlib.redirect_stdout(log):
        x_adv = adversary.run_standard_evaluation(x.clone(), y.clone(), bs=batch)
    took = time.perf_counter() - start
    counts: Counter[str] = Counter()
    seconds: dict[str, float] = {}
    total = 0.0
    for line in log.getvalue().splitlines():
        m = REF_LINE.match(line.strip())
        if m:
            counts[m.group(1)] += int(m.group(2))
        t = REF_TIME.match(line.strip())
        if t:
            seconds[t.group(1).lower()] = float(t.group(2)) - total
            total = float(t.group(2))
    with torch.no_grad():
        pred = model.module(x_adv).argmax(1)
    return (pred == y).numpy(), took, counts, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--reference-dir", default=os.environ.get(REF_ENV))
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--eps", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--no-light", action="store_true", help="skip the light `autoattack`")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for both sides (default: torch's own choice)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run the reference and autoattack_standard this many times, the order "
                         "alternating per round (reference first in odd rounds); the wall "
                         "times compared are each side's best round")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    spec, _ = compose_spec([f"data.n_samples={args.n}", "model=[mnist_cnn_v2]"])
    data = load_evalset(spec.data)
    model = load_model(spec.models["mnist_cnn_v2"], torch.device("cpu"))
    x, y = data.x, data.y
    clean = predict(model, x, args.batch)
    print(f"AutoAttack Linf eps={args.eps} on {len(x)} fixed {data.name} test samples, "
          f"{model.key}, clean accuracy {np.mean(clean == y.numpy()):.3f}; torch threads "
          f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f} (1 min)", flush=True)

    rows: list[tuple[str, np.ndarray, float, Counter[str]]] = []
    cls = load_reference(args.reference_dir)
    if cls is None:
        print("reference: skipped (the `autoattack` package is not importable; pass "
              f"--reference-dir PATH or set ${REF_ENV})")

    def run_reference() -> tuple[str, np.ndarray, float, Counter[str]]:
        robust, took, counts, secs = reference(cls, model, x, y, args.eps, args.seed, args.batch)
        split = ", ".join(f"{k} {v:.1f} s" for k, v in secs.items())
        print(f"  reference standard: {took:.1f} s{f' ({split})' if split else ''}", flush=True)
        return ("reference standard", robust, took, counts)

    def run_ours(config: str) -> tuple[str, np.ndarray, float, Counter[str]]:
        robust, took, broke = ours(config, model, x, y, clean, args.eps, args.seed, args.batch)
        split = ", ".join(f"{k} {v:.1f} s" for k, v in broke.seconds.items())
        note = " ".join(str(read_option("attack", config)[config].get("protocol", "")).split())
        print(f"  rtb {config}: {took:.1f} s{f' ({split})' if split else ''}; protocol: {note}",
              flush=True)
        return (f"rtb {config}", robust, took, broke.counts)

    best: dict[str, tuple[str, np.ndarray, float, Counter[str]]] = {}
    for r in range(max(args.rounds, 1)):
        standard = partial(run_ours, "autoattack_standard")
        order: list[Callable[[], tuple[str, np.ndarray, float, Counter[str]]]] = (
            [standard] if cls is None else
            [run_reference, standard] if r % 2 == 0 else [standard, run_reference])
        if args.rounds > 1:
            print(f"round {r + 1}: {'reference first' if order[0] is run_reference else 'rtb first'}"
                  f" (load average {os.getloadavg()[0]:.2f})", flush=True)
        for fn in order:
            row = fn()
            if row[0] not in best or row[2] < best[row[0]][2]:
                best[row[0]] = row
    rows += [best[k] for k in ("reference standard", "rtb autoattack_standard") if k in best]
    if not args.no_light:
        rows.append(run_ours("autoattack"))
    if args.rounds > 1:
        print(f"(wall times below: each side's best of {args.rounds} rounds)")

    names = ("apgd-ce", "apgd-t", "fab-t", "square")
    print(f"\n{'contender':<24} {'robust acc':>10} {'wall s':>8}  points broken by "
          f"{' / '.join(names)}")
    for name, robust, took, counts in rows:
        cells = (" / ".join(str(counts.get(k, 0)) for k in names)
                 if counts else "(not in its log)")
        if counts and set(counts) - set(names):
            cells += " + " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())
                                       if k not in names)
        print(f"{name:<24} {robust.mean():>10.3f} {took:>8.1f}  {cells}")
    if cls is not None:
        ref, ref_took = rows[0][1], rows[0][2]
        for name, robust, took, _ in rows[1:]:
            missed = np.flatnonzero(~ref & robust)  # the reference broke it, rtb did not
            extra = np.flatnonzero(ref & ~robust)  # rtb broke it, the reference did not
            print(f"\n{name} vs reference: wall time {took:.1f} s / {ref_took:.1f} s = "
                  f"{took / ref_took:.2f}x; {len(missed) + len(extra)} disagreement(s): "
                  f"{len(missed)} broken only by the reference {missed.tolist()}, "
                  f"{len(extra)} only by rtb {extra.tolist()}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (1 min), torch threads "
          f"{torch.get_num_threads()}")


if __name__ == "__main__":
    main()
