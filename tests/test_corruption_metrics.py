"""Corruption metrics (accuracy per corruption, CE, mCE, relative mCE)
against an independent computation, the corruption config section, the
runner's corruption outcomes, the CIFAR-10-C loader, and `rtb run` with
corruption and fault suites."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from attacks.corruption_suite import (
    corruption_outcomes,
    suite_steps,
)
from benchmark.console import corruption_table
from benchmark.core.errors import ConfigError, DataError
from benchmark.core.specs import CorruptionSuiteSpec, DataSpec
from benchmark.core.types import Outcome, Threat
from benchmark.data import load_evalset
from benchmark.schema import parse_corruption_suite
from metrics.corruption import SUMMARY_THREAT, corruption_measurements
from tests.conftest import make_evalset, make_model, tiny_overrides

CORRUPTIONS = ["gaussian_noise", "contrast", "speckle_noise"]  # two common, one extra


def synthetic_outcomes(seed: int = 0, n: int = 50) -> list[Outcome]:
    """Random per-sample correctness for two versions, clean and 3 corruptions x 5 severities."""
    rng = np.random.default_rng(seed)
    outs = []
    for version, p in (("v1", 0.55), ("v2", 0.7)):
        def make(threat: Threat, prob: float, _v: str = version) -> Outcome:
            correct = rng.random(n) < prob
            return Outcome(model="net", version=_v, threat=threat,
                           pred=np.where(correct, 0, 1), correct=correct)

        outs.append(make(Threat("clean", "clean"), 0.95))
        for c in CORRUPTIONS:
            for s in range(1, 6):
                outs.append(make(Threat("corruption", c, float(s)), p - 0.05 * s))
    return outs


def reference_errors(outs: list[Outcome]) -> tuple[dict, dict]:
    err: dict = {}
    clean: dict = {}
    for o in outs:
        e = 1 - o.correct.mean()
        if o.threat.family == "clean":
            clean[o.version] = e
        else:
            err.setdefault(o.version, {}).setdefault(o.threat.name, {})[o.threat.param] = e
    return err, clean


def by_key(ms: list) -> dict:
    return {(m.version, m.threat, m.metric): m for m in ms}


def test_ce_mce_and_relative_mce_match_the_definitions() -> None:
    outs = synthetic_outcomes()
    ms = by_key(corruption_measurements(outs, "net@v1"))
    err, clean = reference_errors(outs)
    for v in ("v1", "v2"):
        ces, rces = [], []
        for c in CORRUPTIONS:
            e, b = err[v][c], err["v1"][c]
            ce = sum(e.values()) / sum(b.values())
            rce = (sum(x - clean[v] for x in e.values())
                   / sum(x - clean["v1"] for x in b.values()))
            assert ms[(v, c, "ce")].value == pytest.approx(ce)
            assert ms[(v, c, "relative_ce")].value == pytest.approx(rce)
            assert ms[(v, c, "accuracy_mean")].value == pytest.approx(1 - np.mean(list(e.values())))
            if c != "speckle_noise":  # mCE averages the common corruptions only
                ces.append(ce)
                rces.append(rce)
        assert ms[(v, SUMMARY_THREAT, "mce")].value == pytest.approx(np.mean(ces))
        assert ms[(v, SUMMARY_THREAT, "relative_mce")].value == pytest.approx(np.mean(rces))
        assert ms[(v, SUMMARY_THREAT, "mean_error")].value == pytest.approx(
            np.mean([x for c in CORRUPTIONS[:2] for x in err[v][c].values()]))
    assert ms[("v1", SUMMARY_THREAT, "mce")].value == pytest.approx(1.0)
    m = ms[("v2", SUMMARY_THREAT, "mce")]
    assert "net@v1" in m.definition and "gaussian_noise, contrast" in m.definition
    assert m.family == "corruption" and m.param is None and m.n == 50
    assert all(x.definition for x in ms.values())
    table = corruption_table(list(ms.values()))
    assert "mce" in table and "net@v2" in table and "normalised by net@v1" in table


def test_missing_baseline_falls_back_to_the_first_version_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    outs = synthetic_outcomes()
    with caplog.at_level(logging.WARNING):
        ms = corruption_measurements(outs, "net@v9")
    assert caplog.text.count("net@v9 is not among the evaluated versions") == 1
    assert "normalised by the first evaluated version, net@v1" in caplog.text
    by = {(m.version, m.threat, m.metric): m for m in ms}
    assert by[("v1", SUMMARY_THREAT, "mce")].value == pytest.approx(1.0)
    mce = by[("v2", SUMMARY_THREAT, "mce")]
    assert mce.definition.endswith(
        "net@v1 (the first evaluated version; net@v9 was not evaluated)") or (
        "net@v1 (the first evaluated version; net@v9 was not evaluated)" in mce.definition)
    assert {m.metric for m in ms} >= {"ce", "relative_ce", "mce", "relative_mce"}
    assert {(m.model, m.version) for m in ms} == {("net", "v1"), ("net", "v2")}
    assert corruption_measurements(outs, None) and corruption_measurements(
        [o for o in outs if o.threat.family == "clean"], "net@v1") == []


def test_zero_baseline_error_gives_nan_ce_left_out_of_mce() -> None:
    outs = synthetic_outcomes()
    for o in outs:
        if o.version == "v1" and o.threat.name == "contrast":
            o.correct[:] = True
    ms = by_key(corruption_measurements(outs, "net@v1"))
    assert math.isnan(ms[("v2", "contrast", "ce")].value)
    mce = ms[("v2", SUMMARY_THREAT, "mce")]
    assert mce.value == pytest.approx(ms[("v2", "gaussian_noise", "ce")].value)
    assert "no error: contrast" in mce.definition


def test_corruption_section_parsing() -> None:
    spec = parse_corruption_suite({"name": "s", "corruptions": ["fog", "fog", "contrast"],
                                   "severities": [3, 1], "param_set": "cifar",
                                   "baseline": "m@v1", "seed": 3})
    assert spec == CorruptionSuiteSpec(name="s", corruptions=("fog", "contrast"),
                                       severities=(1, 3), param_set="cifar", baseline="m@v1",
                                       seed=3)
    assert len(parse_corruption_suite({"corruptions": "all", "severities": 2}).corruptions) == 19
    bad = [
        ({"corruptions": ["nope"]}, "Unknown corruption 'nope' in `corruption.corruptions`"),
        ({"corruptions": []}, "non-empty list of corruption names"),
        ({"corruptions": ["fog"], "severities": [6]}, "integers in 1..5"),
        ({"corruptions": ["fog"], "severities": [True]}, "integers in 1..5"),
        ({"corruptions": ["fog"], "param_set": "tiny"}, "`corruption.param_set`"),
        ({"corruptions": ["fog"], "baseline": "v1"}, "NAME@VERSION"),
        ({"corruptions": ["fog"], "seed": "x"}, "`corruption.seed`"),
        ({"corruptions": ["fog"], "level": 1}, "Unknown config key `corruption.level`"),
        ("all", "a mapping"),
    ]
    for d, msg in bad:
        with pytest.raises(ConfigError, match=msg):
            parse_corruption_suite(d)
    assert suite_steps(spec, None) == 4 and suite_steps(None, None) == 0


def test_corruption_outcomes_are_per_sample_and_batch_independent() -> None:
    data = make_evalset(n=24)
    model = make_model()
    suite = CorruptionSuiteSpec(name="t", corruptions=("gaussian_noise", "contrast"),
                                severities=(1, 5))
    a = list(corruption_outcomes(suite, model, data, batch_size=5, seed=0))
    b = list(corruption_outcomes(suite, model, data, batch_size=24, seed=0))
    assert [(o.threat.name, o.threat.param) for o in a] == [
        ("gaussian_noise", 1.0), ("gaussian_noise", 5.0), ("contrast", 1.0), ("contrast", 5.0)]
    for x, y in zip(a, b, strict=True):
        assert x.threat.family == "corruption" and len(x.pred) == 24
        assert np.array_equal(x.pred, y.pred)
        np.testing.assert_allclose(x.columns["l2"], y.columns["l2"], rtol=1e-5)
        assert (x.columns["finite"] == 1).all()
    # the contrast outcome is the model's prediction on the published formula
    means = data.x.mean(dim=(2, 3), keepdim=True)
    expected = model.module((data.x - means) * 0.15 + means).argmax(1).numpy()
    assert np.array_equal(a[3].pred, expected)
    assert a[3].threat.params["param_set"] == "cifar"


# ------------------------------------------------------------ CIFAR-10-C


def write_cifar_c(root: Path, n: int = 10, corruption: str = "fog") -> np.ndarray:
    """Tiny files in the published format: N x 32 x 32 x 3 uint8 in 5 blocks, labels."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    np.save(root / f"{corruption}.npy", images)
    np.save(root / "labels.npy", (np.arange(n) % 10).astype(np.uint8))
    return images


