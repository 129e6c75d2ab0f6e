"""The reference a monitor compares every window with.

The reference is labelled data the model versions were not trained on (the
evaluation set of the config, an ``.npz``/table file, or the data of a stored
run). From it the monitor keeps what each window is judged against: the
image properties (or feature values), the group shares, each version's
logits, accuracy and confidence calibration (for CBPE), and the threat
library of signatures (for the match).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.core.errors import DataError
from benchmark.core.types import EvalSet, ModelUnderTest
from benchmark.monitor.estimate import Calibrator, fit_calibrator, softmax_confidence

log = logging.getLogger(__name__)


@dataclass
class VersionReference:
    """One model version on the reference."""

    model: ModelUnderTest
    logits: Any  # torch.Tensor N x K
    correct: np.ndarray
    calibrator: Calibrator

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())


@dataclass
class Reference:
    data: EvalSet
    source: str
    versions: dict[str, VersionReference]
    props: dict[str, np.ndarray] = field(default_factory=dict)
    library: Any = None  # match.Library, built on first use
    stats: Any = None    # match.ReferenceStats

    @property
    def modality(self) -> str:
        return self.data.modality

    @property
    def groups(self) -> pd.DataFrame:
        return self.data.groups

    def group_shares(self, column: str) -> dict[str, float]:
        s = self.data.groups[column].astype(str)
        return {str(k): float(v) for k, v in s.value_counts(normalize=True).items()}


def read_reference_npz(path: Path) -> EvalSet:
    """An ``.npz`` reference: images ``x``, labels ``y``, groups ``group_NAME``."""
    from benchmark.monitor.sources import read_image_window

    w = read_image_window(path)
    if w.y is None:
        raise DataError(f"--reference {str(path)!r}: expected labels y (the reference "
                        "calibrates the accuracy estimate), but the file has none.")
    import torch

    y = torch.from_numpy(w.y)
    k = int(y.max()) + 1 if len(y) else 0
    return EvalSet(name=path.stem, x=w.x, y=y, classes=[str(i) for i in range(k)],
                   groups=w.groups)


def build_reference(data: EvalSet, models: Sequence[ModelUnderTest], source: str,
                    batch_size: int = 512) -> Reference:
    """Logits, correctness and calibration of every version on ``data``."""
    import torch

    from benchmark.core.forward import forward_logits

    versions = {}
    for m in models:
        if data.modality == "image" and tuple(m.input_shape) != tuple(data.x.shape[1:]):
            raise DataError(f"Expected reference samples of {m.key}'s input shape "
                            f"{list(m.input_shape)}, but got {list(data.x.shape[1:])}.")
        logits = forward_logits(m, torch.nan_to_num(data.x), batch_size)
        correct = (logits.argmax(1) == data.y).numpy()
        cal = fit_calibrator(softmax_confidence(logits.numpy()), correct)
        versions[m.key] = VersionReference(m, logits, correct, cal)
    ref = Reference(data=data, source=source, versions=versions)
    if data.modality == "image":
        from benchmark.monitor.match import ReferenceStats
        from metrics.data_checks import image_properties

        ref.props = image_properties(data.x)
        ref.stats = ReferenceStats(ref.props)
    return ref


def ensure_library(ref: Reference, **kwargs: Any) -> Any:
    """The threat library of ``ref``, built once (a few seconds for images)."""
    if ref.library is None and ref.modality == "image":
        from benchmark.monitor.match import image_library

        ref.library = image_library(ref.data.x, ref.stats, **kwargs)
        log.info("threat library: %d entries (%s invisible on this data)",
                 len(ref.library.threats), ", ".join(ref.library.invisible) or "none")
    return ref.library
