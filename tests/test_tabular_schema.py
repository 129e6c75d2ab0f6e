"""The column schema of a feature table: encoding a raw frame, decoding it
back, projecting an attacked matrix onto valid values, and inference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmark.core.tabular import Column, TabularSchema


def _frame() -> pd.DataFrame:
    return pd.DataFrame({
        "age": [21, 35, 60, 44],
        "income": [1.5, 2.25, np.nan, 3.0],
        "colour": ["Black", "White", "White", None],
        "sex": ["Male", "Female", "Male", "Female"],
        "target": ["No", "Yes", "Yes", "No"],
    })


def test_infer_kinds_ranges_and_classes() -> None:
    s = TabularSchema.infer(_frame(), "target", sensitive=["colour"], immutable=["sex"])
    assert s.names == ["age", "income", "colour", "sex"]
    assert [c.kind for c in s.columns] == ["integer", "numeric", "binary", "binary"]
    age = s.column("age")
    assert (age.low, age.high) == (21.0, 60.0)
    assert s.column("colour").categories == ("Black", "White")
    assert s.classes == ("No", "Yes")
    assert s.mask("attackable").tolist() == [True, True, False, False]


def test_encode_decode_round_trip_and_unknowns() -> None:
    df = _frame()
    s = TabularSchema.infer(df, "target")
    x = s.encode(df)
    assert x.dtype == np.float32 and x.shape == (4, 4)
    assert np.isnan(x[2, 1]) and np.isnan(x[3, 2])  # missing number, missing category
    back = s.decode(x)
    assert back["colour"].tolist()[:3] == ["Black", "White", "White"]
    assert pd.isna(back["colour"].tolist()[3])
    assert back["age"].tolist() == [21.0, 35.0, 60.0, 44.0]
    odd = df.assign(sex=["male ", "Female", "X", "Male"])
    assert np.isnan(s.encode(odd)[[0, 2], 3]).all()  # values not in the schema encode as NaN
    assert s.unknown_values(odd) == {"sex": ["X", "male "]}
    with pytest.raises(KeyError):
        s.encode(df.drop(columns=["age"]))


def test_project_locks_clips_and_rounds() -> None:
    s = TabularSchema(columns=(
        Column("age", "integer", low=18, high=70, mutable=False),
        Column("income", "numeric", low=0.0, high=10.0),
        Column("count", "integer", low=0, high=5),
        Column("colour", "binary", categories=("a", "b"), sensitive=True),
    ), target="y")
    x0 = np.array([[30, 5.0, 2, 1]], dtype=np.float32)
    x = np.array([[45, 12.5, 3.6, 0]], dtype=np.float32)
    before = x.copy()
    p = s.project(x, x0)
    assert p.tolist() == [[30.0, 10.0, 4.0, 1.0]]
    assert np.array_equal(x, before)  # input untouched


def test_schema_survives_its_dict_and_digest_changes_with_it() -> None:
    s = TabularSchema.infer(_frame(), "target", sensitive=["sex"])
    again = TabularSchema.from_dict(s.as_dict())
    assert again.as_dict() == s.as_dict() and again.digest() == s.digest()
    other = TabularSchema.infer(_frame(), "target")
    assert other.digest() != s.digest()


def test_bad_columns_are_refused() -> None:
    with pytest.raises(ValueError, match="expected kind"):
        Column("a", "text")
    with pytest.raises(ValueError, match="needs its categories"):
        Column("a", "categorical")
