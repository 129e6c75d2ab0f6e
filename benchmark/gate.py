"""``rtb gate``: release rules checked against the store, for CI.

Rules live in ``conf/gate/*.yaml`` (or any YAML file): absolute floors,
maximum regression against a baseline version, maximum group disparity, and
no failed validation or reliability check. Exit 0 when every rule holds, 1
when any fails, 2 on bad usage or bad rules. ``--junit`` writes JUnit XML and
``--summary`` a Markdown summary so a CI system can show the result.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from benchmark.compare import (
    Comparison,
    Side,
    compare,
    higher_is_better,
    markdown_table,
    parse_ref,
    select_sides,
)
from benchmark.compose import conf_dir
from benchmark.core import fields as F
from benchmark.core.errors import ConfigError
from benchmark.core.types import threat_label
from benchmark.store import Store

GATE_KEYS = ("baseline", "candidates", "alpha", "adjust", "rules")


@dataclass
class Context:
    """What the rules are evaluated against."""

    store: Store
    baseline: Side | None
    candidates: list[Side]
    comparison: Comparison | None
    measurements: pd.DataFrame  # rows of the candidates' runs
    checks: pd.DataFrame


@dataclass
class Result:
    rule: str
    kind: str
    status: str  # pass | fail | skip
    message: str
    details: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- rule parsing

def _where(i: int, kind: str, key: str = "") -> str:
    return f"rules[{i}].{kind}" + (f".{key}" if key else "")


def _known(where: str, body: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    F.check_keys(where, body, allowed, noun="key")


def _check_threat(where: str, threat: str, measurements: pd.DataFrame) -> None:
    """A rule's threat must be one the gated runs measured: anything else is a
    typo in the rules (exit 2), not a model that failed the gate."""
    measured = sorted({str(t) for t in measurements["threat"]})
    if measured and threat not in measured:
        raise ConfigError(f"Unknown threat {threat!r} in `{where}`; expected one of the threats "
                          f"measured in the gated runs: {', '.join(measured)}.")


@dataclass
class Floor:
    """``metric`` of every candidate at ``threat`` (and ``param``) is at least ``min``."""

    min: float
    threat: str
    metric: str = "accuracy"
    param: float | None = None
    family: str | None = None
    where: str = field(default="", compare=False, repr=False)
    KEYS = ("min", "threat", "metric", "param", "family", "name")

    @classmethod
    def parse(cls, where: str, body: Mapping[str, Any]) -> Floor:
        _known(where, body, cls.KEYS)
        if "min" not in body or "threat" not in body:
            raise ConfigError(f"Missing `{where}.min` or `{where}.threat`; a floor names both.")
        param = body.get("param")
        return cls(min=F.number(f"{where}.min", body["min"]),
                   threat=str(F.optional_text(f"{where}.threat", body["threat"])),
                   metric=F.optional_text(f"{where}.metric", body.get("metric")) or "accuracy",
                   param=None if param is None else F.budget(f"{where}.param", param),
                   family=F.optional_text(f"{where}.family", body.get("family")),
                   where=where)

    def describe(self) -> str:
        return f"{threat_label(self.family or 'attack', self.threat, self.param)} {self.metric} >= {self.min:g}"

    def evaluate(self, ctx: Context) -> Result:
        m = ctx.measurements
        _check_threat(f"{self.where}.threat", self.threat, m)
        sel = (m["threat"] == self.threat) & (m["metric"] == self.metric) & (m["group_feature"] == "")
        if self.param is not None:
            sel &= (m["param"] - self.param).abs() < 1e-9
        if self.family is not None:
            sel &= m["family"] == self.family
        bad, lines = [], []
        for side in ctx.candidates:
            rows = m[sel & (m["model"] == side.model) & (m["version"] == side.version)]
            if rows.empty:
                bad.append(side.key)
                lines.append(f"{side.key}: not measured")
                continue
            value = float(rows.iloc[-1]["value"])
            ok = math.isfinite(value) and value >= self.min
            lines.append(f"{side.key}: {value:.3f} {'>=' if ok else '<'} {self.min:g}")
            if not ok:
                bad.append(side.key)
        status = "fail" if bad else "pass"
        return Result(self.describe(), "floor", status, "; ".join(lines), lines)


@dataclass
class Regression:
    """No candidate is worse than the baseline by more than ``max_drop`` on
    ``metric`` (every metric when not set); with ``significant`` only changes
    significant after adjustment count."""

    max_drop: float
    metric: str | None = None
    significant: bool = True
    groups: bool = False
    KEYS = ("max_drop", "metric", "significant", "groups", "name")

    @classmethod
    def parse(cls, where: str, body: Mapping[str, Any]) -> Regression:
        _known(where, body, cls.KEYS)
        if "max_drop" not in body:
            raise ConfigError(f"Missing `{where}.max_drop`; e.g. 0.01 for one accuracy point.")
        drop = F.number(f"{where}.max_drop", body["max_drop"])
        if drop < 0:
            raise F.fail(f"{where}.max_drop", ">= 0", drop)
        return cls(max_drop=drop, metric=F.optional_text(f"{where}.metric", body.get("metric")),
                   significant=F.flag(f"{where}.significant", body.get("significant", True)),
                   groups=F.flag(f"{where}.groups", body.get("groups", False)))

    def describe(self) -> str:
        what = self.metric or "any metric"
        sig = " (significant)" if self.significant else ""
        return f"{what} not worse than baseline by more than {self.max_drop:g}{sig}"

    def evaluate(self, ctx: Context) -> Result:
        if ctx.comparison is None or ctx.baseline is None:
            raise ConfigError("A `regression` rule needs a baseline version: set `baseline:` in the "
                              "rules file or pass --baseline NAME@VERSION.")
        worse = []
        checked = 0
        for r in ctx.comparison.rows:
            if (self.metric and r.metric != self.metric) or (bool(r.group_feature) and not self.groups):
                continue
            checked += 1
            drop = -r.difference if higher_is_better(r.metric) else r.difference
            if not math.isfinite(drop) or drop <= self.max_drop:
                continue
            if self.significant and not r.significant:
                continue
            grp = f" [{r.group}]" if r.group else ""
            worse.append(f"{r.candidate} {r.label}{grp} {r.metric}: {r.value_baseline:.3f} -> "
                         f"{r.value_candidate:.3f} ({r.difference:+.3f}, p adj {r.p_adjusted:.2g})")
        if checked == 0:
            return Result(self.describe(), "regression", "fail",
                          f"nothing comparable with {ctx.baseline.key} (see `rtb compare`)")
        msg = (f"{len(worse)} regression(s) beyond {self.max_drop:g}" if worse
               else f"{checked} comparison(s) against {ctx.baseline.key} hold")
        return Result(self.describe(), "regression", "fail" if worse else "pass", msg, worse)


@dataclass
class Disparity:
    """For every candidate, threat and group feature: the gap between the
    best and the worst group on ``metric`` is at most ``max``."""

    max: float
    metric: str = "accuracy"
    feature: str | None = None
    threat: str | None = None
    where: str = field(default="", compare=False, repr=False)
    KEYS = ("max", "metric", "feature", "threat", "name")

    @classmethod
    def parse(cls, where: str, body: Mapping[str, Any]) -> Disparity:
        _known(where, body, cls.KEYS)
        if "max" not in body:
            raise ConfigError(f"Missing `{where}.max`; the largest allowed gap between groups.")
        return cls(max=F.number(f"{where}.max", body["max"]),
                   metric=F.optional_text(f"{where}.metric", body.get("metric")) or "accuracy",
                   feature=F.optional_text(f"{where}.feature", body.get("feature")),
                   threat=F.optional_text(f"{where}.threat", body.get("threat")), where=where)

    def describe(self) -> str:
        return f"{self.metric} gap between groups{f' of {self.feature}' if self.feature else ''} <= {self.max:g}"

    def evaluate(self, ctx: Context) -> Result:
        m = ctx.measurements
        if self.threat:
            _check_threat(f"{self.where}.threat", self.threat, m)
        m = m[(m["group_feature"] != "") & (m["metric"] == self.metric)]
        if self.feature:
            m = m[m["group_feature"] == self.feature]
        if self.threat:
            m = m[m["threat"] == self.threat]
        keys = {(s.model, s.version) for s in ctx.candidates}
        m = m[[(a, b) in keys for a, b in zip(m["model"], m["version"], strict=True)]]
        if m.empty:
            return Result(self.describe(), "disparity", "skip", "no group measurements stored")
        bad = []
        worst = 0.0
        cols = ["model", "version", "family", "threat", "param", "group_feature"]
        for key, g in m.fillna({"param": -1.0}).groupby(cols, dropna=False):
            gap = float(g["value"].max() - g["value"].min())
            worst = max(worst, gap)
            if gap > self.max:
                model, version, family, threat, param, feature = key
                bad.append(f"{model}@{version} {threat_label(family, threat, None if param < 0 else param)} "
                           f"{feature}: gap {gap:.3f}")
        msg = f"{len(bad)} gap(s) above {self.max:g}" if bad else f"largest gap {worst:.3f}"
        return Result(self.describe(), "disparity", "fail" if bad else "pass", msg, bad)


@dataclass
class Checks:
    """No validation or reliability check of the gated runs has a status in ``fail_on``."""

    fail_on: tuple[str, ...] = ("fail",)
    KEYS = ("fail_on", "name")

    @classmethod
    def parse(cls, where: str, body: Mapping[str, Any]) -> Checks:
        _known(where, body, cls.KEYS)
        fail_on = body.get("fail_on", ["fail"])
        if isinstance(fail_on, str):
            fail_on = [fail_on]
        if not isinstance(fail_on, list) or not set(fail_on) <= {"fail", "warn"} or not fail_on:
            raise F.fail(f"{where}.fail_on", "a list of fail/warn", fail_on)
        return cls(fail_on=tuple(fail_on))

    def describe(self) -> str:
        return f"no check with status {'/'.join(self.fail_on)}"

    def evaluate(self, ctx: Context) -> Result:
        c = ctx.checks
        bad = c[c["status"].isin(self.fail_on)]
        lines = [f"{r.run_id} {r.name}{f' ({r.subject})' if r.subject else ''}: {r.status}: {r.message}"
                 for r in bad.itertuples()]
        msg = f"{len(bad)} of {len(c)} check(s) {'/'.join(self.fail_on)}" if len(bad) \
            else f"{len(c)} check(s), none {'/'.join(self.fail_on)}"
        return Result(self.describe(), "checks", "fail" if len(bad) else "pass", msg, lines)


Rule = Floor | Regression | Disparity | Checks

#: Rule kinds by the key that introduces them in a rules file.
RULE_KINDS: dict[str, Callable[[str, Mapping[str, Any]], Rule]] = {
    "floor": Floor.parse,
    "regression": Regression.parse,
    "disparity": Disparity.parse,
    "checks": Checks.parse,
}


@dataclass
class GateSpec:
    rules: list[tuple[str, Rule]]
    baseline: str | None = None
    candidates: list[str] = field(default_factory=list)
    alpha: float = 0.05
    adjust: str = "holm"


def _ref(where: str, v: Any) -> None:
    if not isinstance(v, str) or "@" not in v.strip("@"):
        raise F.fail(where, "a model version NAME@VERSION", v)


def parse_rules(data: Any, source: str = "rules") -> GateSpec:
    """Validate a rules document into a ``GateSpec`` (``ConfigError`` on anything wrong)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"Expected {source} to be a mapping with `rules:`, but got {type(data).__name__}.")
    _known(source, data, GATE_KEYS)
    raw = data.get("rules")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"Expected `rules` in {source} to be a non-empty list, but got {raw!r}.")
    rules: list[tuple[str, Rule]] = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping) or len(item) != 1:
            raise ConfigError(
                f"Expected `rules[{i}]` to be one mapping like {{floor: {{...}}}}, but got {item!r}.")
        kind, body = next(iter(item.items()))
        if kind not in RULE_KINDS:
            raise ConfigError(f"Unknown rule kind {kind!r} in `rules[{i}]`; expected one of: "
                              f"{', '.join(RULE_KINDS)}.")
        body = F.mapping(_where(i, kind), body or {})
        rule = RULE_KINDS[kind](_where(i, kind), body)
        rules.append((str(body.get("name") or rule.describe()), rule))
    baseline = F.optional_text("baseline", data.get("baseline"))
    if baseline:
        _ref("baseline", baseline)
    cands = data.get("candidates") or []
    if isinstance(cands, str):
        cands = [cands]
    if not isinstance(cands, list):
        raise F.fail("candidates", "a list of NAME@VERSION", cands)
    for i, c in enumerate(cands):
        _ref(f"candidates[{i}]", c)
    alpha = F.number("alpha", data.get("alpha", 0.05))
    if not 0 < alpha < 1:
        raise ConfigError(f"Expected `alpha` in (0, 1), but got {alpha!r}.")
    return GateSpec(rules=rules, baseline=baseline, candidates=[str(c) for c in cands],
                    alpha=alpha, adjust=str(data.get("adjust", "holm")))


