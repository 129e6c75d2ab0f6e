"""The column schema of a feature table: what each column is, what values it
may take, and whether a threat may change it.

A tabular ``EvalSet`` holds ``x`` as a float32 matrix (one column per schema
column, in schema order) of *raw* feature values: numbers as they are,
categoricals and binaries as the index of their category (``NaN`` when
missing or not in the schema). Preprocessing (one-hot, standardisation,
imputation) is part of each model version, so every threat works on these
raw values and ``project`` keeps them valid.

Pure numpy and pandas: the store, the validators and the monitor use it
without torch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

COLUMN_KINDS: tuple[str, ...] = ("numeric", "integer", "categorical", "binary")


@dataclass(frozen=True)
class Column:
    """One feature column.

    ``low``/``high`` bound numeric and integer values (inclusive); categorical
    and binary columns list their ``categories`` (as strings, in code order).
    ``mutable`` False locks the column against attacks; ``sensitive`` marks a
    group feature (always locked too).
    """

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    categories: tuple[str, ...] = ()
    mutable: bool = True
    sensitive: bool = False

    def __post_init__(self) -> None:
        if self.kind not in COLUMN_KINDS:
            raise ValueError(f"Column {self.name!r}: expected kind one of {list(COLUMN_KINDS)}, "
                             f"but got {self.kind!r}.")
        if self.kind in ("categorical", "binary") and not self.categories:
            raise ValueError(f"Column {self.name!r}: a {self.kind} column needs its categories.")

    @property
    def is_numeric(self) -> bool:
        return self.kind in ("numeric", "integer")

    @property
    def attackable(self) -> bool:
        """Whether an evasion attack may change this column."""
        return self.is_numeric and self.mutable and not self.sensitive

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "kind": self.kind, "mutable": self.mutable,
                             "sensitive": self.sensitive}
        if self.is_numeric:
            d.update(low=self.low, high=self.high)
        else:
            d["categories"] = list(self.categories)
        return d


@dataclass(frozen=True)
class TabularSchema:
    """The columns of a feature table, the target and its classes."""

    columns: tuple[Column, ...]
    target: str
    classes: tuple[str, ...] = ()
    extras: Mapping[str, Any] = field(default_factory=dict)

    # -- lookups -----------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def sensitive(self) -> list[str]:
        return [c.name for c in self.columns if c.sensitive]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def mask(self, which: str) -> np.ndarray:
        """Boolean mask over columns: ``numeric`` (numeric or integer),
        ``integer``, ``categorical`` (categorical or binary), ``attackable``."""
        if which == "numeric":
            return np.array([c.is_numeric for c in self.columns])
        if which == "integer":
            return np.array([c.kind == "integer" for c in self.columns])
        if which == "categorical":
            return np.array([not c.is_numeric for c in self.columns])
        if which == "attackable":
            return np.array([c.attackable for c in self.columns])
        raise ValueError(f"unknown mask {which!r}")

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-column lower and upper bound of the raw value (codes for
        categoricals: 0 .. len(categories) - 1)."""
        lo = np.array([(c.low if c.low is not None else -np.inf) if c.is_numeric else 0.0
                       for c in self.columns], dtype=np.float64)
        hi = np.array([(c.high if c.high is not None else np.inf) if c.is_numeric
                       else float(len(c.categories) - 1) for c in self.columns], dtype=np.float64)
        return lo, hi

    # -- raw frame <-> matrix ------------------------------------------------
    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """The float32 matrix of a raw frame: numbers as numbers (``NaN`` when
        not a number), categories as their code (``NaN`` when missing or not
        among the schema's categories). Raises KeyError on a missing column."""
        out = np.empty((len(frame), len(self.columns)), dtype=np.float32)
        for j, c in enumerate(self.columns):
            col = frame[c.name]
            if c.is_numeric:
                out[:, j] = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64,
                                                                          na_value=np.nan)
            else:
                # map each distinct value once, not each row
                lookup = {v: float(i) for i, v in enumerate(c.categories)}
                codes, uniques = pd.factorize(col, use_na_sentinel=True)
                per_unique = np.array([lookup.get(_category_text(v), np.nan) for v in uniques]
                                      + [np.nan], dtype=np.float32)
                out[:, j] = per_unique[codes]
        return out

    def decode(self, x: np.ndarray) -> pd.DataFrame:
        """The raw frame of a matrix (categories back as strings)."""
        x = np.asarray(x, dtype=np.float64)
        data: dict[str, Any] = {}
        for j, c in enumerate(self.columns):
            if c.is_numeric:
                data[c.name] = x[:, j]
            else:
                codes = x[:, j]
                cats = np.array(list(c.categories) + [None], dtype=object)
                idx = np.where(np.isfinite(codes), np.clip(np.rint(np.nan_to_num(codes)), 0,
                                                            len(c.categories) - 1), -1)
                data[c.name] = cats[idx.astype(int)]
        return pd.DataFrame(data)

    def unknown_values(self, frame: pd.DataFrame) -> dict[str, list[str]]:
        """Per categorical column, the non-missing values not in the schema."""
        bad: dict[str, list[str]] = {}
        for c in self.columns:
            if c.is_numeric or c.name not in frame:
                continue
            col = frame[c.name].dropna()
            seen = {_category_text(v) for v in col.unique()}
            extra = sorted(seen - set(c.categories))
            if extra:
                bad[c.name] = extra
        return bad

    # -- threats -----------------------------------------------------------
    def project(self, x: np.ndarray, x0: np.ndarray) -> np.ndarray:
        """``x`` made valid against the schema, relative to the clean ``x0``:
        columns an attack may not change are restored from ``x0``, the rest
        clipped to their range and integers rounded. NaN stays NaN."""
        x = np.array(x, dtype=np.float32, copy=True)
        x0 = np.asarray(x0, dtype=np.float32)
        locked = ~self.mask("attackable")
        x[:, locked] = x0[:, locked]
        lo, hi = self.bounds()
        x = np.clip(x, lo.astype(np.float32), hi.astype(np.float32))
        ints = self.mask("integer")
        x[:, ints] = np.rint(x[:, ints])
        return x

    # -- identity ----------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "classes": list(self.classes),
                "columns": [c.as_dict() for c in self.columns]}

    def digest(self) -> str:
        """sha256 of the schema as JSON (part of a tabular set's fingerprint)."""
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True,
                                         default=str).encode()).hexdigest()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TabularSchema:
        cols = []
        for c in d["columns"]:
            cols.append(Column(name=str(c["name"]), kind=str(c["kind"]),
                               low=c.get("low"), high=c.get("high"),
                               categories=tuple(str(v) for v in c.get("categories", ()) or ()),
                               mutable=bool(c.get("mutable", True)),
                               sensitive=bool(c.get("sensitive", False))))
        return cls(columns=tuple(cols), target=str(d["target"]),
                   classes=tuple(str(v) for v in d.get("classes", ()) or ()))

    @classmethod
    def infer(cls, frame: pd.DataFrame, target: str, *, sensitive: Iterable[str] = (),
              categorical: Iterable[str] | None = None, immutable: Iterable[str] = (),
              max_categories: int = 50) -> TabularSchema:
        """A schema inferred from reference (training) data: object, bool and
        category columns (or those named in ``categorical``) become categorical
        (binary with two values), whole-number columns integer, the rest
        numeric; ranges and categories are those seen. ``target`` is left out
        of the columns and its sorted values become the classes."""
        sens, imm = set(sensitive), set(immutable)
        named_cat = set(categorical) if categorical is not None else None
        cols: list[Column] = []
        for name in frame.columns:
            if name == target:
                continue
            s = frame[name]
            is_cat = (name in named_cat) if named_cat is not None else False
            is_cat = is_cat or not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)
            if is_cat:
                cats = tuple(sorted({_category_text(v) for v in s.dropna().unique()}))
                if len(cats) > max_categories:
                    raise ValueError(f"Column {name!r}: expected at most {max_categories} "
                                     f"categories for a categorical column, but got {len(cats)}.")
                kind = "binary" if len(cats) == 2 else "categorical"
                cols.append(Column(name=str(name), kind=kind, categories=cats,
                                   mutable=name not in imm, sensitive=name in sens))
            else:
                v = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
                fin = v[np.isfinite(v)]
                whole = fin.size > 0 and bool(np.all(fin == np.rint(fin)))
                cols.append(Column(name=str(name), kind="integer" if whole else "numeric",
                                   low=float(fin.min()) if fin.size else None,
                                   high=float(fin.max()) if fin.size else None,
                                   mutable=name not in imm, sensitive=name in sens))
        classes = tuple(sorted({_category_text(v) for v in frame[target].dropna().unique()}))
        return cls(columns=tuple(cols), target=target, classes=classes)


def _category_text(v: Any) -> str:
    """A category as the schema stores it: its text, with whole floats
    (``1.0`` from a CSV) written as integers."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def category_text(values: Sequence[Any]) -> list[str]:
    """Values as the schema's category strings (see ``TabularSchema.encode``)."""
    return [_category_text(v) for v in values]
