"""Corruptions with their random draws fed in, against the published
formulas written out here per image in numpy (independently of rtb's
batched torch code): the draws come from a second ``SampleRNG`` with the
same seeds, taken in the order the corruption takes them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attacks import corruptions as C
from attacks.corruptions import SampleRNG, get_corruption, param_table

CIFAR, IMAGENET = param_table("cifar"), param_table("imagenet")
SEEDS = [11, 12, 13]


def images(n: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, 8, 8, generator=g)
    return F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False) * 0.8 + 0.1


def hwc(x: torch.Tensor) -> list[np.ndarray]:
    return [img.permute(1, 2, 0).double().numpy() for img in x]


def nchw(imgs: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float()


def run(name: str, x: torch.Tensor, severity: int, param_set: str = "cifar") -> torch.Tensor:
    return get_corruption(name)(x, severity, SampleRNG(SEEDS[: len(x)]), param_set=param_set)


def skimage_gaussian(img: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(img, sigma=(sigma, sigma, 0), mode="nearest", truncate=4.0)


# ------------------------------------------------------------ glass blur


def reference_glass_blur(img: np.ndarray, c: tuple[float, int, int],
                         draws: list[np.ndarray]) -> np.ndarray:
    """The published loop, per image, on an RGB uint8 array: the tuple
    assignment of two numpy views (it copies, it does not swap)."""
    sigma, delta, iterations = c
    x = np.uint8(skimage_gaussian(img, sigma) * 255)
    h, w = x.shape[:2]
    for it in range(iterations):
        j = 0
        for r in range(h - delta, delta, -1):
            for q in range(w - delta, delta, -1):
                dx, dy = draws[it][j]
                j += 1
                rp, qp = r + dy, q + dx
                x[r, q], x[rp, qp] = x[rp, qp], x[r, q]
    return np.clip(skimage_gaussian(x / 255.0, sigma), 0, 1)


@pytest.mark.parametrize("param_set,size,severity", [
    ("cifar", 32, 1), ("cifar", 32, 5),   # delta 1: every pixel reads an unvisited one
    ("imagenet", 24, 2), ("imagenet", 24, 4),  # delta 2, 3: chains of copies
])
def test_glass_blur_copies_like_the_published_loop(param_set: str, size: int,
                                                   severity: int) -> None:
    x = images(2, size)
    c = (CIFAR if param_set == "cifar" else IMAGENET)["glass_blur"][severity - 1]
    sigma, delta, iterations = c
    positions = len(range(size - delta, delta, -1)) ** 2
    rng = SampleRNG(SEEDS[:2])
    draws = [rng.randint(-delta, delta, positions, 2).numpy() for _ in range(iterations)]
    ref = [reference_glass_blur(img, c, [d[i] for d in draws]) for i, img in enumerate(hwc(x))]
    torch.testing.assert_close(run("glass_blur", x, severity, param_set), nchw(ref),
                               rtol=0, atol=1e-5)


def test_glass_blur_is_not_a_true_swap() -> None:
    """A true swap keeps every pixel value of the 8-bit image (a
    permutation); the published copy duplicates some and drops others."""
    x = images(1)
    rng = SampleRNG(SEEDS[:1])
    disp = rng.randint(-1, 1, 30 * 30, 2).numpy()[0]
    quant = np.uint8(skimage_gaussian(hwc(x)[0], 0.05) * 255)
    swapped = quant.copy().reshape(-1, 3)
    j = 0
    for r in range(31, 1, -1):
        for q in range(31, 1, -1):
            dx, dy = disp[j]
            j += 1
            a, b = r * 32 + q, (r + dy) * 32 + q + dx
            swapped[[a, b]] = swapped[[b, a]]
    true_swap = np.clip(skimage_gaussian(swapped.reshape(32, 32, 3) / 255.0, 0.05), 0, 1)
    ours = run("glass_blur", x, 1)
    assert float((ours - nchw([true_swap])).abs().max()) > 10 / 255


# ---------------------------------------------------------------- noise


@pytest.mark.parametrize("severity", [1, 5])
def test_gaussian_and_speckle_noise_with_the_draws_fed_in(severity: int) -> None:
    x = images()
    for name, formula in (("gaussian_noise", lambda img, c, z: img + c * z),
                          ("speckle_noise", lambda img, c, z: img + img * c * z)):
        c = CIFAR[name][severity - 1]
        z = SampleRNG(SEEDS).randn(3, 32, 32).permute(0, 2, 3, 1).double().numpy()
        ref = [np.clip(formula(img, c, z[i]), 0, 1) for i, img in enumerate(hwc(x))]
        torch.testing.assert_close(run(name, x, severity), nchw(ref), rtol=0, atol=1e-5)


@pytest.mark.parametrize("severity", [1, 5])
def test_shot_and_impulse_noise_with_the_draws_fed_in(severity: int) -> None:
    x = images()
    c = CIFAR["shot_noise"][severity - 1]
    counts = SampleRNG(SEEDS).poisson(x * c).permute(0, 2, 3, 1).double().numpy()
    ref = [np.clip(counts[i] / c, 0, 1) for i in range(len(x))]
    torch.testing.assert_close(run("shot_noise", x, severity), nchw(ref), rtol=0, atol=1e-6)
    c = CIFAR["impulse_noise"][severity - 1]
    u = SampleRNG(SEEDS).rand(3, 32, 32).permute(0, 2, 3, 1).double().numpy()
    ref = [np.where(u[i] < c / 2, 1.0, np.where(u[i] < c, 0.0, img))
           for i, img in enumerate(hwc(x))]
    torch.testing.assert_close(run("impulse_noise", x, severity), nchw(ref), rtol=0, atol=1e-6)


# ----------------------------------------------------------------- blur


def motion(img: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick's motion-blur kernel: one-sided Gaussian along the angle."""
    width = int(2 * math.ceil(radius) + 1)
    k = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2))
    k /= k.sum()
    h, w = img.shape[:2]
    out = np.zeros_like(img)
    for t in range(width):
        dx = int(math.ceil(t * math.cos(math.radians(angle)) - 0.5))
        dy = int(math.ceil(t * math.sin(math.radians(angle)) - 0.5))
        out += k[t] * img[np.clip(np.arange(h) + dy, 0, h - 1)][:, np.clip(np.arange(w) + dx,
                                                                             0, w - 1)]
    return out


