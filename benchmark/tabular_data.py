"""Feature tables as ``EvalSet``s: scikit-lego's bundled Toronto arrests
table, the published UCI / ProPublica files read from a local root (never
downloaded), and any CSV or Parquet file with a schema YAML.

Every reader ends in ``table_raw``: a seeded stratified train/test split,
the column schema (inferred from the training part, or given), the raw
feature matrix ``schema.encode(frame)``, labels, and one group column per
sensitive feature (numbers binned into readable bands such as ``25-34``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from benchmark.core import fields as F
from benchmark.core.errors import ConfigError, DataError
from benchmark.core.specs import DataSpec
from benchmark.core.tabular import COLUMN_KINDS, Column, TabularSchema, category_text
from benchmark.data import RawData, register_loader

log = logging.getLogger(__name__)

#: Loaders that read feature tables (their ``data.options`` are checked at parse time).
TABLE_LOADERS: tuple[str, ...] = ("arrests", "adult", "compas", "german", "csv", "parquet")
#: ``data.options`` of the generic readers.
FILE_OPTIONS: tuple[str, ...] = ("schema", "test_file", "test_size", "split_seed")
#: The fixed split of the built-in tables: 30 % test, seed 0, stratified on the label.
TEST_SIZE = 0.3
SPLIT_SEED = 0
#: Band edges for a sensitive column named ``age`` (years): <18, 18-24, ..., 65+.
AGE_BANDS: tuple[float, ...] = (18, 25, 35, 45, 55, 65)
#: Keys of a schema YAML and of one of its ``columns`` entries.
SCHEMA_KEYS: tuple[str, ...] = ("target", "positive", "sensitive", "categorical", "immutable",
                                "drop", "columns", "bands")
COLUMN_KEYS: tuple[str, ...] = ("kind", "low", "high", "categories", "mutable", "sensitive")


@dataclass(frozen=True)
class TableSpec:
    """What a schema YAML (or a built-in reader) says about a table.

    ``columns`` overrides the inferred kind, range or categories of a column
    (categories given here are closed: a value outside them is refused);
    ``bands`` gives the edges that bin a numeric sensitive column into groups.
    """

    target: str
    positive: str | None = None
    sensitive: tuple[str, ...] = ()
    categorical: tuple[str, ...] | None = None
    immutable: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    columns: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    bands: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    source: str = "schema"


# ----------------------------------------------------------------------------- schema YAML

def parse_table_spec(d: Any, where: str = "schema") -> TableSpec:
    """Validate a schema YAML's content (a mapping) into a ``TableSpec``."""
    d = F.mapping(where, d, "a mapping with at least `target`")
    F.check_keys(where, d, SCHEMA_KEYS, noun="schema key")
    if d.get("target") in (None, ""):
        raise ConfigError(f"Missing `{where}.target`; a schema names the label column.")
    target = F.text(f"{where}.target", d["target"])
    lists = {k: F.names(f"{where}.{k}", d.get(k)) for k in ("sensitive", "categorical",
                                                             "immutable", "drop")}
    cols = dict(F.mapping(f"{where}.columns", d.get("columns") or {}))
    for name, c in cols.items():
        c = F.mapping(f"{where}.columns.{name}", c or {})
        F.check_keys(f"{where}.columns.{name}", c, COLUMN_KEYS, noun="column key")
        if "kind" in c:
            F.choice(f"{where}.columns.{name}.kind", c["kind"], COLUMN_KINDS)
        for k in ("low", "high"):
            if c.get(k) is not None:
                F.finite_number(f"{where}.columns.{name}.{k}", c[k])
        if c.get("categories") is not None and (
                not isinstance(c["categories"], (list, tuple)) or not c["categories"]):
            raise F.fail(f"{where}.columns.{name}.categories", "a non-empty list of values",
                         c["categories"])
        for v in c.get("categories") or ():
            _not_yaml_bool(f"{where}.columns.{name}.categories", v)
        for k in ("mutable", "sensitive"):
            if k in c:
                F.flag(f"{where}.columns.{name}.{k}", c[k])
        cols[name] = c
    bands: dict[str, tuple[float, ...]] = {}
    for name, edges in dict(F.mapping(f"{where}.bands", d.get("bands") or {})).items():
        e = F.numbers(f"{where}.bands.{name}", edges, item=F.finite_number)
        if list(e) != sorted(set(e)):
            raise F.fail(f"{where}.bands.{name}", "increasing band edges", list(edges))
        bands[str(name)] = e
    positive = d.get("positive")
    _not_yaml_bool(f"{where}.positive", positive)
    return TableSpec(
        target=target,
        positive=None if positive is None else category_text([positive])[0],
        sensitive=lists["sensitive"] or (),
        categorical=lists["categorical"],
        immutable=lists["immutable"] or (),
        drop=lists["drop"] or (),
        columns=cols,
        bands=bands,
        source=where,
    )


