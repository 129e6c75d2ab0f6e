"""Each version's measured accuracy under each threat, from a stored benchmark run."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from benchmark.core.errors import StoreError
from benchmark.store import Store


@dataclass
class BenchmarkMap:
    """``accuracy[version][threat key]`` from one stored run (or why there is none)."""

    run_id: str | None
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    reason: str = ""

    @property
    def available(self) -> bool:
        return self.run_id is not None

    def lookup(self, version: str, key: str) -> float | None:
        v = self.accuracy.get(version, {}).get(key)
        return None if v is None or math.isnan(v) else v


def _threat_key(family: str, threat: str, param: float) -> str:
    if family == "clean":
        return "clean"
    if family == "corruption" and not math.isnan(param):
        return f"corruption:{threat}:{param:g}"
    return f"{family}:{threat}"


def load_benchmark(store: Store | None, versions: list[str], run: str | None = None
                   ) -> BenchmarkMap:
    """The newest stored run that measured corruptions or faults for all of
    ``versions`` (or the run ``run``); ``available`` is False with a reason
    when none does."""
    if store is None:
        return BenchmarkMap(None, reason="no results store")
    runs = store.runs(status="finished")
    if run is not None:
        candidates = [store.resolve_run(run)]
    else:
        candidates = [str(r) for r, models in zip(runs["run_id"], runs["models"], strict=True)
                      if set(versions) <= set(str(models or "").split())][::-1]
    for run_id in candidates:
        m = store.measurements([run_id])
        m = m[(m["metric"] == "accuracy") & (m["group_feature"] == "")
              & m["family"].isin(["clean", "corruption", "fault"])]
        if not (m["family"] != "clean").any():
            if run is not None:
                raise StoreError(f"Stored run {run_id!r} measured no corruption or fault; "
                                 "expected a run with corruption=... or fault=....")
            continue
        have = {f"{a}@{b}" for a, b in zip(m["model"], m["version"], strict=True)}
        if not set(versions) <= have:
            if run is not None:
                raise StoreError(f"Stored run {run_id!r} holds {sorted(have)}, not every "
                                 f"monitored version {versions}.")
            continue
        acc: dict[str, dict[str, float]] = {}
        for row in m.itertuples(index=False):
            key = f"{row.model}@{row.version}"
            acc.setdefault(key, {})[_threat_key(str(row.family), str(row.threat),
                                                float(row.param))] = float(row.value)
        return BenchmarkMap(run_id, acc)
    return BenchmarkMap(None, reason=f"no stored run measured corruptions or faults for "
                                     f"{', '.join(versions)} (run `rtb run corruption=all "
                                     "fault=all` first)")
