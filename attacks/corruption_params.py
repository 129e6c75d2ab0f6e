"""Published severity parameters of the common corruptions.

Two tables, one per image scale, as published with CIFAR-10-C and ImageNet-C
(Hendrycks & Dietterich, 2019): ``CIFAR`` for small images (32x32, used for
MNIST-sized inputs too) and ``IMAGENET`` for large ones (224x224). Each entry
holds the five severity settings of one corruption, severity 1 first; the
meaning of each tuple is documented next to the corruption in
``attacks/corruptions.py``.

Parameters given in pixels by the reference are kept in pixels; the few that
the reference ties to the image size (elastic transform, pixelate, the fog
fractal) are expressed as fractions of the size and scaled at run time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Parameter sets by name; ``auto`` picks one from the image size.
PARAM_SETS: tuple[str, ...] = ("auto", "cifar", "imagenet")

#: ``auto`` uses the ImageNet set when the smaller image side is at least this.
IMAGENET_MIN_SIDE = 128


def _zooms(start: float, stop: float, step: float) -> tuple[float, ...]:
    """The reference's ``np.arange(start, stop, step)`` zoom factors."""
    return tuple(float(z) for z in np.arange(start, stop, step))


CIFAR: dict[str, tuple[Any, ...]] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    # (sigma, max_delta, iterations)
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    # (radius, alias_blur)
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    # (radius, sigma)
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    "zoom_blur": (
        _zooms(1, 1.06, 0.01), _zooms(1, 1.11, 0.01), _zooms(1, 1.16, 0.01),
        _zooms(1, 1.21, 0.01), _zooms(1, 1.26, 0.01),
    ),
    # (loc, scale, zoom, threshold, blur radius, blur sigma, blend)
    "snow": (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
    # (image weight, frost weight)
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
    # (fog strength, wibble decay)
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    # (alpha, sigma, affine) as fractions of the image size
    "elastic_transform": (
        (0.0, 0.0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
        (0.1, 0.03, 0.03),
    ),
    # fraction of the side kept
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    # JPEG quality
    "jpeg_compression": (80, 65, 58, 50, 40),
    # (loc, scale, sigma, threshold, intensity, mud)
    "spatter": (
        (0.62, 0.1, 0.7, 0.7, 0.5, 0),
        (0.65, 0.1, 0.8, 0.7, 0.5, 0),
        (0.65, 0.3, 1, 0.69, 0.5, 0),
        (0.65, 0.1, 0.7, 0.69, 0.6, 1),
        (0.65, 0.1, 0.5, 0.68, 0.6, 1),
    ),
    # (saturation factor, saturation offset)
    "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
}

#: The ImageNet-C reference writes its elastic parameters as multiples of 244
#: for 224-pixel images; we keep that ratio.
_E = 244 / 224

IMAGENET: dict[str, tuple[Any, ...]] = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "shot_noise": (60, 25, 12, 5, 3),
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
    "speckle_noise": (0.15, 0.2, 0.35, 0.45, 0.6),
    "gaussian_blur": (1, 2, 3, 4, 6),
    "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
    "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    "zoom_blur": (
        _zooms(1, 1.11, 0.01), _zooms(1, 1.16, 0.01), _zooms(1, 1.21, 0.02),
        _zooms(1, 1.26, 0.02), _zooms(1, 1.31, 0.03),
    ),
    "snow": (
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    ),
    "frost": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
    "fog": ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "elastic_transform": (
        (2 * _E, 0.7 * _E, 0.1 * _E), (2 * _E, 0.08 * _E, 0.2 * _E),
        (0.05 * _E, 0.01 * _E, 0.02 * _E), (0.07 * _E, 0.01 * _E, 0.02 * _E),
        (0.12 * _E, 0.01 * _E, 0.02 * _E),
    ),
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
    "jpeg_compression": (25, 18, 15, 10, 7),
    "spatter": (
        (0.65, 0.3, 4, 0.69, 0.6, 0),
        (0.65, 0.3, 3, 0.68, 0.6, 0),
        (0.65, 0.3, 2, 0.68, 0.5, 0),
        (0.65, 0.3, 1, 0.65, 1.5, 1),
        (0.67, 0.4, 1, 0.65, 1.5, 1),
    ),
    "saturate": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
}

TABLES: dict[str, dict[str, tuple[Any, ...]]] = {"cifar": CIFAR, "imagenet": IMAGENET}


def resolve_param_set(param_set: str, height: int, width: int) -> str:
    """``cifar`` or ``imagenet``: ``auto`` picks by the smaller image side."""
    if param_set not in PARAM_SETS:
        raise ValueError(
            f"Expected `param_set` to be one of {', '.join(PARAM_SETS)}, but got {param_set!r}."
        )
    if param_set != "auto":
        return param_set
    return "imagenet" if min(height, width) >= IMAGENET_MIN_SIDE else "cifar"


def severity_params(name: str, severity: int, param_set: str) -> Any:
    """The published parameters of corruption ``name`` at ``severity`` (1..5)."""
    return TABLES[param_set][name][severity - 1]
