"""The faster code paths behind the corruptions give what the plain
computations they replace give: checked against scipy, OpenCV run layer by
layer, torch's own operations and whole-string hashing, on small random
inputs (none of them copies rtb's code)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from scipy import ndimage

from attacks import corruptions as C
from attacks import image_ops as ops
from attacks import rng as R


@pytest.mark.parametrize(("mode", "scipy_mode"), [("reflect101", "mirror"),
                                                  ("symmetric", "reflect")])
def test_mirror_bilinear_sampling_matches_scipy_far_outside_too(mode: str,
                                                                scipy_mode: str) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 9, 13, generator=g)
    # positions up to two image sizes outside: several reflections
    rows = torch.rand(2, 7, 5, generator=g) * 45 - 18
    cols = torch.rand(2, 7, 5, generator=g) * 65 - 26
    got = ops.bilinear_sample(x, rows, cols, mode)
    want = np.stack([
        np.stack([ndimage.map_coordinates(x[i, ch].double().numpy(),
                                          [rows[i].double().numpy(), cols[i].double().numpy()],
                                          order=1, mode=scipy_mode) for ch in range(3)])
        for i in range(2)])
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", ["symmetric", "nearest", "reflect101"])
@pytest.mark.parametrize(("size", "sigma"), [(5, 0.6), (32, 1.92), (28, 3.0)])
def test_gaussian_operator_equals_the_separable_filter(mode: str, size: int,
                                                       sigma: float) -> None:
    x = torch.rand(3, 2, size, size + 3, generator=torch.Generator().manual_seed(1))
    rows = ops.gaussian_operator(size, sigma, 3.0, mode, torch.float32, torch.device("cpu"))
    cols = ops.gaussian_operator(size + 3, sigma, 3.0, mode, torch.float32, torch.device("cpu"))
    want = ops.gaussian_filter(x, sigma, truncate=3.0, mode=mode)
    torch.testing.assert_close(rows @ x @ cols.T, want, rtol=0, atol=1e-6)


def _shading_layer_by_layer(layers: np.ndarray) -> np.ndarray:
    """The published water-drop shading, one 8-bit layer at a time."""
    import cv2

    out = []
    for layer in layers:
        dist = cv2.distanceTransform(255 - cv2.Canny(layer, 50, 150), cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
        dist = cv2.filter2D(dist, cv2.CV_8U, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]))
        out.append(cv2.blur(dist, (3, 3)).astype(np.float32))
    return np.stack(out)


@pytest.mark.parametrize("n", [1, 3, 130])  # 130: more layers than OpenCV takes as channels
def test_stacked_opencv_shading_equals_layer_by_layer(n: int) -> None:
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(n)
    liquid = ndimage.gaussian_filter(rng.normal(0.65, 0.3, (n, 32, 32)), (0, 1, 1))
    liquid[liquid < 0.69] = 0
    layers = np.floor(np.clip(liquid, 0, 1) * 255)
    threads = cv2.getNumThreads()
    got = C._water_shading_opencv(torch.from_numpy(layers).float().unsqueeze(1), cv2)
    assert cv2.getNumThreads() == threads  # OpenCV's setting restored
    np.testing.assert_array_equal(got[:, 0].numpy(), _shading_layer_by_layer(
        layers.astype(np.uint8)))


def test_mix64_numpy_and_torch_paths_give_the_same_words(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    z = torch.randint(-2**63, 2**63 - 1, (5000,), dtype=torch.int64,
                      generator=torch.Generator().manual_seed(2))
    by_numpy = R._mix64(z.clone())
    monkeypatch.setattr(R, "_NUMPY_MIX_MAX", 0)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        by_torch = R._mix64(z.clone())
    finally:
        torch.set_num_threads(before)
    assert torch.equal(by_numpy, by_torch)


def test_flat_nonzero_equals_torch_nonzero() -> None:
    mask = torch.rand(10_000, generator=torch.Generator().manual_seed(3)) < 0.3
    assert torch.equal(R._flat_nonzero(mask), mask.nonzero().squeeze(1))
    assert R._flat_nonzero(torch.zeros(0, dtype=torch.bool)).shape == (0,)


def test_sample_seeds_hash_the_whole_string() -> None:
    keys = ["a", 7, "0f" * 16]
    want = [int.from_bytes(hashlib.blake2b(f"5/fog/3/{k}".encode(), digest_size=8).digest(),
                           "little") >> 1 for k in keys]
    assert R.sample_seeds(5, "fog", 3, keys) == want


def test_elastic_transform_of_one_pixel_wide_images_keeps_their_shape() -> None:
    x = torch.rand(2, 3, 5, 1, generator=torch.Generator().manual_seed(4))
    out = C.corrupt(x, "elastic_transform", 3, keys=range(2))
    assert out.shape == x.shape and bool(torch.isfinite(out).all())


@pytest.mark.parametrize("n", [1, 37, 4096, 5003])
@pytest.mark.parametrize("top", [0.9, 30.0, 500.0])
def test_poisson_tables_in_numpy_count_as_in_torch(n: int, top: float) -> None:
    g = torch.Generator().manual_seed(n)
    lam = (torch.rand(n, generator=g, dtype=torch.float64) * top).contiguous()
    words = torch.randint(-2**63, 2**63 - 1, (n,), dtype=torch.int64, generator=g)
    by_numpy = R._poisson_by_tables_numpy(lam, words, float(lam.max()))
    by_torch = R._poisson_by_tables(lam, words, float(lam.max()))
    assert torch.equal(by_numpy, by_torch)


@pytest.mark.parametrize(("size", "decay"), [(2, 3.0), (32, 2.5), (64, 1.75)])
def test_plasma_fractal_in_numpy_equals_the_torch_steps(size: int, decay: float) -> None:
    by_numpy = ops._plasma_fractal_numpy(R.SampleRNG([3, 4, 5]), size, decay)
    by_torch = ops._plasma_fractal_torch(R.SampleRNG([3, 4, 5]), size, decay)
    assert torch.equal(by_numpy, by_torch)