@pytest.mark.parametrize("severity", [1, 5])
def test_motion_blur_with_the_angle_fed_in(severity: int) -> None:
    x = images()
    radius, sigma = CIFAR["motion_blur"][severity - 1]
    angles = SampleRNG(SEEDS).uniform(-45.0, 45.0, dtype=torch.float64).numpy()
    ref = [np.clip(motion(img, radius, sigma, float(angles[i])), 0, 1)
           for i, img in enumerate(hwc(x))]
    torch.testing.assert_close(run("motion_blur", x, severity), nchw(ref), rtol=0, atol=1e-5)


@pytest.mark.parametrize("severity", [1, 5])
def test_zoom_blur_matches_scipy_zoom(severity: int) -> None:
    from scipy.ndimage import zoom

    x = images()
    out = []
    for img in hwc(x):
        acc = img.copy()
        for z in CIFAR["zoom_blur"][severity - 1]:
            ch = int(np.ceil(32 / z))
            top = (32 - ch) // 2
            zoomed = zoom(img[top : top + ch, top : top + ch], (z, z, 1), order=1)
            trim = (zoomed.shape[0] - 32) // 2
            acc += zoomed[trim : trim + 32, trim : trim + 32]
        out.append(np.clip(acc / (len(CIFAR["zoom_blur"][severity - 1]) + 1), 0, 1))
    torch.testing.assert_close(run("zoom_blur", x, severity), nchw(out), rtol=0, atol=1e-5)


# -------------------------------------------------------------- weather


