"""Common corruptions (Hendrycks & Dietterich, 2019), batched in torch.

Every corruption is registered by name and called as
``get_corruption(name)(x, severity, generator, param_set="auto")`` on a float
NCHW batch in [0, 1] (1 or 3 channels) on any device; it returns a batch of
the same shape, dtype and device, in [0, 1]. The 15 common corruptions of
CIFAR-10-C / ImageNet-C and the 4 extras (speckle_noise, gaussian_blur,
spatter, saturate) follow the published formulas and severity tables
(registered with each function: the CIFAR set for small images, the
ImageNet set for large ones, ``param_set="auto"``, unless configured).
Adding a corruption is one registered function and its two tables here;
the image operations live in ``attacks/image_ops.py``, the per-sample
random streams in ``attacks/rng.py``.

Randomness is per sample. ``generator`` is either a ``SampleRNG`` (one seeded
stream per sample, so a sample's corruption depends only on its own seed, not
on the batch it sits in; counter-based, every draw is computed for the whole
batch at once) or a plain ``torch.Generator`` (per-sample seeds are
then drawn from it, so the result depends on the batch). ``corrupt`` derives
each sample's seed from (run seed, corruption, severity, sample content) and
is what the runner uses: results do not depend on batch size or order.

Where the reference relies on something that cannot be shipped, rtb uses a
documented substitute:

* ``motion_blur`` (and the streaks of ``snow``): the reference calls
  ImageMagick's MotionBlurImage. We re-implement its kernel: a one-sided
  Gaussian of width ``2*ceil(radius)+1`` sampled along the blur angle at
  pixel offsets rounded like ImageMagick's, edge pixels repeated. It is not
  bit-identical (ImageMagick works on 8-bit PNG data; we stay in float).
* ``frost``: the reference blends the image with crops of frost
  photographs, which rtb does not ship. It blends with crops of five
  synthetic textures instead, one per photograph, built from figures
  measured on the photographs by ``scripts/frost_statistics.py`` (mean
  colour, within-crop colour covariance, spread of the crop means, power
  spectrum slope; ``FROST_FIGURES``): the texture matches those statistics,
  not the pixels. The blend weights are the published ones.
* ``spatter`` (water, severities 1-3): the drops' shading runs OpenCV's
  Canny edges, distance transform and histogram equalisation when OpenCV
  is installed (the ``opencv`` extra); without it, an approximation (the
  boundary of the liquid mask, a chessboard distance truncated at 20, a
  batched equalisation with OpenCV's lookup rule). ``spatter_backend()``
  says which runs, and the record of a run stores it.
* ``glass_blur`` reproduces the published data, not the intent of its code:
  the reference's tuple "swap" of two numpy views copies the neighbour's
  pixel, and CIFAR-10-C / ImageNet-C were made that way (see ``_glass_blur``).
* ``jpeg_compression`` encodes with libjpeg through torchvision (on the CPU,
  whatever the device) instead of PIL; both use libjpeg's quality scaling and
  4:2:0 chroma subsampling.
* Grayscale inputs pass through the colour corruptions (brightness,
  saturate, spatter, frost) as RGB with three equal channels and come back as
  ITU-R 601 luma; the others work per channel.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from attacks.image_ops import (
    box_matrix,
    clipped_zoom,
    correlate,
    disk_kernel,
    equalize_hist,
    gaussian_filter,
    gaussian_operator,
    max3x3,
    mirror_grid_scale,
    mirror_sample,
    motion_blur_batch,
    next_pow2,
    pad,
    per_image_max,
    plasma_fractal,
    to_luma,
)
from attacks.rng import SampleRNG, sample_keys, sample_seeds
from benchmark.core.registry import Registry

log = logging.getLogger(__name__)

Tensor = torch.Tensor

__all__ = [
    "CATEGORIES", "COMMON_CORRUPTIONS", "CORRUPTIONS", "EXTRA_CORRUPTIONS", "FROST_FIGURES",
    "IMAGENET_MIN_SIDE", "PARAM_SETS", "PARAM_TABLES", "SEVERITIES", "SINGLE_THREAD_MAX_VALUES",
    "SPATTER_BACKENDS", "CorruptionInfo", "SampleRNG", "corrupt", "corruption_info",
    "corruption_notes", "corruption_threads", "frost_texture", "get_corruption",
    "list_corruptions", "param_table", "register_corruption", "resolve_param_set", "sample_keys",
    "sample_seeds", "set_spatter_backend", "severity_params", "spatter_backend",
]

#: The 15 corruptions of CIFAR-10-C / ImageNet-C, in the published order; mCE
#: averages over these.
COMMON_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
    "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
    "elastic_transform", "pixelate", "jpeg_compression",
)
#: The 4 extra corruptions published with them (validation set).
EXTRA_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
CATEGORIES: tuple[str, ...] = ("noise", "blur", "weather", "digital")
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)


# ------------------------------------------------------------- parameter sets
# Two published tables per corruption, one per image scale (Hendrycks &
# Dietterich, 2019): ``cifar`` for small images (32x32, used for MNIST-sized
# inputs too) and ``imagenet`` for large ones (224x224), each with the five
# severity settings, severity 1 first; the meaning of each tuple is written
# next to its corruption. Parameters given in pixels by the reference are kept
# in pixels; the few that the reference ties to the image size (elastic
# transform, pixelate, the fog fractal) are fractions of the size, scaled at
# run time.

#: Parameter sets by name; ``auto`` picks one from the image size.
PARAM_SETS: tuple[str, ...] = ("auto", "cifar", "imagenet")
#: The tables every corruption registers (``PARAM_SETS`` less ``auto``).
PARAM_TABLES: tuple[str, ...] = ("cifar", "imagenet")

#: ``auto`` uses the ImageNet set when the smaller image side is at least this.
IMAGENET_MIN_SIDE = 128


def resolve_param_set(param_set: str, height: int, width: int) -> str:
    """``cifar`` or ``imagenet``: ``auto`` picks by the smaller image side."""
    if param_set not in PARAM_SETS:
        raise ValueError(
            f"Expected `param_set` to be one of {', '.join(PARAM_SETS)}, but got {param_set!r}."
        )
    if param_set != "auto":
        return param_set
    return "imagenet" if min(height, width) >= IMAGENET_MIN_SIDE else "cifar"


def _zooms(start: float, stop: float, step: float) -> tuple[float, ...]:
    """The reference's ``np.arange(start, stop, step)`` zoom factors."""
    return tuple(float(z) for z in np.arange(start, stop, step))


