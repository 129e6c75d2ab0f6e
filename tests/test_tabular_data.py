"""Feature-table readers: each published format on a tiny file written here,
the built-in arrests table, and every bad input (one line, exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.core.errors import ConfigError, DataError, UserError
from benchmark.data import load_evalset
from benchmark.schema import parse_data
from benchmark.tabular_data import band_labels, bin_numeric


def _load(**d):
    return load_evalset(parse_data(d))


def _check_evalset(e, n_features: int) -> None:
    assert e.modality == "tabular"
    assert e.x.shape == (len(e), n_features) and e.x.dtype.is_floating_point
    assert len(e.frame) == len(e) == len(e.groups)
    assert list(e.frame.columns) == e.schema.names
    np.testing.assert_array_equal(e.x.numpy(), e.schema.encode(e.frame))
    assert set(e.groups.columns) == set(e.schema.sensitive)
    assert e.train_frame is not None and len(e.train_frame) > 0
    assert int(e.y.max()) < len(e.classes)
    assert len(e.fingerprint) == 64


# ----------------------------------------------------------------------------- arrests

def test_arrests_builtin_split_is_fixed_and_stratified() -> None:
    from sklego.datasets import load_arrests

    e = _load(name="arrests", loader="arrests")
    _check_evalset(e, 7)
    raw = load_arrests(as_frame=True)
    assert len(e) + len(e.train_frame) == len(raw) == 5226
    assert e.classes == ["No", "Yes"]
    rate_all = float((raw["released"] == "Yes").mean())
    assert abs(float(e.y.float().mean()) - rate_all) < 0.005   # stratified
    assert set(e.groups.columns) == {"colour", "sex", "age", "citizen", "employed"}
    assert set(e.groups["age"]) <= {"<18", "18-24", "25-34", "35-44", "45+"}
    assert not e.schema.column("year").mutable
    assert list(np.flatnonzero(e.schema.mask("attackable"))) == [e.schema.index("checks")]
    again = _load(name="arrests", loader="arrests", seed=0)
    assert again.fingerprint == e.fingerprint
    train = _load(name="arrests", loader="arrests", split="train")
    assert len(train) == len(e.train_frame)


def test_bands_are_readable() -> None:
    assert band_labels([18, 25, 35]) == ["<18", "18-24", "25-34", "35+"]
    got = bin_numeric(pd.Series([12, 18, 24.0, 25, 70, np.nan]), [18, 25, 35])
    assert list(got) == ["<18", "18-24", "18-24", "25-34", "35+", "missing"]


# ----------------------------------------------------------------------------- published formats

def _adult_line(rng: np.random.Generator, test: bool) -> str:
    age = int(rng.integers(17, 80))
    rich = rng.random() < 0.4
    wc = rng.choice(["Private", "State-gov", "?"])
    sex = rng.choice(["Male", "Female"])
    race = rng.choice(["White", "Black", "Asian-Pac-Islander"])
    label = (">50K" if rich else "<=50K") + ("." if test else "")
    return (f"{age}, {wc}, {int(rng.integers(10000, 400000))}, Bachelors, 13, Never-married, "
            f"Adm-clerical, Not-in-family, {race}, {sex}, {int(rng.integers(0, 3000))}, 0, "
            f"{int(rng.integers(10, 60))}, United-States, {label}")


def test_adult_reader_on_the_published_format(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "adult.data").write_text("\n".join(_adult_line(rng, False) for _ in range(40))
                                         + "\n")
    (tmp_path / "adult.test").write_text("|1x3 Cross validator\n" + "\n".join(
        _adult_line(rng, True) for _ in range(20)) + "\n\n")
    e = _load(name="adult", loader="adult", root=str(tmp_path))
    _check_evalset(e, 13)            # 15 columns less fnlwgt and the label
    assert len(e) == 20 and len(e.train_frame) == 40
    assert e.classes == ["<=50K", ">50K"]
    assert "fnlwgt" not in e.schema.names
    wc = e.schema.index("workclass")
    assert np.isnan(e.x[:, wc].numpy()).any()        # '?' is missing, not a category
    assert "?" not in e.schema.column("workclass").categories
    assert set(e.groups.columns) == {"race", "sex", "age"}


def test_compas_reader_applies_propublica_filter(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 60
    f = pd.DataFrame({
        "id": np.arange(n), "sex": rng.choice(["Male", "Female"], n),
        "age": rng.integers(18, 70, n),
        "race": rng.choice(["African-American", "Caucasian", "Hispanic"], n),
        "juv_fel_count": rng.integers(0, 2, n), "juv_misd_count": rng.integers(0, 2, n),
        "juv_other_count": rng.integers(0, 2, n), "priors_count": rng.integers(0, 10, n),
        "c_charge_degree": rng.choice(["F", "M"], n), "two_year_recid": rng.integers(0, 2, n),
        "days_b_screening_arrest": rng.integers(-5, 5, n), "is_recid": rng.integers(0, 2, n),
        "score_text": rng.choice(["Low", "High"], n)})
    f.loc[:9, "days_b_screening_arrest"] = 100        # dropped by the filter
    f.to_csv(tmp_path / "compas-scores-two-years.csv", index=False)
    e = _load(name="compas", loader="compas", root=str(tmp_path))
    _check_evalset(e, 8)
    assert len(e) + len(e.train_frame) == 50
    assert e.classes == ["0", "1"]


def test_german_reader_on_the_coded_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    lines = []
    for _ in range(50):
        row = [rng.choice(["A11", "A12", "A14"]), rng.integers(6, 48), rng.choice(["A32", "A34"]),
               rng.choice(["A43", "A40"]), rng.integers(500, 9000), rng.choice(["A61", "A65"]),
               rng.choice(["A73", "A75"]), rng.integers(1, 5), rng.choice(["A93", "A92"]),
               "A101", rng.integers(1, 5), rng.choice(["A121", "A123"]), rng.integers(19, 70),
               "A143", rng.choice(["A152", "A151"]), rng.integers(1, 3), "A173", 1,
               rng.choice(["A191", "A192"]), rng.choice(["A201", "A202"]), rng.integers(1, 3)]
        lines.append(" ".join(str(v) for v in row))
    (tmp_path / "german.data").write_text("\n".join(lines) + "\n")
    e = _load(name="german", loader="german", root=str(tmp_path))
    _check_evalset(e, 20)
    assert e.classes == ["2", "1"]                    # good credit (1) is the positive class
    assert e.schema.column("status").kind == "categorical"
    assert set(e.groups.columns) == {"personal_status_sex", "age", "foreign_worker"}


SCHEMA = """\
target: label
positive: "yes"
sensitive: [group, age]
categorical: [group, colour]
immutable: [fixed]
columns:
  size: {low: 0, high: 100}
  colour: {categories: [red, green, blue]}