def load_rules(name_or_path: str) -> GateSpec:
    """Rules from a file path, or by name from ``conf/gate/NAME.yaml``."""
    path = Path(name_or_path).expanduser()
    builtin = conf_dir() / "gate"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in builtin.glob("*.yaml")))
        if path.is_dir():
            raise ConfigError(f"Rules file {str(path)!r} is a directory; expected a YAML file "
                              f"or a built-in rule set: {names}.")
        is_name = name_or_path and not any(s in name_or_path for s in ("/", "\\", os.sep)) \
            and not name_or_path.endswith((".yaml", ".yml")) and name_or_path not in (".", "..")
        packaged = builtin / f"{name_or_path}.yaml"
        if not is_name:
            raise ConfigError(f"Rules file {str(path)!r} does not exist; expected an existing "
                              f"YAML file or a built-in rule set: {names}.")
        if not packaged.is_file():
            raise ConfigError(f"Unknown rule set {name_or_path!r}; expected a YAML file or a "
                              f"built-in rule set: {names}.")
        path = packaged
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read rules file {str(path)!r} ({exc}).") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"Cannot parse rules file {str(path)!r}: {' '.join(str(exc).split())}") from None
    return parse_rules(data, str(path))


# ----------------------------------------------------------------------------- evaluation

def evaluate(store: Store, spec: GateSpec, *, versions: Sequence[str] = (),
             baseline: str | None = None, runs: Sequence[str] | None = None,
             sweep: str | None = None) -> tuple[list[Result], Context]:
    """Evaluate every rule; the candidates are ``versions`` (else the rules'
    ``candidates``, else every stored version of the chosen runs but the baseline)."""
    base_ref = baseline or spec.baseline
    cand_refs = [c for c in (list(versions) or spec.candidates) if c != base_ref]
    if not cand_refs and not runs and sweep is None:
        newest = store.runs()
        if newest.empty:
            raise ConfigError(f"The store {str(store.path)!r} holds no runs; run `rtb run` first.")
        runs = [str(newest["run_id"].iloc[-1])]
    refs = ([base_ref] if base_ref else []) + cand_refs if cand_refs else []
    if len(refs) == 1:
        name, version = parse_ref(refs[0])
        held = store.runs(model=name, version=version)
        if held.empty:
            raise ConfigError(f"No stored run holds {refs[0]!r}; see `rtb store list`.")
        sides = [Side(name, version, [str(held["run_id"].iloc[-1])])]
    else:
        sides = select_sides(store, refs, runs=runs, sweep=sweep)
    base = next((s for s in sides if s.key == base_ref), None)
    if base_ref and base is None:
        raise ConfigError(
            f"Baseline {base_ref!r} is not among the versions {', '.join(s.key for s in sides)}.")
    candidates = [s for s in sides if s is not base]
    comparison = None
    if base is not None and candidates:
        comparison = compare(store, [base, *candidates], alpha=spec.alpha, adjust=spec.adjust)
    run_ids = sorted({r for s in candidates for r in s.runs})
    ctx = Context(store, base, candidates, comparison, store.measurements(run_ids),
                  store.checks(run_ids))
    return [rule.evaluate(ctx) for _, rule in spec.rules], ctx