#: The ImageNet-C reference writes its elastic parameters as multiples of 244
#: for 224-pixel images; we keep that ratio.
_E = 244 / 224


# ----------------------------------------------------------------- registry

CorruptionFn = Callable[..., Tensor]
CoreFn = Callable[[Tensor, Any, SampleRNG], Tensor]
ParamTables = Mapping[str, Sequence[Any]]


@dataclass(frozen=True)
class CorruptionInfo:
    """A registered corruption: its public function, how it is grouped, and
    its published parameters (per table name, one entry per severity)."""

    name: str
    category: str
    fn: CorruptionFn
    color: bool = False
    params: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)


CORRUPTIONS: Registry[CorruptionInfo] = Registry("corruption", listed=lambda: list_corruptions())


def _check_batch(x: Any, severity: Any) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"Expected `x` to be a float tensor N x C x H x W, but got {got}.")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"Expected `x` to have 1 or 3 channels, but got {x.shape[1]}.")
    if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= 5:
        raise ValueError(f"Expected `severity` to be an integer in 1..5, but got {severity!r}.")


def _check_params(name: str, params: ParamTables | None) -> dict[str, tuple[Any, ...]]:
    """The parameter tables of a new corruption: one per table name, one
    entry per severity; anything else fails at registration, not at run time."""
    if not isinstance(params, Mapping) or set(params) != set(PARAM_TABLES):
        got = sorted(params) if isinstance(params, Mapping) else params
        raise ValueError(
            f"Expected `params` of corruption {name!r} to map each of "
            f"{', '.join(PARAM_TABLES)} to its {len(SEVERITIES)} severity settings, but got {got!r}."
        )
    tables: dict[str, tuple[Any, ...]] = {}
    for table in PARAM_TABLES:
        rows = params[table]
        if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence) or \
                len(rows) != len(SEVERITIES):
            raise ValueError(
                f"Expected `params[{table!r}]` of corruption {name!r} to hold "
                f"{len(SEVERITIES)} severity settings, but got {rows!r}."
            )
        tables[table] = tuple(rows)
    return tables


def register_corruption(name: str, *, category: str, color: bool = False,
                        params: ParamTables | None = None) -> Callable[[CoreFn], CorruptionFn]:
    """Register ``core(x, params, rng)`` as corruption ``name`` with its
    published ``params`` (``{"cifar": (5 settings), "imagenet": (5 settings)}``).

    The public function checks its arguments, looks up the parameters of the
    severity, gives grayscale inputs to colour corruptions as RGB, and clips
    the result to [0, 1] in the input's dtype. A duplicate name, an unknown
    category or missing parameters raise here, at registration.
    """
    if category not in CATEGORIES:
        raise ValueError(f"Expected `category` in {', '.join(CATEGORIES)}, but got {category!r}.")
    CORRUPTIONS.check_new(name)
    tables = _check_params(name, params)

    def deco(core: CoreFn) -> CorruptionFn:
        def corruption(x: Tensor, severity: int, generator: torch.Generator | SampleRNG,
                       *, param_set: str = "auto") -> Tensor:
            _check_batch(x, severity)
            n, c, h, w = x.shape
            rng = generator if isinstance(generator, SampleRNG) else \
                SampleRNG.from_generator(generator, n, x.device)
            if len(rng) != n:
                raise ValueError(
                    f"Expected a SampleRNG with one stream per sample ({n}), but got {len(rng)}."
                )
            setting = tables[resolve_param_set(param_set, h, w)][severity - 1]
            xin = x.detach().float()
            if color and c == 1:
                out = to_luma(core(xin.expand(-1, 3, -1, -1).contiguous(), setting, rng))
            else:
                out = core(xin, setting, rng)
            return out.clamp_(0.0, 1.0).to(x.dtype)

        corruption.__name__ = name
        corruption.__doc__ = core.__doc__
        CORRUPTIONS.add(name, CorruptionInfo(name=name, category=category, fn=corruption,
                                             color=color, params=tables))
        return corruption

    return deco


def list_corruptions(category: str | None = None) -> list[str]:
    """Registered corruption names (of one category if given), common ones first."""
    names = [n for n, info in CORRUPTIONS.items() if category in (None, info.category)]
    order = {n: i for i, n in enumerate(COMMON_CORRUPTIONS + EXTRA_CORRUPTIONS)}
    return sorted(names, key=lambda n: (order.get(n, len(order)), n))


def get_corruption(name: str) -> CorruptionFn:
    """The public function of corruption ``name``; an unknown name lists the valid ones."""
    return CORRUPTIONS.get(name).fn


def corruption_info(name: str) -> CorruptionInfo:
    return CORRUPTIONS.get(name)


def severity_params(name: str, severity: int, param_set: str) -> Any:
    """The published parameters of corruption ``name`` at ``severity`` (1..5)
    in table ``param_set`` (cifar | imagenet)."""
    return CORRUPTIONS.get(name).params[param_set][severity - 1]


def param_table(param_set: str) -> dict[str, tuple[Any, ...]]:
    """One parameter table (cifar | imagenet) of every registered corruption."""
    if param_set not in PARAM_TABLES:
        raise ValueError(
            f"Expected `param_set` to be one of {', '.join(PARAM_TABLES)}, but got {param_set!r}."
        )
    return {name: CORRUPTIONS.get(name).params[param_set] for name in list_corruptions()}


def corrupt(x: Tensor, name: str, severity: int, *, seed: int = 0,
            keys: Sequence[Any] | None = None, param_set: str = "auto",
            batch_size: int = 256) -> Tensor:
    """Corrupt a whole set with per-sample seeds from (seed, name, severity, key).

    ``keys`` identify the samples (default: a digest of each sample's
    content), so the result depends neither on ``batch_size`` nor on the
    order of the samples.
    """
    if batch_size < 1:
        raise ValueError(f"Expected `batch_size` to be a positive integer, but got {batch_size}.")
    fn = get_corruption(name)
    keys = sample_keys(x) if keys is None else list(keys)
    if len(keys) != len(x):
        raise ValueError(f"Expected {len(x)} sample keys, one per sample, but got {len(keys)}.")
    seeds = sample_seeds(seed, name, severity, keys)
    out = []
    with corruption_threads(x[:batch_size]):
        for i in range(0, len(x), batch_size):
            rng = SampleRNG(seeds[i : i + batch_size], x.device)
            out.append(fn(x[i : i + batch_size], severity, rng, param_set=param_set))
    return torch.cat(out) if out else x.clone()


