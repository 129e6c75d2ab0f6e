"""Which benchmark threat explains a window's shift.

A *signature* describes how a batch differs from the reference: for every
image property (brightness, contrast, sharpness, ink fraction, stroke
thickness; colourfulness for RGB) the shift of its mean and of its 10th,
50th and 90th percentiles, in reference standard deviations, plus the
fractions of non-finite and out-of-range pixels. Large shifts are
compressed (``sign(v) log1p(|v|)``) so that a fault far off the scale does not
swamp every other component.

The *library* applies each corruption at each severity, and each pipeline
fault, to a subset of the reference, and keeps each one's signature. A
window is matched to the nearest library entry; the posterior over entries
takes each signature component's sampling error (from both sample sizes,
plus a floor for what the library cannot reproduce) as Gaussian, and the
confidence of a match is the posterior mass of its entry (and of its family
for the family's confidence). ``clean`` (no shift) is one of the entries.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

QUANTILES: tuple[float, ...] = (0.1, 0.5, 0.9)
#: Signature error that no sample size removes (library seeds, image content).
MISMATCH_FLOOR = 0.08
CLEAN = "clean"


@dataclass(frozen=True)
class Threat:
    """One library entry: ``clean``, a corruption at a severity or a fault."""

    family: str  # clean | corruption | fault
    name: str
    param: float | None = None
    category: str = ""  # the corruption's category (noise, blur, weather, digital)

    @property
    def key(self) -> str:
        if self.family == CLEAN:
            return CLEAN
        if self.param is None:
            return f"{self.family}:{self.name}"
        return f"{self.family}:{self.name}:{self.param:g}"

    @property
    def label(self) -> str:
        from benchmark.core.types import threat_label

        return CLEAN if self.family == CLEAN else threat_label(self.family, self.name, self.param)


@dataclass
class Match:
    """The best explanation of a window's shift."""

    threat: Threat
    confidence: float           # posterior mass of the entry
    family_confidence: float    # posterior mass of every entry of the same name
    distance: float
    posterior: dict[str, float] = field(default_factory=dict)  # key -> mass (top entries)
    runner_up: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"threat": self.threat.key, "label": self.threat.label,
                "family": self.threat.family, "name": self.threat.name,
                "param": self.threat.param, "category": self.threat.category,
                "confidence": self.confidence, "family_confidence": self.family_confidence,
                "distance": self.distance, "runner_up": self.runner_up,
                "posterior": self.posterior}


class ReferenceStats:
    """Per-property mean and standard deviation of the reference."""

    def __init__(self, props: Mapping[str, np.ndarray]) -> None:
        self.names = list(props)
        self.mean = {k: float(np.mean(v)) for k, v in props.items()}
        self.std = {k: float(np.std(v)) or 1.0 for k, v in props.items()}


def _compress(v: np.ndarray) -> np.ndarray:
    return np.sign(v) * np.log1p(np.abs(v))


def signature(props: Mapping[str, np.ndarray], stats: ReferenceStats,
              nonfinite: float, out_of_range: float) -> np.ndarray:
    """The signature of a batch from its property values (see the module doc)."""
    parts: list[float] = []
    for k in stats.names:
        v = np.asarray(props[k], dtype=np.float64)
        z = (v - stats.mean[k]) / stats.std[k]
        parts.append(float(z.mean()))
        parts.extend(float(q) for q in np.quantile(z, QUANTILES))
    parts += [10.0 * nonfinite, 10.0 * out_of_range]
    return _compress(np.asarray(parts))


def image_signature(x: Any, stats: ReferenceStats) -> np.ndarray:
    """Signature of an image batch (N x C x H x W)."""
    import torch

    from metrics.data_checks import image_properties

    finite = torch.isfinite(x)
    nonfinite = float((~finite).float().mean())
    xs = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    oor = float(((xs < -1e-6) | (xs > 1 + 1e-6)).float().mean())
    return signature(image_properties(x), stats, nonfinite, oor)