def _not_yaml_bool(where: str, v: Any) -> None:
    """YAML reads an unquoted yes/no/true/false as a boolean, never the text
    of a category: refuse it rather than look for 'True' in the data."""
    if isinstance(v, bool):
        raise ConfigError(f"Expected `{where}` to hold category text, but got the boolean {v} "
                          "(YAML reads unquoted yes/no/true/false as booleans: quote it).")


def read_table_spec(path: Path) -> TableSpec:
    """A schema YAML file as a ``TableSpec`` (one-line ``ConfigError`` when
    missing or malformed)."""
    import yaml

    if not path.is_file():
        raise ConfigError(f"Schema file {str(path)!r} not found; expected a YAML file naming "
                          "target, sensitive, categorical and immutable columns.")
    try:
        content = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        first = " ".join(str(exc).split())[:160]
        raise ConfigError(f"Schema file {str(path)!r} is not valid YAML ({first}).") from None
    return parse_table_spec(content, where=f"schema {path.name}")


def check_table_options(loader: str, options: Mapping[str, Any], check_files: bool = True
                        ) -> None:
    """Parse-time checks of a table loader's ``data.options``."""
    if loader not in ("csv", "parquet"):
        return
    F.optional_text("data.options.schema", options.get("schema"))
    F.optional_text("data.options.test_file", options.get("test_file"))
    if options.get("test_size") is not None:
        F.probability("data.options.test_size", options["test_size"])
    if options.get("split_seed") is not None:
        F.integer("data.options.split_seed", options["split_seed"], minimum=0)
    if check_files and options.get("schema"):
        read_table_spec(Path(str(options["schema"])).expanduser())


# ----------------------------------------------------------------------------- the shared path

def _unknown(spec: TableSpec, frame: pd.DataFrame, what: str) -> None:
    have = [str(c) for c in frame.columns]
    named: list[tuple[str, Sequence[str]]] = [
        ("target", [spec.target]), ("sensitive", spec.sensitive),
        ("categorical", spec.categorical or ()), ("immutable", spec.immutable),
        ("drop", spec.drop), ("columns", list(spec.columns)), ("bands", list(spec.bands))]
    for key, names in named:
        for n in names:
            if n not in have:
                shown = ", ".join(have[:20]) + (", ..." if len(have) > 20 else "")
                raise ConfigError(f"{spec.source}: unknown column {n!r} in `{key}`; "
                                  f"{what} has columns: {shown}.")
    if spec.target in spec.sensitive or spec.target in spec.drop:
        raise ConfigError(f"{spec.source}: the target {spec.target!r} cannot also be a "
                          "sensitive or dropped column.")


def _apply_overrides(spec: TableSpec, schema: TabularSchema) -> TabularSchema:
    cols = []
    for c in schema.columns:
        o = spec.columns.get(c.name)
        if not o:
            cols.append(c)
            continue
        kind = str(o.get("kind", c.kind))
        cats = tuple(category_text(o["categories"])) if o.get("categories") else c.categories
        if kind in ("categorical", "binary") and not cats:
            raise ConfigError(f"{spec.source}: column {c.name!r} is declared {kind} but is "
                              f"numeric in the data; list its `categories`.")
        low = float(o["low"]) if o.get("low") is not None else c.low
        high = float(o["high"]) if o.get("high") is not None else c.high
        if low is not None and high is not None and low > high:
            raise ConfigError(f"{spec.source}: column {c.name!r} has low {low:g} above "
                              f"high {high:g}.")
        try:
            cols.append(Column(name=c.name, kind=kind, low=low if kind in ("numeric", "integer")
                               else None, high=high if kind in ("numeric", "integer") else None,
                               categories=cats if kind in ("categorical", "binary") else (),
                               mutable=bool(o.get("mutable", c.mutable)),
                               sensitive=bool(o.get("sensitive", c.sensitive))))
        except ValueError as exc:
            raise ConfigError(f"{spec.source}: {exc}") from None
    return replace(schema, columns=tuple(cols))


