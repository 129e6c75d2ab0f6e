"""``rtb gate``: pass, fail and bad rules map to exit codes 0 / 1 / 2; the
JUnit XML parses and the Markdown summary names every rule."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from test_compare import make_run

from benchmark.cli import main
from benchmark.commands.gate import gate_main
from benchmark.core.errors import ConfigError
from benchmark.gate import load_rules, parse_rules
from benchmark.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """v1 -> v2 improves fgsm accuracy a lot; v3 regresses it a lot; class groups."""
    rng = np.random.default_rng(0)
    v1 = rng.random(300) < 0.6
    v2 = v1 | (rng.random(300) < 0.5)
    v3 = v1 & (rng.random(300) < 0.4)
    groups = np.arange(300) % 2
    path = tmp_path / "s.sqlite"
    with Store(path) as s:
        rec, out = make_run("20240101-r", {"v1": v1, "v2": v2, "v3": v3}, groups=groups)
        rec["checks"] = [{"check": "eval_mode", "status": "pass", "message": "ok"},
                         {"check": "duplicates", "status": "warn", "message": "2 duplicates"}]
        s.save_run(rec, out)
    return path


def _rules(tmp_path: Path, rules: list[Any], **top: Any) -> str:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"rules": rules, **top}))
    return str(path)


def _gate(store: Path, *args: str) -> int:
    return gate_main(["--store", str(store), *args])


def test_pass_writes_junit_and_summary(tmp_path: Path, store: Path) -> None:
    rules = _rules(tmp_path, [
        {"floor": {"threat": "fgsm", "param": 0.1, "min": 0.6}},
        {"regression": {"max_drop": 0.01, "significant": True}},
        {"disparity": {"max": 0.5}},
        {"checks": {"fail_on": ["fail"]}},
    ], baseline="net@v1")
    junit, summary = tmp_path / "out" / "gate.xml", tmp_path / "out" / "gate.md"
    code = _gate(store, "net@v2", "--rules", rules, "--junit", str(junit), "--summary", str(summary))
    assert code == 0
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures")) == ("4", "0")
    assert [c.get("classname") for c in suite.iter("testcase")] == [
        "rtb.gate.floor", "rtb.gate.regression", "rtb.gate.disparity", "rtb.gate.checks"]
    text = summary.read_text()
    assert text.startswith("## rtb gate passed: net@v2 against baseline net@v1")
    assert text.count("| PASS |") == 4


@pytest.mark.parametrize(("rule", "why"), [
    ({"floor": {"threat": "fgsm", "param": 0.1, "min": 0.99}}, "<"),
    ({"floor": {"threat": "fgsm", "param": 0.77, "min": 0.1}}, "not measured"),
    ({"regression": {"max_drop": 0.01, "metric": "accuracy"}}, "regression"),
    ({"disparity": {"max": 0.0001, "threat": "fgsm"}}, "gap"),
    ({"checks": {"fail_on": ["fail", "warn"]}}, "duplicates"),
])
def test_fail_exits_1_and_junit_has_failure(tmp_path: Path, store: Path, rule: dict[str, Any],
                                            why: str, capsys: pytest.CaptureFixture[str]) -> None:
    junit = tmp_path / "gate.xml"
    code = _gate(store, "net@v3", "--baseline", "net@v1", "--rules", _rules(tmp_path, [rule]),
                 "--junit", str(junit))
    assert code == 1
    assert why in capsys.readouterr().out
    failures = list(ET.parse(junit).getroot().iter("failure"))
    assert len(failures) == 1 and failures[0].get("message")


def test_regression_needs_significance_when_asked(tmp_path: Path, store: Path) -> None:
    """A tiny drop that is not significant passes a `significant: true` rule
    and fails the same rule without it."""
    rng = np.random.default_rng(1)
    a = rng.random(100) < 0.8
    b = a.copy()
    b[np.flatnonzero(a)[:2]] = False  # two points worse: 2 points of accuracy, p = 0.5
    path = tmp_path / "t.sqlite"
    with Store(path) as s:
        s.save_run(*make_run("r", {"v1": a, "v2": b}))
    sig = _rules(tmp_path, [{"regression": {"max_drop": 0.01, "significant": True}}])
    assert _gate(path, "net@v2", "--baseline", "net@v1", "--rules", sig) == 0
    raw = _rules(tmp_path, [{"regression": {"max_drop": 0.01, "significant": False}}])
    assert _gate(path, "net@v2", "--baseline", "net@v1", "--rules", raw) == 1


@pytest.mark.parametrize(("doc", "match"), [
    ({"rules": [{"ceiling": {"min": 1}}]}, "Unknown rule kind 'ceiling'"),
    ({"rules": [{"floor": {"threat": "clean"}}]}, "Missing `rules\\[0\\].floor.min`"),
    ({"rules": [{"floor": {"threat": "clean", "min": "high"}}]}, "to be a number"),
    ({"rules": [{"floor": {"threat": "clean", "min": 0.5, "tolerance": 1}}]}, "Unknown key"),
    ({"rules": [{"regression": {"max_drop": -1}}]}, "to be >= 0"),
    ({"rules": [{"regression": {"max_drop": 0.1, "significant": "yes"}}]}, "true or false"),
    ({"rules": [{"checks": {"fail_on": ["broken"]}}]}, "fail/warn"),
    ({"rules": []}, "non-empty list"),
    ({"rules": [{"floor": {}, "checks": {}}]}, "one mapping"),
    ({"rules": [{"checks": {}}], "baseline": "no_at_sign"}, "NAME@VERSION"),
    ({"rules": [{"checks": {}}], "alpha": 2}, "alpha"),
    ({"rules": [{"checks": {}}], "threshold": 1}, "Unknown key"),
    (["not", "a", "mapping"], "mapping"),
])
def test_bad_rules_raise_config_error(doc: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_rules(doc)


def test_bad_rules_file_and_usage_exit_2(tmp_path: Path, store: Path, run_cli: Any,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [floor: {threat: clean, min: 0.5}\n")  # unclosed bracket
    with pytest.raises(ConfigError, match="Cannot parse rules file"):
        load_rules(str(bad))
    with pytest.raises(ConfigError, match="Unknown rule set 'no_such_rules'; .*built-in .*default"):
        load_rules("no_such_rules")
    with pytest.raises(ConfigError, match="does not exist; .*built-in rule set: .*default"):
        load_rules(str(tmp_path / "missing.yaml"))
    # a threat no gated run measured is a typo in the rules (exit 2), not a failed gate
    typo = _rules(tmp_path, [{"floor": {"threat": "fgsn", "min": 0.1}}])
    assert main(["gate", "net@v2", "--store", str(store), "--rules", typo]) == 2
    err = capsys.readouterr().err
    assert "Unknown threat 'fgsn' in `rules[0].floor.threat`; expected one of" in err
    assert "fgsm" in err
    r = run_cli("gate", "--store", str(store), "--rules", str(bad))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith("rtb: error: Cannot parse rules file")
    unknown = _rules(tmp_path, [{"ceiling": {}}])
    assert main(["gate", "--store", str(store), "--rules", unknown]) == 2
    # a regression rule without a baseline is bad usage, not a failed gate
    no_base = _rules(tmp_path, [{"regression": {"max_drop": 0.01}}])
    assert main(["gate", "net@v2", "--store", str(store), "--rules", no_base]) == 2
    assert "needs a baseline" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["gate", "--store", str(store), "--bogus-flag"])
    assert exc.value.code == 2


def test_default_rules_parse_and_name_the_reference_versions() -> None:
    spec = load_rules("default")
    assert spec.baseline == "mnist_cnn@v1" and spec.candidates == ["mnist_cnn@v2"]
    assert {type(r).__name__ for _, r in spec.rules} == {"Floor", "Regression", "Disparity",
                                                          "Checks"}


def test_floor_param_written_as_a_fraction_matches_the_float() -> None:
    spec = parse_rules({"rules": [{"floor": {"threat": "pgd_linf", "param": "8/255", "min": 0.5}}]})
    (_, rule), = spec.rules
    assert rule.param == 8 / 255
    assert rule.describe() == "pgd_linf eps=8/255 accuracy >= 0.5"
    with pytest.raises(ConfigError, match="a fraction such as 8/255"):
        parse_rules({"rules": [{"floor": {"threat": "pgd_linf", "param": "8/0", "min": 0.5}}]})