def plasma(mapsize: int, decay: float, uniform) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The published diamond-square fractal, its uniforms from ``uniform(shape)``."""
    m = np.zeros((mapsize, mapsize))
    step, wibble = mapsize, 100.0
    while step >= 2:
        half = step // 2
        corner = m[0:mapsize:step, 0:mapsize:step]
        sq = corner + np.roll(corner, -1, axis=0)
        sq = sq + np.roll(sq, -1, axis=1)
        m[half:mapsize:step, half:mapsize:step] = sq / 4 + wibble * uniform(sq.shape) * wibble
        dr = m[half:mapsize:step, half:mapsize:step]
        ul = m[0:mapsize:step, 0:mapsize:step]
        lt = dr + np.roll(dr, 1, axis=0) + ul + np.roll(ul, -1, axis=1)
        m[0:mapsize:step, half:mapsize:step] = lt / 4 + wibble * uniform(lt.shape) * wibble
        tt = dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=0)
        m[half:mapsize:step, 0:mapsize:step] = tt / 4 + wibble * uniform(tt.shape) * wibble
        step //= 2
        wibble /= decay
    m -= m.min()
    return m / m.max()


@pytest.mark.parametrize("severity", [1, 5])
def test_fog_with_the_fractal_draws_fed_in(severity: int) -> None:
    x = images()
    strength, decay = CIFAR["fog"][severity - 1]
    rng = SampleRNG(SEEDS)
    draws: list[np.ndarray] = []

    def uniform(shape: tuple[int, ...]) -> np.ndarray:  # all samples' U(-1, 1), kept per draw
        draws.append(rng.uniform(-1.0, 1.0, *shape, dtype=torch.float64).numpy())
        return draws[-1][0]

    plasma(32, decay, uniform)  # takes every sample's draws; replay them per sample
    ref = []
    for i, img in enumerate(hwc(x)):
        it = iter(draws)
        frac = plasma(32, decay, lambda shape, it=it, i=i: next(it)[i])
        top = img.max()
        ref.append(np.clip((img + strength * frac[..., None]) * top / (top + strength), 0, 1))
    torch.testing.assert_close(run("fog", x, severity), nchw(ref), rtol=0, atol=1e-5)


def reference_water(x: np.ndarray, c: tuple[float, ...], normal: np.ndarray) -> np.ndarray:
    """The published water spatter (severities 1-3) with OpenCV, the liquid
    layer's normals fed in."""
    import cv2

    loc, scale, sigma, threshold, intensity, _ = c
    liquid = skimage_gaussian((loc + scale * normal)[..., None], sigma)[..., 0]
    liquid[liquid < threshold] = 0
    liquid = (liquid * 255).astype(np.uint8)
    dist = cv2.distanceTransform(255 - cv2.Canny(liquid, 50, 150), cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
    dist = cv2.filter2D(dist, cv2.CV_8U, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]))
    dist = cv2.blur(dist, (3, 3)).astype(np.float32)
    m = liquid * dist
    m = m / m.max() * intensity
    return np.clip(x + m[..., None] * np.array([175, 238, 238]) / 255, 0, 1)


@pytest.mark.parametrize("severity", [1, 2, 3])
def test_water_spatter_within_two_levels_of_opencv(severity: int) -> None:
    pytest.importorskip("cv2")
    assert C.spatter_backend() == "opencv"
    x = images(3)
    c = CIFAR["spatter"][severity - 1]
    normal = SampleRNG(SEEDS).randn(1, 32, 32).double().numpy()[:, 0]
    ref = [reference_water(img, c, normal[i]) for i, img in enumerate(hwc(x))]
    diff = (run("spatter", x, severity) - nchw(ref)).abs()
    assert float(diff.max()) <= 2 / 255


def test_spatter_without_opencv_falls_back_and_says_so() -> None:
    x = images(2)
    try:
        C.set_spatter_backend("approximation")
        assert C.spatter_backend() == "approximation"
        assert C.corruption_notes("spatter", 2) == {"backend": "approximation"}
        out = run("spatter", x, 2)
        assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
        assert float((out - x).abs().max()) > 0
    finally:
        C.set_spatter_backend("auto")
    assert C.corruption_notes("spatter", 4) == {}
    with pytest.raises(ValueError, match="spatter backend"):
        C.set_spatter_backend("magic")


@pytest.mark.parametrize("scale", ["cifar", "imagenet"])
def test_frost_texture_has_the_measured_statistics(scale: str) -> None:
    """Mean colour and overall spread of the texture against the figures it
    was built from (the photographs' own, measured by the frost script)."""
    side = 32 if scale == "cifar" else 224
    n = 400 if scale == "cifar" else 40
    which = torch.arange(n) % 5
    tex = C.frost_texture(SampleRNG(range(n)), side, side, scale=scale, which=which)
    for k, row in enumerate(C.FROST_FIGURES[scale]):
        t = tex[which == k].double()
        mean = t.mean((0, 2, 3)).numpy()
        # the crop means scatter by the spread figure: 4 standard errors
        tol = 4 * np.asarray(row[2]) / np.sqrt(len(t)) + 0.01
        assert np.all(np.abs(mean - np.asarray(row[0])) <= tol), (k, mean, row[0])
        within = t.var((2, 3)).mean(0).numpy()
        cov = np.diag(C._covariance(row[1]).numpy())
        np.testing.assert_allclose(np.sqrt(within), np.sqrt(cov), rtol=0.25)


@pytest.mark.parametrize("severity", [1, 5])
def test_frost_blends_with_the_texture_fed_in(severity: int) -> None:
    x = images()
    a, b = CIFAR["frost"][severity - 1]
    tex = C.frost_texture(SampleRNG(SEEDS), 32, 32)
    torch.testing.assert_close(run("frost", x, severity), (a * x + b * tex).clamp(0, 1),
                               rtol=0, atol=1e-6)