# ----------------------------------------------------------------------------- output

def junit_xml(results: Sequence[Result], names: Sequence[str]) -> str:
    suite = ET.Element("testsuite", name="rtb gate", tests=str(len(results)),
                       failures=str(sum(r.status == "fail" for r in results)),
                       skipped=str(sum(r.status == "skip" for r in results)), errors="0")
    for name, r in zip(names, results, strict=True):
        case = ET.SubElement(suite, "testcase", classname=f"rtb.gate.{r.kind}", name=name)
        if r.status == "fail":
            ET.SubElement(case, "failure", message=r.message).text = "\n".join(r.details) or r.message
        elif r.status == "skip":
            ET.SubElement(case, "skipped", message=r.message)
        else:
            ET.SubElement(case, "system-out").text = "\n".join(r.details) or r.message
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


ICONS = {"pass": "PASS", "fail": "FAIL", "skip": "SKIP"}


def markdown_summary(results: Sequence[Result], names: Sequence[str], ctx: Context) -> str:
    failed = sum(r.status == "fail" for r in results)
    verdict = "failed" if failed else "passed"
    cands = ", ".join(s.key for s in ctx.candidates)
    base = f" against baseline {ctx.baseline.key}" if ctx.baseline else ""
    rows = [[ICONS[r.status], n, r.kind, r.message] for n, r in zip(names, results, strict=True)]
    out = [f"## rtb gate {verdict}: {cands}{base}", "",
           f"{len(results) - failed} of {len(results)} rule(s) hold.", "",
           markdown_table(["", "rule", "kind", "result"], rows)]
    for n, r in zip(names, results, strict=True):
        if r.status == "fail" and r.details:
            out += ["", f"**{n}**", "", *(f"- {d}" for d in r.details[:30])]
    return "\n".join(out) + "\n"
