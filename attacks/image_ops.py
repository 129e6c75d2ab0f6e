"""Batched image operations behind the corruptions, in torch on any device.

Border handling (OpenCV's reflect101, scipy's symmetric, nearest), correlation
with small kernels, the reference implementations' Gaussian and disk kernels,
bilinear resampling, ImageMagick-style motion blur, centre zoom, PIL's BOX
resampling, the diamond-square plasma fractal, 3x3 maxima, OpenCV's histogram
equalisation and luma. Each follows the library the published corruption code
calls, so the corruptions match their references.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from attacks.rng import SampleRNG

Tensor = torch.Tensor


def _border_index(i: Tensor, n: int, mode: str) -> Tensor:
    """Map integer positions (any range) into ``0..n-1`` under a border mode.

    ``reflect101`` is OpenCV's default (numpy 'reflect', scipy 'mirror'),
    ``symmetric`` is scipy's 'reflect' (edge repeated), ``nearest`` clamps.
    """
    if mode == "nearest" or n == 1:
        return i.clamp(0, n - 1)
    if mode not in ("reflect101", "symmetric"):
        raise ValueError(
            f"Expected a border mode reflect101, symmetric or nearest, but got {mode!r}."
        )
    # within one reflection of the image (the usual case) mirror directly;
    # further out reduce by the period first (integer remainder is slow on CPU)
    low, high = torch.aminmax(i) if i.numel() else (i.new_zeros(()), i.new_zeros(()))
    if mode == "reflect101":
        period = 2 * (n - 1)
        far = int(low) < -(n - 1) or int(high) > period
        i = torch.remainder(i, period) if far else i.abs()
        return torch.where(i >= n, period - i, i)
    period = 2 * n
    if int(low) < -n or int(high) >= period:
        i = torch.remainder(i, period)
    else:
        i = torch.where(i < 0, -1 - i, i)
    return torch.where(i >= n, period - 1 - i, i)


def pad(x: Tensor, ph: int, pw: int, mode: str) -> Tensor:
    """Pad the last two dims by ``ph`` rows and ``pw`` columns on each side."""
    h, w = x.shape[-2:]
    if mode == "nearest" or (mode == "reflect101" and ph < h and pw < w):
        native = "replicate" if mode == "nearest" else "reflect"
        shape = x.shape
        y = F.pad(x.reshape(-1, 1, h, w), (pw, pw, ph, ph), mode=native)
        return y.reshape(*shape[:-2], h + 2 * ph, w + 2 * pw)
    if ph:
        rows = _border_index(torch.arange(-ph, h + ph, device=x.device), h, mode)
        x = x.index_select(-2, rows)
    if pw:
        cols = _border_index(torch.arange(-pw, w + pw, device=x.device), w, mode)
        x = x.index_select(-1, cols)
    return x


#: Kernels with at most this many taps correlate by shifted views.
_SHIFT_MAX_TAPS = 25


def _depthwise(x: Tensor, kernel: Tensor) -> Tensor:
    """Correlate every (sample, channel) plane of a padded batch with one
    kernel: a grouped convolution, much faster on CPU than a batch of
    single-channel images."""
    n, c, h, w = x.shape
    kh, kw = kernel.shape
    if kh * kw <= _SHIFT_MAX_TAPS:
        # few taps: shifted views, multiply-added (several times faster than
        # a grouped convolution with one group per plane on CPU)
        oh, ow = h - kh + 1, w - kw + 1
        taps = [(a, b, weight) for a, row in enumerate(kernel.to(x.dtype).tolist())
                for b, weight in enumerate(row) if weight]
        if not taps:
            return torch.zeros(n, c, oh, ow, dtype=x.dtype, device=x.device)
        a, b, weight = taps[0]
        out = x[:, :, a : a + oh, b : b + ow] * weight  # as 0 + weight * tap
        for a, b, weight in taps[1:]:
            out.add_(x[:, :, a : a + oh, b : b + ow], alpha=weight)
        return out
    weight = kernel.to(x).view(1, 1, kh, kw).expand(n * c, 1, kh, kw)
    return F.conv2d(x.reshape(1, n * c, h, w), weight, groups=n * c).view(
        n, c, h - kh + 1, w - kw + 1)


def correlate(x: Tensor, kernel: Tensor, mode: str) -> Tensor:
    """2-D correlation of every channel with one (kh, kw) kernel (odd sizes)."""
    kh, kw = kernel.shape
    return _depthwise(pad(x, kh // 2, kw // 2, mode), kernel)


def _separable(x: Tensor, k1d: Tensor, mode: str) -> Tensor:
    r = len(k1d) // 2
    y = _depthwise(pad(x, 0, r, mode), k1d.view(1, -1))
    return _depthwise(pad(y, r, 0, mode), k1d.view(-1, 1))


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> Tensor:
    """scipy.ndimage's sampled Gaussian: radius ``int(truncate*sigma + 0.5)``."""
    radius = int(truncate * float(sigma) + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / float(sigma)) ** 2)
    return k / k.sum()


