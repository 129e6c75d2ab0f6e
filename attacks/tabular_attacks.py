"""ART evasion attacks on a feature table, on its attackable columns only.

The attack runs on a *standardised view* of the raw matrix: column ``j`` as
``z_j = (x_j - mean_j) / std_j`` with the training part's mean and std
(categorical codes as they are), so a budget ``eps`` means "``eps``
standard deviations of each column" (Linf: at most that much on every
attackable column; L2: over the attackable columns together). The estimator
sees ``z`` through a module that maps back to raw values before the model
version's own preprocessing, and clips to each column's range in ``z``.

Only ``schema.mask("attackable")`` columns (numeric, mutable, not
sensitive) may change: FGSM, PGD and HopSkipJump get it as ART's ``mask``;
LowProFool (which has none) gets a feature importance that makes every
locked column expensive. Whatever ART returns is then, in this order:
projected onto the budget ball in ``z`` (budgeted attacks), integer columns
rounded toward the clean value (so rounding never exceeds the budget), and
``schema.project`` (locked columns restored, values clipped to range). Success
is recomputed with our own forward pass on that projected raw row; the
outcome columns give the realised perturbation in std units (``linf``,
``l2``) and the number of changed columns (``l0``).

Budgets follow the image sweeps: a point broken at a smaller eps stays
broken and is not attacked again; minimum-norm attacks (HopSkipJump,
LowProFool) run once and each eps is a threshold on the L2 distance found.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from attacks.art_adapter import ArtAdapter, derive_seed, seed_everything
from attacks.budgets import PointState, threat_of
from attacks.tabular_noise import train_std
from benchmark.core.errors import ConfigError
from benchmark.core.forward import forward_logits, predict
from benchmark.core.specs import AttackSpec
from benchmark.core.tabular import TabularSchema
from benchmark.core.types import EvalSet, ModelUnderTest, Outcome, Threat

#: Standardised bounds are kept within this many stds (ART's random starts need finite ones).
Z_LIMIT = 50.0
#: Importance of a locked column for LowProFool, relative to the largest attackable one.
LOCKED_IMPORTANCE = 100.0


@dataclass(frozen=True)
class StandardView:
    """The standardised coordinates a tabular attack works in."""

    center: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, schema: TabularSchema, train_x: np.ndarray) -> StandardView:
        x = np.asarray(train_x, dtype=np.float64)
        num = schema.mask("numeric")
        center = np.zeros(x.shape[1])
        for j in np.flatnonzero(num):
            col = x[:, j][np.isfinite(x[:, j])]
            center[j] = float(col.mean()) if col.size else 0.0
        return cls(center=center, scale=train_std(schema, x))

    def to_z(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float64) - self.center) / self.scale).astype(np.float32)

    def from_z(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z, dtype=np.float64) * self.scale + self.center

    def bounds(self, schema: TabularSchema) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = schema.bounds()
        zlo = np.clip((lo - self.center) / self.scale, -Z_LIMIT, Z_LIMIT)
        zhi = np.clip((hi - self.center) / self.scale, -Z_LIMIT, Z_LIMIT)
        return zlo.astype(np.float32), zhi.astype(np.float32)


class FromStandard(nn.Module):
    """``module(z * scale + center)``: the model version seen in standardised units."""

    center: torch.Tensor
    scale: torch.Tensor

    def __init__(self, module: nn.Module, view: StandardView) -> None:
        super().__init__()
        self.module = module
        self.register_buffer("center", torch.from_numpy(view.center).float())
        self.register_buffer("scale", torch.from_numpy(view.scale).float())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.module(z.float() * self.scale + self.center)


def standard_adapter(model: ModelUnderTest, schema: TabularSchema, view: StandardView,
                     batch_size: int) -> ArtAdapter:
    """An ART adapter whose inputs are the standardised view, clipped to the
    columns' ranges."""
    module = FromStandard(model.module, view).to(model.device)
    module.train(model.module.training)
    seen = replace(model, module=module)
    lo, hi = view.bounds(schema)
    return ArtAdapter(seen, batch_size, clip_values=(lo, hi), loss_reduction="sum")