def _widen_categories(spec: TableSpec, schema: TabularSchema, frame: pd.DataFrame
                      ) -> TabularSchema:
    """Categories seen only outside the training part join an inferred
    column's list; a column whose categories the schema gives refuses them."""
    bad = schema.unknown_values(frame)
    cols = []
    for c in schema.columns:
        extra = bad.get(c.name)
        if not extra:
            cols.append(c)
            continue
        if c.name in spec.columns and spec.columns[c.name].get("categories"):
            raise DataError(f"{spec.source}: column {c.name!r} holds {extra[0]!r}, which is not "
                            f"among its categories {list(c.categories)}.")
        cats = tuple(sorted(set(c.categories) | set(extra)))
        kind = "binary" if len(cats) == 2 else "categorical"
        cols.append(replace(c, categories=cats, kind=kind))
    return replace(schema, columns=tuple(cols))


def _labels(spec: TableSpec, target: pd.Series) -> tuple[np.ndarray, list[str]]:
    text = pd.Series(category_text(list(target)), index=target.index)
    classes = sorted(set(text))
    if spec.positive is not None:
        if spec.positive not in classes:
            raise DataError(f"{spec.source}: `positive` {spec.positive!r} is not a value of the "
                            f"target {spec.target!r} ({classes}).")
        classes = [c for c in classes if c != spec.positive] + [spec.positive]
    if len(classes) < 2:
        raise DataError(f"{spec.source}: expected at least two classes in {spec.target!r}, but "
                        f"got {classes}.")
    lookup = {c: i for i, c in enumerate(classes)}
    return text.map(lookup).to_numpy(dtype=np.int64), classes


def band_labels(edges: Sequence[float]) -> list[str]:
    """Readable labels of the bands cut at ``edges``: ``<18``, ``18-24``, ``65+``
    (integer edges); ``[a, b)`` otherwise."""
    ints = all(float(e).is_integer() for e in edges)
    fmt = (lambda v: f"{int(v)}") if ints else (lambda v: f"{v:g}")
    labels = [f"<{fmt(edges[0])}"]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        labels.append(f"{fmt(a)}-{fmt(b - 1)}" if ints else f"[{fmt(a)}, {fmt(b)})")
    labels.append(f"{fmt(edges[-1])}+")
    return labels


def bin_numeric(values: pd.Series, edges: Sequence[float]) -> pd.Series:
    """Values binned at ``edges`` into the readable bands of ``band_labels``
    (``missing`` for NaN)."""
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    labels = np.array(band_labels(edges), dtype=object)
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), v, side="right")
    out = labels[np.clip(idx, 0, len(labels) - 1)]
    out[~np.isfinite(v)] = "missing"
    return pd.Series(out, index=values.index, dtype=object)


def _default_edges(name: str, train: pd.Series) -> tuple[float, ...]:
    if name.lower() == "age":
        return AGE_BANDS
    v = pd.to_numeric(train, errors="coerce").dropna().to_numpy(dtype=np.float64)
    qs = np.unique(np.quantile(v, [0.25, 0.5, 0.75])) if v.size else np.array([0.0])
    return tuple(float(q) for q in qs)


def sensitive_groups(spec: TableSpec, schema: TabularSchema, frame: pd.DataFrame,
                     train: pd.DataFrame) -> pd.DataFrame:
    """One column per sensitive feature: categories as text, numbers binned."""
    out: dict[str, pd.Series] = {}
    for name in schema.sensitive:
        c = schema.column(name)
        if c.is_numeric:
            out[name] = bin_numeric(frame[name], spec.bands.get(name) or
                                    _default_edges(name, train[name]))
        else:
            vals = frame[name]
            out[name] = pd.Series([category_text([v])[0] if pd.notna(v) else "missing"
                                   for v in vals], index=frame.index, dtype=object)
    return pd.DataFrame(out).reset_index(drop=True)


