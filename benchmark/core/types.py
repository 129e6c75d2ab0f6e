"""Core types shared by data, models, threats, metrics and the store.

Plain dataclasses holding torch tensors and numpy arrays; never a DictConfig.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # torch only for annotations: the store, compare and gate run without it
    import torch

    from benchmark.core.tabular import TabularSchema

THREAT_FAMILIES: tuple[str, ...] = ("clean", "attack", "corruption", "fault")
#: What a threat's one number is called, by family (``pgd_linf eps=0.3``).
PARAM_LABEL: dict[str, str] = {"attack": "eps", "corruption": "severity", "fault": "param"}


#: Denominators a budget written as a fraction is recognised by, in order of
#: preference (pixel levels first): ``8/255`` is stored as its float and
#: printed as written.
FRACTION_DENOMINATORS: tuple[int, ...] = (255, 256, 127, 128, 1000, 512, 1024, 100, 64, 32,
                                          *range(2, 17))


def param_text(value: float) -> str:
    """A threat parameter as a person writes it: ``0.3``, ``3``, or ``8/255``
    when the value is exactly a fraction with a usual denominator that no
    short decimal represents."""
    short = f"{value:g}"
    if not math.isfinite(value) or float(short) == value:
        return short
    for b in FRACTION_DENOMINATORS:
        a = round(value * b)
        if a and a / b == value:
            return f"{a}/{b}"
    return short


def threat_label(family: str, threat: str, param: float | None) -> str:
    """The one way a threat is named in tables, plots and comparisons:
    ``clean``, ``pgd_linf eps=0.3``, ``pgd_linf eps=8/255``, ``fog severity=3``."""
    if param is None or (isinstance(param, float) and math.isnan(param)):
        return threat
    return f"{threat} {PARAM_LABEL.get(family, 'param')}={param_text(float(param))}"


@dataclass
class EvalSet:
    """The samples every model version is evaluated on.

    Images: ``x`` is float32 NCHW in [0, 1]. Feature tables: ``x`` is a
    float32 (N, F) matrix of raw feature values in ``schema`` column order
    (see ``benchmark.core.tabular``), and ``frame`` the raw table it was
    encoded from. ``y`` holds int64 class indices, ``groups`` one column per
    sensitive feature aligned with the samples. Two runs are comparable only
    when their ``fingerprint`` (sha256 over x and y, and the schema) matches.
    """

    name: str
    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    groups: pd.DataFrame = field(default_factory=pd.DataFrame)
    fingerprint: str = ""
    train_x: torch.Tensor | None = None
    train_y: torch.Tensor | None = None
    schema: TabularSchema | None = None
    frame: pd.DataFrame | None = None
    train_frame: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        if not self.fingerprint:
            self.fingerprint = fingerprint(self.x, self.y)
            if self.schema is not None:
                import hashlib

                self.fingerprint = hashlib.sha256(
                    (self.fingerprint + self.schema.digest()).encode()).hexdigest()
        if len(self.groups) == 0 and len(self.groups.columns) == 0:
            self.groups = pd.DataFrame(index=pd.RangeIndex(len(self.y)))

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def modality(self) -> str:
        """``image`` or ``tabular``."""
        return "tabular" if self.schema is not None else "image"

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """``(C, H, W)`` for images, ``(F,)`` for a feature table."""
        return tuple(int(d) for d in self.x.shape[1:])


def fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    """sha256 over the exact bytes of x (float32, contiguous) and y (int64)."""
    import hashlib

    import torch

    h = hashlib.sha256()
    h.update(str(tuple(x.shape)).encode())
    h.update(x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    h.update(y.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass
class ModelUnderTest:
    """One model version, ready to evaluate.

    ``module`` takes inputs in [0, 1] (normalization is folded in), is in eval
    mode, and lives on ``device``.
    """

    name: str
    version: str
    module: torch.nn.Module
    sha256: str
    num_classes: int
    input_shape: tuple[int, ...]
    device: torch.device

    @property
    def key(self) -> str:
        """``name@version``, the identifier used in tables and comparisons."""
        return f"{self.name}@{self.version}"


@dataclass
class Threat:
    """One perturbation of the inputs: clean, an attack at one budget, a
    corruption at one severity, or a pipeline fault.

    ``param`` is the budget / severity as one float (eps, severity, ...);
    ``params`` holds every setting for the record.
    """

    family: str
    name: str
    param: float | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Compact key ``name@param`` (``pgd_linf@0.3``); tables use ``threat_label``."""
        if self.param is None:
            return self.name
        return f"{self.name}@{self.param:g}"


@dataclass
class Outcome:
    """Per-sample results of one model version under one threat.

    ``pred`` and ``correct`` are aligned with the EvalSet's samples.
    ``columns`` holds what the threat adds, each an array of the same length
    (for example ``linf``, ``l2``, ``l0``, ``distance``, ``queries``,
    ``finite``), with NaN where a value does not apply.
    """

    model: str
    version: str
    threat: Threat
    pred: np.ndarray
    correct: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.pred)
        if len(self.correct) != n:
            raise ValueError(
                f"Expected `correct` to have {n} entries like `pred`, but got {len(self.correct)}."
            )
        for key, arr in self.columns.items():
            if len(arr) != n:
                raise ValueError(
                    f"Expected extra `{key}` to have {n} entries, but got {len(arr)}."
                )

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.correct)) if len(self.correct) else float("nan")

    @property
    def model_key(self) -> str:
        return f"{self.model}@{self.version}"


@dataclass
class Measurement:
    """One tidy row of a record: a metric of one (model version, threat,
    group) with its sample count and confidence interval."""

    model: str
    version: str
    family: str
    threat: str
    param: float | None
    metric: str
    value: float
    n: int
    group_feature: str = ""
    group_value: str = ""
    ci_low: float | None = None
    ci_high: float | None = None
    definition: str = ""
    run: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "model": self.model,
            "version": self.version,
            "family": self.family,
            "threat": self.threat,
            "param": self.param,
            "group_feature": self.group_feature,
            "group_value": self.group_value,
            "metric": self.metric,
            "value": self.value,
            "n": self.n,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "definition": self.definition,
        }


@dataclass
class CheckResult:
    """Result of one validation or reliability check, with its evidence."""

    check: str
    status: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    subject: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "status": self.status,
            "message": self.message,
            "evidence": self.evidence,
            "subject": self.subject,
        }


def check_result(check: str, status: str, message: str, subject: str,
                 **evidence: Any) -> CheckResult:
    """A check's or reliability flag's result, with its evidence as keyword arguments."""
    return CheckResult(check=check, status=status, message=message, evidence=evidence,
                       subject=subject)