#: A CPU batch with fewer values than this is corrupted on one torch thread.
#: The corruptions are chains of small elementwise and gather operations:
#: below about a hundred 224x224 RGB images per batch, splitting each over
#: threads costs more in hand-offs than it saves (and on a loaded machine a
#: waiting thread spins on a core another job needs), so two threads were
#: slower than one (``scripts/bench_corruptions.py --threads 1 2``).
SINGLE_THREAD_MAX_VALUES = 1 << 24


@contextlib.contextmanager
def corruption_threads(batch: Tensor) -> Iterator[int]:
    """Run the block on the torch thread count chosen for corrupting batches
    like ``batch`` (one thread for small CPU batches, see
    ``SINGLE_THREAD_MAX_VALUES``); the previous count is restored after."""
    before = torch.get_num_threads()
    threads = 1 if batch.device.type == "cpu" and batch.numel() < SINGLE_THREAD_MAX_VALUES \
        else before
    if threads != before:
        torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        if threads != before:
            torch.set_num_threads(before)


# -------------------------------------------------------------- noise


@register_corruption(
    "gaussian_noise", category="noise",
    params={
        "cifar": (0.04, 0.06, 0.08, 0.09, 0.10),
        "imagenet": (0.08, 0.12, 0.18, 0.26, 0.38),
    },
)
def _gaussian_noise(x: Tensor, c: float, rng: SampleRNG) -> Tensor:
    """x + N(0, c^2) per value."""
    return x + c * rng.randn(*x.shape[1:]).to(x.device)


@register_corruption(
    "shot_noise", category="noise",
    params={
        "cifar": (500, 250, 100, 75, 50),
        "imagenet": (60, 25, 12, 5, 3),
    },
)
def _shot_noise(x: Tensor, c: float, rng: SampleRNG) -> Tensor:
    """Poisson(x * c) / c per value."""
    return rng.poisson(x * c) / c


@register_corruption(
    "impulse_noise", category="noise",
    params={
        "cifar": (0.01, 0.02, 0.03, 0.05, 0.07),
        "imagenet": (0.03, 0.06, 0.09, 0.17, 0.27),
    },
)
def _impulse_noise(x: Tensor, c: float, rng: SampleRNG) -> Tensor:
    """Salt and pepper: a fraction c of the values set to 0 or 1 (half each).

    One uniform per value decides both (the reference draws two): below c/2
    salt, in [c/2, c) pepper, so each has probability c/2 as published.
    """
    u = rng.rand(*x.shape[1:]).to(x.device)
    return torch.where(u < c / 2, 1.0, torch.where(u < c, 0.0, x))


@register_corruption(
    "speckle_noise", category="noise",
    params={
        "cifar": (0.06, 0.1, 0.12, 0.16, 0.2),
        "imagenet": (0.15, 0.2, 0.35, 0.45, 0.6),
    },
)
def _speckle_noise(x: Tensor, c: float, rng: SampleRNG) -> Tensor:
    """x + x * N(0, c^2) per value."""
    return x + x * c * rng.randn(*x.shape[1:])


# --------------------------------------------------------------- blur


@register_corruption(
    "gaussian_blur", category="blur",
    params={
        "cifar": (0.4, 0.6, 0.7, 0.8, 1.0),
        "imagenet": (1, 2, 3, 4, 6),
    },
)
def _gaussian_blur(x: Tensor, c: float, rng: SampleRNG) -> Tensor:
    """Gaussian blur of sigma c (truncated at 4 sigma, edge pixels repeated)."""
    return gaussian_filter(x, c)


