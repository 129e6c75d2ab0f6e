"""Sweep throughput: the same 8-job sweep (2 model versions x 2 attacks x 2 eps
lists on a small MNIST subset) with the sequential launcher (torch threads 1
and 2) and the joblib launcher (2 workers, 1 thread each), side by side; then
the completed sweep again, to show that skipping finished jobs costs little.

    python scripts/bench_sweep.py [--n-samples 1000] [--pgd-iter 40]

The defaults are the default benchmark's job size (the whole mnist5k test part,
PGD-40). With much smaller jobs the joblib workers' start-up (importing torch,
ART and Hydra in each process) outweighs the parallel work.

Each configuration writes to its own store, so nothing is skipped until the
last run. Wall times include process start-up: that is what a user waits for.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ATTACK_OPTION = """\
defaults:
  - {attack}
  - _self_

{attack}:
  eps: {eps}
{extra}"""

EPS_LISTS = {"lo": "[0.05, 0.1]", "hi": "[0.2, 0.3]"}
SWEEP = ["model=[mnist_cnn_v1],[mnist_cnn_v2]",
         "attack=[fgsm_lo],[fgsm_hi],[pgd_linf_lo],[pgd_linf_hi]"]
CONFIGS: list[tuple[str, list[str]]] = [
    ("sequential, threads=1", ["hydra/launcher=sequential", "sweep.threads=1"]),
    ("sequential, threads=2", ["hydra/launcher=sequential", "sweep.threads=2"]),
    ("joblib 2 workers, threads=1", ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2",
                                     "sweep.threads=1"]),
]


def write_attack_options(conf: Path, pgd_iter: int) -> None:
    d = conf / "attack"
    d.mkdir(parents=True, exist_ok=True)
    for attack, extra in (("fgsm", ""), ("pgd_linf", f"  max_iter: {pgd_iter}\n")):
        for level, eps in EPS_LISTS.items():
            (d / f"{attack}_{level}.yaml").write_text(
                ATTACK_OPTION.format(attack=attack, eps=eps, extra=extra))


def sweep(work: Path, store: Path, common: list[str], extra: list[str]) -> float:
    """Wall seconds of one `rtb run -m` (the whole sweep, start-up included)."""
    cmd = [sys.executable, "-m", "benchmark.cli", "run", "-m", *common, *SWEEP, *extra,
           f"store={store}"]
    start = time.perf_counter()
    res = subprocess.run(cmd, cwd=work, capture_output=True, text=True,
                         env={**os.environ, "PYTHONHASHSEED": "0"})
    seconds = time.perf_counter() - start
    if res.returncode != 0:
        sys.exit(f"sweep failed ({' '.join(extra)}):\n{res.stderr[-3000:]}")
    if "8 ran" not in res.stdout and "8 skipped" not in res.stdout:
        sys.exit(f"unexpected sweep summary:\n{res.stdout[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-samples", type=int, default=1000)
    parser.add_argument("--pgd-iter", type=int, default=40)
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_attack_options(work / "bench_conf", ns.pgd_iter)
        common = [f"hydra.searchpath=[file://{work / 'bench_conf'}]", f"data.n_samples={ns.n_samples}",
                  "device=cpu"]
        print(f"8-job sweep: 2 versions x 2 attacks x 2 eps lists, n_samples={ns.n_samples}, "
              f"PGD {ns.pgd_iter} steps, {os.cpu_count()} cores")
        times = {}
        for i, (label, extra) in enumerate(CONFIGS):
            times[label] = sweep(work, work / f"store{i}.sqlite", common, extra)
            print(f"  {label:<30} {times[label]:7.1f} s", flush=True)
        best_seq = min(v for k, v in times.items() if k.startswith("sequential"))
        best_seq_label = min((k for k in times if k.startswith("sequential")), key=times.__getitem__)
        par_label = CONFIGS[-1][0]
        print(f"speedup of {par_label} over the best sequential ({best_seq_label}): "
              f"{best_seq / times[par_label]:.2f}x")
        # the same sweep again, on the store that holds it: every job is skipped after
        # loading its data and models; the sequential launcher spawns no workers
        again = sweep(work, work / f"store{len(CONFIGS) - 1}.sqlite", common, CONFIGS[0][1])
        print(f"completed sweep run again (8 jobs skipped, sequential): {again:.1f} s = "
              f"{again / best_seq:.2f} of the best sequential sweep that did the work")


if __name__ == "__main__":
    main()
