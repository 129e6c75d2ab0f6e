"""Pipeline faults: plausible bugs between the raw data and the model.

Each fault is registered by name and called as ``get_fault(name)(x, **params)``
on a float NCHW batch in [0, 1]; it returns a batch of the same shape (the
shape the model accepts), dtype and device. Unlike corruptions, a fault may
leave [0, 1] or produce NaN: that is the bug being simulated. ``list_faults()``
names them all; ``fault_params(name)`` gives each one's parameters and
defaults (checks that must catch these faults can loop over the registry).

The random faults (``nan_values``, ``dead_pixels``) draw one mask per sample
from a seed derived from ``seed`` and the sample's key (``keys``, default:
its position in the batch), so a sample's mask does not depend on the batch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from attacks.rng import SampleRNG, sample_seeds
from benchmark.core.registry import Registry

Tensor = torch.Tensor
FaultFn = Callable[..., Tensor]

#: Normalization assumed when a model's own mean/std are not given: the
#: ImageNet statistics most pipelines use (the mean over channels for gray).
DEFAULT_MEAN: tuple[float, ...] = (0.485, 0.456, 0.406)
DEFAULT_STD: tuple[float, ...] = (0.229, 0.224, 0.225)

FAULTS: Registry[FaultFn] = Registry("fault")


def register_fault(name: str) -> Callable[[FaultFn], FaultFn]:
    """Register ``fn(x, **params)`` as fault ``name``; a duplicate name raises."""
    return FAULTS.register(name)


def list_faults() -> list[str]:
    return FAULTS.names()


def get_fault(name: str) -> FaultFn:
    """The function of fault ``name``; an unknown name lists the valid ones."""
    return FAULTS.get(name)


def fault_params(name: str) -> dict[str, Any]:
    """The keyword parameters of fault ``name`` with their defaults."""
    sig = inspect.signature(get_fault(name))
    return {k: p.default for k, p in list(sig.parameters.items())[1:]}


def _check(x: Any) -> Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"Expected `x` to be a float tensor N x C x H x W, but got {got}.")
    return x


def _fraction(name: str, v: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
        raise ValueError(f"Expected `{name}` to be a number in [0, 1], but got {v!r}.")
    return float(v)


def _stats(values: Sequence[float] | None, default: tuple[float, ...], channels: int,
           what: str) -> Tensor:
    v = tuple(default if values is None else values)
    if len(v) == channels:
        return torch.tensor(v, dtype=torch.float32).view(1, channels, 1, 1)
    if len(v) == 1 or values is None:
        return torch.tensor([sum(v) / len(v)] * channels, dtype=torch.float32).view(
            1, channels, 1, 1)
    raise ValueError(f"Expected `{what}` to have 1 or {channels} values, but got {len(v)}.")


def _to_model_shape(x: Tensor, h: int, w: int) -> Tensor:
    """A non-square image that the bug reshaped comes back to the model's size."""
    if x.shape[-2:] == (h, w):
        return x
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


def _rng(x: Tensor, name: str, seed: int, keys: Sequence[Any] | None) -> SampleRNG:
    keys = list(range(len(x))) if keys is None else list(keys)
    if len(keys) != len(x):
        raise ValueError(f"Expected {len(x)} sample keys, one per sample, but got {len(keys)}.")
    return SampleRNG(sample_seeds(seed, name, "fault", keys), x.device)


@register_fault("scale_255")
def scale_255(x: Tensor) -> Tensor:
    """Pixels passed as 0-255 instead of 0-1 (a forgotten division)."""
    return _check(x) * 255.0


@register_fault("channel_swap")
def channel_swap(x: Tensor) -> Tensor:
    """RGB read as BGR (OpenCV's order); a no-op on grayscale."""
    return _check(x).flip(1)


@register_fault("normalization_missing")
def normalization_missing(x: Tensor, mean: Sequence[float] | None = None,
                          std: Sequence[float] | None = None) -> Tensor:
    """The network sees raw pixels instead of (x - mean) / std.

    rtb's models fold the normalization in, so the bug is fed as the input
    that normalizes to ``x``: ``x * std + mean``.
    """
    x = _check(x)
    c = x.shape[1]
    m = _stats(mean, DEFAULT_MEAN, c, "mean").to(x)
    s = _stats(std, DEFAULT_STD, c, "std").to(x)
    return x * s + m


