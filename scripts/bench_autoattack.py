"""AutoAttack: rtb's `autoattack_standard` (and the light `autoattack`) against
the reference implementation (fra31/auto-attack, version "standard") on the
same samples, side by side in one run.

    python scripts/bench_autoattack.py [--reference-dir PATH] [--n 200] [--eps 0.3]

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

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if len(args) == 4:
            self.counts[str(args[0])] += int(args[2])


def ours(config: str, model: Any, x: torch.Tensor, y: torch.Tensor, clean: np.ndarray,
         eps: float, seed: int, batch: int) -> tuple[np.ndarray, float, Counter[str]]:
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
    return np.asarray(outcome.correct, dtype=bool), took, handler.counts


def reference(cls: Any, model: Any, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int,
              batch: int) -> tuple[np.ndarray, float, Counter[str]]:
    adversary = cls(model.module, norm="Linf", eps=eps, version="standard", device="cpu",
                    seed=seed, verbose=True)
    log = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(log):
        x_adv = adversary.run_standard_evaluation(x.clone(), y.clone(), bs=batch)
    took = time.perf_counter() - start
    counts: Counter[str] = Counter()
    for line in log.getvalue().splitlines():
        m = REF_LINE.match(line.strip())
        if m:
            counts[m.group(1)] += int(m.group(2))
    with torch.no_grad():
        pred = model.module(x_adv).argmax(1)
    return (pred == y).numpy(), took, counts


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--reference-dir", default=os.environ.get(REF_ENV))
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--eps", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--no-light", action="store_true", help="skip the light `autoattack`")
    args = ap.parse_args()

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
    else:
        robust, took, counts = reference(cls, model, x, y, args.eps, args.seed, args.batch)
        rows.append(("reference standard", robust, took, counts))
        print(f"  reference standard: {took:.1f} s", flush=True)
    for config in ("autoattack_standard", *(() if args.no_light else ("autoattack",))):
        robust, took, counts = ours(config, model, x, y, clean, args.eps, args.seed, args.batch)
        rows.append((f"rtb {config}", robust, took, counts))
        note = " ".join(str(read_option("attack", config)[config].get("protocol", "")).split())
        print(f"  rtb {config}: {took:.1f} s; protocol: {note}", flush=True)

    names = ("apgd-ce", "apgd-t", "fab-t", "square")
    print(f"\n{'contender':<24} {'robust acc':>10} {'wall s':>8}  points broken by "
          f"{' / '.join(names)}")
    for name, robust, took, counts in rows:
        broke = (" / ".join(str(counts.get(k, 0)) for k in names)
                 if counts else "(not in its log)")
        if counts and set(counts) - set(names):
            broke += " + " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())
                                       if k not in names)
        print(f"{name:<24} {robust.mean():>10.3f} {took:>8.1f}  {broke}")
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
