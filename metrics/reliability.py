"""Reliability flags that read the outcomes of an attack evaluation.

After AutoAttack's checks (Croce & Hein, 2020) and the attack-failure
indicators of Pintor et al. 2022: a single-step or black-box attack beating
the iterative white-box ones is a sign of gradient masking. Flags that run
the model or re-run attacks live in ``attacks/diagnostics.py``; which flags
a run gets is decided in ``benchmark/reliability_run.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmark.core.specs import ANOMALY_FRACTION
from benchmark.core.types import CheckResult, Outcome
from benchmark.core.types import check_result as _result

log = logging.getLogger(__name__)


def by_attack(outcomes: Sequence[Outcome]) -> dict[str, list[Outcome]]:
    """Attack outcomes by attack name, each list in increasing eps."""
    out: dict[str, list[Outcome]] = {}
    for o in outcomes:
        if o.threat.family == "attack":
            out.setdefault(o.threat.name, []).append(o)
    return {k: sorted(v, key=lambda o: float(o.threat.param or 0.0)) for k, v in out.items()}


def weaker_attack_flag(outcomes: Sequence[Outcome], subject: str) -> CheckResult:
    """A single-step attack beating an iterative one, or a black-box attack
    beating the white-box ones, on the same points at the same eps and norm,
    is a sign of gradient masking; inside an ensemble, the same for points
    a black-box member broke after the white-box members failed."""
    groups: dict[tuple[str, float], dict[str, list[Outcome]]] = {}
    for o in outcomes:
        p = o.threat.params
        if o.threat.family != "attack" or p.get("minimum_norm") or p.get("members"):
            continue
        groups.setdefault((str(p.get("norm")), float(o.threat.param or 0)), {}).setdefault(
            str(p.get("kind")), []).append(o)
    found: list[dict[str, Any]] = []
    checked = 0
    for (norm, eps), kinds in groups.items():
        strong = kinds.get("iterative", [])
        if not strong:
            continue
        robust = np.logical_and.reduce([np.asarray(o.correct, bool) for o in strong])
        for weak_kind in ("single-step", "black-box"):
            for w in kinds.get(weak_kind, []):
                checked += 1
                wins = np.flatnonzero(robust & ~np.asarray(w.correct, bool))
                n_robust = int(robust.sum())
                if len(wins) and len(wins) > ANOMALY_FRACTION * max(n_robust, 1):
                    found.append({"weaker": w.threat.name, "kind": weak_kind, "norm": norm,
                                  "eps": eps, "points": len(wins), "of_robust": n_robust,
                                  "first": wins[:10].tolist()})
    for o in outcomes:
        member_kinds = o.threat.params.get("member_kinds")
        if o.threat.family != "attack" or not member_kinds or "broken_by" not in o.columns:
            continue
        checked += 1
        first_white = next((i for i, k in enumerate(member_kinds) if k != "black-box"), None)
        late = [i for i, k in enumerate(member_kinds) if k == "black-box"
                and first_white is not None and i > first_white]
        n_black = int(np.isin(o.columns["broken_by"], late).sum())
        if n_black and n_black > ANOMALY_FRACTION * (int(o.correct.sum()) + n_black):
            found.append({"weaker": o.threat.name, "kind": "black-box member",
                          "eps": o.threat.param, "points": n_black})
    ev = {"comparisons": checked, "found": found}
    if found:
        f = found[0]
        return _result("weaker_attack_wins", "warn",
                       f"{f['weaker']} ({f['kind']}) broke {f['points']} points the iterative "
                       f"white-box attacks left at eps={f['eps']:g}", subject, **ev)
    return _result("weaker_attack_wins", "pass",
                   "no weaker attack beats the iterative white-box ones" if checked
                   else "no comparable attacks in this run", subject, **ev)
