"""``rtb monitor --demo``: an offline stream with planted shifts, monitored.

From mnist5k's test split (images the versions were not trained on): a
reference half, and windows drawn from the other half. The stream holds
clean windows, then a corruption whose severity rises 1..5, then a shift of
the group mix (digits 0-4 over-represented), then a pipeline fault from
window ``k`` on. Every window has labels, so the estimate's error is known.
The monitor runs on it like on any directory, and the demo scores what it
found against what was planted.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.core.errors import ConfigError
from benchmark.monitor.loop import Handled
from benchmark.monitor.rules import MonitorConfig

N_CLEAN = 5
SEVERITIES = (1, 2, 3, 4, 5)
N_GROUP = 2
N_FAULT = 3
WINDOW = 250
GROUP_SHARE = 0.85  # share of digits 0-4 in the group-mix windows (0.5 on the reference)
SEED = 0


@dataclass(frozen=True)
class Planted:
    kind: str  # clean | corruption | group_mix | fault
    name: str = ""
    severity: int | None = None
    category: str = ""  # the corruption's family (noise, blur, weather, digital)

    @property
    def label(self) -> str:
        return {"clean": "none", "group_mix": "group_mix"}.get(self.kind, f"{self.kind}:{self.name}")


def plan(corruption: str, fault: str, category: str) -> list[Planted]:
    return ([Planted("clean")] * N_CLEAN
            + [Planted("corruption", corruption, s, category) for s in SEVERITIES]
            + [Planted("group_mix")] * N_GROUP
            + [Planted("fault", fault)] * N_FAULT)


def build_stream(out: Path, data: Any, corruption: str, fault: str) -> list[Planted]:
    """Write ``reference.npz`` and ``windows/NN.npz`` under ``out``; return the plan."""
    import torch

    from attacks.corruptions import corrupt, corruption_info
    from attacks.faults import get_fault

    rng = np.random.default_rng(SEED)
    n = len(data)
    perm = rng.permutation(n)
    ref_idx, pool = np.sort(perm[: n // 2]), np.sort(perm[n // 2:])
    y = data.y.numpy()
    digits = np.where(y < 5, "0-4", "5-9")
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "reference.npz", x=data.x[ref_idx].numpy(), y=y[ref_idx],
             group_digits=digits[ref_idx])
    wdir = out / "windows"
    wdir.mkdir(exist_ok=True)
    steps = plan(corruption, fault, corruption_info(corruption).category)
    low, high = pool[y[pool] < 5], pool[y[pool] >= 5]
    for i, p in enumerate(steps):
        if p.kind == "group_mix":
            k = int(round(WINDOW * GROUP_SHARE))
            idx = np.concatenate([rng.choice(low, k, replace=False),
                                  rng.choice(high, WINDOW - k, replace=False)])
        else:
            idx = rng.choice(pool, WINDOW, replace=False)
        idx = np.sort(idx)
        x = data.x[torch.from_numpy(idx)]
        if p.kind == "corruption":
            x = corrupt(x, p.name, int(p.severity or 1), seed=SEED + i)
        elif p.kind == "fault":
            x = get_fault(p.name)(x)
        tmp = wdir / f"{i:02d}.npz.tmp"
        with open(tmp, "wb") as f:
            np.savez(f, x=x.numpy(), y=y[idx], group_digits=digits[idx],
                     timestamp=np.array(f"2026-01-01T{i:02d}:00:00"))
        tmp.rename(wdir / f"{i:02d}.npz")  # renamed into place: never read half-written
    (out / "planted.json").write_text(json.dumps([p.__dict__ for p in steps], indent=1))
    return steps


#: Tabular demo: the group-mix windows over-represent this colour.
TABLE_GROUP = ("colour", "Black", 0.6)


def build_table_stream(out: Path, data: Any, fault: str) -> list[Planted]:
    """Write ``reference.csv`` and ``windows/NN.csv`` (arrests-like tables with
    their label column); return the plan."""
    from attacks.tabular_faults import apply_tabular_fault
    from benchmark.monitor.tabular import feature_noise

    schema = data.schema
    rng = np.random.default_rng(SEED)
    frame = data.frame.assign(**{schema.target: np.asarray(schema.classes)[data.y.numpy()]})
    perm = rng.permutation(len(frame))
    ref_idx, pool = np.sort(perm[: len(frame) // 2]), np.sort(perm[len(frame) // 2:])
    out.mkdir(parents=True, exist_ok=True)
    frame.iloc[ref_idx].to_csv(out / "reference.csv", index=False)
    wdir = out / "windows"
    wdir.mkdir(exist_ok=True)
    col, value, share = TABLE_GROUP
    steps = plan("feature_noise", fault, "noise")
    hit = pool[(frame[col].to_numpy()[pool] == value)]
    rest = pool[(frame[col].to_numpy()[pool] != value)]
    size = 300
    for i, p in enumerate(steps):
        if p.kind == "group_mix":
            k = int(round(size * share))
            idx = np.concatenate([rng.choice(hit, k, replace=len(hit) < k),
                                  rng.choice(rest, size - k, replace=False)])
        else:
            idx = rng.choice(pool, size, replace=False)
        w = frame.iloc[np.sort(idx)].reset_index(drop=True)
        feats = w.drop(columns=[schema.target])
        if p.kind == "corruption":
            feats = feature_noise(feats, schema, int(p.severity or 1), SEED + i)
        elif p.kind == "fault":
            feats = apply_tabular_fault(p.name, feats, schema, seed=SEED + i)
        tmp = wdir / f"{i:02d}.csv.tmp"
        feats.assign(**{schema.target: w[schema.target]}).to_csv(tmp, index=False)
        tmp.rename(wdir / f"{i:02d}.csv")
    (out / "planted.json").write_text(json.dumps([p.__dict__ for p in steps], indent=1))
    return steps


def ensure_benchmark(store_path: Path, versions: Sequence[str], overrides: list[str]) -> None:
    """A stored benchmark run with every corruption and fault of the versions
    (``rtb run`` once, a few minutes on a CPU), unless the store holds one."""
    from benchmark.monitor.bench_lookup import load_benchmark
    from benchmark.store import Store

    with Store(store_path) as s:
        if load_benchmark(s, list(versions)).available:
            return
    print("no stored benchmark run with corruptions and faults of these versions: running "
          "`rtb run corruption=all fault=all` once (a few minutes) ...", flush=True)
    # ``python -m benchmark ARGS`` is ``rtb run ARGS``
    cmd = [sys.executable, "-m", "benchmark", *overrides, "attack=[]", "corruption=all",
           "fault=all", "groups=none", "validation=off", "reliability.enabled=false",
           "name=monitor-demo-benchmark", f"store={store_path}"]
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL)
    if done.returncode != 0:
        raise ConfigError(f"the demo's benchmark run (`{' '.join(cmd[1:])}`) failed with exit "
                           f"status {done.returncode}; its error is above")


def verdict(h: Handled) -> str:
    r = h.result
    if r is None or not h.failed:
        return "none"
    m = r.match or {}
    if m.get("shift") and m.get("family") in ("corruption", "fault"):
        return f"{m['family']}:{m['name']}"
    if any(a.kind == "group_shift" and a.status == "fail" for a in r.alerts):
        return "group_mix"
    return "alert (unmatched)"


def score(steps: Sequence[Planted], handled: Sequence[Handled]) -> tuple[str, bool]:
    """The confusion table and the acceptance points, as text; and whether all hold."""
    from benchmark.console import format_table

    got = [verdict(h) for h in handled]
    planted = [p.label for p in steps]
    cols = sorted(set(got) | set(planted), key=lambda v: (v != "none", v))
    counts = Counter(zip(planted, got, strict=True))
    rows_ = [[p, *[str(counts.get((p, c), 0)) for c in cols]] for p in dict.fromkeys(planted)]
    lines = ["confusion (rows planted, columns the monitor's verdict):",
             format_table(["planted \\ found", *cols], rows_)]

    def kind_idx(kind: str) -> list[int]:
        return [i for i, p in enumerate(steps) if p.kind == kind]

    corr, clean, fault, group = (kind_idx(k) for k in ("corruption", "clean", "fault",
                                                        "group_mix"))
    def match_of(i: int) -> dict[str, Any]:
        r = handled[i].result
        return (r.match or {}) if r is not None else {}

    first = corr[0]
    m0 = match_of(first)
    category = steps[first].category
    # the corruption's family: its category (noise, blur, weather, digital); the exact
    # corruption is reported beside it
    c_start = handled[first].failed and m0.get("category") == category
    exact = m0.get("name") == steps[first].name
    sev_ok = []
    for i in corr:
        m = match_of(i)
        sev_ok.append(m.get("category") == category and m.get("param") is not None
                      and abs(float(m["param"]) - float(steps[i].severity or 0)) <= 1)
    k = fault[0]
    mk = match_of(k)
    fault_ok = handled[k].failed and (mk.get("name") == steps[k].name or any(
        a.kind == "check" and a.status == "fail" for a in handled[k].alerts))
    group_ok = all(any(a.kind == "group_shift" and a.status == "fail" for a in handled[i].alerts)
                   for i in group)
    clean_ok = not any(handled[i].failed for i in clean)

    def err(i: int, metric: str) -> list[float]:
        r = handled[i].result
        if r is None:
            return []
        out = []
        for key in {m.model for m in r.metrics if m.model}:
            e, real = r.value(key, metric), r.value(key, "realised_accuracy")
            if e is not None and real is not None:
                out.append(abs(e - real))
        return out

    clean_err = [e for i in clean for e in err(i, "estimated_accuracy")]
    est_ok = bool(clean_err) and max(clean_err) <= 0.05
    shifted = corr + fault
    cb = [e for i in shifted for e in err(i, "estimated_accuracy")]
    mt = [e for i in shifted for e in err(i, "matched_accuracy")]

    def mean(v: list[float]) -> str:
        return f"{np.mean(v):.3f}" if v else "-"

    points = [
        (c_start, f"corruption detected and matched to its family ({category}) at window "
                  f"{first}: found {m0.get('label', '-')} (exact corruption "
                  f"{'yes' if exact else 'no'})"),
        (sum(sev_ok) >= math.ceil(0.8 * len(sev_ok)),
         f"matched severity within +-1 in {sum(sev_ok)}/{len(sev_ok)} corrupted windows "
         "(>= 80%)"),
        (fault_ok, f"fault {steps[k].name} caught at window k={k} (found {mk.get('label', '-')})"),
        (group_ok, f"group-mix shift flagged in windows {', '.join(map(str, group))}"),
        (clean_ok, f"no alert on the {len(clean)} clean windows"),
        (est_ok, f"estimated accuracy within 0.05 of realised on clean windows (max "
                 f"{max(clean_err) if clean_err else math.nan:.3f})"),
    ]
    lines += ["", "acceptance:"] + [f"  {'PASS' if ok else 'FAIL'}  {text}" for ok, text in points]
    lines += ["", "mean |estimate - realised| (both versions): clean windows CBPE "
                  f"{mean(clean_err)}; shifted windows CBPE alone {mean(cb)}, with the benchmark "
                  f"match {mean(mt)}"]
    for kind, idx in (("corruption", corr), ("fault", fault), ("group_mix", group)):
        a = [e for i in idx for e in err(i, "estimated_accuracy")]
        b = [e for i in idx for e in err(i, "matched_accuracy")]
        lines.append(f"  {kind} windows: CBPE alone {mean(a)}, with the benchmark match {mean(b)}")
    return "\n".join(lines), all(ok for ok, _ in points)


def run_demo(ns: argparse.Namespace, cfg: MonitorConfig, overrides: list[str]) -> int:
    from benchmark.console import format_table
    from benchmark.data import load_evalset
    from benchmark.monitor import records
    from benchmark.monitor.app import finish, headers, load_models, load_reference, window_line
    from benchmark.monitor.bench_lookup import load_benchmark
    from benchmark.monitor.loop import run_windows
    from benchmark.monitor.sources import TableColumns, directory_windows
    from benchmark.store import Store, check_writable_store

    spec, models = load_models(overrides)
    if spec.data.loader not in ("mnist5k", "arrests"):
        from benchmark.core.errors import UserError

        raise UserError(f"Expected the demo's data to be mnist5k or arrests, but got "
                        f"{spec.data.name!r}.")
    out = ns.demo_dir or Path(tempfile.mkdtemp(prefix="rtb-monitor-demo-"))
    data = load_evalset(spec.data)
    store_path = check_writable_store(ns.store)
    versions = [m.key for m in models]
    k = N_CLEAN + len(SEVERITIES) + N_GROUP
    cols = TableColumns()
    if data.modality == "tabular":
        fault = ns.demo_fault or "unit_change"
        print(f"demo stream in {out}: {N_CLEAN} clean windows, feature_noise severity 1-5, "
              f"{N_GROUP} windows with {TABLE_GROUP[0]}={TABLE_GROUP[1]} at "
              f"{TABLE_GROUP[2]:.0%}, {fault} from window {k} on (300 rows each)", flush=True)
        steps = build_table_stream(out, data, fault)
        ref = load_reference(str(out / "reference.csv"), spec, models, ns.store)
        assert data.schema is not None
        cols = TableColumns(label=data.schema.target)
    else:
        fault = ns.demo_fault or "scale_255"
        print(f"demo stream in {out}: {N_CLEAN} clean windows, {ns.demo_corruption} severity "
              f"1-5, {N_GROUP} group-mix windows, {fault} from window {k} on ({WINDOW} images "
              "each)", flush=True)
        steps = build_stream(out, data, ns.demo_corruption, fault)
        ensure_benchmark(store_path, versions, overrides)
        ref = load_reference(str(out / "reference.npz"), spec, models, ns.store)
    name = ns.name or f"demo-{spec.data.name}"
    with Store(store_path) as store:
        records.delete_monitor(store, name)
        bench = load_benchmark(store, versions, ns.benchmark_run)
        note = f"benchmark run {bench.run_id}" if bench.available else bench.reason
        print(f"monitor {name}: reference {len(ref.data)} samples; {note}")
        print("  ".join(headers(versions)))

        def show(h: Handled) -> None:
            print(format_table(headers(versions), [window_line(h, versions)]).splitlines()[-1],
                  flush=True)

        handled = run_windows(directory_windows(out / "windows", cols), ref=ref,
                              cfg=cfg, store=store, monitor=name, bench=bench, on_window=show)
    text, ok = score(steps, handled)
    print("\n" + text)
    finish(name, handled, versions, note, ns)
    return 0 if ok else 1