def finish(schema: TabularSchema, view: StandardView, z_adv: np.ndarray, x0: np.ndarray,
           eps: float | None, norm: float) -> np.ndarray:
    """A raw, valid row from an attack's output (see the module doc): the ball
    in ``z`` (when ``eps`` is given), integers rounded toward the clean value,
    locked columns restored, values clipped to range."""
    z0 = view.to_z(x0).astype(np.float64)
    delta = np.nan_to_num(np.asarray(z_adv, dtype=np.float64) - z0, nan=0.0)
    delta[:, ~schema.mask("attackable")] = 0.0
    if eps is not None:
        if math.isinf(norm):
            delta = np.clip(delta, -eps, eps)
        else:
            size = np.linalg.norm(delta, ord=norm, axis=1, keepdims=True)
            delta = delta * np.where(size > eps, eps / np.maximum(size, 1e-12), 1.0)
    raw = delta * view.scale
    ints = schema.mask("integer")
    raw[:, ints] = np.trunc(raw[:, ints])
    return schema.project(np.asarray(x0, dtype=np.float64) + raw, x0)


def std_norms(schema: TabularSchema, view: StandardView, x_adv: np.ndarray, x0: np.ndarray
              ) -> dict[str, np.ndarray]:
    """Realised perturbation per sample: Linf and L2 in std units, L0 as changed columns."""
    d = np.nan_to_num((np.asarray(x_adv, np.float64) - np.asarray(x0, np.float64)) / view.scale,
                      nan=0.0)
    return {"linf": np.abs(d).max(axis=1), "l2": np.linalg.norm(d, axis=1),
            "l0": (np.abs(d) > 1e-9).sum(axis=1).astype(np.float64)}


def _importance(schema: TabularSchema, view: StandardView, train_x: np.ndarray,
                train_y: np.ndarray) -> np.ndarray:
    """|Pearson correlation| of each standardised column with the label on the
    training part; locked columns get ``LOCKED_IMPORTANCE`` times the largest."""
    z = np.nan_to_num(view.to_z(train_x).astype(np.float64))
    y = np.asarray(train_y, dtype=np.float64)
    imp = np.zeros(z.shape[1])
    for j in range(z.shape[1]):
        if z[:, j].std() > 0 and y.std() > 0:
            imp[j] = abs(float(np.corrcoef(z[:, j], y)[0, 1]))
    att = schema.mask("attackable")
    base = max(float(imp[att].max()) if att.any() else 1.0, 1e-3)
    imp[att] = np.maximum(imp[att], 1e-3)
    imp[~att] = LOCKED_IMPORTANCE * base
    return imp


def _other_class(model: ModelUnderTest, x: torch.Tensor, y: torch.Tensor,
                 batch_size: int) -> torch.Tensor:
    """The most likely class other than the true one (LowProFool's target)."""
    logits = forward_logits(model, x, batch_size)
    logits[torch.arange(len(y)), y] = -torch.inf
    return logits.argmax(1)