@dataclass
class Library:
    """Signatures of every threat applied to the reference subset."""

    threats: list[Threat]
    signatures: np.ndarray  # (len(threats), D)
    n_subset: int
    invisible: list[str] = field(default_factory=list)  # threats that leave no trace here
    stats: Any = None  # what signatures are measured against (tables)

    def match(self, sig: np.ndarray, n_window: int, top: int = 5) -> Match:
        d = np.sqrt(((self.signatures - sig[None, :]) ** 2).sum(1))
        sigma2 = 1.0 / max(1, n_window) + 1.0 / max(1, self.n_subset) + MISMATCH_FLOOR ** 2
        logp = -0.5 * d ** 2 / sigma2
        w = np.exp(logp - logp.max())
        w /= w.sum()
        order = np.argsort(-w, kind="stable")
        best = self.threats[int(order[0])]
        fam = float(sum(w[i] for i, t in enumerate(self.threats)
                        if (t.family, t.name) == (best.family, best.name)))
        posterior = {self.threats[int(i)].key: float(w[int(i)]) for i in order[:top]
                     if w[int(i)] > 1e-4}
        runner = next((self.threats[int(i)].key for i in order[1:]
                       if (self.threats[int(i)].family, self.threats[int(i)].name)
                       != (best.family, best.name)), "")
        return Match(best, float(w[int(order[0])]), fam, float(d[int(order[0])]), posterior,
                     runner)


def _seen(sig: np.ndarray, clean: np.ndarray) -> bool:
    return bool(np.sqrt(((sig - clean) ** 2).sum()) > 1e-3)


def build_library(entries: Sequence[tuple[Threat, Callable[[], np.ndarray]]],
                  clean_signature: np.ndarray, n_subset: int) -> Library:
    """A library from ``(threat, signature thunk)`` pairs; an entry whose
    signature equals the clean one (``channel_swap`` on grayscale) is left out."""
    threats, sigs, invisible = [Threat(CLEAN, CLEAN)], [clean_signature], []
    for threat, make in entries:
        try:
            sig = make()
        except (ValueError, RuntimeError) as exc:  # a threat that does not apply to this data
            log.info("library: %s skipped (%s)", threat.key, exc)
            continue
        if not np.all(np.isfinite(sig)) or not _seen(sig, clean_signature):
            invisible.append(threat.key)
            continue
        threats.append(threat)
        sigs.append(sig)
    return Library(threats, np.stack(sigs), n_subset, invisible)


def _corrupted(sub: Any, name: str, severity: int, seed: int, stats: ReferenceStats
               ) -> np.ndarray:
    from attacks.corruptions import corrupt

    return image_signature(corrupt(sub, name, severity, seed=seed), stats)


def _faulted(sub: Any, fn: Callable[..., Any], stats: ReferenceStats) -> np.ndarray:
    return image_signature(fn(sub.clone()), stats)


def image_library(reference_x: Any, stats: ReferenceStats, *, n_subset: int = 300,
                  seed: int = 0, corruptions: Sequence[str] | None = None,
                  severities: Sequence[int] = (1, 2, 3, 4, 5),
                  faults: Sequence[str] | None = None) -> Library:
    """Every corruption x severity and every fault on ``n_subset`` reference images."""
    import torch

    from attacks.corruptions import corruption_info, list_corruptions
    from attacks.faults import get_fault, list_faults

    g = torch.Generator().manual_seed(seed)
    n = min(n_subset, len(reference_x))
    sub = reference_x[torch.randperm(len(reference_x), generator=g)[:n]]
    entries: list[tuple[Threat, Callable[[], np.ndarray]]] = []
    for name in (list_corruptions() if corruptions is None else corruptions):
        cat = corruption_info(name).category
        for s in severities:
            entries.append((Threat("corruption", name, float(s), cat),
                            functools.partial(_corrupted, sub, name, int(s), seed, stats)))
    for name in (list_faults() if faults is None else faults):
        entries.append((Threat("fault", name, None, "fault"),
                        functools.partial(_faulted, sub, get_fault(name), stats)))
    return build_library(entries, image_signature(sub, stats), n)


def severity_error(planted: float | None, matched: float | None) -> float:
    if planted is None or matched is None:
        return math.nan
    return abs(float(planted) - float(matched))
