"""Alert rules of ``rtb monitor``, from ``conf/monitor/NAME.yaml`` (or any YAML file).

A file holds the drift settings and a list of rules, each one mapping
``{kind: {...}}``; every rule is evaluated on every window and holds or fails:

* ``accuracy_floor: {min, use, versions}``: a version's accuracy is below
  ``min``; ``use`` is ``estimated`` (CBPE), ``matched`` (CBPE mixed with the
  benchmark's accuracy under the matched threat), ``realised`` (labels) or
  ``best`` (realised when the window has labels, else matched);
* ``drift: {feature}``: a drift test on a feature whose name matches the
  pattern (``brightness``, ``predicted_class[*]``, ``group_mix[*]``, ``*``) found drift;
* ``check: {name, status}``: a data or schema check matching ``name`` ended
  with ``status`` (``fail``, or ``warn`` for warn or worse);
* ``group_shift: {feature, max_share_change, max_accuracy_change}``: a group's
  share of the window, or a version's accuracy on it, moved by more than that
  from the reference;
* ``better_version: {margin, use}``: another version beats the version that
  is best on the reference by more than ``margin``.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmark.core import fields as F
from benchmark.core.errors import ConfigError
from benchmark.monitor.engine import MonitorSettings, WindowResult

USES = ("estimated", "matched", "realised", "best")
CONFIG_KEYS = ("drift", "match", "rules")
DRIFT_KEYS = ("alpha", "horizon", "small_sample")


@dataclass
class Alert:
    rule: str
    kind: str
    status: str  # pass | fail
    message: str


def _accuracy(res: WindowResult, key: str, use: str) -> tuple[float | None, str]:
    if use == "best":
        if res.window.has_labels:
            use = "realised"
        elif res.value(key, "matched_accuracy") is not None:
            use = "matched"
        else:
            use = "estimated"
    return res.value(key, f"{use}_accuracy"), use


def _versions(res: WindowResult) -> list[str]:
    return sorted({m.model for m in res.metrics if m.model and m.metric == "estimated_accuracy"})


@dataclass
class AccuracyFloor:
    minimum: float
    use: str = "best"
    versions: tuple[str, ...] = ()

    @classmethod
    def parse(cls, where: str, body: Mapping[str, Any]) -> AccuracyFloor:
        F.check_keys(where, body, ("name", "min", "use", "versions"), noun="key")
        if "min" not in body:
            raise ConfigError(f"Expected `{where}.min` (the accuracy floor), but got none.")
        versions = F.names(f"{where}.versions", body.get("versions")) or ()
        return cls(F.probability(f"{where}.min", body["min"]),
                   F.choice(f"{where}.use", body.get("use", "best"), USES), versions)

    def describe(self) -> str:
        return f"{self.use} accuracy >= {self.minimum:g}"

    def evaluate(self, res: WindowResult) -> tuple[bool, str]:
        low = []
        for key in self.versions or tuple(_versions(res)):
            acc, used = _accuracy(res, key, self.use)
            if acc is not None and acc < self.minimum:
                low.append(f"{key} {used} {acc:.3f}")
        if low:
            return False, f"below {self.minimum:g}: " + ", ".join(low)
        return True, f"every version at or above {self.minimum:g}"


@dataclass
class Drift:
    feature: str = "*"

    @classmethod
    def parse(cls, where: str, body: Mapping[str, Any]) -> Drift:
        F.check_keys(where, body, ("name", "feature"), noun="key")
        return cls(F.text(f"{where}.feature", body.get("feature", "*")))

    def describe(self) -> str:
        return f"no drift on {self.feature}"

    def evaluate(self, res: WindowResult) -> tuple[bool, str]:
        hit = [d for d in res.drift if d.drifted and fnmatch.fnmatchcase(d.feature, self.feature)]
        if hit:
            parts = [f"{d.feature} ({d.test} p={d.p_value:.2g})" if d.p_value is not None
                     else f"{d.feature} ({d.test} {d.statistic:.3g})" for d in hit[:6]]
            return False, "drift: " + ", ".join(parts) + (" ..." if len(hit) > 6 else "")
        return True, "no drift"


@dataclass
class Check:
    name: str = "*"
    status: str = "fail"

    @classmethod
    def parse(cls, where: str, body: Mapping[str, Any]) -> Check:
        F.check_keys(where, body, ("name", "check", "status"), noun="key")
        return cls(F.text(f"{where}.check", body.get("check", "*")),
                   F.choice(f"{where}.status", body.get("status", "fail"), ("fail", "warn")))

    def describe(self) -> str:
        return f"no {self.name} check at {self.status}"

    def evaluate(self, res: WindowResult) -> tuple[bool, str]:
        bad = {"fail"} if self.status == "fail" else {"fail", "warn"}
        hit = [c for c in res.checks if c.status in bad and fnmatch.fnmatchcase(c.check,
                                                                               self.name)]
        if hit:
            return False, "; ".join(f"{c.check}: {c.message}" for c in hit[:3])[:300]
        return True, "checks hold"


@dataclass
class GroupShift:
    feature: str = "*"
    max_share_change: float | None = 0.15
    max_accuracy_change: float | None = None
    use: str = "best"

    @classmethod
    def parse(cls, where: str, body: Mapping[str, Any]) -> GroupShift:
        F.check_keys(where, body, ("name", "feature", "max_share_change",
                                   "max_accuracy_change", "use"), noun="key")
        share = body.get("max_share_change", 0.15)
        acc = body.get("max_accuracy_change")
        return cls(F.text(f"{where}.feature", body.get("feature", "*")),
                   None if share is None else F.probability(f"{where}.max_share_change", share),
                   None if acc is None else F.probability(f"{where}.max_accuracy_change", acc),
                   F.choice(f"{where}.use", body.get("use", "best"), USES))

    def describe(self) -> str:
        parts = []
        if self.max_share_change is not None:
            parts.append(f"share within {self.max_share_change:g}")
        if self.max_accuracy_change is not None:
            parts.append(f"accuracy within {self.max_accuracy_change:g}")
        return f"groups {self.feature}: " + " and ".join(parts or ["(nothing)"])

    def evaluate(self, res: WindowResult) -> tuple[bool, str]:
        moved = []
        for m in res.metrics:
            if not fnmatch.fnmatchcase(m.group_feature, self.feature) or not m.group_feature:
                continue
            if m.metric == "group_share" and self.max_share_change is not None:
                ref = res.value("", "reference_share", m.group_feature, m.group_value) or 0.0
                if abs(m.value - ref) > self.max_share_change:
                    moved.append(f"{m.group_feature}={m.group_value} share {ref:.2f} -> "
                                 f"{m.value:.2f}")
            if m.metric == "reference_accuracy" and m.model and \
                    self.max_accuracy_change is not None:
                use = "realised" if res.window.has_labels else (
                    self.use if self.use in ("estimated", "realised") else "estimated")
                now = res.value(m.model, f"{use}_accuracy", m.group_feature, m.group_value)
                if now is not None and abs(now - m.value) > self.max_accuracy_change:
                    moved.append(f"{m.model} on {m.group_feature}={m.group_value} accuracy "
                                 f"{m.value:.3f} -> {now:.3f}")
        if moved:
            return False, "; ".join(moved[:4]) + (" ..." if len(moved) > 4 else "")
        return True, "group mix and group accuracy stable"


@dataclass
class BetterVersion:
    margin: float = 0.02
    use: str = "best"

    @classmethod
    def parse(cls, where: str, body: Mapping[str, Any]) -> BetterVersion:
        F.check_keys(where, body, ("name", "margin", "use"), noun="key")
        return cls(F.probability(f"{where}.margin", body.get("margin", 0.02)),
                   F.choice(f"{where}.use", body.get("use", "best"), USES))

    def describe(self) -> str:
        return f"the reference's best version stays best (margin {self.margin:g})"

    def evaluate(self, res: WindowResult) -> tuple[bool, str]:
        keys = _versions(res)
        if len(keys) < 2:
            return True, "one version"
        ref_acc = {k: res.value(k, "reference_accuracy") or 0.0 for k in keys}
        ref_best = max(keys, key=lambda k: (ref_acc[k], k))
        now = {k: _accuracy(res, k, self.use)[0] for k in keys}
        if now[ref_best] is None:
            return True, "no accuracy for the reference's best version"
        best = max((k for k in keys if now[k] is not None), key=lambda k: (now[k], k))
        gain = float(now[best] or 0.0) - float(now[ref_best] or 0.0)
        if best != ref_best and gain > self.margin:
            return False, (f"{best} now better than {ref_best} by {gain:.3f} "
                           f"({now[best]:.3f} vs {now[ref_best]:.3f})")
        return True, f"{ref_best} still best"


RULE_KINDS: dict[str, Any] = {
    "accuracy_floor": AccuracyFloor, "drift": Drift, "check": Check,
    "group_shift": GroupShift, "better_version": BetterVersion,
}


@dataclass
class MonitorConfig:
    rules: list[tuple[str, str, Any]]  # (name, kind, rule)
    settings: MonitorSettings = field(default_factory=MonitorSettings)
    source: str = "rules"

    def evaluate(self, res: WindowResult) -> list[Alert]:
        out = []
        for name, kind, rule in self.rules:
            ok, msg = rule.evaluate(res)
            out.append(Alert(name, kind, "pass" if ok else "fail", msg))
        return out


def parse_config(data: Any, source: str = "rules") -> MonitorConfig:
    """Validate a monitor config (``ConfigError`` on anything wrong)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"Expected {source} to be a mapping with `rules:`, but got "
                          f"{type(data).__name__}.")
    F.check_keys("", data, CONFIG_KEYS)
    drift = F.mapping("drift", data.get("drift") or {})
    F.check_keys("drift", drift, DRIFT_KEYS)
    match = F.mapping("match", data.get("match") or {})
    F.check_keys("match", match, ("enabled",))
    alpha = F.number("drift.alpha", drift.get("alpha", 0.05))
    if not 0 < alpha < 1:
        raise F.fail("drift.alpha", "a number in (0, 1)", alpha)
    settings = MonitorSettings(
        alpha=alpha, horizon=F.integer("drift.horizon", drift.get("horizon", 100), 1),
        small_sample=F.integer("drift.small_sample", drift.get("small_sample", 1000), 2),
        match=F.flag("match.enabled", match.get("enabled", True)))
    raw = data.get("rules")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"Expected `rules` in {source} to be a non-empty list, but got {raw!r}.")
    rules = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping) or len(item) != 1:
            raise ConfigError(f"Expected `rules[{i}]` to be one mapping like "
                              f"{{drift: {{...}}}}, but got {item!r}.")
        kind, body = next(iter(item.items()))
        if kind not in RULE_KINDS:
            raise ConfigError(f"Unknown rule kind {kind!r} in `rules[{i}]`; expected one of: "
                              f"{', '.join(RULE_KINDS)}.")
        body = F.mapping(f"rules[{i}].{kind}", body or {})
        rule = RULE_KINDS[kind].parse(f"rules[{i}].{kind}", body)
        rules.append((str(body.get("name") or rule.describe()), str(kind), rule))
    return MonitorConfig(rules, settings, source)


def conf_monitor_dir() -> Path:
    from benchmark.compose import conf_dir

    return conf_dir() / "monitor"


def load_config(name_or_path: str) -> MonitorConfig:
    """A monitor config from a YAML path, or by name from ``conf/monitor/NAME.yaml``."""
    path = Path(name_or_path).expanduser()
    builtin = conf_monitor_dir()
    names = ", ".join(sorted(p.stem for p in builtin.glob("*.yaml")))
    if not path.is_file():
        looks_like_name = not any(s in name_or_path for s in ("/", "\\", os.sep)) and \
            not name_or_path.endswith((".yaml", ".yml"))
        if not looks_like_name:
            raise ConfigError(f"Rules file {str(path)!r} does not exist; expected a YAML file "
                              f"or a built-in rule set: {names}.")
        path = builtin / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ConfigError(f"Unknown monitor rule set {name_or_path!r}; expected a YAML file "
                              f"or one of: {names}.")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read rules file {str(path)!r} ({exc}).") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"Cannot parse rules file {str(path)!r}: "
                          f"{' '.join(str(exc).split())}") from None
    return parse_config(data, str(path))