def split_frame(frame: pd.DataFrame, target: str, test_size: float, seed: int
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A seeded train/test split stratified on the label, each part in file order."""
    from sklearn.model_selection import train_test_split

    y = pd.Series(category_text(list(frame[target])))
    counts = y.value_counts()
    strat = y if len(counts) > 1 and int(counts.min()) >= 2 else None
    idx = np.arange(len(frame))
    try:
        tr, te = train_test_split(idx, test_size=test_size, stratify=strat, random_state=seed)
    except ValueError as exc:
        raise DataError(f"Could not split the table into train and test ({exc}).") from None
    return (frame.iloc[np.sort(tr)].reset_index(drop=True),
            frame.iloc[np.sort(te)].reset_index(drop=True))


def table_raw(ds: DataSpec, spec: TableSpec, train: pd.DataFrame, test: pd.DataFrame,
              what: str) -> RawData:
    """The ``RawData`` of a table already split into ``train`` and ``test``."""
    for part in (train, test):
        _unknown(spec, part, what)
    if train[spec.target].isna().any() or test[spec.target].isna().any():
        raise DataError(f"{what}: the target {spec.target!r} has missing values; expected a "
                        "label in every row.")
    train = train.drop(columns=list(spec.drop))
    test = test.drop(columns=list(spec.drop))
    try:
        schema = TabularSchema.infer(train, spec.target, sensitive=spec.sensitive,
                                     categorical=spec.categorical, immutable=spec.immutable)
    except ValueError as exc:
        raise ConfigError(f"{spec.source}: {exc} (name it in `categorical` only if it is one, "
                          "or `drop` it)") from None
    schema = _apply_overrides(spec, schema)
    schema = _widen_categories(spec, schema, test)
    for c in schema.columns:  # an explicit list must cover the training part too
        if c.name in spec.columns and spec.columns[c.name].get("categories"):
            extra = schema.unknown_values(train[[c.name]]).get(c.name)
            if extra:
                raise DataError(f"{spec.source}: column {c.name!r} holds {extra[0]!r}, which is "
                                f"not among its categories {list(c.categories)}.")
    y_all, classes = _labels(spec, pd.concat([train[spec.target], test[spec.target]]))
    schema = replace(schema, classes=tuple(classes))
    y_train, y_test = y_all[: len(train)], y_all[len(train):]
    main, y_main = (test, y_test) if ds.split == "test" else (train, y_train)
    if ds.split not in ("train", "test"):
        raise DataError(f"Dataset {ds.name!r}: expected `split` to be 'train' or 'test', but got "
                        f"{ds.split!r}.")
    feats, train_feats = main[schema.names].reset_index(drop=True), train[schema.names]
    return RawData(
        x=torch.from_numpy(schema.encode(feats)),
        y=torch.from_numpy(np.array(y_main)),
        classes=classes,
        groups=sensitive_groups(spec, schema, feats, train_feats),
        train_x=torch.from_numpy(schema.encode(train_feats)),
        train_y=torch.from_numpy(np.array(y_train)),
        schema=schema,
        frame=feats,
        train_frame=train_feats.reset_index(drop=True),
    )


# ----------------------------------------------------------------------------- built-in tables

ARRESTS = TableSpec(
    target="released",
    positive="Yes",
    sensitive=("colour", "sex", "age", "citizen", "employed"),
    categorical=("colour", "sex", "employed", "citizen"),
    immutable=("year",),
    bands={"age": (18, 25, 35, 45)},
    source="arrests",
)


@register_loader("arrests")
def _load_arrests(ds: DataSpec) -> RawData:
    """scikit-lego's Toronto arrests table (5226 rows, shipped inside the
    package); fixed seeded stratified split, 30 % test."""
    from sklego.datasets import load_arrests

    frame = load_arrests(as_frame=True)
    frame = pd.DataFrame({c: frame[c].astype(object) if not pd.api.types.is_numeric_dtype(
        frame[c]) else frame[c] for c in frame.columns})
    train, test = split_frame(frame, ARRESTS.target, TEST_SIZE, SPLIT_SEED)
    return table_raw(ds, ARRESTS, train, test, "arrests")


def _root_file(ds: DataSpec, names: Sequence[str], expected: str) -> list[Path]:
    if not ds.root:
        raise DataError(f"Dataset {ds.name!r} reads from a local directory: set data.root=DIR "
                        f"(expected {expected}), but got no root.")
    root = Path(ds.root).expanduser()
    if not root.is_dir():
        raise DataError(f"Dataset {ds.name!r}: data.root {str(root)!r} is not a directory; "
                        f"expected a directory holding {expected}.")
    paths = [root / n for n in names]
    for p in paths:
        if not p.is_file():
            raise DataError(f"Dataset {ds.name!r}: file {str(p)!r} not found; expected {expected}.")
    return paths


def _read_csv(ds: DataSpec, path: Path, **kwargs: Any) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError,
            ValueError) as exc:
        first = " ".join(str(exc).split())[:160]
        raise DataError(f"Dataset {ds.name!r}: could not read {str(path)!r} as CSV "
                        f"({first}).") from None


ADULT_COLUMNS: tuple[str, ...] = (
    "age", "workclass", "fnlwgt", "education", "education_num", "marital_status",
    "occupation", "relationship", "race", "sex", "capital_gain", "capital_loss",
    "hours_per_week", "native_country", "income")
ADULT = TableSpec(
    target="income", positive=">50K", sensitive=("race", "sex", "age"),
    immutable=("race", "sex", "age", "native_country"), drop=("fnlwgt",), source="adult")


@register_loader("adult")
def _load_adult(ds: DataSpec) -> RawData:
    """UCI Adult: ``adult.data`` (train) and ``adult.test`` (test; its first
    line is a comment and its labels end in '.'); '?' is missing."""
    expected = "adult.data and adult.test (UCI Adult, comma-separated, no header)"
    data_path, test_path = _root_file(ds, ("adult.data", "adult.test"), expected)
    frames = []
    for path in (data_path, test_path):
        f = _read_csv(ds, path, header=None, names=list(ADULT_COLUMNS), na_values="?",
                      skipinitialspace=True, comment="|", dtype_backend="numpy_nullable")
        f = f.dropna(how="all")
        if f.shape[1] != len(ADULT_COLUMNS) or f["income"].isna().any():
            raise DataError(f"Dataset {ds.name!r}: expected {len(ADULT_COLUMNS)} comma-separated "
                            f"values per line in {str(path)!r} (UCI Adult).")
        f["income"] = f["income"].astype(str).str.rstrip(".")
        frames.append(_plain(f))
    return table_raw(ds, ADULT, frames[0], frames[1], "adult")


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Nullable and string dtypes as numpy floats and objects (NaN for missing)."""
    out = {}
    for c in frame.columns:
        s = frame[c]
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            num = s.astype("float64")
            out[c] = num.astype("int64") if num.notna().all() and (num % 1 == 0).all() else num
        else:
            out[c] = s.astype(object).where(s.notna(), np.nan)
    return pd.DataFrame(out)


