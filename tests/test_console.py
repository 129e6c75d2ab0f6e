"""What ``rtb run`` prints: the concise summary and its details, library
warnings as one line, collapsed small-group warnings, the progress postfix
naming each threat, and check messages that read well."""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_evalset, tiny_overrides

from benchmark.console import (
    CONCISE_GROUP_ROWS,
    fairness_table,
    run_summary,
    worst_group_table,
)
from benchmark.core.types import CheckResult, Measurement
from benchmark.run_output import GROUPS_LOGGER, TooSmallGroups, console_log_level, quiet_run
from metrics.corruption import SUMMARY_THREAT
from metrics.data_checks import DataContext, check_class_imbalance, check_input_range

VERSIONS = ("v1", "v2")
CORRUPTIONS = [f"c{i:02d}" for i in range(15)]


def _m(version: str, family: str, threat: str, param: float | None, metric: str, value: float,
       feature: str = "", group: str = "", ci: tuple[float, float] | None = None) -> Measurement:
    lo, hi = ci if ci else (float("nan"), float("nan"))
    return Measurement(model="m", version=version, family=family, threat=threat, param=param,
                       metric=metric, value=value, n=100, group_feature=feature,
                       group_value=group, ci_low=lo, ci_high=hi)


def _measurements(rng: np.random.Generator) -> list[Measurement]:
    """A run with 2 attacks x 3 eps and 15 corruptions x 5 severities."""
    out = []
    for v in VERSIONS:
        out.append(_m(v, "clean", "clean", None, "accuracy", 0.95))
        threats = [("attack", a, e) for a in ("fgsm", "pgd") for e in (0.1, 0.2, 0.3)]
        threats += [("corruption", c, float(s)) for c in CORRUPTIONS for s in range(1, 6)]
        for fam, name, p in threats:
            out.append(_m(v, fam, name, p, "accuracy", float(rng.random())))
            out.append(_m(v, fam, name, p, "accuracy_worst_group", float(rng.random()),
                          "class", str(int(rng.integers(10)))))
        for c in CORRUPTIONS:
            out.append(_m(v, "corruption", c, None, "accuracy_mean", float(rng.random())))
        out.append(_m(v, "corruption", SUMMARY_THREAT, None, "mce", 1.0 if v == "v1" else 0.8))
    return out


def test_concise_summary_fits_a_screen_and_details_show_everything() -> None:
    ms = _measurements(np.random.default_rng(0))
    checks = [CheckResult("nan_inf", "pass", "ok", subject="data"),
              CheckResult("targeted_sweep", "warn", "a", subject="m@v2 attacks"),
              CheckResult("targeted_sweep", "warn", "b", subject="m@v2 attacks")]
    concise = run_summary(ms, checks)
    assert len(concise.splitlines()) <= 50
    assert "severity=" not in concise.split("worst group per threat")[0]
    by = {(m.version, m.threat): m.value for m in ms if m.metric == "accuracy_mean"}
    line = next(x for x in concise.splitlines() if x.startswith("c07 (mean over severities)"))
    assert line.split()[4:6] == [f"{by[('v1', 'c07')]:.3f}", f"{by[('v2', 'c07')]:.3f}"]
    mce = next(x for x in concise.splitlines() if x.startswith("mCE"))
    assert mce.split()[-3:] == ["1.000", "0.800", "-0.200"]
    assert "more threat(s) with higher worst-group accuracy" in concise
    assert "targeted_sweep (warn x2)" in concise
    detailed = run_summary(ms, checks, detailed=True)
    assert len(detailed.splitlines()) > 150
    for c in CORRUPTIONS:
        for s in range(1, 6):
            assert f"{c} severity={s} " in detailed
    assert "targeted_sweep  WARN" in detailed  # one row per check that did not pass


def test_concise_worst_groups_keep_attacks_and_the_worst_corruptions() -> None:
    ms = _measurements(np.random.default_rng(1))
    table = worst_group_table(ms, concise=True)
    rows = table.splitlines()[3:-1]
    assert len(rows) == CONCISE_GROUP_ROWS
    assert sum(r.startswith(("fgsm", "pgd")) for r in rows) == 6
    corr = {}
    for m in ms:
        if m.metric == "accuracy_worst_group" and m.family == "corruption":
            key = f"{m.threat} severity={m.param:g}"
            corr[key] = min(corr.get(key, 1.0), m.value)
    shown = {r.split("  ")[0] for r in rows if r.startswith("c")}
    worst = sorted(corr, key=corr.__getitem__)[:CONCISE_GROUP_ROWS - 6]
    assert shown == set(worst)
    assert f"{len(corr) - len(worst)} more threat(s)" in table