@functools.lru_cache(maxsize=32)
def _glass_positions(h: int, w: int, delta: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """The pixels the reference visits, as flat indices in its order (bottom
    right to top left), and every pixel's rank in that order (``h*w`` for
    pixels it never visits)."""
    pos = torch.tensor([r * w + q for r in range(h - delta, delta, -1)
                        for q in range(w - delta, delta, -1)], dtype=torch.int64)
    rank = torch.full((h * w,), h * w, dtype=torch.int64)
    rank[pos] = torch.arange(len(pos))
    return pos.to(device), rank.to(device)


def _glass_sources(pos: Tensor, rank: Tensor, disp: Tensor, w: int) -> Tensor:
    """For one pass of the reference's shuffle, the pixel of the pass's input
    image that each pixel ends up holding: (n, H*W) flat indices.

    The reference visits the pixels in order and assigns
    ``x[r, q] = x[r + dy, q + dx]`` (its tuple "swap" of two numpy views
    copies the neighbour's pixel and writes it back unchanged), so a pixel
    reads the neighbour's value *at that moment*: the input value if the
    neighbour is visited later (or never), or what the neighbour already
    took, when it was visited earlier (possible for ``delta > 1``). Such
    chains are resolved by pointer doubling, for the whole batch at once.
    """
    n, hw = disp.shape[0], len(rank)
    src = pos.view(1, -1) + disp[..., 1] * w + disp[..., 0]  # (n, P)
    identity = torch.arange(hw, device=pos.device).repeat(n, 1)
    out = identity.index_copy(1, pos, src)
    if int(disp.max()) <= 0:
        return out  # offsets up and left only (delta 1): neighbours come later, no chains
    later = rank.take(src) < rank.index_select(0, pos).view(1, -1)  # (n, P)
    if not bool(later.any()):
        return out  # no chains
    chained = torch.zeros(n, hw, dtype=torch.bool, device=pos.device).index_copy_(1, pos, later)
    nxt = identity.index_copy_(1, pos, torch.where(later, src, pos.view(1, -1)))
    while bool(chained.any()):
        # a chained pixel holds what its neighbour holds; once that neighbour
        # is settled, so is the pixel, else jump two links at once
        settled_next = ~chained.gather(1, nxt)
        out = torch.where(chained & settled_next, out.gather(1, nxt), out)
        nxt = torch.where(chained, nxt.gather(1, nxt), nxt)
        chained = chained & ~settled_next
    return out


@register_corruption(
    "glass_blur", category="blur",
    # (sigma, max_delta, iterations)
    params={
        "cifar": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
        "imagenet": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
    },
)
def _glass_blur(x: Tensor, c: tuple[float, int, int], rng: SampleRNG) -> Tensor:
    """Blur, quantise to 8 bits, shuffle locally as the published data were
    made, blur again.

    The shuffle visits the pixels bottom right to top left, ``iterations``
    times, and gives each the value its random neighbour (offsets in
    ``[-delta, delta)``, as ``np.random.randint``) holds at that moment. The
    reference code writes this as a swap, but on numpy views of an RGB image
    the tuple assignment only copies the neighbour into the pixel; CIFAR-10-C
    and ImageNet-C were generated that way, so rtb reproduces the copy (a
    true swap is a different, harsher corruption).
    """
    sigma, delta, iterations = c
    n, ch, h, w = x.shape
    x = torch.floor(gaussian_filter(x, sigma) * 255) / 255
    pos, rank = _glass_positions(h, w, delta, x.device)
    perm: Tensor | None = None
    for _ in range(iterations):
        disp = rng.randint(-delta, delta, len(pos), 2).to(x.device)  # (n, P, [dx, dy])
        sources = _glass_sources(pos, rank, disp, w)
        perm = sources if perm is None else perm.gather(1, sources)
    if perm is None:
        return gaussian_filter(x, sigma)
    flat = x.reshape(n, ch, h * w).gather(2, perm.view(n, 1, -1).expand(n, ch, -1))
    return gaussian_filter(flat.view(n, ch, h, w), sigma)


@register_corruption(
    "defocus_blur", category="blur",
    # (radius, alias_blur)
    params={
        "cifar": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
        "imagenet": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
    },
)
def _defocus_blur(x: Tensor, c: tuple[float, float], rng: SampleRNG) -> Tensor:
    """Correlation with an anti-aliased disk of the given radius (OpenCV border)."""
    radius, alias_blur = c
    return correlate(x, _disk_kernel(float(radius), float(alias_blur)), "reflect101")


@functools.lru_cache(maxsize=32)
def _disk_kernel(radius: float, alias_blur: float) -> Tensor:
    """``disk_kernel``, built once per setting (read only)."""
    return disk_kernel(radius, alias_blur)


@register_corruption(
    "motion_blur", category="blur",
    # (radius, sigma)
    params={
        "cifar": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
        "imagenet": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    },
)
def _motion_blur(x: Tensor, c: tuple[float, float], rng: SampleRNG) -> Tensor:
    """ImageMagick-style motion blur (radius, sigma) at an angle U(-45, 45) degrees."""
    radius, sigma = c
    angles = rng.uniform(-45.0, 45.0, dtype=torch.float64)
    return motion_blur_batch(x, radius, sigma, angles)


#: Images up to this many pixels zoom-blur through one cached sparse operator.
_ZOOM_OPERATOR_MAX_PIXELS = 128 * 128


@functools.lru_cache(maxsize=16)
def _zoom_blur_operator(h: int, w: int, zooms: tuple[float, ...],
                        device: torch.device) -> Tensor:
    """zoom_blur as one sparse (H*W x H*W) matrix: the mean of the identity
    and each ``clipped_zoom``, built from the zooms' 1-D operators (each zoom
    is separable: a row operator times a column operator)."""
    idx = [torch.arange(h * w).repeat(2, 1)]
    val = [torch.ones(h * w)]
    for z in zooms:
        # the 1-D operators, [out, in], read off zoomed indicator images
        rows = clipped_zoom(torch.eye(h).view(h, 1, h, 1).expand(h, 1, h, 2), z)[:, 0, :, 0].T
        cols = clipped_zoom(torch.eye(w).view(w, 1, 1, w).expand(w, 1, 2, w), z)[:, 0, 0, :].T
        ra, rb = rows.nonzero().unbind(1)
        ca, cb = cols.nonzero().unbind(1)
        idx.append(torch.stack([(ra.view(-1, 1) * w + ca.view(1, -1)).reshape(-1),
                                (rb.view(-1, 1) * w + cb.view(1, -1)).reshape(-1)]))
        val.append((rows[ra, rb].view(-1, 1) * cols[ca, cb].view(1, -1)).reshape(-1))
    op = torch.sparse_coo_tensor(torch.cat(idx, 1), torch.cat(val) / (len(zooms) + 1),
                                 (h * w, h * w), check_invariants=True).coalesce()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "CSR support is in beta"
        return op.to_sparse_csr().to(device)


@register_corruption(
    "zoom_blur", category="blur",
    params={
        "cifar": (
            _zooms(1, 1.06, 0.01), _zooms(1, 1.11, 0.01), _zooms(1, 1.16, 0.01),
            _zooms(1, 1.21, 0.01), _zooms(1, 1.26, 0.01),
        ),
        "imagenet": (
            _zooms(1, 1.11, 0.01), _zooms(1, 1.16, 0.01), _zooms(1, 1.21, 0.02),
            _zooms(1, 1.26, 0.02), _zooms(1, 1.31, 0.03),
        ),
    },
)
def _zoom_blur(x: Tensor, c: tuple[float, ...], rng: SampleRNG) -> Tensor:
    """The mean of the image and its centre zooms by each factor (small
    images: one sparse matrix product with the cached operator)."""
    h, w = x.shape[-2:]
    if h * w <= _ZOOM_OPERATOR_MAX_PIXELS:
        op = _zoom_blur_operator(h, w, tuple(c), x.device)
        return torch.sparse.mm(op, x.reshape(-1, h * w).T).T.reshape(x.shape)
    out = x.clone()
    for z in c:
        out += clipped_zoom(x, z)
    return out / (len(c) + 1)


# ------------------------------------------------------------- weather


@register_corruption(
    "snow", category="weather",
    # (loc, scale, zoom, threshold, blur radius, blur sigma, blend)
    params={
        "cifar": (
            (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
            (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
            (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
            (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
            (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
        ),
        "imagenet": (
            (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
            (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
            (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
            (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
            (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
        ),
    },
)
def _snow(x: Tensor, c: tuple[float, ...], rng: SampleRNG) -> Tensor:
    """Zoomed, thresholded Gaussian flakes, motion-blurred and added twice
    (once rotated by 180 degrees) to a whitened image."""
    loc, scale, zoom, threshold, radius, sigma, blend = c
    n, ch, h, w = x.shape
    layer = clipped_zoom(rng.normal(loc, scale, 1, h, w), zoom)
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer)
    layer = torch.floor(layer.clamp(0, 1) * 255) / 255
    layer = motion_blur_batch(layer, radius, sigma, rng.uniform(-135.0, -45.0,
                                                                dtype=torch.float64))
    gray = to_luma(x) if ch == 3 else x
    x = blend * x + (1 - blend) * torch.maximum(x, gray * 1.5 + 0.5)
    return x + layer + torch.rot90(layer, 2, dims=(-2, -1))


#: Texture figures of the five frost photographs the published corruption
#: draws from (frost1.png .. frost5.jpg of hendrycks/robustness), measured by
#: ``scripts/frost_statistics.py`` at each published scale (CIFAR: the
#: photograph shrunk to a fifth, 32x32 crops; ImageNet: full size, 224x224
#: crops). Per photograph: mean RGB; the within-crop RGB covariance (upper
#: triangle: rr, rg, rb, gg, gb, bb); the spread (std) of the crop means per
#: channel; the slope beta of the radially averaged power spectrum of the
#: (Hann-windowed) crops, P(f) ~ f^-beta; and the slope to synthesise with so
#: that crops of rtb's texture measure that beta (found by the script).
#: Figures, not images: the photographs are not shipped.
FROST_FIGURES: dict[str, tuple[tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...],
                                     float, float], ...]] = {
    "cifar": (
        ((0.3048, 0.5817, 0.6456), (0.0071, 0.0036, 0.0024, 0.0028, 0.0026, 0.0026),
         (0.0689, 0.0367, 0.0281), 1.405, 1.539),  # frost1.png
        ((0.7753, 0.7924, 0.8284), (0.0051, 0.0051, 0.0053, 0.0053, 0.0054, 0.0056),
         (0.0358, 0.0392, 0.0414), 0.927, 1.058),  # frost2.png
        ((0.7772, 0.7947, 0.8311), (0.0050, 0.0050, 0.0052, 0.0052, 0.0053, 0.0055),
         (0.0320, 0.0351, 0.0373), 0.951, 1.084),  # frost3.png
        ((0.5617, 0.6197, 0.6695), (0.0104, 0.0104, 0.0107, 0.0104, 0.0108, 0.0113),
         (0.0355, 0.0353, 0.0382), 0.594, 0.693),  # frost4.jpg
        ((0.3957, 0.4404, 0.4870), (0.0188, 0.0186, 0.0182, 0.0184, 0.0180, 0.0176),
         (0.0591, 0.0569, 0.0536), 1.042, 1.179),  # frost5.jpg
    ),
    "imagenet": (
        ((0.3067, 0.5810, 0.6442), (0.0088, 0.0044, 0.0029, 0.0033, 0.0029, 0.0029),
         (0.0610, 0.0323, 0.0239), 1.642, 1.667),  # frost1.png
        ((0.7743, 0.7912, 0.8271), (0.0059, 0.0060, 0.0062, 0.0062, 0.0064, 0.0067),
         (0.0232, 0.0258, 0.0271), 1.925, 1.950),  # frost2.png
        ((0.7756, 0.7926, 0.8288), (0.0058, 0.0060, 0.0062, 0.0062, 0.0064, 0.0067),
         (0.0211, 0.0234, 0.0246), 1.932, 1.957),  # frost3.png
        ((0.5678, 0.6259, 0.6764), (0.0105, 0.0105, 0.0109, 0.0105, 0.0109, 0.0116),
         (0.0227, 0.0223, 0.0241), 1.543, 1.566),  # frost4.jpg
        ((0.3889, 0.4337, 0.4806), (0.0199, 0.0196, 0.0192, 0.0194, 0.0190, 0.0186),
         (0.0433, 0.0416, 0.0390), 1.782, 1.806),  # frost5.jpg
    ),
}


def _covariance(upper: Sequence[float]) -> Tensor:
    iu = torch.triu_indices(3, 3)
    cov = torch.zeros(3, 3, dtype=torch.float64)
    cov[iu[0], iu[1]] = torch.tensor(list(upper), dtype=torch.float64)
    cov[iu[1], iu[0]] = torch.tensor(list(upper), dtype=torch.float64)
    return cov


#: Seed of the frost textures: fixed, so every run blends the same five.
FROST_SEED = 20190328


def _power_law_fields(count: int, side: int, beta: float, crop: int, seed: int) -> Tensor:
    """``count`` periodic Gaussian fields (count, side, side) with the power
    spectrum f^-beta at frequencies of at least one cycle per ``crop``
    pixels (none below: those would move the crop means, which the spread
    figure sets), from a fixed seed, scaled to unit variance within
    ``crop``-sized windows."""
    white = SampleRNG([seed + i for i in range(count)]).randn(side, side, dtype=torch.float64)
    fr = torch.fft.fftfreq(side, dtype=torch.float64)
    f = torch.hypot(fr.view(-1, 1), fr.view(1, -1))
    amp = torch.where(f >= 1 / crop, f.clamp_min(1e-12) ** (-beta / 2), torch.zeros_like(f))
    field = torch.fft.ifft2(torch.fft.fft2(white) * amp).real
    return field / _window_stats(field, crop)[0].mean().sqrt()


def _window_stats(field: Tensor, crop: int) -> tuple[Tensor, Tensor]:
    """Per periodic field (count, S, S): the mean variance within, and the
    variance of the means of, ``crop``-sized windows on a half-overlapping grid."""
    f = field.unsqueeze(1)
    f = torch.cat([f, f[..., : crop // 2, :]], 2)
    f = torch.cat([f, f[..., : crop // 2]], 3)
    mean = F.avg_pool2d(f, crop, crop // 2)
    within = F.avg_pool2d(f**2, crop, crop // 2) - mean**2
    return within.flatten(1).mean(1), mean.flatten(1).var(1)


def frost_crop_side(scale: str) -> int:
    """The crop side the figures of ``scale`` were measured on."""
    return 32 if scale == "cifar" else 224


def synthesise_frost(figures: Sequence[Any], crop: int, side: int, seed: int,
                     beta: float | None = None) -> Tensor:
    """One periodic frost texture (3, side, side), mean free, from one row of
    ``FROST_FIGURES`` (``beta`` overrides its synthesis slope): three fields
    with the power spectrum f^-beta above one cycle per ``crop`` pixels (unit
    variance within ``crop``-sized windows), mixed by the square root of the
    photograph's within-crop covariance. The mean colour and the spread of
    the crop means are added per crop by ``frost_texture``."""
    cov = _covariance(figures[1])
    beta = float(figures[4] if beta is None else beta)
    # a symmetric square root (the 4-digit figures need not be exactly
    # positive definite: negative rounding residues count as zero)
    evals, evecs = torch.linalg.eigh(cov)
    root = evecs @ torch.diag(evals.clamp_min(0).sqrt()) @ evecs.T
    hi = _power_law_fields(3, side, beta, crop, seed)
    return torch.einsum("ij,jhw->ihw", root, hi)


def frost_texture_side(scale: str) -> int:
    """The side of the periodic textures: four crops (CIFAR; small enough to
    stay in cache) or two (ImageNet)."""
    return 128 if scale == "cifar" else 448


def frost_seed(scale: str, k: int) -> int:
    return FROST_SEED + 16 * k + (0 if scale == "cifar" else 1000)


@functools.lru_cache(maxsize=4)
def _frost_bank(scale: str, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """The five mean-free frost textures of one scale (5, 3, S, S), periodic,
    with their mean colours (5, 3) and spreads of the crop means (5, 3)."""
    crop = frost_crop_side(scale)
    side = frost_texture_side(scale)
    rows = FROST_FIGURES[scale]
    bank = [synthesise_frost(row, crop, side, frost_seed(scale, k)) for k, row in enumerate(rows)]
    mean = torch.tensor([r[0] for r in rows], dtype=torch.float32)
    spread = torch.tensor([r[2] for r in rows], dtype=torch.float32)
    return torch.stack(bank).float().to(device), mean.to(device), spread.to(device)


@functools.lru_cache(maxsize=8)
def _frost_windows(scale: str, h: int, w: int, device: torch.device) -> Tensor:
    """Every h x w window of the periodic textures, as a strided view
    (5, 3, side, side, h, w) of the textures padded by wrapping."""
    bank = _frost_bank(scale, device)[0]
    side = bank.shape[-1]
    reps_h, reps_w = -(-(side + h) // side), -(-(side + w) // side)
    padded = bank.repeat(1, 1, reps_h, reps_w)[..., : side + h, : side + w].contiguous()
    s = padded.stride()
    return padded.as_strided((*bank.shape[:2], side, side, h, w), (*s, s[2], s[3]))


def frost_texture(rng: SampleRNG, h: int, w: int, *, scale: str | None = None,
                  which: Tensor | None = None) -> Tensor:
    """A frost layer (N, 3, H, W) in [0, 1]: a random crop of one of five
    textures that have the statistics of the published frost photographs
    (``FROST_FIGURES``), drawn as the reference draws its photograph and crop.

    The textures are synthesised once from a fixed seed (``synthesise_frost``:
    the photograph's spectral slope and within-crop colour covariance); each
    crop gets the photograph's mean colour plus a random offset of its
    between-crop spread (one normal draw, all channels). The textures are
    periodic, so a crop may start anywhere (and be larger than the texture). ``scale`` picks the
    figures (cifar | imagenet; default by image size, as
    ``param_set="auto"``); ``which`` fixes the texture of each sample.
    """
    scale = scale or resolve_param_set("auto", h, w)
    bank, mean, spread = _frost_bank(scale, rng.device)
    side = bank.shape[-1]
    # one draw picks the texture and the crop's corner, uniformly
    pick = rng.randint(0, len(bank) * side * side, 1)[:, 0]
    k = pick // (side * side)
    if which is not None:
        k = which.to(rng.device, torch.int64)
    offset = rng.randn(1).to(rng.device)  # the crop mean's deviation, in spreads
    windows = _frost_windows(scale, h, w, rng.device)  # (5, 3, side, side, h, w) view
    tex = windows[k, :, (pick // side) % side, pick % side]  # (n, 3, h, w)
    tex = tex + (mean[k] + spread[k] * offset).view(-1, 3, 1, 1)
    return tex.clamp_(0, 1)


@register_corruption(
    "frost", category="weather", color=True,
    # (image weight, frost weight)
    params={
        "cifar": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
        "imagenet": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
    },
)
def _frost(x: Tensor, c: tuple[float, float], rng: SampleRNG) -> Tensor:
    """a * image + b * frost texture (synthesised with the photographs' statistics)."""
    a, b = c
    return torch.add(x * a, frost_texture(rng, *x.shape[-2:]).to(x), alpha=b)


@register_corruption(
    "fog", category="weather",
    # (fog strength, wibble decay)
    params={
        "cifar": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
        "imagenet": ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)),
    },
)
def _fog(x: Tensor, c: tuple[float, float], rng: SampleRNG) -> Tensor:
    """Add a plasma fractal of strength c and rescale by the image's maximum."""
    strength, decay = c
    h, w = x.shape[-2:]
    fractal = plasma_fractal(rng, next_pow2(max(h, w)), decay)[:, :h, :w]
    top = per_image_max(x)
    x = x + strength * fractal.to(x).unsqueeze(1)
    return x * top / (top + strength)


@register_corruption(
    "brightness", category="weather", color=True,
    params={
        "cifar": (0.05, 0.1, 0.15, 0.2, 0.3),
        "imagenet": (0.1, 0.2, 0.3, 0.4, 0.5),
    },
)
def _brightness(x: Tensor, c: float, rng: SampleRNG) -> Tensor:
    """HSV value + c (clipped at 1), hue and saturation kept."""
    v = x.amax(1, keepdim=True)
    v2 = (v + c).clamp(max=1.0)
    scaled = x * (v2 / v.clamp_min(1e-12))
    return torch.where(v > 0, scaled, v2.expand_as(x))


@register_corruption(
    "spatter", category="weather", color=True,
    # (loc, scale, sigma, threshold, intensity, mud)
    params={
        "cifar": (
            (0.62, 0.1, 0.7, 0.7, 0.5, 0),
            (0.65, 0.1, 0.8, 0.7, 0.5, 0),
            (0.65, 0.3, 1, 0.69, 0.5, 0),
            (0.65, 0.1, 0.7, 0.69, 0.6, 1),
            (0.65, 0.1, 0.5, 0.68, 0.6, 1),
        ),
        "imagenet": (
            (0.65, 0.3, 4, 0.69, 0.6, 0),
            (0.65, 0.3, 3, 0.68, 0.6, 0),
            (0.65, 0.3, 2, 0.68, 0.5, 0),
            (0.65, 0.3, 1, 0.65, 1.5, 1),
            (0.67, 0.4, 1, 0.65, 1.5, 1),
        ),
    },
)
def _spatter(x: Tensor, c: tuple[float, ...], rng: SampleRNG) -> Tensor:
    """Water drops (severities 1-3) or mud (4-5) from a thresholded, blurred
    Gaussian liquid layer; the drops' shading runs OpenCV's steps when
    OpenCV is installed (``pip install rtb[opencv]``), else an approximation
    (``spatter_backend`` says which)."""
    loc, scale, sigma, threshold, intensity, mud = c
    n, ch, h, w = x.shape
    liquid = gaussian_filter(rng.normal(loc, scale, 1, h, w), sigma)
    liquid = liquid.masked_fill_(liquid < threshold, 0.0)
    if mud:
        m = gaussian_filter((liquid > threshold).float(), intensity)
        m = torch.where(m < 0.8, torch.zeros_like(m), m)
        color = torch.tensor([63, 42, 20], device=x.device, dtype=x.dtype).view(1, 3, 1, 1) / 255
        return x * (1 - m) + color * m
    # the reference keeps the layer as 8 bits (truncated) from here on
    liquid = liquid.mul_(255).floor_().clamp_(0, 255)
    cv2 = _opencv()
    dist = _water_shading_opencv(liquid, cv2) if cv2 is not None else _water_shading(liquid)
    m = liquid * dist
    # m >= 0: an image whose maximum is 0 is all zeros, and stays so
    m = m.div_(per_image_max(m).clamp_min(1e-12)).mul_(intensity)
    color = torch.tensor([175, 238, 238], device=x.device, dtype=x.dtype).view(1, 3, 1, 1) / 255
    return x + m * color


#: ``"auto"``: OpenCV for the water shading when it imports, else the
#: approximation; ``"approximation"`` forces the approximation.
SPATTER_BACKENDS: tuple[str, ...] = ("auto", "approximation")
_spatter_choice = "auto"


@functools.lru_cache(maxsize=1)
def _import_opencv() -> Any:
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def _opencv() -> Any:
    return None if _spatter_choice == "approximation" else _import_opencv()


def set_spatter_backend(choice: str) -> None:
    """Choose how water spatter shades its drops (see ``SPATTER_BACKENDS``)."""
    global _spatter_choice
    if choice not in SPATTER_BACKENDS:
        raise ValueError(f"Expected a spatter backend in {', '.join(SPATTER_BACKENDS)}, "
                         f"but got {choice!r}.")
    _spatter_choice = choice


def spatter_backend() -> str:
    """``opencv`` or ``approximation``: what water spatter (severities 1-3) runs."""
    return "opencv" if _opencv() is not None else "approximation"


def corruption_notes(name: str, severity: int) -> dict[str, str]:
    """What a record should say about how corruption ``name`` ran at
    ``severity`` beyond its parameters (the spatter backend)."""
    if name == "spatter" and severity <= 3:
        return {"backend": spatter_backend()}
    return {}


#: OpenCV filters at most this many channels per image (128 in OpenCV 5): the shading steps
#: that work per pixel or per 3x3 window run on this many layers at once.
_OPENCV_MAX_CHANNELS = 128


@contextlib.contextmanager
def _opencv_single_thread(cv2: Any) -> Iterator[None]:
    """OpenCV on the calling thread only (its thread pool costs more than it
    saves on 32x32 layers), its setting restored after."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def _water_shading_opencv(liquid: Tensor, cv2: Any) -> Tensor:
    """The reference's shading of the water drops with OpenCV itself, on the
    CPU: Canny edges of the 8-bit layer, L2 distance to them (5x5 mask)
    truncated at 20, 3x3 box blur, histogram equalisation, the emboss kernel
    into 8 bits, 3x3 box blur. The edges, distances and equalisation run per
    layer; the other steps on the layers stacked as channels (OpenCV filters
    every channel alike)."""
    layers = liquid[:, 0].detach().cpu().numpy().astype(np.uint8)
    n, h, w = layers.shape
    emboss = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
    out = np.empty((n, h, w), dtype=np.float32)
    with _opencv_single_thread(cv2):
        for lo in range(0, n, _OPENCV_MAX_CHANNELS):
            part = layers[lo : lo + _OPENCV_MAX_CHANNELS]
            dist = np.empty((h, w, len(part)), dtype=np.float32)
            for i, layer in enumerate(part):
                dist[..., i] = cv2.distanceTransform(255 - cv2.Canny(layer, 50, 150),
                                                     cv2.DIST_L2, 5)
            np.minimum(dist, 20, out=dist)  # THRESH_TRUNC at 20
            blurred = cv2.blur(dist, (3, 3)).astype(np.uint8).reshape(h, w, -1)
            eq = np.empty_like(blurred)
            for i in range(len(part)):
                eq[..., i] = cv2.equalizeHist(np.ascontiguousarray(blurred[..., i]))
            shaded = cv2.blur(cv2.filter2D(eq, cv2.CV_8U, emboss), (3, 3)).reshape(h, w, -1)
            out[lo : lo + len(part)] = shaded.transpose(2, 0, 1)
    return torch.from_numpy(out).unsqueeze(1).to(liquid)


def _water_shading(liquid: Tensor) -> Tensor:
    """An approximation of the reference's embossed distance-to-edge shading
    of the water drops (8-bit layer in), without OpenCV."""
    mask = (liquid > 0).float()
    outside = 1 - mask
    near_outside = max3x3(pad(outside, 1, 1, "nearest"))
    edge = (mask * near_outside) > 0
    reached = edge.float()
    dist = torch.zeros_like(liquid)
    for _ in range(20):
        if bool(reached.all()):
            break  # every pixel is as close to an edge as it gets
        dist += 1 - reached
        reached = max3x3(F.pad(reached, (1, 1, 1, 1)))
    box = torch.full((3, 3), 1 / 9, dtype=liquid.dtype)
    dist = torch.floor(correlate(dist, box, "reflect101"))
    dist = equalize_hist(dist)
    emboss = torch.tensor([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=liquid.dtype)
    dist = torch.round(correlate(dist, emboss, "reflect101")).clamp(0, 255)
    return correlate(dist, box, "reflect101")


# ------------------------------------------------------------- digital


@register_corruption(
    "contrast", category="digital",
    params={
        "cifar": (0.75, 0.5, 0.4, 0.3, 0.15),
        "imagenet": (0.4, 0.3, 0.2, 0.1, 0.05),
    },
)
def _contrast(x: Tensor, c: float, rng: SampleRNG) -> Tensor:
    """(x - channel mean) * c + channel mean, per image."""
    means = x.mean(dim=(2, 3), keepdim=True)
    return (x - means) * c + means


@register_corruption(
    "saturate", category="digital", color=True,
    # (saturation factor, saturation offset)
    params={
        "cifar": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
        "imagenet": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
    },
)
def _saturate(x: Tensor, c: tuple[float, float], rng: SampleRNG) -> Tensor:
    """HSV saturation * a + b (clipped to [0, 1]), hue and value kept."""
    a, b = c
    v = x.amax(1, keepdim=True)
    lo = x.amin(1, keepdim=True)
    delta = v - lo
    s = torch.where(v > 0, delta / v.clamp_min(1e-12), torch.zeros_like(v))
    s2 = (s * a + b).clamp(0, 1)
    coloured = v - s2 * v * (v - x) / delta.clamp_min(1e-12)
    # a gray pixel has hue 0: (V, V(1-S'), V(1-S')) as HSV->RGB gives it
    gray = torch.cat([v, v * (1 - s2), v * (1 - s2)], 1)
    return torch.where(delta > 0, coloured, gray)


@register_corruption(
    "elastic_transform", category="digital",
    # (alpha, sigma, affine) as fractions of the image size
    params={
        "cifar": (
            (0.0, 0.0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
            (0.1, 0.03, 0.03),
        ),
        "imagenet": (
            (2 * _E, 0.7 * _E, 0.1 * _E), (2 * _E, 0.08 * _E, 0.2 * _E),
            (0.05 * _E, 0.01 * _E, 0.02 * _E), (0.07 * _E, 0.01 * _E, 0.02 * _E),
            (0.12 * _E, 0.01 * _E, 0.02 * _E),
        ),
    },
)
def _elastic_transform(x: Tensor, c: tuple[float, float, float], rng: SampleRNG) -> Tensor:
    """A random affine warp of three points, then a smooth random
    displacement field (alpha, sigma), both bilinear."""
    n, ch, h, w = x.shape
    size = min(h, w)
    alpha, sigma, affine = (v * size for v in c)
    dev = x.device
    centre = torch.tensor([h // 2, w // 2], dtype=torch.float64, device=dev)
    sq = size // 3
    pts1 = torch.stack([centre + sq, torch.stack([centre[0] + sq, centre[1] - sq]),
                        centre - sq]).unsqueeze(0).expand(n, 3, 2)
    pts2 = pts1 + rng.uniform(-affine, affine, 3, 2, dtype=torch.float64).to(dev)
    ones = torch.ones(n, 3, 1, dtype=torch.float64, device=dev)
    inverse = torch.linalg.solve(torch.cat([pts2, ones], 2), pts1)  # maps dst -> src, (n,3,2)
    # the affine map (xx, yy, 1) @ inverse, in the grid coordinates of the
    # sampler (reflect101: corners aligned), elementwise: a matrix product
    # with an inner size of 3 is slow
    sy, oy = mirror_grid_scale(h, "reflect101")
    sx, ox = mirror_grid_scale(w, "reflect101")
    coef = (inverse * torch.tensor([sx, sy], dtype=torch.float64, device=dev)).float()
    coef[:, 2] += torch.tensor([ox, oy], device=dev)
    yy = torch.arange(h, dtype=torch.float32, device=dev).view(1, h, 1, 1)
    xx = torch.arange(w, dtype=torch.float32, device=dev).view(1, 1, w, 1)
    coef = coef.view(n, 3, 1, 1, 2)
    grid = torch.addcmul(torch.addcmul(coef[:, 2], xx, coef[:, 0]), yy, coef[:, 1])  # n,h,w,2
    warped = mirror_sample(x, grid, "reflect101")
    # the two displacement fields (x then y, in draw order), blurred as one
    # two-channel batch by the filter's row and column operators, added to
    # the pixel grid (symmetric border) in the sampler's coordinates
    fields = torch.cat([rng.uniform(-1.0, 1.0, 1, h, w), rng.uniform(-1.0, 1.0, 1, h, w)], 1)
    if sigma > 0:
        blur_h = gaussian_operator(h, sigma, 3.0, "symmetric", fields.dtype, fields.device)
        blur_w = gaussian_operator(w, sigma, 3.0, "symmetric", fields.dtype, fields.device)
        fields = blur_h @ fields @ blur_w.T
    sy, oy = mirror_grid_scale(h, "symmetric")
    sx, ox = mirror_grid_scale(w, "symmetric")
    scale = torch.tensor([sx, sy], device=dev)
    base = torch.stack(torch.broadcast_tensors(xx[..., 0] * sx + ox, yy[..., 0] * sy + oy), -1)
    grid = torch.addcmul(base, fields.to(dev).permute(0, 2, 3, 1), scale * alpha)
    return mirror_sample(warped, grid, "symmetric")


@register_corruption(
    "pixelate", category="digital",
    # fraction of the side kept
    params={
        "cifar": (0.95, 0.9, 0.85, 0.75, 0.65),
        "imagenet": (0.6, 0.5, 0.4, 0.3, 0.25),
    },
)
def _pixelate(x: Tensor, c: float, rng: SampleRNG) -> Tensor:
    """PIL BOX downscale to a fraction c of the size, then BOX upscale back."""
    h, w = x.shape[-2:]
    down_h, down_w_t, up_h, up_w_t = _pixelate_operators(h, w, float(c), x.dtype, x.device)
    small = down_h @ x @ down_w_t
    return up_h @ small @ up_w_t


@functools.lru_cache(maxsize=32)
def _pixelate_operators(h: int, w: int, c: float, dtype: torch.dtype, device: torch.device
                        ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """PIL's BOX weights of pixelate's two resizes, built once per size
    (read only): down rows, down columns (transposed), up rows, up columns
    (transposed)."""
    sh, sw = max(1, int(h * c)), max(1, int(w * c))
    mats = (box_matrix(h, sh), box_matrix(w, sw).T, box_matrix(sh, h), box_matrix(sw, w).T)
    return tuple(m.to(device, dtype).contiguous() for m in mats)  # type: ignore[return-value]


@register_corruption(
    "jpeg_compression", category="digital",
    # JPEG quality
    params={
        "cifar": (80, 65, 58, 50, 40),
        "imagenet": (25, 18, 15, 10, 7),
    },
)
def _jpeg_compression(x: Tensor, c: int, rng: SampleRNG) -> Tensor:
    """8-bit JPEG encode and decode at quality c (libjpeg, 4:2:0)."""
    from torchvision.io import decode_jpeg, encode_jpeg

    u8 = (x.detach().cpu() * 255).round().clamp(0, 255).to(torch.uint8)
    if len(u8) == 0:
        return x
    encoded = encode_jpeg(list(u8), quality=int(c))
    decoded = decode_jpeg(encoded)
    return torch.stack(list(decoded)).to(x.device, x.dtype) / 255
