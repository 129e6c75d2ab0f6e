"""Tabular windows: the raw feature table against the reference's schema.

A window's frame is encoded with the reference's ``TabularSchema`` (the
model versions read that matrix); a schema column missing from the window is
a schema mismatch (exit 2), an extra one is ignored. Checks are the schema
checks (``metrics.schema_checks``), drift is per schema column (KS on the
finite numbers, chi-squared over the categories plus one bucket for missing
or unknown values). Groups default to the schema's sensitive categorical
columns. The threat library holds every tabular pipeline fault that applies
to the schema, applied to a subset of the reference.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.core.errors import DataError
from benchmark.core.types import EvalSet
from benchmark.monitor.match import Library, Threat, build_library
from benchmark.monitor.sources import Window

QUANTILES = (0.1, 0.5, 0.9)


def _schema(ref: Any) -> Any:
    if ref.data.schema is None:
        raise DataError("Expected a tabular reference (data=arrests or a table with a schema) "
                        "for table windows, but the reference holds images.")
    return ref.data.schema


def read_reference_table(path: Path, spec: Any) -> EvalSet:
    """A labelled reference table read with the schema of the config's data."""
    import torch

    from benchmark.data import load_evalset
    from benchmark.monitor.sources import read_table

    base = load_evalset(spec.data)
    schema = base.schema
    if schema is None:
        raise DataError(f"--reference {str(path)!r}: a table reference needs tabular data in "
                        f"the config (data=arrests, ...), but data is {base.name!r}.")
    frame = read_table(path, "--reference")
    if schema.target not in frame.columns:
        raise DataError(f"--reference {str(path)!r}: expected the label column "
                        f"{schema.target!r}, but the columns are {list(frame.columns)[:12]}.")
    y = _codes(schema, frame[schema.target].to_numpy(), "--reference")
    feats = frame.drop(columns=[schema.target])
    missing = [c for c in schema.names if c not in feats.columns]
    if missing:
        raise DataError(f"--reference {str(path)!r}: expected the schema's columns {missing}, "
                        f"but the columns are {list(feats.columns)[:12]}.")
    groups = pd.DataFrame({c: feats[c].astype(str) for c in _group_columns(schema)})
    return EvalSet(name=path.stem, x=torch.from_numpy(schema.encode(feats[schema.names])),
                   y=torch.from_numpy(y), classes=list(schema.classes), groups=groups,
                   schema=schema, frame=feats[schema.names].reset_index(drop=True))


def _group_columns(schema: Any) -> list[str]:
    return [c.name for c in schema.columns if c.sensitive and not c.is_numeric]


def _codes(schema: Any, values: np.ndarray, what: str) -> np.ndarray:
    """Labels as class indices: class names, or integers already indexing the classes."""
    classes = [str(c) for c in schema.classes]
    text = pd.Series(values).astype(str)
    if text.isin(classes).all():
        return np.array([classes.index(v) for v in text], dtype=np.int64)
    try:
        ints = np.asarray(values).astype(np.int64)
    except (TypeError, ValueError):
        ints = None
    if ints is not None and len(ints) and ints.min() >= 0 and ints.max() < len(classes):
        return ints
    bad = sorted(set(text) - set(classes))[:5]
    raise DataError(f"{what}: expected labels among the classes {classes}, but got {bad}.")


def prepare(ref: Any, w: Window) -> None:
    """Check the window's columns against the schema; default its groups."""
    schema = _schema(ref)
    assert w.frame is not None
    missing = [c for c in schema.names if c not in w.frame.columns]
    if missing:
        raise DataError(f"window {w.key}: expected the schema's columns {missing}, but the "
                        f"window has {list(w.frame.columns)[:12]}.")
    if schema.target in w.frame.columns and w.y is None:
        target = w.frame[schema.target]
        if target.notna().all():
            w.y = target.to_numpy()
    if len(w.groups.columns) == 0:
        cols = [c for c in _group_columns(schema) if c in ref.groups.columns]
        w.groups = pd.DataFrame({c: w.frame[c].astype(str).to_numpy() for c in cols})


