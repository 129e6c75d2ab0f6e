"""Corruptions: the registry contract over every entry, the deterministic
ones against independent per-image references of the published formulas,
and the noise ones in distribution."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attacks.corruptions import (
    COMMON_CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    SampleRNG,
    corrupt,
    corruption_info,
    get_corruption,
    list_corruptions,
    param_table,
    register_corruption,
    resolve_param_set,
    sample_keys,
)

CIFAR, IMAGENET = param_table("cifar"), param_table("imagenet")

ALL = list_corruptions()
RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur",
          "motion_blur", "snow", "frost", "fog", "elastic_transform", "spatter"}
#: Published severity tables that are not monotone in the distance to the clean
#: image: frost trades image for texture, CIFAR elastic shrinks its affine part,
#: saturate desaturates at 1-2 and oversaturates at 3-5, spatter switches from
#: water (1-3) to mud (4-5), glass blur's shuffling is smoothed away by the
#: larger blur of severity 3.
NON_MONOTONE = {"frost", "elastic_transform", "saturate", "spatter", "glass_blur"}


def smooth_images(n: int = 6, channels: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Structured test images: bilinear upsampled random 8x8 patterns in [0.1, 0.9]."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, channels, 8, 8, generator=g)
    return F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False) * 0.8 + 0.1


# ------------------------------------------------------------- registry


def test_registry_holds_the_15_common_and_4_extra_corruptions() -> None:
    assert set(ALL) == set(COMMON_CORRUPTIONS) | set(EXTRA_CORRUPTIONS)
    assert len(COMMON_CORRUPTIONS) == 15 and len(EXTRA_CORRUPTIONS) == 4
    assert ALL[:15] == list(COMMON_CORRUPTIONS)
    assert set(CIFAR) == set(IMAGENET) == set(ALL)
    assert all(len(v) == 5 for table in (CIFAR, IMAGENET) for v in table.values())
    by_cat = {c: list_corruptions(c) for c in ("noise", "blur", "weather", "digital")}
    assert sum(len(v) for v in by_cat.values()) == 19
    assert "speckle_noise" in by_cat["noise"] and "saturate" in by_cat["digital"]


def test_duplicate_and_unknown_names_raise() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_corruption("contrast", category="digital")
    with pytest.raises(ValueError, match="Expected `category` in noise"):
        register_corruption("new_one", category="nope")
    with pytest.raises(ValueError, match="Unknown corruption 'nope'; expected one of: gaussian_noise"):
        get_corruption("nope")
    with pytest.raises(ValueError, match="Unknown corruption"):
        corrupt(torch.rand(1, 3, 8, 8), "nope", 1)


def test_a_corruption_without_its_parameters_fails_at_registration() -> None:
    with pytest.raises(ValueError, match="Expected `params` of corruption 'new_one' to map"):
        register_corruption("new_one", category="noise")
    with pytest.raises(ValueError, match="Expected `params` of corruption 'new_one' to map"):
        register_corruption("new_one", category="noise", params={"cifar": (1, 2, 3, 4, 5)})
    with pytest.raises(ValueError, match=r"Expected `params\['imagenet'\]` of corruption"):
        register_corruption("new_one", category="noise",
                            params={"cifar": (1, 2, 3, 4, 5), "imagenet": (1, 2)})
    assert "new_one" not in list_corruptions()


@pytest.mark.parametrize("name", ALL)
def test_shape_dtype_range_on_rgb_and_gray(name: str) -> None:
    for x in (smooth_images(3, 3, 32), smooth_images(3, 1, 28).double()):
        out = corrupt(x, name, 5)
        assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
        assert torch.isfinite(out).all()
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


@pytest.mark.parametrize("name", ALL)
def test_deterministic_under_a_seed_and_seed_sensitive(name: str) -> None:
    x = smooth_images(4)
    a = corrupt(x, name, 3, seed=7)
    assert torch.equal(a, corrupt(x, name, 3, seed=7))
    if name in RANDOM:
        assert not torch.equal(a, corrupt(x, name, 3, seed=8))


@pytest.mark.parametrize("name", ALL)
def test_independent_of_batch_size_and_order(name: str) -> None:
    x = smooth_images(7)
    whole = corrupt(x, name, 4, seed=1, batch_size=7)
    torch.testing.assert_close(corrupt(x, name, 4, seed=1, batch_size=2), whole,
                               rtol=0, atol=1e-6)
    perm = torch.tensor([3, 0, 6, 1, 5, 2, 4])
    torch.testing.assert_close(corrupt(x[perm], name, 4, seed=1, batch_size=3), whole[perm],
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_strength_rises_with_severity(name: str) -> None:
    x = smooth_images(8)
    d = [float((corrupt(x, name, s) - x).abs().mean()) for s in (1, 3, 5)]
    if name in NON_MONOTONE:
        assert d[2] > 0.005
    else:
        assert d[0] < d[2] and d[0] <= d[1] + 0.005 and d[1] <= d[2] + 0.005, d


def test_sample_rng_rows_depend_only_on_their_seed() -> None:
    together = SampleRNG([11, 22, 33]).randn(2, 3)
    alone = SampleRNG([22]).randn(2, 3)
    assert torch.equal(together[1], alone[0])
    assert SampleRNG([]).rand(2).shape == (0, 2)
    g = torch.Generator().manual_seed(0)
    out = get_corruption("gaussian_noise")(smooth_images(2), 1, g)
    assert out.shape == (2, 3, 32, 32)


def test_argument_errors() -> None:
    fn = get_corruption("contrast")
    x = smooth_images(2)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="N x C x H x W"):
        fn(x[0], 1, g)
    with pytest.raises(ValueError, match="N x C x H x W"):
        fn((x * 255).to(torch.uint8), 1, g)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        fn(torch.rand(1, 4, 8, 8), 1, g)
    for bad in (0, 6, 2.0, True):
        with pytest.raises(ValueError, match="`severity` to be an integer in 1..5"):
            fn(x, bad, g)
    with pytest.raises(ValueError, match="`param_set`"):
        fn(x, 1, g, param_set="tiny")
    with pytest.raises(ValueError, match="one stream per sample"):
        fn(x, 1, SampleRNG([1]))
    with pytest.raises(ValueError, match="`batch_size`"):
        corrupt(x, "contrast", 1, batch_size=0)
    with pytest.raises(ValueError, match="sample keys"):
        corrupt(x, "contrast", 1, keys=["a"])


def test_param_set_by_image_size_unless_configured() -> None:
    assert resolve_param_set("auto", 32, 32) == "cifar"
    assert resolve_param_set("auto", 28, 28) == "cifar"
    assert resolve_param_set("auto", 224, 224) == "imagenet"
    assert resolve_param_set("imagenet", 32, 32) == "imagenet"
    x = smooth_images(2)
    fn = get_corruption("contrast")
    g = torch.Generator()
    auto, inet = fn(x, 1, g), fn(x, 1, g, param_set="imagenet")
    means = x.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(auto, (x - means) * 0.75 + means)
    torch.testing.assert_close(inet, (x - means) * 0.4 + means)


def test_grayscale_colour_corruption_is_luma_of_the_rgb_result() -> None:
    gray = smooth_images(3, 1, 16)
    out = corrupt(gray, "saturate", 5)
    rgb = corrupt(gray.expand(-1, 3, -1, -1).contiguous(), "saturate", 5,
                  keys=sample_keys(gray))
    luma = (rgb * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    torch.testing.assert_close(out, luma)
    assert corruption_info("saturate").color and not corruption_info("contrast").color


# ----------------------------------------- deterministic vs references
# Each reference is written per image in numpy / scipy / PIL / matplotlib,
# independently of rtb's batched torch code. Tolerance: 1e-5 for the float
# formulas; stated below for the 8-bit PIL/libjpeg ones.


def _hwc(x: torch.Tensor) -> list[np.ndarray]:
    return [img.permute(1, 2, 0).double().numpy() for img in x]


def _to_t(imgs: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float()


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_brightness_matches_hsv_reference(severity: int) -> None:
    from matplotlib.colors import hsv_to_rgb, rgb_to_hsv

    x = smooth_images(4)
    x[0, :, :4, :4] = 0.0  # black pixels (undefined hue)
    c = CIFAR["brightness"][severity - 1]
    ref = []
    for img in _hwc(x):
        hsv = rgb_to_hsv(img)
        hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
        ref.append(np.clip(hsv_to_rgb(hsv), 0, 1))
    torch.testing.assert_close(corrupt(x, "brightness", severity), _to_t(ref), rtol=0, atol=1e-5)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_saturate_matches_hsv_reference(severity: int) -> None:
    from matplotlib.colors import hsv_to_rgb, rgb_to_hsv

    x = smooth_images(4)
    x[1, :, :5, :5] = 0.4  # gray pixels (hue 0)
    a, b = CIFAR["saturate"][severity - 1]
    ref = []
    for img in _hwc(x):
        hsv = rgb_to_hsv(img)
        hsv[..., 1] = np.clip(hsv[..., 1] * a + b, 0, 1)
        ref.append(np.clip(hsv_to_rgb(hsv), 0, 1))
    torch.testing.assert_close(corrupt(x, "saturate", severity), _to_t(ref), rtol=0, atol=1e-5)


@pytest.mark.parametrize("severity", [1, 5])
def test_contrast_matches_reference(severity: int) -> None:
    x = smooth_images(3)
    c = CIFAR["contrast"][severity - 1]
    ref = []
    for img in _hwc(x):
        means = img.mean(axis=(0, 1), keepdims=True)
        ref.append(np.clip((img - means) * c + means, 0, 1))
    torch.testing.assert_close(corrupt(x, "contrast", severity), _to_t(ref), rtol=0, atol=1e-5)


@pytest.mark.parametrize("param_set,size", [("cifar", 32), ("imagenet", 64)])
def test_gaussian_blur_matches_scipy(param_set: str, size: int) -> None:
    from scipy.ndimage import gaussian_filter

    x = smooth_images(2, 3, size)
    fn = get_corruption("gaussian_blur")
    for severity in (1, 5):
        sigma = (CIFAR if param_set == "cifar" else IMAGENET)["gaussian_blur"][severity - 1]
        ref = [np.clip(gaussian_filter(img, sigma=(sigma, sigma, 0), mode="nearest",
                                       truncate=4.0), 0, 1) for img in _hwc(x)]
        out = fn(x, severity, torch.Generator(), param_set=param_set)
        torch.testing.assert_close(out, _to_t(ref), rtol=0, atol=1e-5)


def _reference_disk(radius: float, alias_blur: float) -> np.ndarray:
    """The published anti-aliased disk, with OpenCV's 3x3/5x5 Gaussian written
    out (sigma given, border reflect-101 = scipy 'mirror')."""
    from scipy.ndimage import correlate1d

    grid = np.arange(-8, 9) if radius <= 8 else np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = np.array((xx**2 + yy**2) <= radius**2, dtype=np.float64)
    disk /= disk.sum()
    ksize = 3 if radius <= 8 else 5
    t = np.arange(ksize) - (ksize - 1) / 2
    g = np.exp(-(t**2) / (2 * alias_blur**2))
    g /= g.sum()
    return correlate1d(correlate1d(disk, g, axis=0, mode="mirror"), g, axis=1, mode="mirror")


@pytest.mark.parametrize("param_set,size", [("cifar", 32), ("imagenet", 48)])
def test_defocus_blur_matches_reference(param_set: str, size: int) -> None:
    from scipy.ndimage import correlate

    x = smooth_images(2, 3, size)
    fn = get_corruption("defocus_blur")
    table = CIFAR if param_set == "cifar" else IMAGENET
    for severity in (1, 3, 5):
        kernel = _reference_disk(*table["defocus_blur"][severity - 1])
        ref = [np.clip(np.stack([correlate(img[..., ch], kernel, mode="mirror")
                                 for ch in range(3)], -1), 0, 1) for img in _hwc(x)]
        out = fn(x, severity, torch.Generator(), param_set=param_set)
        torch.testing.assert_close(out, _to_t(ref), rtol=0, atol=1e-5)


def _uint8_images(n: int = 4, size: int = 32) -> torch.Tensor:
    return (smooth_images(n, 3, size) * 255).round() / 255


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_pixelate_matches_pil_box(severity: int) -> None:
    """Tolerance 2/255: PIL resamples in 8 bits and rounds after each of its
    four passes; rtb stays in float."""
    from PIL import Image

    x = _uint8_images()
    c = CIFAR["pixelate"][severity - 1]
    ref = []
    for img in _hwc(x):
        im = Image.fromarray(np.uint8(np.round(img * 255)))
        im = im.resize((int(32 * c), int(32 * c)), Image.BOX).resize((32, 32), Image.BOX)
        ref.append(np.asarray(im, dtype=np.float64) / 255)
    torch.testing.assert_close(corrupt(x, "pixelate", severity), _to_t(ref), rtol=0,
                               atol=2 / 255)


@pytest.mark.parametrize("severity", [1, 5])
def test_jpeg_matches_pil(severity: int) -> None:
    """Both encode with libjpeg at the same quality and 4:2:0 subsampling;
    decoders may differ in chroma upsampling and IDCT by a few levels.
    Tolerance: mean difference under 1/255, none over 12/255."""
    from PIL import Image

    x = _uint8_images()
    q = CIFAR["jpeg_compression"][severity - 1]
    ref = []
    for img in _hwc(x):
        buf = io.BytesIO()
        Image.fromarray(np.uint8(np.round(img * 255))).save(buf, "JPEG", quality=q)
        ref.append(np.asarray(Image.open(buf), dtype=np.float64) / 255)
    diff = (corrupt(x, "jpeg_compression", severity) - _to_t(ref)).abs()
    assert float(diff.mean()) < 1 / 255 and float(diff.max()) <= 12 / 255


# ------------------------------------------------ noise in distribution


def _gray(n: int = 64, value: float = 0.5) -> torch.Tensor:
    return torch.full((n, 3, 16, 16), value)


def _noisy(x: torch.Tensor, name: str, severity: int) -> torch.Tensor:
    """Equal images get equal noise from content keys: key them by position."""
    return corrupt(x, name, severity, keys=range(len(x)))


@pytest.mark.parametrize("severity", [1, 5])
def test_gaussian_and_speckle_noise_mean_and_variance(severity: int) -> None:
    x = _gray()
    m = x.numel()
    c = CIFAR["gaussian_noise"][severity - 1]
    noise = _noisy(x, "gaussian_noise", severity) - x
    assert abs(float(noise.mean())) < 4 * c / m**0.5
    assert float(noise.std()) == pytest.approx(c, rel=0.03)
    c = CIFAR["speckle_noise"][severity - 1]
    noise = _noisy(x, "speckle_noise", severity) - x
    assert abs(float(noise.mean())) < 4 * 0.5 * c / m**0.5
    assert float(noise.std()) == pytest.approx(0.5 * c, rel=0.03)


@pytest.mark.parametrize("severity", [1, 5])
def test_shot_noise_is_poisson(severity: int) -> None:
    x = _gray(value=0.3)
    c = CIFAR["shot_noise"][severity - 1]
    counts = _noisy(x, "shot_noise", severity) * c
    lam = 0.3 * c
    assert float(counts.mean()) == pytest.approx(lam, rel=0.02)
    assert float(counts.var()) == pytest.approx(lam, rel=0.05)
    torch.testing.assert_close(counts, counts.round(), rtol=0, atol=1e-3)


@pytest.mark.parametrize("severity", [1, 5])
def test_impulse_noise_fraction_and_balance(severity: int) -> None:
    x = _gray()
    c = CIFAR["impulse_noise"][severity - 1]
    out = _noisy(x, "impulse_noise", severity)
    salt, pepper = float((out == 1).float().mean()), float((out == 0).float().mean())
    assert salt + pepper == pytest.approx(c, rel=0.1)
    assert salt == pytest.approx(pepper, rel=0.25)
    assert float(((out != 0) & (out != 1) & (out != 0.5)).float().sum()) == 0


def test_noise_differs_between_samples_with_equal_content_keys() -> None:
    x = _gray(4)
    keys = ["a", "b", "c", "d"]
    out = corrupt(x, "gaussian_noise", 3, keys=keys)
    assert not torch.equal(out[0], out[1])
    assert torch.equal(out[0], corrupt(x[:1], "gaussian_noise", 3, keys=["a"])[0])


# ------------------------------------------- the counter-based generator


def _splitmix64_words(seed: int, draw: int, count: int) -> list[int]:
    """Independent scalar splitmix64 in Python integers: the words of draw
    number ``draw`` (1-based) of a sample seeded with ``seed``."""
    mask = (1 << 64) - 1
    gamma = 0x9E3779B97F4A7C15

    def mix(z: int) -> int:
        z &= mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    base = mix(mix(seed) + draw * gamma)
    return [mix(base + (j + 1) * gamma) for j in range(count)]


def test_sample_rng_words_match_scalar_splitmix64() -> None:
    seeds = [0, 12345, 2**62 + 7]
    rng = SampleRNG(seeds)
    first, second = rng.rand(6, dtype=torch.float64), rng.rand(4, dtype=torch.float64)
    for i, seed in enumerate(seeds):
        for draw, got in ((1, first[i]), (2, second[i])):
            want = [(w >> 11) * 2.0**-53 for w in _splitmix64_words(seed, draw, len(got))]
            assert got.tolist() == want


def test_sample_rng_draws_in_distribution() -> None:
    from scipy import stats

    rng = SampleRNG(range(50))
    u = rng.rand(4001).flatten().numpy()
    assert u.min() >= 0.0 and u.max() < 1.0
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    z = rng.randn(3, 33, 21).flatten().numpy()  # an odd count: both Box-Muller halves used
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 0.02
    z64 = rng.randn(999, dtype=torch.float64).flatten().numpy()
    assert stats.kstest(z64, "norm").pvalue > 1e-3
    ints = rng.randint(-2, 3, 5000).flatten()
    assert int(ints.min()) == -2 and int(ints.max()) == 2
    counts = torch.bincount(ints + 2).numpy()
    assert stats.chisquare(counts).pvalue > 1e-3
    with pytest.raises(ValueError, match="`high - low`"):
        rng.randint(3, 3, 2)


@pytest.mark.parametrize("rate", [0.0, 0.4, 3.5, 12.3, 80.0, 499.5, 700.0])
def test_sample_rng_poisson_matches_the_pmf(rate: float) -> None:
    """Chi-squared against the Poisson pmf: the table path (integer part and
    remainder) up to rate 512, PTRS above."""
    from scipy import stats

    counts = SampleRNG(range(40)).poisson(torch.full((40, 2500), rate)).flatten().numpy()
    np.testing.assert_array_equal(counts, np.round(counts))
    if rate == 0:
        assert counts.max() == 0
        return
    ks = np.arange(int(rate + 8 * rate**0.5 + 10))
    expected = stats.poisson.pmf(ks, rate) * len(counts)
    keep = expected > 5
    observed = np.bincount(counts.astype(int), minlength=len(ks))[: len(ks)]
    chi2 = float((((observed - expected) ** 2 / expected)[keep]).sum())
    assert stats.chi2.sf(chi2, int(keep.sum()) - 1) > 1e-3


def test_sample_rng_poisson_rows_depend_only_on_their_seed_and_check_rates() -> None:
    rates = torch.rand(5, 3, 8, 8) * 30
    rates[1, 0, 0, 0] = 900.0  # one element on the PTRS path
    together = SampleRNG([1, 2, 3, 4, 5]).poisson(rates)
    torch.testing.assert_close(SampleRNG([2, 3]).poisson(rates[1:3]), together[1:3],
                               rtol=0, atol=0)
    with pytest.raises(ValueError, match="non-negative"):
        SampleRNG([1]).poisson(torch.tensor([[-1.0]]))
    with pytest.raises(ValueError, match="one per sample"):
        SampleRNG([1]).poisson(torch.ones(2, 3))


def test_zoom_blur_operator_equals_the_sum_of_zooms() -> None:
    from attacks.image_ops import clipped_zoom

    for x in (smooth_images(3, 3, 32), smooth_images(2, 1, 20)[..., :14]):
        for severity in (1, 5):
            zooms = CIFAR["zoom_blur"][severity - 1]
            ref = x.clone()
            for z in zooms:
                ref += clipped_zoom(x, z)
            torch.testing.assert_close(corrupt(x, "zoom_blur", severity),
                                       (ref / (len(zooms) + 1)).clamp(0, 1), rtol=0, atol=1e-6)