class TabularAttack:
    """One attack config against one version on a feature table."""

    def __init__(self, model: ModelUnderTest, spec: AttackSpec, data: EvalSet,
                 batch_size: int, seed: int) -> None:
        if data.schema is None or data.train_x is None:
            raise ConfigError(f"Attack {spec.name!r}: dataset {data.name!r} is not a feature "
                              "table with a training part.")
        if spec.units != "std":
            raise ConfigError(
                f"Expected `attack.{spec.name}` to be a feature-table attack (units: std, as in "
                f"tab_fgsm, tab_pgd, lowprofool, tab_hopskipjump) for dataset {data.name!r}, "
                "but its budgets are in image pixel units.")
        if spec.members or spec.targeted:
            raise ConfigError(f"Expected `attack.{spec.name}` to be a single untargeted attack "
                              "on a feature table, but got an ensemble or a targeted one.")
        self.model, self.spec, self.data = model, spec, data
        self.schema: TabularSchema = data.schema
        self.batch_size, self.seed = batch_size, seed
        self.view = StandardView.fit(self.schema, data.train_x.numpy())
        self.adapter = standard_adapter(model, self.schema, self.view, batch_size)
        self.mask = self.schema.mask("attackable").astype(np.float32)
        self.lowprofool = spec.target.endswith(".LowProFool")

    def examples(self, idx: np.ndarray, eps: float | None) -> np.ndarray:
        """Projected raw adversarial rows for the samples ``idx`` at ``eps``."""
        x0 = self.data.x[torch.from_numpy(idx)]
        y = self.data.y[torch.from_numpy(idx)]
        seed_everything(derive_seed(self.seed, self.model.key, self.spec.name, eps))
        attack = self.adapter.make_attack(self.spec, eps)
        labels = y
        if self.lowprofool:
            assert self.data.train_x is not None and self.data.train_y is not None
            attack.fit_importances(importance_array=_importance(
                self.schema, self.view, self.data.train_x.numpy(), self.data.train_y.numpy()))
            labels = _other_class(self.model, x0, y, self.batch_size)
        z0 = torch.from_numpy(self.view.to_z(x0.numpy()))
        # ART warns once per point whose random start is not adversarial: on a table with
        # few attackable columns that is most points, and the outcome already says so
        art_log = logging.getLogger(type(attack).__module__)
        level = art_log.level
        art_log.setLevel(logging.ERROR)
        try:
            z_adv = self.adapter.generate(attack, z0, labels, mask=self.mask[None, :])
        finally:
            art_log.setLevel(level)
        return finish(self.schema, self.view, z_adv.cpu().numpy(), x0.numpy(),
                      None if self.spec.minimum_norm else eps, self.spec.norm)

    def threat(self, eps: float) -> Threat:
        t = threat_of(self.spec, eps)
        t.params.update(units="std", attackable=[n for n, m in zip(self.schema.names, self.mask,
                                                                    strict=True) if m])
        return t

    def outcomes(self, clean_pred: np.ndarray,
                 on_step: Callable[[], None] | None = None) -> Iterator[Outcome]:
        y = self.data.y.numpy()
        x = self.data.x.numpy()
        state = PointState.start(y, clean_pred)
        if self.spec.minimum_norm:
            yield from self._minimum_norm(state, x, y, on_step)
            return
        for eps in self.spec.eps:
            idx = np.flatnonzero(state.alive)
            if len(idx) and eps > 0:
                x_adv = self.examples(idx, eps)
                p = predict(self.model, torch.from_numpy(x_adv), self.batch_size)
                state.update(idx, p, std_norms(self.schema, self.view, x_adv, x[idx]), eps)
            yield state.outcome(self.model, self.threat(eps))
            if on_step is not None:
                on_step()

    def _minimum_norm(self, state: PointState, x: np.ndarray, y: np.ndarray,
                      on_step: Callable[[], None] | None) -> Iterator[Outcome]:
        n = len(y)
        idx = np.flatnonzero(state.alive)
        distance = np.where(state.alive, np.inf, 0.0)
        found = np.zeros((0, x.shape[1]))
        pred = np.zeros(0, dtype=np.int64)
        norms: dict[str, np.ndarray] = {}
        if len(idx):
            found = self.examples(idx, None)
            pred = predict(self.model, torch.from_numpy(found), self.batch_size)
            norms = std_norms(self.schema, self.view, found, x[idx])
            distance[idx] = np.where(pred != y[idx], norms["l2"], np.inf)
        pos = np.full(n, -1)
        pos[idx] = np.arange(len(idx))
        for eps in self.spec.eps:
            hit = np.flatnonzero(state.alive & (distance <= eps * (1 + 1e-6)))
            if len(hit):
                rows = pos[hit]
                state.update(hit, pred[rows], {k: v[rows] for k, v in norms.items()}, eps)
            yield state.outcome(self.model, self.threat(eps), {"distance": distance.copy()})
            if on_step is not None:
                on_step()


def run_tabular_attack(model: ModelUnderTest, spec: AttackSpec, data: EvalSet,
                       clean_pred: np.ndarray, seed: int, batch_size: int,
                       on_step: Callable[[], None] | None = None) -> Iterator[Outcome]:
    """Per-sample worst-case outcomes of one tabular attack config, one per eps."""
    yield from TabularAttack(model, spec, data, batch_size, seed).outcomes(clean_pred, on_step)