COMPAS_FEATURES: tuple[str, ...] = (
    "sex", "age", "race", "juv_fel_count", "juv_misd_count", "juv_other_count",
    "priors_count", "c_charge_degree", "two_year_recid")
COMPAS = TableSpec(
    target="two_year_recid", positive="1", sensitive=("race", "sex", "age"),
    categorical=("sex", "race", "c_charge_degree"),
    immutable=("juv_fel_count", "juv_misd_count", "juv_other_count"), source="compas")


@register_loader("compas")
def _load_compas(ds: DataSpec) -> RawData:
    """ProPublica's ``compas-scores-two-years.csv`` with ProPublica's filter
    (screening within 30 days of arrest, a known recidivism outcome, charge
    degree F or M, a score); fixed seeded stratified split, 30 % test."""
    expected = "compas-scores-two-years.csv (ProPublica)"
    (path,) = _root_file(ds, ("compas-scores-two-years.csv",), expected)
    f = _read_csv(ds, path)
    need = [*COMPAS_FEATURES, "days_b_screening_arrest", "is_recid", "score_text"]
    missing = [c for c in need if c not in f.columns]
    if missing:
        raise DataError(f"Dataset {ds.name!r}: {str(path)!r} lacks column {missing[0]!r}; "
                        f"expected {expected}.")
    keep = (f["days_b_screening_arrest"].between(-30, 30) & (f["is_recid"] != -1)
            & f["c_charge_degree"].isin(["F", "M"]) & f["score_text"].notna()
            & (f["score_text"].astype(str) != "N/A"))
    f = f.loc[keep, list(COMPAS_FEATURES)].reset_index(drop=True)
    if len(f) < 10:
        raise DataError(f"Dataset {ds.name!r}: only {len(f)} rows of {str(path)!r} pass "
                        "ProPublica's filter; expected the published file.")
    train, test = split_frame(_plain(f), COMPAS.target, TEST_SIZE, SPLIT_SEED)
    return table_raw(ds, COMPAS, train, test, "compas")