def gaussian_filter(x: Tensor, sigma: float, *, truncate: float = 4.0,
                    mode: str = "nearest") -> Tensor:
    """Per-channel Gaussian blur, as ``scipy.ndimage.gaussian_filter`` (the
    reference's ``skimage.filters.gaussian``) with the same border mode."""
    if sigma <= 0:
        return x
    return _separable(x, gaussian_kernel1d(sigma, truncate), mode)


@functools.lru_cache(maxsize=64)
def gaussian_operator(size: int, sigma: float, truncate: float, mode: str,
                      dtype: torch.dtype, device: torch.device) -> Tensor:
    """``gaussian_filter`` along one axis of length ``size`` as a (size x size)
    matrix, border folded in: ``G @ x @ G'.T`` blurs a batch of images in
    two small matrix products (read only; equal to the separable filter up
    to float rounding)."""
    eye = torch.eye(size, dtype=torch.float64).view(1, size, 1, size)
    k = gaussian_kernel1d(sigma, truncate)
    rows = _depthwise(pad(eye, 0, len(k) // 2, mode), k.view(1, -1))[0, :, 0]  # [in, out]
    return rows.T.contiguous().to(device, dtype)


def disk_kernel(radius: float, alias_blur: float) -> Tensor:
    """The reference's anti-aliased disk: a normalised binary disk on a grid
    of at least 17x17, blurred by a 3x3 (5x5 for radius > 8) Gaussian with
    OpenCV's border; all-zero rows and columns are cropped (they add nothing)."""
    grid: np.ndarray
    if radius <= 8:
        grid = np.arange(-8, 8 + 1)
        ksize = 3
    else:
        grid = np.arange(-radius, radius + 1)
        ksize = 5
    xx, yy = np.meshgrid(grid, grid)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float64)
    disk /= disk.sum()
    t = np.arange(ksize) - (ksize - 1) / 2
    g = np.exp(-(t**2) / (2 * alias_blur**2))
    g /= g.sum()
    r = ksize // 2
    padded = np.pad(disk, r, mode="reflect")
    blurred = np.apply_along_axis(lambda v: np.correlate(v, g, mode="valid"), 0, padded)
    blurred = np.apply_along_axis(lambda v: np.correlate(v, g, mode="valid"), 1, blurred)
    rows = np.flatnonzero(np.abs(blurred).sum(1) > 0)
    half = int(max(abs(rows[0] - len(grid) // 2), abs(rows[-1] - len(grid) // 2)))
    mid = len(grid) // 2
    return torch.from_numpy(blurred[mid - half : mid + half + 1, mid - half : mid + half + 1].copy())


def _gather_pixels(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """``x[n, :, rows[n], cols[n]]`` for integer maps of shape (N, H', W')."""
    n, c, h, w = x.shape
    idx = (rows * w + cols).reshape(n, 1, -1).expand(n, c, -1)
    return x.reshape(n, c, h * w).gather(2, idx).reshape(n, c, *rows.shape[1:])


#: Border modes ``mirror_sample`` takes.
MIRROR_MODES: tuple[str, ...] = ("reflect101", "symmetric")


def mirror_grid_scale(size: int, mode: str) -> tuple[float, float]:
    """(scale, offset) taking a pixel position along an axis of ``size`` to
    ``mirror_sample``'s grid coordinate: ``g = position * scale + offset``."""
    if mode == "reflect101":
        return (2 / (size - 1), -1.0) if size > 1 else (0.0, 0.0)  # one pixel: always it
    return 2 / size, 1 / size - 1


def mirror_sample(x: Tensor, grid: Tensor, mode: str) -> Tensor:
    """Bilinear samples of ``x`` at ``grid`` (N, H', W', [x, y]) in
    ``grid_sample``'s coordinates for the mode (``mirror_grid_scale``), with
    ``mode`` (reflect101 or symmetric) at the borders: ``grid_sample`` with
    reflection padding, corners aligned for reflect101."""
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection",
                         align_corners=mode == "reflect101")


def bilinear_sample(x: Tensor, rows: Tensor, cols: Tensor, mode: str) -> Tensor:
    """Sample ``x`` at real positions (N, H', W') bilinearly; neighbours
    outside the image follow the border ``mode``.

    The two mirror modes run as ``grid_sample`` with reflection padding:
    mirroring the position about the edge pixel's centre (``reflect101``,
    corners aligned) or about the image's edge (``symmetric``, then clamped
    to the edge pixels) gives the same neighbours and weights as mirroring
    the neighbours' indices, in one fused operation.
    """
    h, w = x.shape[-2:]
    if mode in MIRROR_MODES and h > 1 and w > 1:
        rr, cc = rows.double(), cols.double()
        if mode == "reflect101":
            gy, gx = rr * (2 / (h - 1)) - 1, cc * (2 / (w - 1)) - 1
        else:
            gy, gx = (2 * rr + 1) / h - 1, (2 * cc + 1) / w - 1
        return mirror_sample(x, torch.stack([gx, gy], -1).to(x.dtype), mode)
    r0 = torch.floor(rows)
    c0 = torch.floor(cols)
    fr = (rows - r0).unsqueeze(1)
    fc = (cols - c0).unsqueeze(1)
    r0, c0 = r0.long(), c0.long()
    ra, rb = _border_index(r0, h, mode), _border_index(r0 + 1, h, mode)
    ca, cb = _border_index(c0, w, mode), _border_index(c0 + 1, w, mode)
    top = _gather_pixels(x, ra, ca) * (1 - fc) + _gather_pixels(x, ra, cb) * fc
    bottom = _gather_pixels(x, rb, ca) * (1 - fc) + _gather_pixels(x, rb, cb) * fc
    return top * (1 - fr) + bottom * fr


def motion_blur_batch(x: Tensor, radius: float, sigma: float, angles: Tensor) -> Tensor:
    """ImageMagick's MotionBlurImage kernel, one angle (degrees) per sample.

    A one-sided Gaussian of width ``2*ceil(radius)+1``; tap ``i`` reads the
    pixel ``i`` steps along the angle, offsets rounded as ImageMagick does,
    edge pixels repeated.
    """
    n, c, h, w = x.shape
    width = int(2 * math.ceil(radius) + 1)
    i = torch.arange(width, dtype=torch.float64, device=x.device)
    k = torch.exp(-(i**2) / (2 * sigma**2))
    k = (k / k.sum()).to(x.dtype)
    rad = torch.deg2rad(angles.to(torch.float64)).view(n, 1)
    dx = torch.ceil(i.view(1, -1) * torch.cos(rad) - 0.5).long()
    dy = torch.ceil(i.view(1, -1) * torch.sin(rad) - 0.5).long()
    # every tap shifts a sample by whole pixels, clamped at the edges: on the
    # image padded by replication, one flat offset per (sample, tap)
    p = width - 1
    hp, wp = h + 2 * p, w + 2 * p
    flat = F.pad(x, (p, p, p, p), mode="replicate").reshape(n, c, hp * wp)
    base = ((torch.arange(h, device=x.device) + p).view(h, 1) * wp
            + torch.arange(w, device=x.device).view(1, w) + p).view(1, h * w)
    shift = dy * wp + dx  # (n, width)
    weights = k.tolist()
    out = (x * weights[0]).reshape(n, c, h * w)  # tap 0 reads the pixel itself
    for t in range(1, width):
        idx = (base + shift[:, t : t + 1]).view(n, 1, h * w).expand(n, c, h * w)
        out.add_(flat.gather(2, idx), alpha=weights[t])
    return out.view(n, c, h, w)


def clipped_zoom(x: Tensor, zoom: float) -> Tensor:
    """Zoom into the centre by ``zoom`` (bilinear, corners aligned, like
    ``scipy.ndimage.zoom(order=1)``) and crop back to the input size."""
    h, w = x.shape[-2:]
    ch, cw = int(math.ceil(h / zoom)), int(math.ceil(w / zoom))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top : top + ch, left : left + cw]
    oh, ow = int(round(ch * zoom)), int(round(cw * zoom))
    z = F.interpolate(crop, size=(oh, ow), mode="bilinear", align_corners=True)
    th, tw = (oh - h) // 2, (ow - w) // 2
    return z[..., th : th + h, tw : tw + w]


def plasma_fractal(rng: SampleRNG, mapsize: int, decay: float) -> Tensor:
    """Diamond-square height maps in [0, 1], one per sample, (N, S, S) float64."""
    if mapsize & (mapsize - 1):
        raise ValueError(f"Expected `mapsize` to be a power of two, but got {mapsize}.")
    if rng.device.type == "cpu":
        return _plasma_fractal_numpy(rng, mapsize, decay)
    return _plasma_fractal_torch(rng, mapsize, decay)


def _plasma_fractal_torch(rng: SampleRNG, mapsize: int, decay: float) -> Tensor:
    n, s = len(rng), mapsize
    m = torch.zeros(n, s, s, dtype=torch.float64, device=rng.device)
    step, wibble = s, 100.0

    def wibbled(a: Tensor) -> Tensor:
        noise = rng.uniform(-wibble, wibble, *a.shape[1:], dtype=torch.float64)
        return a / 4 + wibble * noise

    while step >= 2:
        half = step // 2
        corner = m[:, 0:s:step, 0:s:step]
        square = corner + _roll(corner, -1, 1)
        square = square + _roll(square, -1, 2)
        m[:, half:s:step, half:s:step] = wibbled(square)
        dr = m[:, half:s:step, half:s:step]
        ul = m[:, 0:s:step, 0:s:step]
        lt = dr + _roll(dr, 1, 1) + ul + _roll(ul, -1, 2)
        tt = dr + _roll(dr, 1, 2) + ul + _roll(ul, -1, 1)
        m[:, 0:s:step, half:s:step] = wibbled(lt)
        m[:, half:s:step, 0:s:step] = wibbled(tt)
        step //= 2
        wibble /= decay
    flat = m.reshape(n, -1)
    m = m - flat.min(1).values.view(n, 1, 1)
    return m / m.reshape(n, -1).max(1).values.clamp_min(1e-12).view(n, 1, 1)


def _plasma_fractal_numpy(rng: SampleRNG, mapsize: int, decay: float) -> Tensor:
    """``plasma_fractal`` in numpy (its many small steps cost less per call
    there): the same draws and the same float64 operations in the same
    order, so the same maps."""
    n, s = len(rng), mapsize
    m = np.zeros((n, s, s))
    step, wibble = s, 100.0

    def wibbled(a: np.ndarray) -> np.ndarray:
        noise = rng.uniform(-wibble, wibble, *a.shape[1:], dtype=torch.float64).numpy()
        return a / 4 + wibble * noise

    while step >= 2:
        half = step // 2
        corner = m[:, 0:s:step, 0:s:step]
        square = corner + np.roll(corner, -1, 1)
        square = square + np.roll(square, -1, 2)
        m[:, half:s:step, half:s:step] = wibbled(square)
        dr = m[:, half:s:step, half:s:step]
        ul = m[:, 0:s:step, 0:s:step]
        lt = dr + np.roll(dr, 1, 1) + ul + np.roll(ul, -1, 2)
        tt = dr + np.roll(dr, 1, 2) + ul + np.roll(ul, -1, 1)
        m[:, 0:s:step, half:s:step] = wibbled(lt)
        m[:, half:s:step, 0:s:step] = wibbled(tt)
        step //= 2
        wibble /= decay
    m = m - m.reshape(n, -1).min(1).reshape(n, 1, 1)
    return torch.from_numpy(m / np.maximum(m.reshape(n, -1).max(1), 1e-12).reshape(n, 1, 1))


def _roll(a: Tensor, shift: int, dim: int) -> Tensor:
    """``torch.roll`` by one place (either way) along ``dim``, as a
    concatenation of two slices (faster on small tensors); a new tensor."""
    if shift == -1:
        return torch.cat([a.narrow(dim, 1, a.shape[dim] - 1), a.narrow(dim, 0, 1)], dim)
    if shift == 1:
        return torch.cat([a.narrow(dim, a.shape[dim] - 1, 1), a.narrow(dim, 0, a.shape[dim] - 1)],
                         dim)
    return torch.roll(a, shift, dims=dim)


def next_pow2(v: int) -> int:
    return 1 << max(0, (v - 1).bit_length())


def box_matrix(size_in: int, size_out: int) -> Tensor:
    """PIL's BOX resampling weights (out x in), as in its ``precompute_coeffs``."""
    scale = size_in / size_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    a = np.zeros((size_out, size_in))
    for xx in range(size_out):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), size_in)
        for x in range(xmin, xmax):
            v = (x - center + 0.5) / filterscale
            a[xx, x] = 1.0 if -0.5 <= v < 0.5 else 0.0
        total = a[xx].sum()
        if total:
            a[xx] /= total
    return torch.from_numpy(a)


def per_image_max(x: Tensor) -> Tensor:
    return x.reshape(len(x), -1).max(1).values.view(-1, 1, 1, 1)


def max3x3(p: Tensor) -> Tensor:
    """The 3x3 maximum of a padded batch (``max_pool2d(p, 3, stride=1)``),
    as row then column maxima of shifted views: several times faster on CPU."""
    r = torch.maximum(torch.maximum(p[..., :-2], p[..., 1:-1]), p[..., 2:])
    return torch.maximum(torch.maximum(r[..., :-2, :], r[..., 1:-1, :]), r[..., 2:, :])


def equalize_hist(img: Tensor) -> Tensor:
    """OpenCV's equalizeHist on 8-bit values, one image per row of a batch."""
    n = len(img)
    v = img.reshape(n, -1).long().clamp(0, 255)
    hist = torch.zeros(n, 256, dtype=torch.float64, device=img.device)
    hist.scatter_add_(1, v, torch.ones_like(v, dtype=torch.float64))
    first = (hist > 0).float().argmax(1, keepdim=True)
    total = float(v.shape[1])
    at_first = hist.gather(1, first)
    cum = hist.cumsum(1) - hist.cumsum(1).gather(1, first)
    scale = 255.0 / (total - at_first).clamp_min(1.0)
    lut = torch.round(cum * scale).clamp(0, 255)
    lut = torch.where(at_first >= total, first.to(lut.dtype).expand_as(lut), lut)
    return lut.gather(1, v).reshape(img.shape).to(img.dtype)

#: ITU-R 601 luma weights of R, G and B.
LUMA: tuple[float, float, float] = (0.299, 0.587, 0.114)


def to_luma(x: Tensor) -> Tensor:
    """ITU-R 601 luma (N, 1, H, W) of an RGB batch."""
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)
