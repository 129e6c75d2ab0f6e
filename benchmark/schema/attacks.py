"""The ``attack`` section: single ART attacks and ensembles of them.

An attack config names an ART evasion class with ``_target_`` and
``_partial_: true``: the object is completed at run time, when the runner
supplies the estimator. rtb's own keys (budgets, norm, target rule, ...) are
taken out here; every other key goes to the ART class.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from benchmark.core import fields as F
from benchmark.core.errors import ConfigError
from benchmark.core.specs import AttackSpec, max_budget
from benchmark.core.targets import ATTACK, check_target

#: Target-selection rules of a targeted attack (``targeted: true``).
TARGET_RULES: tuple[str, ...] = ("random", "least_likely", "next")

NORMS: dict[str, float] = {"inf": math.inf, "2": 2.0, "1": 1.0}

ENSEMBLE_KEYS = ("eps", "threat_norm", "members")
#: Budget units of an attack config (``units:``).
UNITS: tuple[str, ...] = ("input", "std")


def _norm(where: str, v: Any) -> float:
    """The Lp norm of a threat; NaN for ``none`` (no Lp ball: e.g. rotations)."""
    s = str(v).lower()
    if s == "none":
        return math.nan
    if s in ("inf", "np.inf", "infinity"):
        s = "inf"
    if s in ("2.0", "1.0"):
        s = s[0]
    if s not in NORMS:
        raise F.fail(where, "one of inf, 2, 1, none", v)
    return NORMS[s]


def _partial(where: str, d: dict[str, Any]) -> None:
    """Take ``_partial_`` out of ``d``: absent or true; false cannot work,
    since the runner supplies the estimator."""
    v = d.pop("_partial_", True)
    if v is not True:
        raise F.fail(f"{where}._partial_", "true (the runner supplies the estimator)", v)


def _budgets(where: str, raw: Any, norm: float, input_shape: tuple[int, ...] | None
             ) -> tuple[float, ...]:
    """The sorted, distinct budgets, each within the input range under ``norm``."""
    if raw is None:
        raise ConfigError(f"Missing `{where}.eps`; expected a list of budgets such as [0.1, 0.3].")
    if isinstance(raw, (int, float, str)) and not isinstance(raw, bool):
        raw = [raw]
    if not isinstance(raw, (list, tuple)) or not raw:
        raise F.fail(f"{where}.eps", "a non-empty list of budgets", raw)
    top = max_budget(norm, input_shape) if input_shape and not math.isnan(norm) else math.inf
    eps: list[float] = []
    for i, e in enumerate(raw):
        e = F.budget(f"{where}.eps[{i}]", e)
        if e < 0:
            raise F.fail(f"{where}.eps[{i}]", "a non-negative number", e)
        if e > top:
            raise ConfigError(
                f"Expected `{where}.eps[{i}]` to lie within the input range [0, 1] "
                f"(at most {top:g} under the L{'inf' if math.isinf(norm) else int(norm)} norm), "
                f"but got {e:g}."
            )
        eps.append(e)
    return tuple(sorted(set(eps)))


def _nested_attacks(where: str, d: dict[str, Any]) -> None:
    """Check the targets of nested ART attacks (AutoAttack's ``attacks``) and
    take out their ``_partial_``: they get the same estimator."""
    for key, value in d.items():
        if isinstance(value, Mapping) and all(isinstance(v, Mapping) for v in value.values()):
            nested = {}
            for sub, sub_d in value.items():
                if isinstance(sub_d, Mapping) and "_target_" in sub_d:
                    check_target(f"{where}.{key}.{sub}._target_", sub_d["_target_"], ATTACK)
                    sub_d = dict(sub_d)
                    _partial(f"{where}.{key}.{sub}", sub_d)
                nested[sub] = sub_d
            d[key] = nested


def parse_attack(name: str, d: Any, input_shape: tuple[int, ...] | None) -> AttackSpec:
    """Validate ``attack.<name>`` (a single attack or an ensemble); budgets
    are checked against ``input_shape`` when all versions share one."""
    where = f"attack.{name}"
    d = dict(F.mapping(where, d))
    if "members" in d:
        return parse_ensemble(name, d, input_shape)
    target = check_target(f"{where}._target_", d.pop("_target_", None), ATTACK)
    _partial(where, d)
    if d.get("protocol") is not None:  # a note for the record (it keeps the config), not ART's
        F.text(f"{where}.protocol", d["protocol"])
    d.pop("protocol", None)
    minimum_norm = F.flag(f"{where}.minimum_norm", d.pop("minimum_norm", False))
    raw_eps = d.pop("eps", None)
    norm = _norm(f"{where}.norm", d.pop("threat_norm", d.get("norm", "inf")))
    units = F.choice(f"{where}.units", d.pop("units", "input"), UNITS,
                     "input (pixels in [0, 1]) or std (a feature table's column stds)")
    eps = _budgets(where, raw_eps, norm, input_shape if units == "input" else None)
    ratio = d.pop("eps_step_ratio", None)
    if ratio is not None:
        ratio = F.number(f"{where}.eps_step_ratio", ratio)
        if ratio <= 0:
            raise F.fail(f"{where}.eps_step_ratio", "a positive number", ratio)
    rule = d.pop("target", None)
    if rule is not None:
        F.choice(f"{where}.target", rule, TARGET_RULES)
    targeted = F.flag(f"{where}.targeted", d.get("targeted", False))
    if targeted and rule is None:
        rule = "random"
    budget_arg = d.pop("budget_arg", "eps")
    budget_arg = None if minimum_norm else F.text(f"{where}.budget_arg", budget_arg)
    output = F.choice(f"{where}.output", d.pop("output", "logits"), ("logits", "probabilities"),
                      "logits or probabilities")
    _nested_attacks(where, d)
    return AttackSpec(
        name=name,
        target=target,
        kwargs=d,
        eps=eps,
        norm=norm,
        eps_step_ratio=ratio,
        minimum_norm=minimum_norm,
        budget_arg=budget_arg,
        target_rule=rule,
        output=output,
        units=units,
    )


def parse_ensemble(name: str, d: Mapping[str, Any], input_shape: tuple[int, ...] | None
                   ) -> AttackSpec:
    """An ensemble: several attacks at the same budgets; its own eps and
    norm replace the members'."""
    where = f"attack.{name}"
    F.check_keys(where, d, ENSEMBLE_KEYS)
    members_cfg = F.mapping(f"{where}.members", d["members"])
    if not members_cfg:
        raise F.fail(f"{where}.members", "a non-empty mapping of attacks", dict(members_cfg))
    head = {"eps": d.get("eps"), "threat_norm": d.get("threat_norm", "inf")}
    members = []
    for key, m in members_cfg.items():
        m = dict(F.mapping(f"{where}.members.{key}", m))
        if "members" in m:
            raise F.fail(f"{where}.members.{key}", "a single attack", "an ensemble")
        if m.get("minimum_norm"):
            raise F.fail(f"{where}.members.{key}", "a budgeted attack", "a minimum-norm attack")
        m.update(head)
        if "norm" in m:  # the ART argument follows the ensemble's norm
            m["norm"] = head["threat_norm"]
        members.append(parse_attack(f"{name}.members.{key}", m, input_shape))
    first = members[0]
    return AttackSpec(name=name, target="ensemble", kwargs={}, eps=first.eps, norm=first.norm,
                      members=tuple(members))