@register_fault("normalization_twice")
def normalization_twice(x: Tensor, mean: Sequence[float] | None = None,
                        std: Sequence[float] | None = None) -> Tensor:
    """(x - mean) / std applied in the pipeline and again in the model."""
    x = _check(x)
    c = x.shape[1]
    m = _stats(mean, DEFAULT_MEAN, c, "mean").to(x)
    s = _stats(std, DEFAULT_STD, c, "std").to(x)
    return (x - m) / s


@register_fault("nan_values")
def nan_values(x: Tensor, fraction: float = 0.01, seed: int = 0,
               keys: Sequence[Any] | None = None) -> Tensor:
    """A fraction of the values set to NaN (a failed decode or a 0/0)."""
    x = _check(x)
    f = _fraction("fraction", fraction)
    mask = _rng(x, "nan_values", seed, keys).rand(*x.shape[1:]).to(x.device) < f
    return x.masked_fill(mask, float("nan"))


@register_fault("dead_pixels")
def dead_pixels(x: Tensor, fraction: float = 0.05, seed: int = 0,
                keys: Sequence[Any] | None = None) -> Tensor:
    """A fraction of the pixel positions (all channels) set to 0 (dead sensor pixels)."""
    x = _check(x)
    f = _fraction("fraction", fraction)
    mask = _rng(x, "dead_pixels", seed, keys).rand(1, *x.shape[2:]).to(x.device) < f
    return x.masked_fill(mask, 0.0)


@register_fault("transpose")
def transpose(x: Tensor) -> Tensor:
    """Height and width swapped (HWC read as WHC); resized back if not square."""
    x = _check(x)
    return _to_model_shape(x.transpose(-2, -1), *x.shape[-2:])


@register_fault("rotate")
def rotate(x: Tensor, quarter_turns: int = 1) -> Tensor:
    """Rotated by 90 degrees per quarter turn (EXIF orientation ignored)."""
    x = _check(x)
    if isinstance(quarter_turns, bool) or not isinstance(quarter_turns, int):
        raise ValueError(f"Expected `quarter_turns` to be an integer, but got {quarter_turns!r}.")
    return _to_model_shape(torch.rot90(x, quarter_turns, dims=(-2, -1)), *x.shape[-2:])


@register_fault("resize")
def resize(x: Tensor, factor: float = 0.5, mode: str = "bilinear",
           restore: bool = True) -> Tensor:
    """Wrong resolution: resampled by ``factor`` (e.g. thumbnails instead of
    originals). With ``restore`` it is resized back to the model's size (the
    loader's final resize hides the bug); without, it is centre-cropped or
    zero-padded to the model's size (a crop/pad transform after a wrong resize).
    """
    x = _check(x)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor <= 0:
        raise ValueError(f"Expected `factor` to be a positive number, but got {factor!r}.")
    if mode not in ("nearest", "bilinear", "bicubic", "area"):
        raise ValueError(
            f"Expected `mode` to be nearest, bilinear, bicubic or area, but got {mode!r}."
        )
    h, w = x.shape[-2:]
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    kwargs: dict[str, Any] = {} if mode in ("nearest", "area") else {"align_corners": False}
    small = F.interpolate(x, size=size, mode=mode, **kwargs)
    if restore:
        return F.interpolate(small, size=(h, w), mode=mode, **kwargs).clamp(0, 1)
    sh, sw = size
    top, left = (sh - h) // 2, (sw - w) // 2
    out = torch.zeros_like(x)
    src = small[..., max(top, 0) : max(top, 0) + min(h, sh), max(left, 0) : max(left, 0)
                + min(w, sw)]
    oy, ox = max(-top, 0), max(-left, 0)
    out[..., oy : oy + src.shape[-2], ox : ox + src.shape[-1]] = src
    return out.clamp(0, 1)


@register_fault("quantize")
def quantize(x: Tensor, levels: int = 8) -> Tensor:
    """Heavy quantization to ``levels`` gray levels per channel (a wrong bit depth)."""
    x = _check(x)
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ValueError(f"Expected `levels` to be an integer >= 2, but got {levels!r}.")
    return torch.round(x.clamp(0, 1) * (levels - 1)) / (levels - 1)


@register_fault("float16")
def float16(x: Tensor) -> Tensor:
    """A round trip through float16 (a half-precision cache or transport)."""
    return _check(x).half().to(x.dtype)