def encode_window(ref: Any, w: Window) -> Any:
    import torch

    schema = _schema(ref)
    assert w.frame is not None
    return torch.from_numpy(schema.encode(w.frame[schema.names]))


def label_codes(ref: Any, w: Window) -> np.ndarray:
    return _codes(_schema(ref), np.asarray(w.y), f"window {w.key}")


def tabular_checks(ref: Any, w: Window) -> list[Any]:
    from metrics.schema_checks import run_schema_checks

    schema = _schema(ref)
    assert w.frame is not None
    return run_schema_checks(ref.data.frame, w.frame[schema.names], schema,
                             y_ref=ref.data.y.numpy(), y_batch=w.y)


def _columns(schema: Any, frame: pd.DataFrame) -> list[tuple[str, bool, int, np.ndarray]]:
    x = schema.encode(frame[schema.names]).astype(np.float64)
    out = []
    for j, c in enumerate(schema.columns):
        out.append((c.name, bool(c.is_numeric), len(c.categories), x[:, j]))
    return out


def tabular_pairs(ref: Any, w: Window) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(feature, kind, reference values, window values) for every schema column."""
    schema = _schema(ref)
    assert w.frame is not None
    pairs = []
    for (name, numeric, k, a), (_, _, _, b) in zip(_columns(schema, ref.data.frame),
                                                   _columns(schema, w.frame), strict=True):
        if numeric:
            fa, fb = a[np.isfinite(a)], b[np.isfinite(b)]
            if min(len(fa), len(fb)) >= 2:
                pairs.append((name, "numerical", fa, fb))
        else:
            pairs.append((name, "categorical", np.where(np.isnan(a), k, a).astype(np.int64),
                          np.where(np.isnan(b), k, b).astype(np.int64)))
    return pairs


class TableStats:
    def __init__(self, schema: Any, frame: pd.DataFrame) -> None:
        self.schema = schema
        self.cols = _columns(schema, frame)
        self.mean, self.std, self.share = {}, {}, {}
        for name, numeric, k, a in self.cols:
            if numeric:
                f = a[np.isfinite(a)]
                self.mean[name] = float(f.mean()) if len(f) else 0.0
                self.std[name] = float(f.std()) or 1.0
            else:
                codes = np.where(np.isnan(a), k, a).astype(np.int64)
                self.share[name] = np.bincount(codes, minlength=k + 1) / max(1, len(codes))


def table_signature(frame: pd.DataFrame, stats: TableStats) -> np.ndarray:
    """Per numeric column: mean and 10/50/90th percentile shifts in reference
    stds and the share of missing values; per categorical column: the change
    of each category's share (x 5) and of the missing/unknown share."""
    parts: list[float] = []
    for name, numeric, k, a in _columns(stats.schema, frame):
        if numeric:
            f = a[np.isfinite(a)]
            z = (f - stats.mean[name]) / stats.std[name] if len(f) else np.zeros(1)
            parts += [float(z.mean()), *(float(q) for q in np.quantile(z, QUANTILES)),
                      10.0 * float(np.mean(~np.isfinite(a)))]
        else:
            codes = np.where(np.isnan(a), k, a).astype(np.int64)
            share = np.bincount(codes, minlength=k + 1)[: k + 1] / max(1, len(codes))
            parts += [5.0 * float(d) for d in share - stats.share[name]]
    v = np.asarray(parts)
    return np.asarray(np.sign(v) * np.log1p(np.abs(v)))


#: Noise levels of ``feature_noise``: standard deviation in column stds, per severity.
NOISE_LEVELS: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.5)


def feature_noise(frame: pd.DataFrame, schema: Any, severity: int, seed: int) -> pd.DataFrame:
    """Gaussian measurement noise on every mutable numeric column (sd: the
    column's std x ``NOISE_LEVELS[severity - 1]``; integer columns rounded)."""
    rng = np.random.default_rng([seed, severity])
    out = frame.copy()
    for c in schema.columns:
        if not (c.is_numeric and c.mutable):
            continue
        v = pd.to_numeric(out[c.name], errors="coerce").to_numpy(dtype=np.float64)
        sd = float(np.nanstd(v)) or 1.0
        noisy = v + rng.normal(0.0, sd * NOISE_LEVELS[severity - 1], len(v))
        out[c.name] = np.round(noisy) if c.kind == "integer" else noisy
    return out