GERMAN_COLUMNS: tuple[str, ...] = (
    "status", "duration", "credit_history", "purpose", "credit_amount", "savings",
    "employment_since", "installment_rate", "personal_status_sex", "other_debtors",
    "residence_since", "property", "age", "other_installment_plans", "housing",
    "existing_credits", "job", "people_liable", "telephone", "foreign_worker", "credit")
GERMAN = TableSpec(
    target="credit", positive="1", sensitive=("personal_status_sex", "age", "foreign_worker"),
    categorical=("status", "credit_history", "purpose", "savings", "employment_since",
                 "personal_status_sex", "other_debtors", "property", "other_installment_plans",
                 "housing", "job", "telephone", "foreign_worker"),
    immutable=("age",), source="german")


@register_loader("german")
def _load_german(ds: DataSpec) -> RawData:
    """UCI Statlog German credit ``german.data``: 20 attributes (categoricals
    as the published codes A11, A12, ...) and the label (1 good, 2 bad);
    positive class: good credit (1). Fixed seeded stratified split, 30 % test."""
    expected = "german.data (UCI Statlog German credit, space-separated codes)"
    (path,) = _root_file(ds, ("german.data",), expected)
    f = _read_csv(ds, path, sep=r"\s+", header=None, engine="python")
    if f.shape[1] != len(GERMAN_COLUMNS):
        raise DataError(f"Dataset {ds.name!r}: expected {len(GERMAN_COLUMNS)} values per line "
                        f"in {str(path)!r}, but got {f.shape[1]}; expected {expected}.")
    f.columns = list(GERMAN_COLUMNS)
    train, test = split_frame(_plain(f), GERMAN.target, TEST_SIZE, SPLIT_SEED)
    return table_raw(ds, GERMAN, train, test, "german")


# ----------------------------------------------------------------------------- csv / parquet

def _read_file(ds: DataSpec, fmt: str, path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"Dataset {ds.name!r}: file {str(path)!r} not found; expected a "
                        f"{fmt} file with a header row.")
    if fmt == "csv":
        return _plain(_read_csv(ds, path))
    try:
        return _plain(pd.read_parquet(path))
    except (OSError, ValueError) as exc:
        first = " ".join(str(exc).split())[:160]
        raise DataError(f"Dataset {ds.name!r}: could not read {str(path)!r} as Parquet "
                        f"({first}).") from None


def _generic(ds: DataSpec, fmt: str) -> RawData:
    if not ds.root:
        raise DataError(f"Dataset {ds.name!r}: set data.root=FILE.{fmt} and "
                        "data.options.schema=SCHEMA.yaml, but got no root.")
    check_table_options(ds.loader, ds.options, check_files=False)
    if not ds.options.get("schema"):
        raise ConfigError(f"Dataset loader {ds.loader!r} needs `data.options.schema`: the path "
                          "of a schema YAML (target, sensitive, categorical, immutable columns).")
    spec = read_table_spec(Path(str(ds.options["schema"])).expanduser())
    frame = _read_file(ds, fmt, Path(ds.root).expanduser())
    test_file = ds.options.get("test_file")
    if test_file:
        train, test = frame, _read_file(ds, fmt, Path(str(test_file)).expanduser())
    else:
        _unknown(spec, frame, f"{Path(ds.root).name}")
        train, test = split_frame(frame, spec.target, float(ds.options.get("test_size", 0.3)),
                                  int(ds.options.get("split_seed", 0)))
    return table_raw(ds, spec, train, test, Path(ds.root).name)


@register_loader("csv", options=FILE_OPTIONS)
def _load_csv(ds: DataSpec) -> RawData:
    """Any CSV file with a header, described by a schema YAML."""
    return _generic(ds, "csv")


@register_loader("parquet", options=FILE_OPTIONS)
def _load_parquet(ds: DataSpec) -> RawData:
    """Any Parquet file, described by a schema YAML."""
    return _generic(ds, "parquet")
