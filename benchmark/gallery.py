"""The example gallery: a small, deterministic selection of examples per
(version, threat), with clean, perturbed and amplified-difference inputs, kept
in the run directory (``gallery.npz``, read with ``allow_pickle=False``).

Which points: for each (version, threat), up to ``BROKEN`` points the version
gets right on clean data and wrong under the threat, up to ``WORST_GROUP``
points of its worst group under that threat, and up to ``DISAGREE`` points
where another version of the run predicts differently. Points are drawn from
a fixed pool (a seeded stratified subset of at most ``POOL`` samples, chosen
before any threat runs), so memory stays bounded on large sets.

Where the inputs come from: attacks keep their examples of the pool points
while they run (``attacks.budgets.ExampleKeeper``): the gallery shows exactly
the example the outcome counted. Corruptions and faults draw per-sample noise
from each sample's content, so their inputs are regenerated for the chosen
points only. An attack piece reused from a resumed run kept no examples; its
threats are left out of the gallery.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attacks.budgets import ExampleKeeper
from attacks.corruption_suite import threat_inputs
from benchmark.core.specs import RunSpec
from benchmark.core.types import EvalSet, Measurement, ModelUnderTest, Outcome
from benchmark.data import stratified_subset
from benchmark.rundir import GALLERY_FILE, POINT_ARRAYS, Gallery, read_gallery

log = logging.getLogger(__name__)

#: Samples the gallery may choose from (a seeded stratified subset beyond it).
POOL = 256
BROKEN = 4
WORST_GROUP = 2
DISAGREE = 2



def pool_indices(y: np.ndarray, seed: int, size: int = POOL) -> np.ndarray:
    """The sorted sample indices the gallery chooses from."""
    n = len(y)
    if n <= size:
        return np.arange(n, dtype=np.int64)
    return np.asarray(stratified_subset(y, size, seed), dtype=np.int64)


class GalleryCollector:
    """What the runner hands the attacks so that their examples of the pool
    points are kept: one ``ExampleKeeper`` per (version, attack)."""

    def __init__(self, data: EvalSet, seed: int) -> None:
        self.data = data
        self.pool = pool_indices(data.y.numpy(), seed)
        self.keepers: dict[tuple[str, str], ExampleKeeper] = {}

    def keeper(self, model: ModelUnderTest, attack: str) -> ExampleKeeper:
        k = ExampleKeeper(self.pool, self.data.x)
        self.keepers[(model.key, attack)] = k
        return k


def amplified(diff: np.ndarray) -> np.ndarray:
    """A perturbation made visible, as uint8 pixels: 128 is no change, each
    point scaled so its largest change reaches 0 or 255 (NaN and infinite
    values show as 255)."""
    d = np.nan_to_num(diff.astype(np.float32), nan=np.inf)
    flat = d.reshape(len(d), -1)
    finite = np.where(np.isfinite(flat), np.abs(flat), 0.0)
    scale = finite.max(axis=1) if flat.shape[1] else np.zeros(len(d))
    scale = np.where(scale > 0, scale, 1.0).reshape((-1,) + (1,) * (d.ndim - 1))
    out = np.clip(0.5 + np.clip(d, -scale, scale) / (2 * scale), 0.0, 1.0)
    out[~np.isfinite(d)] = 1.0
    return np.round(out * 255).astype(np.uint8)


def _same_param(a: float | None, b: float | None) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    return b is not None and not (isinstance(b, float) and math.isnan(b)) and float(a) == float(b)


def _worst_group(measurements: Sequence[Measurement], o: Outcome, min_size: int
                 ) -> tuple[str, str] | None:
    """(feature, value) of the version's lowest-accuracy group under ``o``'s threat."""
    rows = [m for m in measurements
            if m.metric == "accuracy" and m.group_feature and m.model == o.model
            and m.version == o.version and m.family == o.threat.family
            and m.threat == o.threat.name and _same_param(m.param, o.threat.param)
            and m.n >= min_size and not math.isnan(m.value)]
    if not rows:
        return None
    worst = min(rows, key=lambda m: (m.value, m.group_feature, m.group_value))
    return worst.group_feature, worst.group_value


def _take(candidates: np.ndarray, taken: list[int], k: int) -> list[int]:
    out = [int(i) for i in candidates if int(i) not in taken][:k]
    taken.extend(out)
    return out


@dataclass
class _Points:
    rows: dict[str, list[Any]] = field(default_factory=lambda: {k: [] for k in POINT_ARRAYS})
    clean_samples: list[int] = field(default_factory=list)

    def clean_row(self, sample: int) -> int:
        if sample not in self.clean_samples:
            self.clean_samples.append(sample)
        return self.clean_samples.index(sample)


def _spread(idx: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``idx`` reordered round-robin over the true classes (first of each class, then
    the second, ...), so a few points show several classes."""
    if not len(idx):
        return idx
    labels = y[idx]
    rank = np.zeros(len(idx), dtype=np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rank[members] = np.arange(len(members))
    return idx[np.lexsort((idx, rank))]


def select_points(o: Outcome, clean: Outcome, others: Sequence[Outcome], pool: np.ndarray,
                  members: np.ndarray | None, y: np.ndarray
                  ) -> list[tuple[int, str, Outcome | None]]:
    """(sample, why, the other version's outcome for a disagreement) of one
    (version, threat), in a fixed order: broken, worst group, disagreement."""
    correct = np.asarray(o.correct, dtype=bool)
    clean_ok = np.asarray(clean.correct, dtype=bool)
    broken = _spread(pool[clean_ok[pool] & ~correct[pool]], y)
    taken: list[int] = []
    chosen: list[tuple[int, str, Outcome | None]] = []
    chosen += [(i, "broken", None) for i in _take(broken, taken, BROKEN)]
    if members is not None:
        in_group = pool[members[pool]]
        order = np.concatenate([in_group[~correct[in_group]], in_group[correct[in_group]]])
        chosen += [(i, "worst_group", None) for i in _take(order, taken, WORST_GROUP)]
    for other in others:
        differ = pool[np.asarray(other.pred)[pool] != np.asarray(o.pred)[pool]]
        chosen += [(i, "disagree", other) for i in _take(differ, taken, DISAGREE)]
        if len(taken) >= BROKEN + WORST_GROUP + DISAGREE:
            break
    return chosen


def build_gallery(spec: RunSpec, data: EvalSet, models: Sequence[ModelUnderTest],
                  outcomes: Sequence[Outcome], measurements: Sequence[Measurement],
                  collector: GalleryCollector) -> dict[str, np.ndarray]:
    """The gallery arrays of one run (see ``POINT_ARRAYS``)."""
    features: dict[str, Any] = {}
    if spec.groups is not None and spec.groups.features:
        from metrics.groups import sensitive_features

        try:
            features = sensitive_features(spec.groups, data)
        except Exception as exc:  # the gallery is optional; group metrics report the problem
            log.info("gallery: group columns unavailable (%s)", exc)
    min_size = spec.groups.min_size if spec.groups is not None else 1
    by_model = {m.key: m for m in models}
    clean = {o.model_key: o for o in outcomes if o.threat.family == "clean"}
    pts = _Points()
    y = data.y.numpy()
    pool = collector.pool
    for o in outcomes:
        if o.threat.family == "clean" or o.model_key not in clean:
            continue
        if o.threat.family == "attack":
            keeper = collector.keepers.get((o.model_key, o.threat.name))
            if keeper is None or o.threat.param is None or float(o.threat.param) not in keeper.kept:
                continue
        others = [p for p in outcomes if p.model_key != o.model_key
                  and p.threat.family == o.threat.family and p.threat.name == o.threat.name
                  and _same_param(p.threat.param, o.threat.param)
                  and p.threat.params == o.threat.params]
        worst = _worst_group(measurements, o, min_size)
        members = None
        if worst is not None and worst[0] in features:
            members = np.asarray(features[worst[0]].astype(str) == worst[1])
        chosen = select_points(o, clean[o.model_key], others, pool, members, y)
        if not chosen:
            continue
        idx = np.array([c[0] for c in chosen], dtype=np.int64)
        if o.threat.family == "attack":
            keeper = collector.keepers[(o.model_key, o.threat.name)]
            kept = keeper.kept[float(o.threat.param or 0.0)]
            x_pert = kept[torch.from_numpy(np.searchsorted(keeper.pool, idx))].numpy()
        else:
            try:
                x_pert = threat_inputs(spec.corruption, spec.fault, by_model[o.model_key], data,
                                       idx, o.threat, spec.seed, spec.models).numpy()
            except Exception as exc:  # e.g. an image corruption on a feature table
                log.info("gallery: no inputs for %s %s (%s)", o.model_key, o.threat.name, exc)
                continue
        x_clean = data.x[torch.from_numpy(idx)].numpy()
        group = f"{worst[0]}={worst[1]}" if worst is not None else ""
        for j, (i, why, other) in enumerate(chosen):
            r = pts.rows
            r["version"].append(o.model_key)
            r["family"].append(o.threat.family)
            r["threat"].append(o.threat.name)
            r["param"].append(np.nan if o.threat.param is None else float(o.threat.param))
            r["sample"].append(i)
            r["label"].append(int(y[i]))
            r["pred_clean"].append(int(clean[o.model_key].pred[i]))
            r["pred"].append(int(o.pred[i]))
            r["other_version"].append(other.model_key if other is not None else "")
            r["other_pred"].append(int(other.pred[i]) if other is not None else -1)
            r["why"].append(why)
            r["group"].append(group)
            r["perturbed"].append(x_pert[j].astype(np.float32))
            r["diff"].append(x_pert[j] - x_clean[j])
            r["clean_row"].append(pts.clean_row(i))
    return _arrays(pts, data)


def _arrays(pts: _Points, data: EvalSet) -> dict[str, np.ndarray]:
    shape = data.sample_shape
    r = pts.rows
    out: dict[str, np.ndarray] = {}
    for k in ("version", "family", "threat", "other_version", "why", "group"):
        out[k] = np.asarray(r[k], dtype=str) if r[k] else np.zeros(0, dtype="<U1")
    out["param"] = np.asarray(r["param"], dtype=np.float64)
    for k in ("sample", "label", "pred_clean", "pred", "other_pred", "clean_row"):
        out[k] = np.asarray(r[k], dtype=np.int64)
    empty = np.zeros((0, *shape), dtype=np.float32)
    out["perturbed"] = np.stack(r["perturbed"]) if r["perturbed"] else empty
    out["diff"] = amplified(np.stack(r["diff"])) if r["diff"] else empty.astype(np.uint8)
    idx = np.asarray(pts.clean_samples, dtype=np.int64)
    out["clean_sample"] = idx
    out["clean"] = data.x[torch.from_numpy(idx)].numpy() if len(idx) else empty
    out["classes"] = np.asarray([str(c) for c in data.classes], dtype=str)
    out["modality"] = np.asarray(data.modality)
    out["features"] = (np.asarray(data.schema.names, dtype=str) if data.schema is not None
                       else np.zeros(0, dtype="<U1"))
    return out


def write_gallery(out_dir: Path, arrays: dict[str, np.ndarray]) -> Path:
    """``gallery.npz`` in ``out_dir``, written atomically (compressed numeric arrays only)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / GALLERY_FILE
    tmp = out_dir / (GALLERY_FILE + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)
    return path


def collect_and_write(spec: RunSpec, data: EvalSet, models: Sequence[ModelUnderTest],
                      outcomes: Sequence[Outcome], measurements: Sequence[Measurement],
                      collector: GalleryCollector, out_dir: Path) -> Path | None:
    """The runner's gallery phase: select, gather the inputs, write ``gallery.npz``.
    The gallery is derived from the outcomes: a failure here is one warning,
    never a lost run."""
    try:
        arrays = build_gallery(spec, data, models, outcomes, measurements, collector)
    except Exception as exc:
        log.warning("example gallery not written: %s: %s", type(exc).__name__, exc)
        return None
    return write_gallery(out_dir, arrays)


__all__ = [
    "GALLERY_FILE",
    "Gallery",
    "GalleryCollector",
    "amplified",
    "build_gallery",
    "collect_and_write",
    "pool_indices",
    "read_gallery",
    "select_points",
    "write_gallery",
]
