"""Tabular pipeline faults: the registry contract over every entry (same rows,
input untouched, deterministic, only the named columns change), what each
fault does against an independent computation, and its errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from attacks.tabular_faults import (
    TABULAR_FAULTS,
    apply_tabular_fault,
    get_tabular_fault,
    register_tabular_fault,
    tabular_fault_applies,
    tabular_fault_description,
    tabular_fault_names,
)
from benchmark.core.tabular import TabularSchema

FAULTS = tabular_fault_names()


def people(n: int = 200, seed: int = 0) -> pd.DataFrame:
    """Every column kind, a target and a non-schema id column."""
    g = np.random.default_rng(seed)
    age = g.integers(18, 80, n)
    city = g.choice(["Lyon", "Nice", "Paris"], n, p=[0.5, 0.2, 0.3])
    income = np.round(g.normal(20000, 4000, n) + 300 * age + 12000 * (city == "Paris"), 2)
    smoker = g.choice(["no", "yes"], n, p=[0.7, 0.3])
    good = np.where(income + 20000 * (smoker == "no") + g.normal(0, 5000, n) > 50000,
                    "good", "bad")
    return pd.DataFrame({"id": np.arange(n) + 1000, "age": age, "income": income,
                         "city": city, "smoker": smoker, "credit": good})


def schema_of(frame: pd.DataFrame) -> TabularSchema:
    return TabularSchema.infer(frame.drop(columns="id"), "credit", sensitive=["smoker"])


def test_registry_names_descriptions_and_errors() -> None:
    assert set(FAULTS) >= {"unit_change", "swapped_columns", "renamed_category",
                           "missing_sentinel", "stale_constant", "standardised_twice",
                           "misaligned_join", "float_truncated", "null_as_zero",
                           "vocabulary_order", "duplicated_rows"}
    assert len(FAULTS) >= 10
    for name in FAULTS:
        d = tabular_fault_description(name)
        assert d and "\n" not in d and len(d) < 120, name
    with pytest.raises(ValueError, match="already registered"):
        register_tabular_fault("unit_change")
    with pytest.raises(ValueError, match="Unknown tabular fault 'nope'; expected one of: "
                                         "duplicated_rows"):
        get_tabular_fault("nope")
    assert get_tabular_fault("unit_change").params == {"factor": 12.0, "column": None}


@pytest.mark.parametrize("dtypes", ["plain", "category"])
@pytest.mark.parametrize("name", FAULTS)
def test_contract(name: str, dtypes: str) -> None:
    frame = people()
    if dtypes == "category":  # pandas categoricals, as a parquet file may hold them
        frame = frame.astype({"city": "category", "smoker": "category"})
    frame.index = frame.index * 3 + 7  # a non-default index must survive
    schema = schema_of(frame)
    before = frame.copy(deep=True)
    out = apply_tabular_fault(name, frame, schema, seed=3)
    pd.testing.assert_frame_equal(frame, before)  # the input is not changed
    assert list(out.columns) == list(frame.columns) and out.index.equals(frame.index)
    pd.testing.assert_frame_equal(out, apply_tabular_fault(name, frame, schema, seed=3))
    for col in ("id", "credit"):  # outside the schema: passed through
        pd.testing.assert_series_equal(out[col], frame[col])
    info = out.attrs["tabular_fault"]
    assert info["name"] == name and info["description"] == tabular_fault_description(name)
    changed = [c for c in schema.names
               if not out[c].astype(str).equals(frame[c].astype(str))]
    assert changed, f"{name} changed nothing"
    assert set(changed) <= set(info["columns"]), (changed, info["columns"])


@pytest.mark.parametrize("name", FAULTS)
def test_seed_chooses_but_the_fault_stays_the_same_kind(name: str) -> None:
    frame = people()
    schema = schema_of(frame)
    cols = {tuple(apply_tabular_fault(name, frame, schema, seed=s).attrs["tabular_fault"]
                  ["columns"]) for s in range(6)}
    eligible = set(get_tabular_fault(name).columns(schema))
    assert all(set(c) <= eligible for c in cols)


def test_each_fault_does_what_it_says() -> None:
    f = people()
    s = schema_of(f)

    def run(name: str, **params: object) -> pd.DataFrame:
        return apply_tabular_fault(name, f, s, seed=0, params=params)

    np.testing.assert_allclose(run("unit_change", column="age")["age"], f["age"] * 12.0)
    out = run("swapped_columns", columns=("age", "income"))
    np.testing.assert_array_equal(out["age"], f["income"])
    np.testing.assert_array_equal(out["income"], f["age"])

    out = run("renamed_category", column="city", fraction=0.5)
    moved = out["city"] != f["city"]
    assert moved.sum() == 100
    assert not out.loc[moved, "city"].isin(["Lyon", "Nice", "Paris"]).any()
    assert (out.loc[moved, "city"].str.strip().str.lower()
            == f.loc[moved, "city"].str.lower()).all()

    out = run("missing_sentinel", column="age", fraction=0.1)
    hit = out["age"] != f["age"]
    assert hit.sum() == 20 and (out.loc[hit, "age"] == -1).all()  # -1 is outside 18..79
    out = run("missing_sentinel", column="city")
    assert set(out["city"]) - set(f["city"]) == {"?"}
    assert run("missing_sentinel", column="age", sentinel=999)["age"].max() == 999

    out = run("stale_constant", column="city")
    assert out["city"].nunique() == 1 and out["city"].iloc[0] in set(f["city"])

    out = run("standardised_twice")
    for col in ("age", "income"):
        v = f[col].to_numpy(float)
        np.testing.assert_allclose(out[col], (v - v.mean()) / v.std())
    np.testing.assert_array_equal(run("misaligned_join", column="income", shift=2)["income"],
                                  np.concatenate([f["income"][-2:], f["income"][:-2]]))
    out = run("float_truncated", column="income")
    np.testing.assert_array_equal(out["income"], np.floor(f["income"]).astype(int))

    out = run("null_as_zero", column="income", fraction=0.25)
    assert ((out["income"] == 0) != (out["income"] == f["income"])).all()
    assert (out["income"] == 0).sum() == 50
    with_nulls = f.assign(income=f["income"].where(f.index % 4 != 0))
    out = apply_tabular_fault("null_as_zero", with_nulls, s, seed=0,
                              params={"column": "income"})
    assert out["income"].notna().all() and (out["income"] == 0).sum() == 50
    assert ((out["income"] == 0) == with_nulls["income"].isna()).all()

    out = run("vocabulary_order", column="city")
    mapping = {"Lyon": "Nice", "Nice": "Paris", "Paris": "Lyon"}  # each read as the next
    assert (out["city"] == f["city"].map(mapping)).all()
    assert (run("vocabulary_order", column="smoker")["smoker"]
            == f["smoker"].map({"no": "yes", "yes": "no"})).all()

    out = run("duplicated_rows", fraction=0.2)
    cols = s.names
    assert out[cols].duplicated().sum() >= 40 > f[cols].duplicated().sum()
    # every row of the broken frame is a row of the clean one
    clean = set(map(tuple, f[cols].astype(str).to_numpy()))
    assert all(tuple(r) in clean for r in out[cols].astype(str).to_numpy())


def test_applies_and_errors() -> None:
    f = people()
    s = schema_of(f)
    whole = f.assign(income=f["income"].round().astype(int))
    s_int = schema_of(whole)
    assert tabular_fault_applies("float_truncated", s)
    assert not tabular_fault_applies("float_truncated", s_int)
    with pytest.raises(ValueError, match="float_truncated.*expected at least 1 column"):
        apply_tabular_fault("float_truncated", whole, s_int, seed=0)
    bad = [("unit_change", {"factor": 1}, "Expected `factor` to be a number other than 0 and 1"),
           ("unit_change", {"column": "city"}, "expected `column` among \\['age', 'income'\\]"),
           ("renamed_category", {"fraction": 0}, "Expected `fraction` to be a number in"),
           ("misaligned_join", {"shift": 0}, "Expected `shift` to be a non-zero integer"),
           ("swapped_columns", {"columns": ("age", "age")}, "two different schema columns"),
           ("stale_constant", {"colum": "age"}, "expected parameters among \\['column'\\]")]
    for name, params, msg in bad:
        with pytest.raises(ValueError, match=msg):
            apply_tabular_fault(name, f, s, seed=0, params=params)
    with pytest.raises(ValueError, match="Expected `seed` to be a non-negative integer"):
        apply_tabular_fault("unit_change", f, s, seed=-1)
    with pytest.raises(ValueError, match="Expected `frame` to be a pandas DataFrame"):
        apply_tabular_fault("unit_change", f.to_numpy(), s, seed=0)  # type: ignore[arg-type]


def test_registry_is_the_only_list() -> None:
    assert sorted(TABULAR_FAULTS) == FAULTS
