"""Corruption metrics from per-sample outcomes: accuracy per corruption, the
corruption error CE and its mean mCE normalised by a baseline version, and
the relative mCE (Hendrycks & Dietterich, 2019).

For model f, corruption c, severities s and error E = 1 - accuracy:

* ``ce``            = sum_s E(f,c,s) / sum_s E(base,c,s)
* ``relative_ce``   = sum_s (E(f,c,s) - E(f,clean)) / sum_s (E(base,c,s) - E(base,clean))
* ``mce``, ``relative_mce`` = the mean of those over the corruptions
  (the 15 common ones when present, else every corruption of the run;
  a corruption on which the baseline made no error has no CE and is left
  out, which the definition says)
* ``mean_error``    = the unnormalised mean of E over corruptions and severities
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from attacks.corruptions import COMMON_CORRUPTIONS
from benchmark.core.types import Measurement, Outcome

log = logging.getLogger(__name__)

#: The ``threat`` of the rows that summarise all corruptions of a run.
SUMMARY_THREAT = "all corruptions"

DEFINITIONS = {
    "accuracy_mean": "mean over the evaluated severities of the accuracy under this corruption",
    "error_mean": "mean over the evaluated severities of the error rate (1 - accuracy) under "
                  "this corruption (unnormalised)",
    "ce": "corruption error: sum over severities of this version's error / the same sum for "
          "the baseline {baseline}",
    "relative_ce": "relative corruption error: sum over severities of (error - clean error) / "
                   "the same sum for the baseline {baseline}",
    "mce": "mean corruption error: mean of CE over {which}; CE normalised by the baseline "
           "{baseline}",
    "relative_mce": "relative mCE: mean of relative CE over {which}; normalised by the baseline "
                    "{baseline}",
    "mean_error": "unnormalised mean corruption error: mean error rate over {which} and the "
                  "evaluated severities",
}


def _errors(outcomes: Iterable[Outcome]) -> tuple[dict[str, dict[str, dict[float, float]]],
                                                   dict[str, float], dict[str, int]]:
    """error[model_key][corruption][severity], clean error and n per model."""
    err: dict[str, dict[str, dict[float, float]]] = defaultdict(lambda: defaultdict(dict))
    clean: dict[str, float] = {}
    n: dict[str, int] = {}
    for o in outcomes:
        correct = np.asarray(o.correct, dtype=bool)
        e = float(1.0 - correct.mean()) if correct.size else math.nan
        if o.threat.family == "clean":
            clean[o.model_key] = e
        elif o.threat.family == "corruption" and o.threat.param is not None:
            err[o.model_key][o.threat.name][float(o.threat.param)] = e
            n[o.model_key] = int(correct.size)
    return err, clean, n


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def corruption_measurements(outcomes: Iterable[Outcome], baseline: str | None) -> list[Measurement]:
    """Per-corruption mean accuracy and error, CE and relative CE against
    ``baseline`` (``name@version``), and their means over the corruptions.

    When the baseline version is not part of the run, the first evaluated
    version normalises instead (one warning; each definition names it).
    """
    outcomes = list(outcomes)
    err, clean, n = _errors(outcomes)
    if not err:
        return []
    if baseline is not None and baseline not in err:
        first = next(iter(err))
        log.warning("Corruption baseline %s is not among the evaluated versions (%s): CE and "
                    "mCE are normalised by the first evaluated version, %s.",
                    baseline, ", ".join(err), first)
        label: str | None = f"{first} (the first evaluated version; {baseline} was not evaluated)"
        base_key: str | None = first
    else:
        label = base_key = baseline
    have_base = base_key is not None and base_key in err
    out: list[Measurement] = []
    for key, by_c in err.items():
        name, _, version = key.rpartition("@")

        def row(threat: str, metric: str, value: float, which: str = "", _n: int = n[key],
                _name: str = name, _version: str = version) -> Measurement:
            return Measurement(
                model=_name, version=_version, family="corruption", threat=threat, param=None,
                metric=metric, value=value, n=_n,
                definition=DEFINITIONS[metric].format(baseline=label, which=which),
            )

        common = [c for c in by_c if c in COMMON_CORRUPTIONS]
        averaged = common or list(by_c)
        which = (f"the {len(averaged)} common corruptions evaluated" if common
                 else f"the {len(averaged)} corruptions evaluated") + f" ({', '.join(averaged)})"
        ces: list[tuple[str, float, float]] = []
        for c, by_s in by_c.items():
            errors = list(by_s.values())
            out.append(row(c, "accuracy_mean", 1.0 - float(np.mean(errors))))
            out.append(row(c, "error_mean", float(np.mean(errors))))
            if have_base:
                assert base_key is not None
                base = err[base_key].get(c, {})
                sevs = [s for s in by_s if s in base]
                if not sevs:
                    continue
                ce = _ratio(sum(by_s[s] for s in sevs), sum(base[s] for s in sevs))
                rce = _ratio(sum(by_s[s] - clean.get(key, math.nan) for s in sevs),
                             sum(base[s] - clean.get(base_key, math.nan) for s in sevs))
                out.append(row(c, "ce", ce))
                out.append(row(c, "relative_ce", rce))
                if c in averaged and math.isfinite(ce):
                    ces.append((c, ce, rce))
        out.append(row(SUMMARY_THREAT, "mean_error",
                       float(np.mean([e for c in averaged for e in by_c[c].values()])), which))
        if have_base and ces:
            skipped = [c for c in averaged if c not in {name for name, _, _ in ces}]
            which_ce = which + (f"; left out where the baseline made no error: "
                                f"{', '.join(skipped)}" if skipped else "")
            out.append(row(SUMMARY_THREAT, "mce", float(np.mean([v[1] for v in ces])), which_ce))
            out.append(row(SUMMARY_THREAT, "relative_mce",
                           float(np.nanmean([v[2] for v in ces])), which_ce))
    return out


