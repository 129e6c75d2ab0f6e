"""Every typed, frozen spec of a run: what ``benchmark.schema`` parses a
composed config into, and all that library code receives (never a DictConfig).

The specs hold validated values only; the parsing and its messages live in
``benchmark.schema``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

#: Corruption severities of the ImageNet-C protocol, the default suite range.
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)


def max_budget(norm: float, input_shape: tuple[int, ...]) -> float:
    """The largest meaningful perturbation size in [0,1]^d under ``norm``."""
    d = math.prod(input_shape)
    if math.isinf(norm):
        return 1.0
    return float(d) ** (1.0 / norm)


# ----------------------------------------------------------------------------- data and models

@dataclass(frozen=True)
class DataSpec:
    """Typed view of one ``conf/data/*.yaml``."""

    name: str
    loader: str
    root: str | None = None
    split: str = "test"
    n_samples: int | None = None
    seed: int = 0
    image_size: int | None = None
    channels: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    """Typed view of one model version in ``conf/model/``."""

    key: str
    name: str
    version: str
    #: None only for ``format: torchscript`` (the file holds the network).
    architecture: str | dict[str, Any] | None
    checkpoint: str
    format: str = "state_dict"
    sha256: str | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    num_classes: int = 10
    #: ``(C, H, W)`` for images, ``(F,)`` for a feature table.
    input_shape: tuple[int, ...] = (1, 28, 28)
    #: Module prefixes (the run's command-line ``allow_targets``) whose
    #: ``nn.Module`` classes may serve as the architecture.
    allow_targets: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


# ----------------------------------------------------------------------------- threats

@dataclass(frozen=True)
class AttackSpec:
    """Typed view of one attack in ``conf/attack/``.

    ``kwargs`` go to the ART class named by ``target`` (with ``eps`` and
    ``eps_step`` filled in per budget); ``eps`` is the list of budgets.
    """

    name: str
    target: str
    kwargs: dict[str, Any]
    eps: tuple[float, ...]
    norm: float
    eps_step_ratio: float | None = None
    minimum_norm: bool = False
    #: ART argument that receives each budget (``eps``; e.g. ``max_rotation``
    #: for a spatial attack); None for minimum-norm attacks.
    budget_arg: str | None = "eps"
    #: Target-selection rule when ``kwargs["targeted"]`` is true.
    target_rule: str | None = None
    #: What the estimator returns: ``logits`` or ``probabilities`` (softmax
    #: appended, for attacks that require probabilities).
    output: str = "logits"
    #: An ensemble's attacks in order (empty for a single attack).
    members: tuple[AttackSpec, ...] = ()
    #: What a budget is measured in: ``input`` (the [0, 1] pixel range) or
    #: ``std`` (a feature table's per-column training standard deviations).
    units: str = "input"

    @property
    def targeted(self) -> bool:
        return bool(self.kwargs.get("targeted", False))

    @property
    def has_ball(self) -> bool:
        """Whether the budget is an Lp ball (``threat_norm: none`` has none)."""
        return not math.isnan(self.norm)


@dataclass(frozen=True)
class CorruptionSuiteSpec:
    """Typed view of ``conf/corruption/<suite>.yaml``.

    ``baseline`` is the ``name@version`` that normalises CE and mCE;
    ``seed`` None means the run's seed.
    """

    name: str
    corruptions: tuple[str, ...]
    severities: tuple[int, ...] = SEVERITIES
    param_set: str = "auto"
    baseline: str | None = None
    seed: int | None = None


@dataclass(frozen=True)
class FaultSpec:
    """One pipeline fault with its (signature-checked) parameters."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FaultSuiteSpec:
    """Typed view of ``conf/fault/<suite>.yaml``."""

    name: str
    faults: tuple[FaultSpec, ...]
    seed: int | None = None


# ----------------------------------------------------------------------------- groups

@dataclass(frozen=True)
class FeatureSpec:
    """One group definition: how to turn the evaluation set into a column.

    ``kind`` is ``label``, ``metadata`` (``column`` from the dataset's group
    columns, or from ``csv`` joined ``on`` a sample-id column or row by row),
    ``property`` (``property`` binned into ``bins`` quantiles or cut at
    ``edges``), or ``intersection`` (``of`` two other features).
    """

    name: str
    kind: str
    column: str | None = None
    csv: str | None = None
    on: str | None = None
    property: str | None = None
    bins: int | None = None
    edges: tuple[float, ...] | None = None
    of: tuple[str, ...] = ()


@dataclass(frozen=True)
class SliceSpec:
    """Settings of slice discovery (see ``metrics.slices``)."""

    enabled: bool = False
    properties: tuple[str, ...] | None = None
    metadata: tuple[str, ...] | None = None
    label: bool = True
    bins: int = 5
    pairs: bool = False
    fdr: float = 0.05
    min_size: int = 30
    top: int = 5


@dataclass(frozen=True)
class GroupsSpec:
    """The ``groups`` section of a run."""

    features: tuple[FeatureSpec, ...] = ()
    min_size: int = 20
    missing: str = "error"
    n_boot: int = 50
    confidence: float = 0.95
    tau: tuple[float, ...] | None = None
    slices: SliceSpec = field(default_factory=SliceSpec)

    @property
    def ci_quantiles(self) -> list[float]:
        a = (1.0 - self.confidence) / 2
        return [a, 1.0 - a]


# ----------------------------------------------------------------------------- policies

@dataclass(frozen=True)
class ValidationPolicy:
    """Typed view of the ``validation`` config section."""

    on_fail: str = "stop"
    data: bool = True
    model: bool = True
    skip: tuple[str, ...] = ()
    thresholds: dict[str, dict[str, Any]] = field(default_factory=dict)
    probe_size: int = 64
    input_range: tuple[float, float] = (0.0, 1.0)
    reference_mean: tuple[float, ...] | None = None
    reference_std: tuple[float, ...] | None = None

    def runs(self, check: str) -> bool:
        return check not in self.skip


#: Fraction of a reliability subsample an anomaly must reach to warn.
ANOMALY_FRACTION = 0.05


@dataclass(frozen=True)
class ReliabilitySpec:
    """The ``reliability:`` config section (flags on by default).

    ``targeted_top_k``: classes the targeted sweep tries per point (3; the
    standard AutoAttack protocol uses 9), with ``targeted_max_iter`` APGD-T
    iterations per class (100, as AutoAttack). ``budget_s``: seconds the attack
    flags may take before the remaining ones are skipped (None: no bound).
    """

    enabled: bool = True
    n_samples: int = 32
    targeted_top_k: int = 3
    targeted_max_iter: int = 100
    budget_s: float | None = None


@dataclass(frozen=True)
class SweepSpec:
    """Typed view of the ``sweep:`` config section.

    ``skip_existing`` None means auto (on in multirun, off in a single run);
    ``threads`` None means auto (derived from the launcher's parallelism).
    """

    id: str | None = None
    skip_existing: bool | None = None
    threads: int | None = None


@dataclass(frozen=True)
class StoreSpec:
    """Where a run's results go: the SQLite results store."""

    path: str


# ----------------------------------------------------------------------------- the run

@dataclass(frozen=True)
class ShardSpec:
    """Typed view of ``shards`` and the ``shard:`` config section.

    ``count`` shards split the evaluation set; this job runs shard ``index``
    (None: not a shard job). ``block`` is the size of the fixed sample blocks
    every run (sharded or not) evaluates separately: shards are unions of
    whole blocks, so a sample's outcome never depends on which shard it is in.
    """

    count: int = 1
    index: int | None = None
    block: int = 256

    @property
    def sharded(self) -> bool:
        return self.count > 1


@dataclass(frozen=True)
class RunSpec:
    """A whole validated run; an absent optional section is None (the
    reliability flags default to on, as they did before the section existed)."""

    data: DataSpec
    models: dict[str, ModelSpec]
    attacks: dict[str, AttackSpec]
    name: str = "default"
    seed: int = 0
    device: str = "auto"
    batch_size: int = 256
    deterministic: bool = True
    store: StoreSpec | None = None
    corruption: CorruptionSuiteSpec | None = None
    fault: FaultSuiteSpec | None = None
    groups: GroupsSpec | None = None
    validation: ValidationPolicy | None = None
    reliability: ReliabilitySpec = field(default_factory=ReliabilitySpec)
    sweep: SweepSpec | None = None
    shard: ShardSpec = field(default_factory=ShardSpec)
    #: Module prefixes whose nn.Module classes may serve as architectures
    #: (honoured from the command line only; see ``benchmark.policy``).
    allow_targets: tuple[str, ...] = ()
