"""Data checks (each triggered and not), the policy parser, and the pre-run
checks of the runner."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import make_evalset, make_model, tiny_overrides, write_checkpoint

from benchmark.compose import compose_spec, conf_dir
from benchmark.console import checks_table
from benchmark.core.errors import ConfigError
from benchmark.core.specs import ValidationPolicy
from benchmark.core.types import CheckResult
from benchmark.schema import parse_validation
from metrics.checks import get_check, list_checks, register_check
from metrics.data_checks import DataContext, channel_means_stds, close_pairs, robust_z
from metrics.validation import (
    ValidationFailed,
    run_data_checks,
    run_pre_checks,
    run_validation,
)

CHANNEL_SCALE = torch.tensor([1.0, 0.6, 0.3]).view(1, 3, 1, 1)


def rgb_set(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """3-channel blobs whose channels differ in brightness (so an order shows)."""
    d = make_evalset(n=n, channels=3, size=8, classes=3, seed=seed)
    return d.x * CHANNEL_SCALE, d.y


def clean_context(**changes: object) -> DataContext:
    x, y = rgb_set(60, seed=0)
    train_x, _ = rgb_set(120, seed=1)
    mean, std = channel_means_stds(train_x)
    ctx = DataContext(x=x, y=y, classes=["0", "1", "2"], name="blobs", input_shape=(3, 8, 8),
                      train_x=train_x, reference_mean=tuple(mean.tolist()),
                      reference_std=tuple(std.tolist()), reference_source="training set")
    return replace(ctx, **changes)


def with_x(fn: Callable[[torch.Tensor], torch.Tensor]) -> DataContext:
    ctx = clean_context()
    return replace(ctx, x=fn(ctx.x.clone()))


def _set(x: torch.Tensor, idx: object, value: object) -> torch.Tensor:
    x[idx] = value  # type: ignore[index]
    return x


def _dark(x: torch.Tensor) -> torch.Tensor:
    x[:4] *= 0.02
    return x


def _imbalanced() -> DataContext:
    ctx = clean_context()
    keep = torch.cat([torch.nonzero(ctx.y == 0).flatten(), torch.tensor([1, 2, 4])])
    return replace(ctx, x=ctx.x[keep], y=ctx.y[keep])


def _without_class_2() -> DataContext:
    ctx = clean_context()
    keep = ctx.y != 2
    return replace(ctx, x=ctx.x[keep], y=ctx.y[keep])


def _blurred(x: torch.Tensor) -> torch.Tensor:
    small = torch.nn.functional.interpolate(x, size=(4, 4), mode="bilinear", align_corners=False)
    return torch.nn.functional.interpolate(small, size=(8, 8), mode="bilinear",
                                           align_corners=False)


# check -> (a context that triggers it, the status it must give, samples it must name)
TRIGGERS: dict[str, tuple[Callable[[], DataContext], str, list[int] | None]] = {
    "dtype_shape": (lambda: clean_context(input_shape=(3, 16, 16)), "fail", None),
    "finite_values": (lambda: with_x(lambda x: _set(x, (3, 0, 0, 0), float("nan"))), "fail", [3]),
    "input_range": (lambda: with_x(lambda x: _set(x, 5, x[5] + 2.0)), "fail", [5]),
    "input_scale": (lambda: with_x(lambda x: (x * 255).round()), "fail", None),
    "channel_stats": (lambda: with_x(lambda x: x * 0.226 + 0.449), "fail", None),
    "channel_order": (lambda: with_x(lambda x: x.flip(1)), "fail", None),
    "constant_images": (lambda: with_x(lambda x: _set(x, 7, 0.5)), "warn", [7]),
    "duplicates": (lambda: with_x(lambda x: _set(x, 9, x[2])), "warn", [2]),
    "train_overlap": (lambda: replace(clean_context(),
                                      x=_set(clean_context().x, 4, clean_context().train_x[10])),
                      "warn", [4]),
    "label_range": (lambda: replace(clean_context(), y=_set(clean_context().y, 6, 7)),
                    "fail", [6]),
    "class_coverage": (_without_class_2, "warn", None),
    "class_imbalance": (_imbalanced, "warn", None),
    "property_outliers": (lambda: with_x(_dark), "warn", [0, 1, 2, 3]),
}


def test_every_data_check_has_a_trigger() -> None:
    assert set(TRIGGERS) == set(list_checks("data"))


@pytest.mark.parametrize("name", list_checks("data"))
def test_data_check_passes_on_clean_data(name: str) -> None:
    result = get_check(name)(clean_context())
    assert result.status == "pass", result.message
    assert result.check == name


@pytest.mark.parametrize("name", sorted(TRIGGERS))
def test_data_check_flags_its_fault(name: str) -> None:
    make, status, samples = TRIGGERS[name]
    result = get_check(name)(make())
    assert result.status == status, result.message
    if samples is not None:
        named = result.evidence.get("samples")
        if named is None:  # duplicates name pairs, outliers name samples per property
            pairs = result.evidence.get("exact_pairs") or result.evidence.get("near_pairs")
            named = sorted({i for p in pairs for i in p[:1]}) if pairs else sorted(
                {i for p in result.evidence["properties"].values() for i in p["samples"]})
        assert sorted(named) == samples


def test_input_scale_tells_normalized_from_0_255() -> None:
    normalized = get_check("input_scale")(with_x(lambda x: (x - x.mean()) / x.std()))
    assert normalized.status == "fail" and normalized.evidence["looks"] == "normalized"
    assert "already normalized" in normalized.message
    scaled = get_check("input_scale")(with_x(lambda x: (x * 255).round()))
    assert scaled.evidence["looks"] == "0-255" and "divide by 255" in scaled.message


def test_near_duplicates_are_told_from_exact_ones() -> None:
    result = get_check("duplicates")(with_x(lambda x: _set(x, 9, x[2] + 0.001)))
    assert result.evidence["n_exact"] == 0 and result.evidence["near_pairs"][0][:2] == [2, 9]


def test_channel_order_names_reversed_channels() -> None:
    result = get_check("channel_order")(with_x(lambda x: x.flip(1)))
    assert "BGR" in result.message and result.evidence["best_order"] == [2, 1, 0]


def test_whole_set_blurred_fails_property_outliers_with_the_property_named() -> None:
    result = get_check("property_outliers")(with_x(_blurred))
    assert result.status == "fail"
    assert "contrast" in result.evidence["properties"] and "contrast" in result.message


def test_declared_normalization_only_warns() -> None:
    ctx = with_x(lambda x: x * 0.226 + 0.449)
    ctx = replace(ctx, reference_source="declared normalization")
    assert get_check("channel_stats")(ctx).status == "warn"


def test_checks_without_reference_are_skipped() -> None:
    ctx = clean_context(train_x=None, reference_mean=None, reference_std=None)
    for name in ("channel_stats", "channel_order", "train_overlap"):
        result = get_check(name)(ctx)
        assert result.status == "pass" and result.evidence["skipped"], name


@pytest.mark.parametrize("seed", [0, 1])
def test_close_pairs_match_brute_force(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(40, 3, 20, 20, generator=g)  # 1200 values: the pooled path
    b = torch.rand(30, 3, 20, 20, generator=g)
    a[7] = b[3] + 0.004 * torch.randn(3, 20, 20, generator=g)
    a[11] = a[2]
    b[5] = a[20] + 0.02
    rms = 0.01
    ref = [(i, j) for i in range(len(a)) for j in range(len(b))
           if float((a[i] - b[j]).pow(2).mean().sqrt()) <= rms]
    assert sorted((i, j) for i, j, _ in close_pairs(a, b, rms)) == ref
    ref_self = [(i, j) for i in range(len(a)) for j in range(i + 1, len(a))
                if float((a[i] - a[j]).pow(2).mean().sqrt()) <= rms]
    assert sorted((i, j) for i, j, _ in close_pairs(a, None, rms)) == ref_self == [(2, 11)]


def test_robust_z_matches_scipy() -> None:
    from scipy.stats import median_abs_deviation

    rng = np.random.default_rng(0)
    ref, values = rng.normal(size=200), rng.normal(size=10)
    expected = (values - np.median(ref)) / median_abs_deviation(ref, scale="normal")
    np.testing.assert_allclose(robust_z(values, ref), expected, rtol=1e-3)


def test_channel_stats_match_numpy() -> None:
    x = torch.rand(5, 3, 4, 4)
    mean, std = channel_means_stds(x)
    arr = x.numpy().transpose(1, 0, 2, 3).reshape(3, -1)
    np.testing.assert_allclose(mean, arr.mean(1), rtol=1e-6)
    np.testing.assert_allclose(std, arr.std(1), rtol=1e-5)


# -- registry -----------------------------------------------------------------------


def test_registry_rejects_duplicates_and_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_check("finite_values", "data")(lambda ctx: CheckResult("x", "pass", ""))
    with pytest.raises(ValueError, match="kind"):
        register_check("new_check", "other")
    with pytest.raises(ConfigError, match="Unknown check 'nope'; expected one of: dtype_shape"):
        get_check("nope")


def test_a_check_returning_an_unknown_status_raises() -> None:
    @register_check("test_bad_status", "data")
    def bad(ctx: DataContext) -> CheckResult:
        return CheckResult("test_bad_status", "maybe", "")

    try:
        with pytest.raises(ValueError, match="pass, warn or fail"):
            get_check("test_bad_status")(clean_context())
    finally:
        from metrics import checks_registry

        del checks_registry._CHECKS["test_bad_status"]


# -- policy ---------------------------------------------------------------------------


def default_policy_dict() -> dict:
    return yaml.safe_load((conf_dir() / "validation" / "default.yaml").read_text())


def test_default_policy_parses_and_keeps_the_check_defaults() -> None:
    policy = parse_validation(default_policy_dict())
    assert policy.on_fail == "stop" and policy.data and policy.model
    for check, values in policy.thresholds.items():
        for key, value in values.items():
            assert get_check(check).defaults[key] == value, (check, key)


def test_composed_policies() -> None:
    assert compose_spec([])[0].validation.on_fail == "stop"
    assert compose_spec(["validation=report_only"])[0].validation.on_fail == "report"
    off = compose_spec(["validation=off"])[0].validation
    assert not off.data and not off.model
    tuned = compose_spec(["validation.thresholds.class_imbalance.warn_ratio=5"])[0]
    assert tuned.validation.thresholds["class_imbalance"]["warn_ratio"] == 5.0


@pytest.mark.parametrize("change, message", [
    ({"on_fail": "maybe"}, "Expected `validation.on_fail` to be stop or report, but got 'maybe'."),
    ({"colour": 1}, "Unknown config key `validation.colour`"),
    ({"skip": ["nope"]}, "Unknown check 'nope'"),
    ({"thresholds": {"nope": {}}}, "Unknown check 'nope'"),
    ({"thresholds": {"duplicates": {"radius": 1}}},
     "Unknown threshold `validation.thresholds.duplicates.radius`; check 'duplicates' takes: "
     "near_rms, fail_fraction."),
    ({"thresholds": {"duplicates": {"near_rms": "x"}}}, "to be a finite number"),
    ({"thresholds": {"duplicates": {"near_rms": None}}}, "null only where the default is null"),
    ({"thresholds": {"duplicates": {"near_rms": -1}}}, "a non-negative number"),
    ({"thresholds": {"batch_invariance": {"max_samples": 2.5}}}, "a positive integer"),
    ({"data": "yes"}, "Expected `validation.data` to be true or false"),
    ({"probe_size": 1}, "an integer >= 2"),
    ({"input_range": [1, 0]}, "low < high"),
    ({"reference_mean": [0.5]}, "given together with reference_std"),
    ({"reference_mean": [0.5], "reference_std": [0.0]}, "positive numbers"),
])
def test_policy_errors(change: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_validation({**default_policy_dict(), **change})
    assert message in str(err.value)


def test_skip_and_thresholds_are_applied() -> None:
    ctx = with_x(lambda x: _set(x, 7, 0.5))
    policy = ValidationPolicy(skip=("duplicates",),
                              thresholds={"constant_images": {"fail_fraction": 0.0}})
    results = {r.check: r for r in run_data_checks(policy, ctx)}
    assert "duplicates" not in results
    assert results["constant_images"].status == "fail"


# -- runner hook ----------------------------------------------------------------------


def test_pre_checks_stop_on_fail_and_report_otherwise() -> None:
    data = make_evalset()
    data.x[0, 0, 0, 0] = float("nan")
    model = make_model()
    with pytest.raises(ValidationFailed) as err:
        run_pre_checks(ValidationPolicy(), data, [model])
    assert err.value.exit_code == 3
    assert "data:blobs finite_values" in str(err.value) and "\n" not in str(err.value)
    results = run_pre_checks(ValidationPolicy(on_fail="report"), data, [model])
    assert {r.check for r in results if r.status == "fail"} == {"finite_values"}
    assert run_pre_checks(None, data, [model]) == []


def test_model_checks_use_a_clean_probe_when_the_data_is_broken() -> None:
    data = make_evalset()
    data.x[:, :, 0, 0] = float("nan")  # every sample broken: the probe falls back to noise
    results = run_validation(ValidationPolicy(), data, [make_model()], what="model")
    assert all(r.status == "pass" for r in results), [r.message for r in results]


def test_checks_table_counts_per_subject() -> None:
    data = make_evalset()
    data.x[2] = 0.0
    results = run_validation(ValidationPolicy(), data, [make_model()])
    table = checks_table(results)
    assert "constant_images (warn)" in table
    lines = {line.split()[0]: line.split()[1:4] for line in table.splitlines()[2:]}
    data_statuses = [r.status for r in results if r.subject == "data:blobs"]
    assert lines["data:blobs"] == [str(data_statuses.count(s)) for s in ("pass", "warn", "fail")]
    assert data_statuses.count("warn") >= 1
    assert lines["tiny@v1"] == [str(len(list_checks("model"))), "0", "0"]


@pytest.mark.slow
def test_rtb_run_stops_before_any_attack_on_a_failed_check(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    from benchmark.cli import main

    x = (make_evalset(n=30).x[:, 0].numpy()).astype(np.float32)
    x[3, 2, 2] = np.nan
    npz = tmp_path / "nan.npz"
    np.savez(npz, x=x, y=make_evalset(n=30).y.numpy())
    ckpt = write_checkpoint(tmp_path / "tiny.pt")
    overrides = tiny_overrides(ckpt, npz) + [f"hydra.run.dir={tmp_path / 'out'}", "store=null"]
    assert main(["run", *overrides]) == 3
    err = capsys.readouterr().err
    assert "Validation failed before any attack: data:npz finite_values" in err
    assert not (tmp_path / "out" / "record.json").exists()
