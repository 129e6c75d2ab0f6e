"""Per-image properties derived from the pixels: brightness, contrast, ink
fraction, stroke thickness, sharpness, colourfulness.

They turn an unlabelled input scenario ("dark images", "thin strokes") into a
number per sample, so groups and slices can be formed from it. Every property
is one function ``(x: N x C x H x W float in [0, 1]) -> N floats`` registered
by name; ``compute_properties`` runs the selected ones batched in torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.core.registry import Registry

log = logging.getLogger(__name__)

PropertyFn = Callable[[torch.Tensor], torch.Tensor]

#: A pixel belongs to the foreground (ink) when its luminance differs from the
#: image's background level (median of the border pixels) by more than this.
INK_THRESHOLD = 0.25

#: Rec. 601 luma weights for RGB images.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

MSG_DUPLICATE = "A property named {name!r} is already registered."
MSG_UNKNOWN = "Unknown image property {name!r}; expected one of: {valid}."
MSG_SHAPE = "Expected `x` to be a float tensor of shape N x C x H x W, but got shape {shape}."


@dataclass(frozen=True)
class ImageProperty:
    """A registered property: its function and what its number means."""

    name: str
    fn: PropertyFn
    definition: str


PROPERTIES: Registry[ImageProperty] = Registry(
    "image property", duplicate=MSG_DUPLICATE, unknown=MSG_UNKNOWN)


def register_property(name: str, definition: str) -> Callable[[PropertyFn], PropertyFn]:
    """Register ``fn`` as property ``name``; a duplicate name raises."""
    PROPERTIES.check_new(name)

    def deco(fn: PropertyFn) -> PropertyFn:
        PROPERTIES.add(name, ImageProperty(name=name, fn=fn, definition=definition))
        return fn

    return deco


def list_properties() -> list[str]:
    """Names of every registered property, sorted."""
    return PROPERTIES.names()


def get_property(name: str) -> ImageProperty:
    """The registered property ``name``; an unknown name lists the valid ones."""
    return PROPERTIES.get(name)


def luminance(x: torch.Tensor) -> torch.Tensor:
    """N x 1 x H x W luminance: Rec. 601 luma for RGB, the channel mean otherwise."""
    if x.shape[1] == 3:
        w = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)
    return x.mean(1, keepdim=True)


def foreground_mask(x: torch.Tensor, threshold: float = INK_THRESHOLD) -> torch.Tensor:
    """Boolean N x 1 x H x W mask of the pixels that differ from the background.

    The background level is the median luminance of the border pixels, so the
    mask finds white ink on black (MNIST) and dark ink on white alike.
    """
    g = luminance(x)
    border = torch.cat(
        [g[:, 0, 0, :], g[:, 0, -1, :], g[:, 0, 1:-1, 0], g[:, 0, 1:-1, -1]], dim=1
    )
    background = border.median(dim=1).values.view(-1, 1, 1, 1)
    return (g - background).abs() > threshold


@register_property("brightness", "mean luminance of the image in [0, 1]")
def brightness(x: torch.Tensor) -> torch.Tensor:
    return luminance(x).flatten(1).mean(1)


@register_property("contrast", "RMS contrast: standard deviation of the luminance in [0, 1]")
def contrast(x: torch.Tensor) -> torch.Tensor:
    return luminance(x).flatten(1).std(1, correction=0)


@register_property(
    "ink_fraction",
    f"fraction of pixels whose luminance differs from the border median by > {INK_THRESHOLD}",
)
def ink_fraction(x: torch.Tensor) -> torch.Tensor:
    return foreground_mask(x).flatten(1).float().mean(1)


@register_property(
    "stroke_thickness",
    "stroke width in pixels: the short side of the rectangle with the ink's area A and "
    "boundary length P (4-neighbour edges), (P/2 - sqrt(P^2/4 - 4A)) / 2; 0 without ink",
)
def stroke_thickness(x: torch.Tensor) -> torch.Tensor:
    # A stroke of width w and length L has area w*L and perimeter 2*(w + L):
    # w is the smaller root of t^2 - (P/2) t + A = 0.
    m = F.pad(foreground_mask(x).float(), (1, 1, 1, 1))
    edges = (m[..., 1:, :] - m[..., :-1, :]).abs().flatten(1).sum(1)
    edges = edges + (m[..., :, 1:] - m[..., :, :-1]).abs().flatten(1).sum(1)
    area = m.flatten(1).sum(1)
    half = edges / 2
    width = (half - torch.sqrt((half * half - 4 * area).clamp(min=0))) / 2
    return torch.where(area > 0, width, torch.zeros_like(area))


_LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))


@register_property("sharpness", "variance of the 3x3 Laplacian of the luminance (valid region)")
def sharpness(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor(_LAPLACIAN, dtype=x.dtype, device=x.device).view(1, 1, 3, 3)
    return F.conv2d(luminance(x), k).flatten(1).var(1, correction=0)


@register_property(
    "colourfulness",
    "Hasler-Suesstrunk colourfulness on [0, 1] pixels: sigma_rgyb + 0.3 mu_rgyb; 0 unless RGB",
)
def colourfulness(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] != 3:
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    r, g, b = x[:, 0].flatten(1), x[:, 1].flatten(1), x[:, 2].flatten(1)
    rg = r - g
    yb = 0.5 * (r + g) - b
    sigma = torch.sqrt(rg.var(1, correction=0) + yb.var(1, correction=0))
    mu = torch.sqrt(rg.mean(1) ** 2 + yb.mean(1) ** 2)
    return sigma + 0.3 * mu


def compute_properties(
    x: torch.Tensor, names: Iterable[str] | None = None, batch_size: int = 4096
) -> dict[str, np.ndarray]:
    """Each named property (all registered ones by default) of every image in
    ``x`` (N x C x H x W in [0, 1]) as float64 arrays of length N."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or min(x.shape[2:]) < 2:
        raise ValueError(MSG_SHAPE.format(shape=tuple(getattr(x, "shape", ()))))
    if batch_size < 1:
        raise ValueError(f"Expected `batch_size` to be a positive integer, but got {batch_size}.")
    props = [get_property(n) for n in (list_properties() if names is None else names)]
    out: dict[str, list[np.ndarray]] = {p.name: [] for p in props}
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size].float()
            for p in props:
                out[p.name].append(p.fn(xb).detach().cpu().double().numpy())
    return {
        k: np.concatenate(v) if v else np.zeros(0, dtype=np.float64) for k, v in out.items()
    }