"""


def _table(n: int = 40, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"size": rng.uniform(0, 100, n).round(2), "age": rng.integers(16, 70, n),
                         "group": rng.choice(["a", "b"], n), "colour": rng.choice(
                             ["red", "green", "blue"], n), "fixed": rng.integers(0, 3, n),
                         "label": rng.choice(["yes", "no"], n)})


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_generic_reader_with_schema_yaml(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"t.{fmt}"
    getattr(_table(), f"to_{fmt}")(path, index=False)
    (tmp_path / "s.yaml").write_text(SCHEMA)
    e = _load(name="t", loader=fmt, root=str(path), options={"schema": str(tmp_path / "s.yaml")})
    _check_evalset(e, 5)
    assert e.classes == ["no", "yes"]
    s = e.schema
    assert (s.column("size").low, s.column("size").high) == (0.0, 100.0)
    assert s.column("colour").categories == ("red", "green", "blue")
    assert not s.column("fixed").mutable and s.column("age").sensitive
    assert list(s.names[i] for i in np.flatnonzero(s.mask("attackable"))) == ["size"]
    assert len(e) == 12                       # 30 % of 40


def test_generic_reader_with_a_test_file(tmp_path: Path) -> None:
    _table(40, 3).to_csv(tmp_path / "train.csv", index=False)
    _table(10, 4).to_csv(tmp_path / "test.csv", index=False)
    (tmp_path / "s.yaml").write_text(SCHEMA)
    e = _load(name="t", loader="csv", root=str(tmp_path / "train.csv"),
              options={"schema": str(tmp_path / "s.yaml"), "test_file": str(tmp_path / "test.csv")})
    assert len(e) == 10 and len(e.train_frame) == 40


# ----------------------------------------------------------------------------- bad input

def _bad_world(tmp_path: Path, schema: str = SCHEMA, table: pd.DataFrame | None = None) -> dict:
    (table if table is not None else _table()).to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "s.yaml").write_text(schema)
    return {"name": "t", "loader": "csv", "root": str(tmp_path / "t.csv"),
            "options": {"schema": str(tmp_path / "s.yaml")}}


def _bad_colour() -> pd.DataFrame:
    t = _table()
    t.loc[5, "colour"] = "purple"
    return t


BAD = [
    ("missing data file", lambda d, p: d.update(root=str(p / "nope.csv")), SCHEMA, None,
     DataError, "not found"),
    ("missing schema file", lambda d, p: d["options"].update(schema=str(p / "none.yaml")),
     SCHEMA, None, ConfigError, "Schema file"),
    ("no schema option", lambda d, p: d.update(options={}), SCHEMA, None, ConfigError,
     "data.options.schema"),
    ("schema not YAML", None, "target: [unclosed\n", None, ConfigError, "not valid YAML"),
    ("schema without target", None, "sensitive: [group]\n", None, ConfigError, "target"),
    ("schema stray key", None, SCHEMA + "colums: {}\n", None, ConfigError, "colums"),
    ("schema wrong kind", None, "target: label\ncolumns:\n  size: {kind: float}\n", None,
     ConfigError, "kind"),
    ("unknown column", None, "target: label\nsensitive: [gender]\n", None, ConfigError,
     "unknown column 'gender'"),
    ("unknown target", None, "target: outcome\n", None, ConfigError, "unknown column 'outcome'"),
    ("category not in schema", None, SCHEMA, _bad_colour(), DataError, "'purple'"),
    ("unquoted yes", None, "target: label\npositive: yes\n", None, ConfigError, "quote it"),
    ("bad test_size", lambda d, p: d["options"].update(test_size=2), SCHEMA, None, ConfigError,
     "test_size"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_table_input_is_one_line(tmp_path: Path, case) -> None:
    _, edit, schema, table, err, needle = case
    d = _bad_world(tmp_path, schema, table)
    if edit is not None:
        edit(d, tmp_path)
    with pytest.raises(err) as info:
        _load(**d)
    msg = str(info.value)
    assert needle in msg and "\n" not in msg


def test_missing_root_for_published_formats(tmp_path: Path) -> None:
    for loader in ("adult", "compas", "german"):
        with pytest.raises(DataError, match="not found|no root"):
            _load(name=loader, loader=loader, root=str(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["unknown column", "category not in schema"])
def test_bad_table_on_the_command_line_exits_2(tmp_path: Path, kind: str) -> None:
    schema = "target: label\nsensitive: [gender]\n" if kind == "unknown column" else SCHEMA
    d = _bad_world(tmp_path, schema, _bad_colour() if kind != "unknown column" else None)
    args = [sys.executable, "-m", "benchmark.cli", "run", "data=table_csv",
            f"data.root={d['root']}", f"data.options.schema={d['options']['schema']}",
            "store=null", f"hydra.run.dir={tmp_path / 'run'}", "attack=[]"]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == UserError.exit_code, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("rtb: error:"), proc.stderr[-2000:]
    assert ("gender" if kind == "unknown column" else "purple") in lines[0]
    assert "Traceback" not in proc.stderr
