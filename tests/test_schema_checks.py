"""Schema checks and tabular drift: every pipeline fault is caught by at
least one check (on a tiny synthetic table and on the real arrests table),
clean batches seldom fail, each check fires on its own case, and the
statistics agree with independent references (statsmodels, scipy, sklearn,
simulation)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from attacks.tabular_faults import apply_tabular_fault, tabular_fault_applies, tabular_fault_names
from benchmark.core.tabular import TabularSchema
from metrics.drift import DriftConfig, ModelLogits, population_stability_index, tabular_drift
from metrics.schema_checks import (
    TABULAR_CHECKS,
    SchemaCheckConfig,
    _correlations,
    _rise,
    register_schema_check,
    run_schema_checks,
    schema_check_names,
)
from tests.test_tabular_faults import people, schema_of

#: Which checks are designed to catch each fault ("drift" = drift of a column
#: the fault broke). Every registered fault needs an entry.
CATCHERS: dict[str, set[str]] = {
    "unit_change": {"range"},
    "swapped_columns": {"range", "dtype", "correlation_shift"},
    "renamed_category": {"categories"},
    "missing_sentinel": {"range", "categories", "dtype"},
    "stale_constant": {"constant_columns"},
    "standardised_twice": {"range", "dtype", "drift"},
    "misaligned_join": {"correlation_shift"},
    "float_truncated": {"dtype"},
    "null_as_zero": {"value_spike", "range"},
    "vocabulary_order": {"drift"},
    "duplicated_rows": {"duplicates"},
}
ARRESTS_SENSITIVE = ["colour", "sex", "age", "citizen", "employed"]


def failed(reference: pd.DataFrame, batch: pd.DataFrame, schema: TabularSchema,
           **kw: Any) -> set[str]:
    """Failed checks, plus ``drift`` when a column the fault broke (or any
    column, for a clean batch) drifted."""
    out = {r.check for r in run_schema_checks(reference, batch, schema, **kw)
           if r.status == "fail"}
    touched = set(batch.attrs.get("tabular_fault", {}).get("columns", schema.names))
    if any(d.drifted and d.feature in touched for d in tabular_drift(reference, batch, schema)):
        out.add("drift")
    return out


@pytest.fixture(scope="module")
def synthetic() -> tuple[pd.DataFrame, pd.DataFrame, TabularSchema]:
    ref = people(600, 0)
    return ref, people(300, 99), schema_of(ref)


@pytest.fixture(scope="module")
def arrests() -> tuple[pd.DataFrame, pd.DataFrame, TabularSchema]:
    """The real arrests table, split 80/20 stratified on the label (seeded)."""
    from sklego.datasets import load_arrests

    df = load_arrests(as_frame=True)
    g = np.random.default_rng(0)
    test = np.zeros(len(df), dtype=bool)
    for _, idx in df.groupby("released").indices.items():
        test[g.choice(idx, size=round(0.2 * len(idx)), replace=False)] = True
    ref, batch = df[~test].reset_index(drop=True), df[test].reset_index(drop=True)
    return ref, batch, TabularSchema.infer(ref, "released", sensitive=ARRESTS_SENSITIVE)


def test_every_fault_has_its_catchers() -> None:
    assert set(CATCHERS) == set(tabular_fault_names())
    assert all(c - {"drift"} <= set(schema_check_names()) for c in CATCHERS.values())


@pytest.mark.parametrize("fault", tabular_fault_names())
def test_each_tabular_fault_is_caught(fault: str, synthetic: tuple) -> None:
    ref, batch, schema = synthetic
    for seed in range(4):  # the seed picks the column and rows
        broken = apply_tabular_fault(fault, batch, schema, seed)
        got = failed(ref, broken, schema)
        assert got & CATCHERS[fault], (fault, seed, broken.attrs["tabular_fault"]["columns"], got)


@pytest.mark.parametrize("fault", tabular_fault_names())
def test_each_tabular_fault_is_caught_on_arrests(fault: str, arrests: tuple) -> None:
    ref, batch, schema = arrests
    assert not failed(ref, batch, schema)  # the clean test split passes
    if not tabular_fault_applies(fault, schema):
        assert fault == "float_truncated"  # arrests has no real-valued column
        return
    runs: list[dict[str, Any]] = [{} for _ in range(3)]
    if fault == "misaligned_join":
        # Shifting a column is invisible when it is nearly independent of every
        # other column and the label (arrests' `sex`, |r| <= 0.11): then the
        # shifted table has the same joint distribution. Shown on the columns
        # that carry information.
        runs = [{"column": "checks"}, {"column": "employed"}, {"column": "citizen"}]
    for seed, params in enumerate(runs):
        broken = apply_tabular_fault(fault, batch, schema, seed, params)
        got = failed(ref, broken, schema)
        assert got & CATCHERS[fault], (fault, seed, broken.attrs["tabular_fault"]["columns"], got)


def test_clean_batches_seldom_fail(synthetic: tuple) -> None:
    ref, _, schema = synthetic
    fails: Counter[str] = Counter()
    warns: Counter[str] = Counter()
    for seed in range(1, 31):
        for r in run_schema_checks(ref, people(300, seed), schema):
            (fails if r.status == "fail" else warns if r.status == "warn" else Counter())[
                r.check] += 1
    # Each statistical check runs at family-wise level 0.01: expected 0.3
    # false failures in 30 batches; 3 or more would have chance < 0.4%.
    assert all(v <= 2 for v in fails.values()), fails


def test_misaligned_join_keeps_every_marginal_and_breaks_the_joint(synthetic: tuple,
                                                                   arrests: tuple) -> None:
    for ref, batch, schema, column in (*[(*synthetic, c) for c in ("income", "city")],
                                       (*arrests, "checks")):
        broken = apply_tabular_fault("misaligned_join", batch, schema, 0, {"column": column})
        drift = {d.feature: d for d in tabular_drift(ref, broken, schema)}
        clean = {d.feature: d for d in tabular_drift(ref, batch, schema)}
        assert drift[column].statistic == pytest.approx(clean[column].statistic)
        assert not drift[column].drifted
        shift = next(r for r in run_schema_checks(ref, broken, schema)
                     if r.check == "correlation_shift")
        assert shift.status == "fail" and column in shift.evidence["failed"], shift.message


def test_vocabulary_order_is_a_drift_of_that_column(synthetic: tuple, arrests: tuple) -> None:
    for (ref, batch, schema), column, test in ((synthetic, "city", "chi2"),
                                               (arrests, "citizen", "jensen_shannon")):
        broken = apply_tabular_fault("vocabulary_order", batch, schema, 0, {"column": column})
        assert not {r.check for r in run_schema_checks(ref, broken, schema)
                    if r.status == "fail"} & {"categories", "range", "dtype"}
        d = {d.feature: d for d in tabular_drift(ref, broken, schema)}[column]
        assert d.test == test and d.drifted
        assert all(not x.drifted for x in tabular_drift(ref, broken, schema)
                   if x.feature != column)


def test_standardised_twice_is_a_range_and_drift_failure(arrests: tuple) -> None:
    ref, batch, schema = arrests
    broken = apply_tabular_fault("standardised_twice", batch, schema, 0)
    res = {r.check: r for r in run_schema_checks(ref, broken, schema)}
    assert set(res["range"].evidence["failed"]) == {"year", "age", "checks"}
    drifted = {d.feature for d in tabular_drift(ref, broken, schema) if d.drifted}
    assert {"year", "age", "checks"} <= drifted


# -- each check on its own case ------------------------------------------------------


def by_name(results: list) -> dict[str, Any]:
    return {r.check: r for r in results}


def test_registry_and_result_shape(synthetic: tuple) -> None:
    ref, batch, schema = synthetic
    names = schema_check_names()
    assert names[:4] == ["columns", "dtype", "range", "categories"]
    assert {"missing_rate", "constant_columns", "duplicates", "label_leakage",
            "class_balance", "value_spike", "correlation_shift"} <= set(names)
    with pytest.raises(ValueError, match="already registered"):
        register_schema_check("range")
    results = run_schema_checks(ref, batch, schema)
    assert [r.check for r in results] == names
    for r in results:
        assert r.status in ("pass", "warn", "fail") and r.subject == "schema"
        assert "failed" in r.evidence and r.message.endswith(".")
        assert TABULAR_CHECKS.get(r.check).doc
    assert [r.check for r in run_schema_checks(ref, batch, schema, skip=["duplicates"])] == [
        n for n in names if n != "duplicates"]


def test_missing_column_fails_and_the_rest_still_runs(synthetic: tuple) -> None:
    ref, batch, schema = synthetic
    res = by_name(run_schema_checks(ref, batch.drop(columns="age"), schema))
    assert res["columns"].status == "fail" and res["columns"].evidence["missing"] == ["age"]
    assert "batch lacks age" in res["columns"].message
    assert res["range"].status == "pass"


def test_text_in_a_numeric_column_is_a_dtype_failure(synthetic: tuple) -> None:
    ref, batch, schema = synthetic
    broken = apply_tabular_fault("missing_sentinel", batch, schema, 0,
                                 {"column": "age", "sentinel": "?"})
    res = by_name(run_schema_checks(ref, broken, schema))
    assert res["dtype"].status == "fail" and res["dtype"].evidence["failed"] == ["age"]
    assert "30 values are not numbers (['?'])" in res["dtype"].message


def test_range_margin_and_share(synthetic: tuple) -> None:
    ref, batch, schema = synthetic
    hi = schema.column("age").high
    assert hi is not None
    one_near = batch.assign(age=batch["age"].where(batch.index != 0, hi + 1))
    res = by_name(run_schema_checks(ref, one_near, schema))["range"]
    assert res.status == "warn" and res.evidence["warned"] == ["age"]
    one_far = batch.assign(age=batch["age"].where(batch.index != 0, hi * 12))
    assert by_name(run_schema_checks(ref, one_far, schema))["range"].status == "fail"
    many_near = batch.assign(age=batch["age"].where(batch.index >= 10, hi + 1))
    assert by_name(run_schema_checks(ref, many_near, schema))["range"].status == "fail"


def test_missing_rate_rise(synthetic: tuple) -> None:
    ref, batch, schema = synthetic
    holes = batch.assign(income=batch["income"].where(batch.index % 4 != 0))
    res = by_name(run_schema_checks(ref, holes, schema))["missing_rate"]
    assert res.status == "fail" and res.evidence["failed"] == ["income"]
    assert res.evidence["columns"]["income"]["batch"] == 0.25
    # the same rate in the reference is no rise
    ref_holes = ref.assign(income=ref["income"].where(ref.index % 4 != 0))
    assert by_name(run_schema_checks(ref_holes, holes, schema))["missing_rate"].status == "pass"


def test_constant_columns_by_chance_and_in_the_reference(synthetic: tuple) -> None:
    ref, batch, schema = synthetic
    tiny = batch[batch["smoker"] == "no"].head(3)  # three rows: constant by chance (0.7^3)
    res = by_name(run_schema_checks(ref, tiny, schema))["constant_columns"]
    assert "smoker" not in res.evidence["failed"]
    flat = ref.assign(city="Lyon")
    res = by_name(run_schema_checks(flat, batch.assign(city="Lyon"), schema))["constant_columns"]
    assert res.status == "warn" and res.evidence["warned"] == ["city"]


def test_label_leakage_and_class_balance(synthetic: tuple) -> None:
    ref, batch, schema = synthetic
    g = np.random.default_rng(1)
    flip = g.random(len(ref)) < 0.03
    leak = ref.assign(leak=np.where(ref["credit"] == "good", "a", "b"),
                      noisy=np.where((ref["credit"] == "good") ^ flip, "a", "b"))
    s = TabularSchema.infer(leak, "credit")
    res = by_name(run_schema_checks(leak, leak, s))["label_leakage"]
    assert res.status == "fail" and res.evidence["failed"] == ["leak"]
    assert res.evidence["warned"] == ["noisy"]
    assert res.evidence["columns"]["leak"]["reference"] == 1.0
    assert by_name(run_schema_checks(ref, batch, schema))["label_leakage"].status == "pass"
    unlabeled = by_name(run_schema_checks(ref.drop(columns="credit"),
                                          batch.drop(columns="credit"), schema))
    assert unlabeled["label_leakage"].evidence["skipped"]
    assert unlabeled["class_balance"].evidence["skipped"]

    good = batch[batch["credit"] == "good"]
    skewed = pd.concat([good, good, batch]).reset_index(drop=True)
    res = by_name(run_schema_checks(ref, skewed, schema))["class_balance"]
    assert res.status == "fail" and "chi-squared" in res.message
    # labels may be given apart from the frames, as any array-like
    res = by_name(run_schema_checks(ref, batch, schema, y_ref=ref["credit"].to_numpy(),
                                    y_batch=list(batch["credit"])))["class_balance"]
    assert res.status == "pass"
    # or as class indices (an EvalSet's y, a tensor), read against the schema's classes
    codes = [torch.from_numpy((f["credit"] == "good").to_numpy().astype(np.int64))
             for f in (ref, batch)]
    res = by_name(run_schema_checks(ref.drop(columns="credit"), batch.drop(columns="credit"),
                                    schema, y_ref=codes[0], y_batch=codes[1]))
    assert res["class_balance"].status == "pass"
    assert res["class_balance"].evidence["classes"] == ["bad", "good"]


def test_schema_inferred_from_the_reference(synthetic: tuple) -> None:
    ref, batch, schema = synthetic
    broken = apply_tabular_fault("renamed_category", batch, schema, 0, {"column": "city"})
    res = by_name(run_schema_checks(ref, broken, None, target="credit"))
    assert res["categories"].status == "fail" and res["categories"].evidence["failed"] == [
        "city"]
    assert res["class_balance"].status == "pass"  # the target stayed a label


def test_bad_input() -> None:
    f = people(50)
    s = schema_of(f)
    with pytest.raises(ValueError, match="Expected `batch` to be a pandas DataFrame, but got "
                                         "ndarray"):
        run_schema_checks(f, f.to_numpy(), s)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Expected `schema` to be a TabularSchema or None"):
        run_schema_checks(f, f, {"columns": []})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Expected `y_batch` to have one label per row \(50\), "
                                         "but got 3"):
        run_schema_checks(f, f, s, y_batch=[1, 0, 1])
    with pytest.raises(ValueError, match="Expected `y_ref` to have no missing labels, but got 1"):
        run_schema_checks(f, f, s, y_ref=[None] + [1] * 49)
    with pytest.raises(ValueError, match=r"Expected `skip` among \['columns'"):
        run_schema_checks(f, f, s, skip=["nope"])
    with pytest.raises(ValueError, match="Expected `alpha` in \\(0, 1\\), but got 0"):
        SchemaCheckConfig(alpha=0)
    with pytest.raises(ValueError, match="leakage_warn"):
        SchemaCheckConfig(leakage_warn=0.99, leakage_fail=0.95)
    with pytest.raises(ValueError, match="Expected `reference` to be a pandas DataFrame"):
        tabular_drift(None, f, s)  # type: ignore[arg-type]


# -- statistics against independent references -------------------------------------------


def test_rise_matches_statsmodels() -> None:
    from statsmodels.stats.proportion import proportions_ztest

    for k_ref, n_ref, k_new, n_new in ((30, 600, 60, 300), (5, 1000, 9, 50), (100, 400, 90, 400)):
        _, p_sm = proportions_ztest([k_new, k_ref], [n_new, n_ref], alternative="larger")
        fail, rise, p = _rise(k_ref, n_ref, k_new, n_new, 0.01, 0.02)
        assert float(p) == pytest.approx(p_sm, rel=1e-9)
        assert float(rise) == pytest.approx(k_new / n_new - k_ref / n_ref)
        assert bool(fail) == (p_sm < 0.01 and k_new / n_new - k_ref / n_ref > 0.02)


def test_correlation_standard_error_matches_theory_and_simulation() -> None:
    g = np.random.default_rng(0)
    # normal data: n Var(r) = (1 - r^2)^2
    x = g.multivariate_normal([0, 0], [[1, 0.6], [0.6, 1]], size=200_000)
    r, v = _correlations(x)
    assert v[0, 1] == pytest.approx((1 - r[0, 1] ** 2) ** 2, rel=0.03)

    # a binary column against a skewed one: compare with the spread of r over
    # many independent samples
    def sample(n: int) -> np.ndarray:
        b = (g.random(n) < 0.2).astype(float)
        return np.column_stack([b, g.exponential(1.0, n) + 1.5 * b])

    n = 300
    rs = [np.corrcoef(sample(n).T)[0, 1] for _ in range(2000)]
    _, v = _correlations(sample(200_000))
    assert v[0, 1] / n == pytest.approx(np.var(rs), rel=0.12)


def test_drift_tests_match_scipy(synthetic: tuple) -> None:
    from scipy.stats import chi2_contingency, ks_2samp

    ref, batch, schema = synthetic
    drift = {d.feature: d for d in tabular_drift(ref, batch, schema)}
    assert drift["income"].test == "ks"
    assert drift["income"].p_value == pytest.approx(ks_2samp(ref["income"],
                                                             batch["income"]).pvalue)
    side = np.r_[np.zeros(len(ref)), np.ones(len(batch))]
    table = pd.crosstab(side, np.r_[ref["city"], batch["city"]])
    assert drift["city"].test == "chi2"
    assert drift["city"].p_value == pytest.approx(chi2_contingency(table).pvalue)
    assert drift["city"].level == pytest.approx(0.05 / len(schema.columns))


def test_psi_by_hand() -> None:
    ref = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    new = np.array([0, 1, 1, 1, 1, 2, 2, 2, 2, 2])
    p, q = np.array([0.3, 0.2, 0.5]), np.array([0.1, 0.4, 0.5])
    assert population_stability_index(ref, new, categorical=True) == pytest.approx(
        float(np.sum((q - p) * np.log(q / p))))
    assert population_stability_index(ref, ref, categorical=True) == 0.0


def test_leakage_balanced_accuracy_matches_sklearn() -> None:
    from sklearn.metrics import balanced_accuracy_score

    g = np.random.default_rng(2)
    n = 400
    y = g.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2])
    f = np.where(g.random(n) < 0.85, y, g.choice(["a", "b", "c"], n))
    frame = pd.DataFrame({"f": f, "label": y})
    s = TabularSchema.infer(frame, "label")
    res = by_name(run_schema_checks(frame, frame, s))["label_leakage"]
    majority = frame.groupby("f")["label"].agg(lambda v: v.value_counts().sort_index()
                                               .idxmax())
    expected = balanced_accuracy_score(y, frame["f"].map(majority))
    assert res.evidence["columns"]["f"]["reference"] == pytest.approx(expected, abs=1e-4)


def test_output_drift_of_each_model_version(synthetic: tuple) -> None:
    ref, batch, schema = synthetic
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(len(ref), 2, generator=g), torch.randn(len(batch), 2, generator=g)
    logits = {"m@v1": ModelLogits(a, b, 2), "m@v2": ModelLogits(a, b + torch.tensor([3.0, 0]),
                                                                2)}
    drift = {d.feature: d for d in tabular_drift(ref, batch, schema, logits,
                                                 DriftConfig(mmd_permutations=400))}
    assert {"predicted_class[m@v1]", "logits[m@v1]", "predicted_class[m@v2]",
            "logits[m@v2]"} <= set(drift)
    assert drift["predicted_class[m@v2]"].drifted and drift["logits[m@v2]"].drifted
    assert not drift["predicted_class[m@v1]"].drifted
    assert drift["income"].level == pytest.approx(0.05 / (len(schema.columns) + 4))


def test_pandas_categoricals_and_a_missing_category(synthetic: tuple) -> None:
    ref, batch, schema = synthetic
    cat = batch.astype({"city": "category", "smoker": "category"})
    assert all(r.status == "pass" for r in run_schema_checks(ref, cat, schema))
    broken = apply_tabular_fault("missing_sentinel", cat, schema, 0, {"column": "city"})
    assert "categories" in failed(ref, broken, schema)