def _faulted(name: str, column: str | None, sub: pd.DataFrame, schema: Any,
             stats: TableStats) -> np.ndarray:
    from attacks.tabular_faults import apply_tabular_fault

    params = {"column": column} if column is not None else None
    return table_signature(apply_tabular_fault(name, sub, schema, seed=0, params=params), stats)


def _noisy(severity: int, sub: pd.DataFrame, schema: Any, stats: TableStats) -> np.ndarray:
    return table_signature(feature_noise(sub, schema, severity, seed=0), stats)


def tabular_library(ref: Any, n_subset: int = 500) -> Library:
    from attacks.tabular_faults import (
        get_tabular_fault,
        tabular_fault_applies,
        tabular_fault_names,
    )

    schema = _schema(ref)
    frame = ref.data.frame
    stats = TableStats(schema, frame)
    sub = frame.sample(min(n_subset, len(frame)), random_state=0).reset_index(drop=True)
    entries: list[tuple[Threat, Callable[[], np.ndarray]]] = [
        (Threat("corruption", "feature_noise", float(sev), "noise"),
         functools.partial(_noisy, sev, sub, schema, stats)) for sev in range(1, 6)]
    for name in tabular_fault_names():
        if not tabular_fault_applies(name, schema):
            continue
        fault = get_tabular_fault(name)
        # a fault that picks one column gets one entry per column it can break
        columns = fault.columns(schema, sub) if "column" in fault.params else [None]
        entries += [(Threat("fault", name, None, "fault"),
                     functools.partial(_faulted, name, col, sub, schema, stats))
                    for col in columns]
    lib = build_library(entries, table_signature(sub, stats), len(sub))
    lib.stats = stats
    return lib


def tabular_match(ref: Any, w: Window) -> Any:
    if ref.library is None:
        ref.library = tabular_library(ref)
    assert w.frame is not None
    return ref.library.match(table_signature(w.frame, ref.library.stats), len(w))


def bench_window(n: int, best_of: Callable[..., float]) -> tuple[float, float, int, int]:
    """Seconds for one window of ``n`` arrests rows through both versions, and
    for the bare encode + forward pass (for scripts/bench_monitor.py)."""
    import torch

    from benchmark.compose import compose_spec
    from benchmark.core.forward import forward_logits
    from benchmark.data import load_evalset
    from benchmark.models import load_model
    from benchmark.monitor.bench_lookup import BenchmarkMap
    from benchmark.monitor.engine import MonitorSettings, process_window
    from benchmark.monitor.reference import build_reference

    spec, _ = compose_spec(["data=arrests", "model=[arrests_mlp_v1,arrests_mlp_v2]"])
    data = load_evalset(spec.data)
    models = [load_model(m, torch.device("cpu")) for m in spec.models.values()]
    ref = build_reference(data, models, "data:arrests")
    assert data.frame is not None and data.schema is not None
    idx = np.random.default_rng(0).integers(0, len(data), n)
    frame = data.frame.iloc[idx].reset_index(drop=True)
    labels = np.asarray(data.schema.classes)[data.y.numpy()[idx]]
    w = Window(key="bench", source="bench", frame=frame, y=labels)
    s = MonitorSettings()
    process_window(ref, Window(key="warm", source="bench", frame=frame.copy(), y=labels.copy()),
                   0, s, BenchmarkMap(None))  # builds the fault library once

    def once() -> None:
        process_window(ref, Window(key="bench", source="bench", frame=w.frame, y=labels.copy()),
                       0, s, BenchmarkMap(None))

    schema = data.schema

    def bare() -> None:
        x = torch.from_numpy(schema.encode(frame[schema.names]))
        for m in models:
            forward_logits(m, x)

    return best_of(once), best_of(bare), n, len(models)