def test_tabular_run_shows_fairness_with_cis_first() -> None:
    ms = [_m(v, "clean", "clean", None, "accuracy", 0.8) for v in VERSIONS]
    ms += [_m(v, "clean", "clean", None, "accuracy_worst_group", 0.6, "sex", "f") for v in VERSIONS]
    ms += [_m("v1", "clean", "clean", None, "demographic_parity_difference", 0.12, "sex", "",
              (0.05, 0.2)),
           _m("v1", "clean", "clean", None, "demographic_parity_ratio", 0.7, "sex"),
           _m("v1", "clean", "clean", None, "equalized_odds_difference", 0.3, "age band", "",
              (0.1, 0.41)),
           _m("v1", "attack", "hsj", 0.1, "equalized_odds_difference", 0.5, "sex", "", (0.4, 0.6))]
    text = run_summary(ms, [], tabular=True)
    assert text.index("fairness between groups") < text.index("worst group per threat") \
        < text.index("accuracy on n=")
    assert "0.120 [0.050, 0.200]" in text and "0.300 [0.100, 0.410]" in text
    assert "0.700" in text and "hsj" not in text.split("worst group")[0]
    assert "hsj eps=0.1" in fairness_table(ms, all_threats=True)
    # without fairness metrics nothing is rendered for them, and images keep the headline first
    plain = [m for m in ms if "parity" not in m.metric and "odds" not in m.metric]
    assert fairness_table(plain) == ""
    assert run_summary(plain, []).index("accuracy on n=") < \
        run_summary(plain, []).index("worst group per threat")


def test_small_groups_collapse_into_one_line(caplog: pytest.LogCaptureFixture) -> None:
    groups_log = logging.getLogger(GROUPS_LOGGER)
    with caplog.at_level(logging.WARNING), quiet_run():
        for g in range(10):
            groups_log.warning("Group %s=%s has %d samples (< %d): reported as too small",
                               "class", g, 9 + g % 2, 30)
        groups_log.warning("something else")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "something else"
    assert len(lines) == 2
    assert lines[1].startswith("10 group(s) have fewer than 30 samples and are reported as too "
                               "small: class=0 (n=9), class=1 (n=10)")
    assert lines[1].endswith("and 4 more.")
    assert TooSmallGroups().summary() is None
    assert not any(isinstance(f, TooSmallGroups) for f in groups_log.filters)


