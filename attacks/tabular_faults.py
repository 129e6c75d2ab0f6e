"""Tabular pipeline faults: plausible bugs between the raw feature table and
the model (a unit change, a swapped column, a stale cache, a misaligned join).

Each fault is a pure function ``fn(frame, schema, rng, **params)`` of a raw
frame (one column per schema column, values as the data source writes them),
registered by name with a one-line description for the record. It returns a
new frame with the same rows, index and order; the input is never changed,
and columns outside the schema (the target, ids) are passed through. Unlike
noise, a fault may produce values the schema does not allow: that is the bug
being simulated, and ``metrics.schema_checks`` must catch it.

``apply_tabular_fault(name, frame, schema, seed)`` draws the fault's random
choices (which column, which rows) from ``seed`` and the fault's name, and
notes what it did in ``out.attrs["tabular_fault"]`` (name, columns, params).
``tabular_fault_applies(name, schema)`` says whether a schema has a column
the fault can break (``float_truncated`` needs a non-integer numeric column).
"""

from __future__ import annotations

import inspect
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from benchmark.core.registry import Registry
from benchmark.core.tabular import Column, TabularSchema, category_text

TabularFaultFn = Callable[..., pd.DataFrame]
ColumnFilter = Callable[[Column], bool]


@dataclass(frozen=True)
class TabularFault:
    """One registered fault: its function, what it does (for the record) and
    which columns it can break."""

    name: str
    fn: TabularFaultFn
    description: str
    eligible: ColumnFilter
    min_columns: int = 1

    def columns(self, schema: TabularSchema, frame: pd.DataFrame | None = None) -> list[str]:
        """The schema columns (present in ``frame`` if given) this fault can break."""
        return [c.name for c in schema.columns
                if self.eligible(c) and (frame is None or c.name in frame.columns)]

    def applies(self, schema: TabularSchema) -> bool:
        return len(self.columns(schema)) >= self.min_columns

    @property
    def params(self) -> dict[str, Any]:
        """The fault's keyword parameters with their defaults."""
        sig = inspect.signature(self.fn)
        return {k: p.default for k, p in list(sig.parameters.items())[3:]}


TABULAR_FAULTS: Registry[TabularFault] = Registry("tabular fault")


def _any(c: Column) -> bool:
    return True


def _numeric(c: Column) -> bool:
    return c.is_numeric


def _float(c: Column) -> bool:
    return c.kind == "numeric"


def _categorical(c: Column) -> bool:
    return not c.is_numeric and len(c.categories) >= 2


def register_tabular_fault(name: str, eligible: ColumnFilter = _any, min_columns: int = 1
                           ) -> Callable[[TabularFaultFn], TabularFaultFn]:
    """Register ``fn(frame, schema, rng, **params)`` as fault ``name``; its
    docstring's first line is its description. A duplicate name raises."""
    TABULAR_FAULTS.check_new(name)

    def deco(fn: TabularFaultFn) -> TabularFaultFn:
        doc = (inspect.getdoc(fn) or "").split("\n\n")[0].replace("\n", " ").strip()
        if not doc:
            raise ValueError(f"Tabular fault {name!r} needs a docstring (its description).")
        TABULAR_FAULTS.add(name, TabularFault(name, fn, doc, eligible, min_columns))
        return fn

    return deco


def tabular_fault_names() -> list[str]:
    """Every registered fault, sorted."""
    return TABULAR_FAULTS.names()


def get_tabular_fault(name: str) -> TabularFault:
    """The fault registered as ``name``; an unknown name lists the valid ones."""
    return TABULAR_FAULTS.get(name)


def tabular_fault_description(name: str) -> str:
    return get_tabular_fault(name).description


def tabular_fault_applies(name: str, schema: TabularSchema) -> bool:
    return get_tabular_fault(name).applies(schema)


