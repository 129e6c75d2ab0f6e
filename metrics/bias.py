"""Performance bias of a run: the orchestration over the group metrics
(``metrics.groups``), robustness disparity (``metrics.disparity``) and slice
discovery (``metrics.slices``).

It sits above those three; ``metrics.groups`` imports none of them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from benchmark.core.specs import GroupsSpec
from benchmark.core.types import EvalSet, Measurement, Outcome
from metrics.disparity import disparity_measurements
from metrics.groups import group_measurements, sensitive_features
from metrics.properties import compute_properties, list_properties
from metrics.slices import candidate_slices, slice_measurements

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BiasInputs:
    """What the bias measurements split outcomes by: the image properties they
    need and the sensitive-feature columns (also written into the outcomes)."""

    properties: dict[str, np.ndarray]
    columns: dict[str, pd.Series]


def bias_inputs(spec: GroupsSpec | None, data: EvalSet) -> BiasInputs:
    """The properties and group columns of ``data`` under ``spec`` (none without a spec)."""
    if spec is None:
        return BiasInputs({}, {})
    needed = {f.property for f in spec.features if f.kind == "property"}
    if spec.slices.enabled and data.modality == "image":  # tables slice on their features
        needed |= set(spec.slices.properties or list_properties())
    props = compute_properties(data.x, sorted(p for p in needed if p)) if needed else {}
    return BiasInputs(props, sensitive_features(spec, data, props))


def bias_measurements(spec: GroupsSpec | None, data: EvalSet, outcomes: Sequence[Outcome],
                      seed: int = 0, num_classes: int | None = None,
                      inputs: BiasInputs | None = None) -> list[Measurement]:
    """Every performance-bias measurement of a run: group metrics, robustness
    disparity and discovered slices, from the per-sample outcomes;
    ``num_classes`` is the model versions' class count (None: the data set's);
    ``inputs`` are ``bias_inputs(spec, data)`` when the caller has them."""
    if spec is None:
        return []
    started = time.perf_counter()
    inputs = inputs or bias_inputs(spec, data)
    props, columns = inputs.properties, inputs.columns
    rows = group_measurements(spec, data, outcomes, columns, seed, num_classes)
    rows += disparity_measurements(outcomes, columns, min_size=spec.min_size, taus=spec.tau)
    if spec.slices.enabled:
        candidates = candidate_slices(spec.slices, data, props, missing=spec.missing)
        rows += slice_measurements(outcomes, candidates, spec.slices)
    log.info("Performance bias: %d measurements over %d outcome(s) and %d group feature(s) in "
             "%.1f s", len(rows), len(outcomes), len(columns), time.perf_counter() - started)
    return rows


# ---------------------------------------------------------------- console