def test_library_warnings_are_one_line_once_and_torch_jit_is_dropped(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    scripted.save(str(tmp_path / "m.pt"))
    with caplog.at_level(logging.WARNING), quiet_run():
        torch.jit.load(str(tmp_path / "m.pt"))
        for _ in range(3):
            warnings.warn("first line\nsecond line of a long library warning", UserWarning,
                          stacklevel=1)
    assert [r.getMessage() for r in caplog.records] == ["UserWarning: first line"]


def test_console_log_level_leaves_file_handlers(tmp_path: Path) -> None:
    stream = logging.StreamHandler()
    file = logging.FileHandler(tmp_path / "job.log")
    root = logging.getLogger()
    root.addHandler(stream)
    root.addHandler(file)
    def passes(handler: logging.Handler, name: str, level: int) -> bool:
        return bool(handler.filter(logging.LogRecord(name, level, "", 0, "m", None, None)))

    try:
        console_log_level(False)
        console_log_level(False)  # idempotent: one filter
        assert len(stream.filters) == 1 and not file.filters
        assert not passes(stream, "metrics.slices", logging.INFO)
        assert passes(stream, "metrics.slices", logging.WARNING)
        assert passes(stream, "benchmark.sweep", logging.INFO)  # a sweep's progress stays
        assert passes(file, "metrics.slices", logging.INFO)
        console_log_level(True)
        assert passes(stream, "metrics.slices", logging.INFO)
    finally:
        root.removeHandler(stream)
        root.removeHandler(file)
        file.close()


class _Bar:
    """Records what the runner shows on its progress bar."""

    def __init__(self) -> None:
        self.shown: list[tuple[int, str]] = []
        self.n = 0
        self.postfix = ""

    def set_postfix_str(self, s: str, refresh: bool = True) -> None:
        self.postfix = s

    def update(self, k: int = 1) -> None:
        self.shown.append((self.n, self.postfix))  # the postfix while step n ran
        self.n += k

    def close(self) -> None:
        pass


def test_progress_postfix_names_the_threat_of_each_step(tiny_files, tmp_path: Path) -> None:
    from benchmark.compose import compose_spec
    from benchmark.data import load_evalset
    from benchmark.models import load_model
    from benchmark.runner import count_steps, run_pieces

    ckpt, npz = tiny_files
    spec, _ = compose_spec(tiny_overrides(ckpt, npz) + [
        "corruption=noise", "corruption.severities=[1,2]",
        "corruption.corruptions=[gaussian_noise,shot_noise]", "corruption.baseline=null",
        "fault=scaling", "validation=off", "groups=none"])
    data = load_evalset(spec.data)
    models = [load_model(m, torch.device("cpu")) for m in spec.models.values()]
    bar = _Bar()
    run_pieces(spec, models, data, tmp_path / "out", "k" * 64, bar)
    shown = [s for _, s in bar.shown]
    assert len(shown) == count_steps(spec)
    faults = [f.name for f in spec.fault.faults]
    assert shown == ["tiny@v1 clean", "tiny@v1 fgsm eps=0.1", "tiny@v1 fgsm eps=0.3",
                     "tiny@v1 gaussian_noise severity=1", "tiny@v1 gaussian_noise severity=2",
                     "tiny@v1 shot_noise severity=1", "tiny@v1 shot_noise severity=2",
                     *[f"tiny@v1 {f}" for f in faults]]
    assert not any("corruptions" in s or "faults" in s for s in shown)


@pytest.mark.slow
def test_rtb_run_console_is_concise(run_cli, tiny_files, tmp_path: Path) -> None:
    """The real command: no INFO lines, no migration log on a fresh store,
    one line for the small groups, the tables; ``-v`` adds the details."""
    ckpt, npz = tiny_files
    args = [*tiny_overrides(ckpt, npz, versions=("v1", "v2")), f"store={tmp_path / 's.sqlite'}"]
    res = run_cli("run", *args, f"hydra.run.dir={tmp_path / 'a'}")
    assert res.returncode == 0, res.stderr
    out = res.stdout.strip().splitlines()
    assert len(out) <= 50
    assert not any("[INFO]" in line for line in out), out
    assert not any("Migrating" in line for line in res.stdout.splitlines() + res.stderr.splitlines())
    assert sum("reported as too small" in line for line in out) <= 1
    assert any(line.startswith("clean ") for line in out)
    assert out[-1].startswith("details: rtb run ... -v")
    assert "FutureWarning" not in res.stderr and "torch.jit" not in res.stderr
    res_v = run_cli("run", *args, "-v", f"hydra.run.dir={tmp_path / 'b'}")
    assert res_v.returncode == 0, res_v.stderr
    assert "[INFO]" in res_v.stdout and "details:" not in res_v.stdout
    assert not re.search("Migrating", res_v.stdout)


def _ctx(x: torch.Tensor, y: torch.Tensor) -> DataContext:
    return DataContext(x=x, y=y, classes=["0", "1", "2"], name="blobs", input_shape=(1, 8, 8))


def test_check_messages_read_well() -> None:
    d = make_evalset(n=30)
    full = d.x.clone()
    full.view(30, -1)[0, 0], full.view(30, -1)[0, 1] = 0.0, 1.0
    msg = check_input_range(_ctx(full, d.y)).message
    assert msg == "values span the whole input range [0, 1]."
    inner = d.x.clamp(0.2, 0.8)
    inner.view(30, -1)[0, 0], inner.view(30, -1)[0, 1] = 0.2, 0.8
    assert check_input_range(_ctx(inner, d.y)).message == \
        "values lie in [0.2, 0.8], inside the input range [0, 1]."
    balanced = check_class_imbalance(_ctx(d.x, d.y))
    assert balanced.status == "pass"
    assert balanced.message == "balanced: each of the 3 classes present has 10 samples."
    skewed = check_class_imbalance(replace(_ctx(d.x, d.y), y=torch.tensor([0] * 20 + [1] * 5 + [2] * 5)))
    assert skewed.message == "largest/smallest class ratio 4.00 (0: 20, 1: 5)."


def test_worst_group_names_no_group_when_all_tie() -> None:
    ms = [_m("v1", "attack", "pgd", 0.3, "accuracy_worst_group", 0.0, "class", "0"),
          _m("v1", "attack", "pgd", 0.3, "accuracy_best_group", 0.0, "class", "0"),
          _m("v2", "attack", "pgd", 0.3, "accuracy_worst_group", 0.4, "class", "3"),
          _m("v2", "attack", "pgd", 0.3, "accuracy_best_group", 0.9, "class", "1")]
    table = worst_group_table(ms)
    assert "0.000 all class tie" in table and "class=0" not in table
    assert "0.400 class=3" in table
