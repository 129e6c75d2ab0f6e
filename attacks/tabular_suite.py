"""Noise and fault suites on a feature table: their per-sample outcomes for
the runner (the tabular side of ``attacks.corruption_suite``).

``corruption:`` names tabular noises (``attacks.tabular_noise``) at each
severity; ``fault:`` names tabular pipeline faults
(``attacks.tabular_faults``), applied to the raw frame and encoded with the
schema as the pipeline would: a value the schema does not know (an unseen
category, text in a number column) arrives as NaN and the version's own
imputation handles it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from attacks.rng import sample_keys
from attacks.tabular_faults import apply_tabular_fault
from attacks.tabular_noise import apply_tabular_noise
from benchmark.core.forward import predict_finite
from benchmark.core.specs import CorruptionSuiteSpec, FaultSuiteSpec
from benchmark.core.types import EvalSet, ModelUnderTest, Outcome, Threat


def _outcome(model: ModelUnderTest, threat: Threat, data: EvalSet, x: np.ndarray,
             batch_size: int, columns: dict[str, np.ndarray]) -> Outcome:
    pred, finite = predict_finite(model, torch.from_numpy(np.ascontiguousarray(x)), batch_size)
    return Outcome(model=model.name, version=model.version, threat=threat, pred=pred,
                   correct=(pred == data.y.numpy()) & finite,
                   columns={"finite": finite.astype(np.float64), **columns})


def _changes(x: np.ndarray, x0: np.ndarray) -> dict[str, np.ndarray]:
    """Per sample: changed values (``l0``, a NaN where a value was counts) and
    newly missing values (``missing``)."""
    same = (x == x0) | (np.isnan(x) & np.isnan(x0))
    return {"l0": (~same).sum(axis=1).astype(np.float64),
            "missing": (np.isnan(x) & ~np.isnan(x0)).sum(axis=1).astype(np.float64)}


def noise_outcomes(suite: CorruptionSuiteSpec, model: ModelUnderTest, data: EvalSet,
                   batch_size: int, seed: int, on_step: Callable[[], None] | None = None
                   ) -> Iterator[Outcome]:
    """Per-sample outcomes of every (noise, severity) of the suite."""
    assert data.schema is not None and data.train_x is not None
    x0 = data.x.numpy()
    keys = sample_keys(data.x)
    s = suite.seed if suite.seed is not None else seed
    for name in suite.corruptions:
        for sev in suite.severities:
            x = apply_tabular_noise(name, x0, data.schema, data.train_x.numpy(), sev, s, keys)
            threat = Threat(family="corruption", name=name, param=float(sev),
                            params={"severity": sev, "suite": suite.name, "seed": s})
            yield _outcome(model, threat, data, x, batch_size, _changes(x, x0))
            if on_step:
                on_step()


def faulted_matrix(data: EvalSet, name: str, params: dict, seed: int) -> np.ndarray:
    """The raw matrix the model receives when fault ``name`` breaks the frame."""
    assert data.schema is not None and data.frame is not None
    broken = apply_tabular_fault(name, data.frame, data.schema, seed, params)
    return data.schema.encode(broken)


def fault_outcomes(suite: FaultSuiteSpec, model: ModelUnderTest, data: EvalSet,
                   batch_size: int, seed: int, on_step: Callable[[], None] | None = None
                   ) -> Iterator[Outcome]:
    """Per-sample outcomes under each tabular fault (a sample whose logits are
    not all finite counts as misclassified)."""
    x0 = data.x.numpy()
    s = suite.seed if suite.seed is not None else seed
    for fault in suite.faults:
        x = faulted_matrix(data, fault.name, dict(fault.params), s)
        threat = Threat(family="fault", name=fault.name, param=None,
                        params={**fault.params, "suite": suite.name, "seed": s})
        yield _outcome(model, threat, data, x, batch_size, _changes(x, x0))
        if on_step:
            on_step()


def tabular_suite_outcomes(corruption: CorruptionSuiteSpec | None, fault: FaultSuiteSpec | None,
                           model: ModelUnderTest, data: EvalSet, batch_size: int, seed: int,
                           on_step: Callable[[], None] | None = None) -> Iterator[Outcome]:
    """Every noise and fault outcome of a run against one version on a table."""
    if corruption is not None:
        yield from noise_outcomes(corruption, model, data, batch_size, seed, on_step)
    if fault is not None:
        yield from fault_outcomes(fault, model, data, batch_size, seed, on_step)
