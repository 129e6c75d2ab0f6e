"""Derived image properties: each against an independent numpy computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metrics import properties as P
from metrics.properties import compute_properties, get_property, list_properties


def _images(n: int = 6, channels: int = 1, size: int = 10, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, size, size, generator=g)


def _gray(x: np.ndarray) -> np.ndarray:
    if x.shape[1] == 3:
        return np.tensordot(np.array(P.LUMA_WEIGHTS), x, axes=([0], [1]))
    return x.mean(1)


@pytest.mark.parametrize("channels", [1, 3])
def test_brightness_contrast_sharpness_match_numpy(channels: int) -> None:
    x = _images(channels=channels)
    got = compute_properties(x, ["brightness", "contrast", "sharpness"])
    g = _gray(x.double().numpy())
    np.testing.assert_allclose(got["brightness"], g.reshape(len(g), -1).mean(1), rtol=1e-5)
    np.testing.assert_allclose(got["contrast"], g.reshape(len(g), -1).std(1), rtol=1e-4)
    lap = (g[:, :-2, 1:-1] + g[:, 2:, 1:-1] + g[:, 1:-1, :-2] + g[:, 1:-1, 2:]
           - 4 * g[:, 1:-1, 1:-1])
    np.testing.assert_allclose(got["sharpness"], lap.reshape(len(g), -1).var(1), rtol=1e-4)


def test_colourfulness_matches_hasler_suesstrunk_and_is_zero_for_gray() -> None:
    x = _images(channels=3)
    a = x.double().numpy()
    rg = a[:, 0] - a[:, 1]
    yb = 0.5 * (a[:, 0] + a[:, 1]) - a[:, 2]
    flat = lambda v: v.reshape(len(v), -1)  # noqa: E731
    want = np.sqrt(flat(rg).var(1) + flat(yb).var(1)) + 0.3 * np.sqrt(
        flat(rg).mean(1) ** 2 + flat(yb).mean(1) ** 2)
    np.testing.assert_allclose(compute_properties(x, ["colourfulness"])["colourfulness"], want,
                               rtol=1e-4)
    gray3 = _images(channels=1).repeat(1, 3, 1, 1)
    np.testing.assert_allclose(compute_properties(gray3, ["colourfulness"])["colourfulness"], 0,
                               atol=1e-6)
    assert np.all(compute_properties(_images(), ["colourfulness"])["colourfulness"] == 0)


@pytest.mark.parametrize("width", [1, 2, 3, 4])
@pytest.mark.parametrize("ink", [1.0, 0.0])
def test_stroke_thickness_and_ink_of_a_bar(width: int, ink: float) -> None:
    """A straight bar of known width, white on black or black on white."""
    x = torch.full((1, 1, 28, 28), 1.0 - ink)
    x[:, :, 4:24, 10 : 10 + width] = ink
    got = compute_properties(x, ["stroke_thickness", "ink_fraction"])
    assert got["stroke_thickness"][0] == pytest.approx(width, abs=1e-5)
    assert got["ink_fraction"][0] == pytest.approx(20 * width / 28**2)


def test_blank_image_has_no_ink_and_zero_thickness() -> None:
    got = compute_properties(torch.zeros(2, 1, 8, 8), ["ink_fraction", "stroke_thickness"])
    assert np.all(got["ink_fraction"] == 0) and np.all(got["stroke_thickness"] == 0)


def test_batching_does_not_change_results() -> None:
    x = _images(n=13)
    a = compute_properties(x, batch_size=4)
    b = compute_properties(x, batch_size=100)
    assert set(a) == set(list_properties())
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6)
        assert a[k].shape == (13,) and a[k].dtype == np.float64


@pytest.mark.parametrize("name", list_properties())
def test_every_property_is_finite_and_documented(name: str) -> None:
    for channels in (1, 3):
        v = compute_properties(_images(channels=channels), [name])[name]
        assert v.shape == (6,) and np.all(np.isfinite(v))
    assert get_property(name).definition


def test_unknown_property_lists_valid_ones() -> None:
    with pytest.raises(ValueError) as err:
        compute_properties(_images(), ["glow"])
    assert str(err.value) == P.MSG_UNKNOWN.format(name="glow", valid=", ".join(list_properties()))


def test_duplicate_registration_raises() -> None:
    with pytest.raises(ValueError) as err:
        P.register_property("brightness", "again")(P.brightness)
    assert str(err.value) == P.MSG_DUPLICATE.format(name="brightness")


@pytest.mark.parametrize("bad", [torch.zeros(3, 8, 8), torch.zeros(2, 1, 1, 8)])
def test_bad_shape_raises(bad: torch.Tensor) -> None:
    with pytest.raises(ValueError) as err:
        compute_properties(bad)
    assert str(err.value) == P.MSG_SHAPE.format(shape=tuple(bad.shape))
