"""Natural noise on a feature table, by severity 1-5, on raw feature values.

Three kinds, each applied to the *mutable* columns only (an immutable
column never changes) and seeded per sample like the image corruptions
(a sample's noise depends on the run seed, the noise, the severity and the
sample's content, never on its batch or position):

- ``tab_gaussian``: Gaussian noise on numeric columns, in units of each
  column's standard deviation on the training part;
- ``tab_flip``: each categorical value replaced, with probability ``p``, by
  another of its categories (uniformly);
- ``tab_missing``: each value missing (NaN) completely at random with
  probability ``p``; the version's own imputation handles it.

Results are clipped to each column's range and integers rounded (NaN stays
NaN), so every output is a valid raw row of the schema.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from attacks.rng import SampleRNG, sample_keys, sample_seeds
from benchmark.core.registry import Registry
from benchmark.core.tabular import TabularSchema

#: Per severity 1..5: noise std in units of the training std, flip and missing probabilities.
GAUSSIAN_STD: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 1.0)
FLIP_P: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.3)
MISSING_P: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.4)

TabularNoise = Callable[[np.ndarray, TabularSchema, np.ndarray, int, SampleRNG], np.ndarray]
TABULAR_NOISE: Registry[TabularNoise] = Registry("tabular noise")


def tabular_noise_names() -> list[str]:
    return TABULAR_NOISE.names()


def train_std(schema: TabularSchema, train_x: np.ndarray) -> np.ndarray:
    """Per column, the standard deviation on the training part (1 where it is
    0 or not a number, and for categorical columns)."""
    x = np.asarray(train_x, dtype=np.float64)
    std = np.ones(x.shape[1])
    for j in np.flatnonzero(schema.mask("numeric")):
        col = x[:, j][np.isfinite(x[:, j])]
        s = float(col.std()) if col.size else 0.0
        std[j] = s if s > 0 else 1.0
    return std


def mutable_mask(schema: TabularSchema) -> np.ndarray:
    return np.array([c.mutable for c in schema.columns])


def make_valid(schema: TabularSchema, x: np.ndarray) -> np.ndarray:
    """Clip to each column's range and round integers and codes; NaN stays NaN."""
    lo, hi = schema.bounds()
    out = np.clip(x, lo, hi)
    whole = schema.mask("integer") | schema.mask("categorical")
    out[:, whole] = np.rint(out[:, whole])
    return out.astype(np.float32)


@TABULAR_NOISE.register("tab_gaussian")
def tab_gaussian(x: np.ndarray, schema: TabularSchema, std: np.ndarray, severity: int,
                 rng: SampleRNG) -> np.ndarray:
    cols = schema.mask("numeric") & mutable_mask(schema)
    z = rng.randn(x.shape[1], dtype=torch.float64).numpy()
    out = x.astype(np.float64)
    out[:, cols] += GAUSSIAN_STD[severity - 1] * std[cols] * z[:, cols]
    return make_valid(schema, out)


@TABULAR_NOISE.register("tab_flip")
def tab_flip(x: np.ndarray, schema: TabularSchema, std: np.ndarray, severity: int,
             rng: SampleRNG) -> np.ndarray:
    cols = schema.mask("categorical") & mutable_mask(schema)
    u_flip = rng.rand(x.shape[1], dtype=torch.float64).numpy()
    u_to = rng.rand(x.shape[1], dtype=torch.float64).numpy()
    k = np.array([max(len(c.categories), 1) for c in schema.columns], dtype=np.float64)
    out = x.astype(np.float64)
    shift = 1.0 + np.floor(u_to * (k - 1.0))          # 1 .. k-1: always another category
    flipped = np.mod(out + shift, k)
    take = cols[None, :] & (u_flip < FLIP_P[severity - 1]) & np.isfinite(out)
    out[take] = flipped[take]
    return make_valid(schema, out)


@TABULAR_NOISE.register("tab_missing")
def tab_missing(x: np.ndarray, schema: TabularSchema, std: np.ndarray, severity: int,
                rng: SampleRNG) -> np.ndarray:
    u = rng.rand(x.shape[1], dtype=torch.float64).numpy()
    out = x.astype(np.float64)
    out[(u < MISSING_P[severity - 1]) & mutable_mask(schema)[None, :]] = np.nan
    return make_valid(schema, out)


def apply_tabular_noise(name: str, x: np.ndarray, schema: TabularSchema, train_x: np.ndarray,
                        severity: int, seed: int, keys: list[str] | None = None) -> np.ndarray:
    """``x`` (raw rows) under the noise ``name`` at ``severity`` (1..5), each
    row seeded by (seed, name, severity, the row's content)."""
    if severity not in range(1, 6):
        raise ValueError(f"Expected `severity` to be an integer in 1..5, but got {severity!r}.")
    fn = TABULAR_NOISE.get(name)
    x = np.ascontiguousarray(x, dtype=np.float32)
    keys = keys if keys is not None else sample_keys(torch.from_numpy(x))
    rng = SampleRNG(sample_seeds(seed, name, severity, keys))
    return fn(x, schema, train_std(schema, train_x), severity, rng)