def test_cifar10c_loader_reads_one_severity_block(tmp_path: Path) -> None:
    images = write_cifar_c(tmp_path, n=15)
    spec = DataSpec(name="c10c", loader="cifar10c", root=str(tmp_path),
                    options={"corruption": "fog", "severity": 4})
    data = load_evalset(spec)
    assert data.x.shape == (3, 3, 32, 32) and data.y.tolist() == [9, 0, 1]
    torch.testing.assert_close(data.x, torch.from_numpy(images[9:12]).permute(0, 3, 1, 2)
                               .float() / 255)
    assert data.classes[0] == "airplane"
    hundred = load_evalset(DataSpec(name="c100c", loader="cifar10c", root=str(tmp_path),
                                    options={"corruption": "fog", "classes": "cifar100"}))
    assert hundred.num_classes == 100 and len(hundred) == 3


def test_cifar10c_loader_errors(tmp_path: Path) -> None:
    write_cifar_c(tmp_path, n=10)

    def load(**options: object) -> None:
        load_evalset(DataSpec(name="c", loader="cifar10c", root=str(tmp_path),
                              options={"corruption": "fog", **options}))

    with pytest.raises(DataError, match="found: fog, labels"):
        load(corruption="snow")
    with pytest.raises(DataError, match="options.severity in 1..5"):
        load(severity=6)
    with pytest.raises(DataError, match="set data.root=DIR"):
        load_evalset(DataSpec(name="c", loader="cifar10c"))
    np.save(tmp_path / "fog.npy", np.zeros((7, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(DataError, match="N a multiple of 5"):
        load()
    (tmp_path / "fog.npy").write_bytes(b"not an npy file")
    with pytest.raises(DataError, match="could not read"):
        load()


# ------------------------------------------------------------------- CLI


def _record(tmp_path: Path) -> tuple[dict, pd.DataFrame]:
    path = next(tmp_path.glob("outputs/**/record.json"))
    return json.loads(path.read_text()), pd.read_parquet(path.parent / "outcomes.parquet")


@pytest.mark.slow
def test_cli_run_reports_corruptions_mce_and_faults(tiny_files: tuple[Path, Path], run_cli,
                                                     tmp_path: Path) -> None:
    ckpt, npz = tiny_files
    args = [*tiny_overrides(ckpt, npz, versions=("v1", "v2")), "corruption=noise",
            "corruption.corruptions=[glass_blur,fog,contrast,speckle_noise]",
            "corruption.baseline=tiny@v1", "corruption.severities=[1,5]", "fault=all",
            "attack.fgsm.eps=[0.1]", "store=null"]
    res = run_cli("run", *args, "-v")  # -v: every severity (the default shows their mean)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "contrast severity=5" in res.stdout and "nan_values" in res.stdout
    record, outcomes = _record(tmp_path)
    ms = record["measurements"]
    acc = {(m["version"], m["threat"], m["param"]) for m in ms
           if m["metric"] == "accuracy" and m["family"] == "corruption"}
    assert ("v2", "fog", 5.0) in acc and len(acc) == 2 * 4 * 2
    mce = {m["version"]: m for m in ms if m["metric"] == "mce"}
    assert mce["v1"]["value"] == pytest.approx(1.0) and "tiny@v1" in mce["v2"]["definition"]
    ce = {(m["version"], m["threat"]): m["value"] for m in ms if m["metric"] == "ce"}
    assert ce[("v2", "contrast")] == pytest.approx(1.0)  # v2 shares v1's checkpoint
    faults = outcomes[outcomes.family == "fault"]
    assert set(faults.threat) >= {"nan_values", "scale_255", "float16"}
    nan = faults[faults.threat == "nan_values"]  # 1% of 64 values: some images hit
    assert (nan.finite == 0).any() and not nan[nan.finite == 0].correct.any()
    assert (faults[faults.threat == "float16"].finite == 1).all()


@pytest.mark.slow
def test_cli_run_all_corruptions(tiny_files: tuple[Path, Path], run_cli,
                                 tmp_path: Path) -> None:
    ckpt, npz = tiny_files
    args = [*tiny_overrides(ckpt, npz), "corruption=all", "corruption.baseline=tiny@v1",
            "attack.fgsm.eps=[0.1]", "store=null"]
    res = run_cli("run", *args, "-v")  # -v: every severity (the default shows their mean)
    assert res.returncode == 0, res.stderr[-2000:]
    record, outcomes = _record(tmp_path)
    assert len(outcomes[outcomes.family == "corruption"]) == 19 * 5 * 30
    assert any(m["metric"] == "mce" for m in record["measurements"])


def test_cli_rejects_a_bad_corruption_suite(run_cli) -> None:
    res = run_cli("run", "corruption=nope")
    assert res.returncode == 2 and "Unknown corruption 'nope'" in res.stderr
    res = run_cli("run", "corruption=noise", "corruption.severities=[0]")
    assert res.returncode == 2 and "integers in 1..5" in res.stderr
    assert "Traceback" not in res.stderr