def fault_rng(name: str, seed: int) -> np.random.Generator:
    """The random stream of fault ``name`` under ``seed`` (independent per fault)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"Expected `seed` to be a non-negative integer, but got {seed!r}.")
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def apply_tabular_fault(name: str, frame: pd.DataFrame, schema: TabularSchema, seed: int,
                        params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """``frame`` broken by fault ``name`` (raw frame in, raw frame out: same
    rows and order; the input is not changed). ``params`` override the
    fault's defaults (see ``get_tabular_fault(name).params``)."""
    fault = get_tabular_fault(name)
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"Expected `frame` to be a pandas DataFrame, but got "
                         f"{type(frame).__name__}.")
    params = dict(params or {})
    unknown = sorted(set(params) - set(fault.params))
    if unknown:
        raise ValueError(f"Tabular fault {name!r}: expected parameters among "
                         f"{sorted(fault.params)}, but got {unknown}.")
    if len(fault.columns(schema, frame)) < fault.min_columns:
        raise ValueError(f"Tabular fault {name!r}: expected at least {fault.min_columns} "
                         f"column(s) it can break among {schema.names}, but got "
                         f"{fault.columns(schema, frame)}.")
    out = fault.fn(frame.copy(deep=True), schema, fault_rng(name, seed), **params)
    if len(out) != len(frame) or not out.index.equals(frame.index):
        raise AssertionError(f"tabular fault {name!r} changed the rows")  # a bug in the fault
    touched = out.attrs.pop("_columns", [])
    out.attrs["tabular_fault"] = {"name": name, "description": fault.description,
                                  "columns": list(touched), "seed": int(seed),
                                  "params": {**fault.params, **params}}
    return out


# -- helpers --------------------------------------------------------------------------


def _pick(name: str, frame: pd.DataFrame, schema: TabularSchema, rng: np.random.Generator,
          column: str | None) -> str:
    """``column`` if given (and one the fault can break), else one drawn from them."""
    choices = get_tabular_fault(name).columns(schema, frame)
    if column is None:
        return str(choices[int(rng.integers(len(choices)))])
    if column not in choices:
        raise ValueError(f"Tabular fault {name!r}: expected `column` among {choices}, "
                         f"but got {column!r}.")
    return column


def _fraction(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v <= 1.0:
        raise ValueError(f"Expected `{name}` to be a number in (0, 1], but got {v!r}.")
    return float(v)


def _rows(frame: pd.DataFrame, rng: np.random.Generator, fraction: float) -> np.ndarray:
    """A boolean mask of round(fraction * n) rows (at least one) drawn without replacement."""
    n = len(frame)
    k = min(n, max(1, round(fraction * n)))
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, size=k, replace=False)] = True
    return mask


def _numbers(s: pd.Series) -> np.ndarray:
    """A writable float64 copy of a column's numbers (NaN where not a number)."""
    return np.array(pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64,
                                                                na_value=np.nan), copy=True)


def _touched(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    frame.attrs["_columns"] = list(columns)
    return frame


def _set(frame: pd.DataFrame, column: str, mask: np.ndarray, value: Any) -> None:
    """Set ``frame[column]`` to ``value`` on ``mask`` rows (as object when a
    numeric column gets text, as a CSV reader would, or a pandas categorical
    gets a value outside its categories)."""
    s = frame[column]
    if isinstance(s.dtype, pd.CategoricalDtype) or (isinstance(value, str)
                                                    and pd.api.types.is_numeric_dtype(s)):
        s = s.astype(object)
    s = s.copy()
    s[mask] = value
    frame[column] = s


# -- the faults --------------------------------------------------------------------------


@register_tabular_fault("unit_change", eligible=_numeric)
def unit_change(frame: pd.DataFrame, schema: TabularSchema, rng: np.random.Generator,
                factor: float = 12.0, column: str | None = None) -> pd.DataFrame:
    """A numeric feature delivered in another unit (times ``factor``: age in months)."""
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor in (0, 1):
        raise ValueError(f"Expected `factor` to be a number other than 0 and 1, but got "
                         f"{factor!r}.")
    col = _pick("unit_change", frame, schema, rng, column)
    frame[col] = _numbers(frame[col]) * float(factor)
    return _touched(frame, col)


@register_tabular_fault("swapped_columns", eligible=_any, min_columns=2)
def swapped_columns(frame: pd.DataFrame, schema: TabularSchema, rng: np.random.Generator,
                    columns: tuple[str, str] | None = None) -> pd.DataFrame:
    """Two features' values exchanged (a column-order mix-up between writer and reader)."""
    if columns is None:
        present = [c for c in schema.columns if c.name in frame.columns]
        numeric = [c.name for c in present if c.is_numeric]
        pool = numeric if len(numeric) >= 2 else [c.name for c in present if not c.is_numeric]
        if len(pool) < 2:
            pool = [c.name for c in present]
        i, j = rng.choice(len(pool), size=2, replace=False)
        a, b = pool[int(i)], pool[int(j)]
    else:
        if (not isinstance(columns, (tuple, list)) or len(columns) != 2
                or columns[0] == columns[1]
                or not all(c in schema.names and c in frame.columns for c in columns)):
            raise ValueError(f"Expected `columns` to be two different schema columns, "
                             f"but got {columns!r}.")
        a, b = str(columns[0]), str(columns[1])
    va, vb = frame[a].to_numpy(copy=True), frame[b].to_numpy(copy=True)
    frame[a], frame[b] = vb, va
    return _touched(frame, a, b)


#: How a category may come back renamed from another source.
_RENAMES: tuple[Callable[[str], str], ...] = (str.lower, str.upper, lambda v: f" {v} ",
                                              lambda v: f"{v} ")


@register_tabular_fault("renamed_category", eligible=_categorical)
def renamed_category(frame: pd.DataFrame, schema: TabularSchema, rng: np.random.Generator,
                     fraction: float = 0.3, column: str | None = None) -> pd.DataFrame:
    """A categorical feature's values renamed on some rows (case or whitespace: 'Yes' as 'yes ')."""
    f = _fraction("fraction", fraction)
    col = _pick("renamed_category", frame, schema, rng, column)
    known = set(schema.column(col).categories)
    order = [int(i) for i in rng.permutation(len(_RENAMES))]
    mask = _rows(frame, rng, f) & frame[col].notna().to_numpy()
    values = frame[col].astype(object).to_numpy(copy=True)
    for i in np.flatnonzero(mask):
        text = category_text([values[i]])[0]
        for k in order:
            renamed = _RENAMES[k](text)
            if renamed not in known:
                values[i] = renamed
                break
    frame[col] = values
    return _touched(frame, col)


@register_tabular_fault("missing_sentinel", eligible=_any)
def missing_sentinel(frame: pd.DataFrame, schema: TabularSchema, rng: np.random.Generator,
                     fraction: float = 0.1, column: str | None = None,
                     sentinel: float | str | None = None) -> pd.DataFrame:
    """Missing values written as a sentinel on some rows (-1 or 999 for numbers, '?' for text)."""
    f = _fraction("fraction", fraction)
    col = _pick("missing_sentinel", frame, schema, rng, column)
    c = schema.column(col)
    if sentinel is None:
        if not c.is_numeric:
            sentinel = "?"
        else:
            lo = -np.inf if c.low is None else c.low
            hi = np.inf if c.high is None else c.high
            sentinel = next((v for v in (-1.0, 999.0, -999.0, 99999.0) if not lo <= v <= hi),
                            -1.0)
    elif isinstance(sentinel, bool) or not isinstance(sentinel, (int, float, str)):
        raise ValueError(f"Expected `sentinel` to be a number or a string, but got "
                         f"{sentinel!r}.")
    _set(frame, col, _rows(frame, rng, f), sentinel)
    return _touched(frame, col)


@register_tabular_fault("stale_constant", eligible=_any)
def stale_constant(frame: pd.DataFrame, schema: TabularSchema, rng: np.random.Generator,
                   column: str | None = None) -> pd.DataFrame:
    """A feature stuck at one value on every row (a stale cache or a frozen upstream job)."""
    if column is None:
        varying = [c for c in get_tabular_fault("stale_constant").columns(schema, frame)
                   if frame[c].nunique(dropna=True) > 1]
        if varying:
            column = varying[int(rng.integers(len(varying)))]
    col = _pick("stale_constant", frame, schema, rng, column)
    present = np.flatnonzero(frame[col].notna().to_numpy())
    row = int(present[rng.integers(len(present))]) if len(present) else 0
    value = frame[col].iloc[row]
    frame[col] = pd.Series([value] * len(frame), index=frame.index, dtype=frame[col].dtype)
    return _touched(frame, col)


@register_tabular_fault("standardised_twice", eligible=_numeric)
def standardised_twice(frame: pd.DataFrame, schema: TabularSchema, rng: np.random.Generator
                       ) -> pd.DataFrame:
    """Numeric features standardised by the pipeline, and again by the model's own preprocessing."""
    cols = get_tabular_fault("standardised_twice").columns(schema, frame)
    for col in cols:
        v = _numbers(frame[col])
        sd = float(np.nanstd(v))
        frame[col] = (v - float(np.nanmean(v))) / (sd if sd > 0 else 1.0)
    return _touched(frame, *cols)


@register_tabular_fault("misaligned_join", eligible=_any)
def misaligned_join(frame: pd.DataFrame, schema: TabularSchema, rng: np.random.Generator,
                    column: str | None = None, shift: int = 1) -> pd.DataFrame:
    """One feature's rows shifted against the others (a join on a misaligned key or index)."""
    if isinstance(shift, bool) or not isinstance(shift, int) or shift == 0:
        raise ValueError(f"Expected `shift` to be a non-zero integer, but got {shift!r}.")
    col = _pick("misaligned_join", frame, schema, rng, column)
    frame[col] = np.roll(frame[col].to_numpy(copy=True), shift)
    return _touched(frame, col)


@register_tabular_fault("float_truncated", eligible=_float)
def float_truncated(frame: pd.DataFrame, schema: TabularSchema, rng: np.random.Generator,
                    column: str | None = None) -> pd.DataFrame:
    """A real-valued feature truncated to an integer (an int cast in the pipeline)."""
    col = _pick("float_truncated", frame, schema, rng, column)
    v = np.trunc(_numbers(frame[col]))
    frame[col] = v.astype(np.int64) if np.isfinite(v).all() else v
    return _touched(frame, col)


@register_tabular_fault("null_as_zero", eligible=_numeric)
def null_as_zero(frame: pd.DataFrame, schema: TabularSchema, rng: np.random.Generator,
                 fraction: float = 0.2, column: str | None = None) -> pd.DataFrame:
    """Missing values imputed as 0 (its nulls, or a fraction of rows lost upstream).

    The column's missing values are filled with 0; where it has none, a
    ``fraction`` of its rows stand for values that went missing upstream.
    """
    f = _fraction("fraction", fraction)
    if column is None:
        cols = get_tabular_fault("null_as_zero").columns(schema, frame)
        with_nulls = [c for c in cols if frame[c].isna().any()]
        if with_nulls:
            column = with_nulls[int(rng.integers(len(with_nulls)))]
    col = _pick("null_as_zero", frame, schema, rng, column)
    v = _numbers(frame[col])
    nulls = np.isnan(v)
    mask = nulls if nulls.any() else _rows(frame, rng, f)
    v[mask] = 0.0
    frame[col] = v
    return _touched(frame, col)


@register_tabular_fault("vocabulary_order", eligible=_categorical)
def vocabulary_order(frame: pd.DataFrame, schema: TabularSchema, rng: np.random.Generator,
                     column: str | None = None) -> pd.DataFrame:
    """A categorical feature encoded with another vocabulary order (each category read as the next)."""
    col = _pick("vocabulary_order", frame, schema, rng, column)
    cats = list(schema.column(col).categories)
    moved = {v: cats[(i + 1) % len(cats)] for i, v in enumerate(cats)}
    values = frame[col].astype(object).to_numpy(copy=True)
    notna = pd.notna(values)
    text = np.array(category_text(values[notna]), dtype=object)
    values[notna] = [moved.get(t, t) for t in text]
    frame[col] = values
    return _touched(frame, col)


@register_tabular_fault("duplicated_rows", eligible=_any)
def duplicated_rows(frame: pd.DataFrame, schema: TabularSchema, rng: np.random.Generator,
                    fraction: float = 0.2) -> pd.DataFrame:
    """Some rows' features replaced by another row's (a join fan-out that repeats records)."""
    f = _fraction("fraction", fraction)
    cols = get_tabular_fault("duplicated_rows").columns(schema, frame)
    n = len(frame)
    if n < 2:
        return _touched(frame)
    mask = _rows(frame, rng, min(f, (n - 1) / n))
    sources = rng.choice(np.flatnonzero(~mask), size=int(mask.sum()), replace=True)
    target = np.flatnonzero(mask)
    for col in cols:
        values = frame[col].to_numpy(copy=True)
        values[target] = values[sources]
        frame[col] = values
    return _touched(frame, *cols)
