"""Texture statistics of the frost photographs and of rtb's frost texture,
measured the same way, side by side.

The published frost corruption blends an image with a random crop of one of
the first five frost photographs (hendrycks/robustness draws the index with
``np.random.randint(5)``: the sixth is never used). CIFAR-10-C shrinks the
photograph to a fifth first and crops 32x32; ImageNet-C crops 224x224 from
the full photograph. rtb does not ship the photographs: it synthesises a
texture from figures measured here, per photograph and per scale (mean
colour, within-crop colour covariance, between-crop spread of the crop
mean, and the slope of the radially averaged power spectrum). This script
measures those figures from a directory of the photographs, prints them in
the form ``attacks/corruptions.py`` holds them, then measures rtb's texture
with the same estimator and prints both.

    python scripts/frost_statistics.py --frost-dir /path/to/frost [--crops 300]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")
#: (shrink factor of the photograph, crop side) of each published scale.
SCALES = {"cifar": (0.2, 32), "imagenet": (1.0, 224)}
LUMA = np.array([0.299, 0.587, 0.114])


def load(path: Path, shrink: float) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path))
    if img is None:
        raise SystemExit(f"cannot read frost photograph {path}")
    if shrink != 1.0:
        img = cv2.resize(img, (0, 0), fx=shrink, fy=shrink)
    return img[..., ::-1].astype(np.float64) / 255  # RGB in [0, 1]


def crops(img: np.ndarray, side: int, count: int, gen: np.random.Generator) -> np.ndarray:
    """``count`` random side x side crops, drawn like the reference's."""
    rows = gen.integers(0, img.shape[0] - side, count)
    cols = gen.integers(0, img.shape[1] - side, count)
    return np.stack([img[r : r + side, c : c + side] for r, c in zip(rows, cols, strict=True)])


def spectrum_slope(gray: np.ndarray) -> float:
    """beta of P(f) ~ f^-beta: the log-log fit of the radially averaged power
    spectrum of mean-free crops (N, S, S), radii 1..S/2 (in cycles per crop).
    The crops are Hann-windowed: a crop's edges would otherwise add the
    leakage of a step, whatever the texture's own spectrum."""
    s = gray.shape[-1]
    g = gray - gray.mean(axis=(1, 2), keepdims=True)
    hann = np.hanning(s + 2)[1:-1]
    g = g * (hann[:, None] * hann[None, :])
    power = (np.abs(np.fft.fft2(g)) ** 2).mean(0)
    f = np.fft.fftfreq(s) * s
    radius = np.rint(np.hypot(f[:, None], f[None, :])).astype(int)
    radii = np.arange(1, s // 2 + 1)
    mean_p = np.array([power[radius == r].mean() for r in radii])
    slope, _ = np.polyfit(np.log(radii), np.log(mean_p), 1)
    return float(-slope)


def texture_crops(figures: tuple, scale: str, beta: float | None, count: int,
                  gen: np.random.Generator) -> np.ndarray:
    """Random crops of rtb's texture for one photograph's figures."""
    from attacks.corruptions import (
        frost_crop_side,
        frost_seed,
        frost_texture_side,
        synthesise_frost,
    )

    crop = frost_crop_side(scale)
    tex = synthesise_frost(figures, crop, frost_texture_side(scale), frost_seed(scale, 0), beta)
    tex = torch.cat([tex, tex[:, :crop], ], 1)
    tex = torch.cat([tex, tex[:, :, :crop]], 2)  # periodic: crops may wrap
    out = crops(tex.permute(1, 2, 0).numpy(), crop, count, gen)
    # per crop, as frost_texture adds them: the mean colour and an offset
    offset = gen.standard_normal((count, 1, 1, 1)) * np.asarray(figures[2])
    return np.clip(out + np.asarray(figures[0]) + offset, 0, 1)


def synthesis_slope(figures: tuple, scale: str, target: float, count: int) -> float:
    """The synthesis slope whose texture crops measure ``target`` (secant steps)."""
    def measured(beta: float) -> float:
        return float(stats(texture_crops(figures, scale, beta, count,
                                         np.random.default_rng(2)))["beta"])

    b0, b1 = target, target - 0.3
    m0, m1 = measured(b0), measured(b1)
    for _ in range(8):
        if abs(m1 - target) < 2e-3 or m1 == m0:
            break
        b0, b1 = b1, b1 + (target - m1) * (b1 - b0) / (m1 - m0)
        m0, m1 = m1, measured(b1)
    return float(b1)


def stats(c: np.ndarray) -> dict[str, np.ndarray | float]:
    """The figures of a set of crops (N, S, S, 3) in [0, 1]."""
    means = c.mean(axis=(1, 2))  # (N, 3)
    within = (c - means[:, None, None, :]).reshape(-1, 3)
    cov = within.T @ within / len(within)
    return {"mean": c.reshape(-1, 3).mean(0), "cov": cov, "spread": means.std(0),
            "beta": spectrum_slope(c @ LUMA)}


def fmt(v: np.ndarray) -> str:
    return "(" + ", ".join(f"{x:.4f}" for x in np.ravel(v)) + ")"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frost-dir", type=Path, required=True, help="folder of frost1.png .. frost5.jpg")
    p.add_argument("--crops", type=int, default=300, help="crops per photograph and scale")
    a = p.parse_args()
    from attacks.corruptions import FROST_FIGURES, SampleRNG, frost_texture

    print(f"load average {os.getloadavg()[0]:.1f}; {a.crops} crops per photograph and scale")
    for scale, (shrink, side) in SCALES.items():
        gen = np.random.default_rng(0)
        ref = [stats(crops(load(a.frost_dir / f, shrink), side, a.crops, gen)) for f in FILES]
        print(f"\n{scale}: photographs shrunk x{shrink}, {side}x{side} crops")
        print("figures (mean RGB; within-crop covariance, upper triangle; spread of crop means "
              "RGB; spectral slope)")
        rows = []
        for f, s in zip(FILES, ref, strict=True):
            cov = np.asarray(s["cov"])
            row = (tuple(np.round(s["mean"], 4)), tuple(np.round(cov[np.triu_indices(3)], 4)),
                   tuple(np.round(s["spread"], 4)), round(float(s["beta"]), 3))
            synth = synthesis_slope(row + (0.0,), scale, row[3], a.crops)
            rows.append(row + (round(synth, 3),))
            print(f"  ({fmt(row[0])}, {fmt(row[1])}, {fmt(row[2])}, {row[3]:.3f}, "
                  f"{synth:.3f}),  # {f}")
        # rtb's texture, one photograph's figures per sample (every sample
        # gets figure set i % 5 here, so each is measured on a fifth)
        ours = [stats(texture_crops(row, scale, None, a.crops, gen)) for row in FROST_FIGURES[scale]]
        print(f"  {'':11s} {'mean x255 ref':>14s} {'rtb':>6s}  {'std x255 ref':>13s} {'rtb':>6s}"
              f"  {'beta ref':>8s} {'rtb':>6s}")
        for f, r, o in zip(FILES, ref, ours, strict=True):
            rs = np.sqrt(np.diag(np.asarray(r["cov"])) + np.asarray(r["spread"]) ** 2).mean()
            os_ = np.sqrt(np.diag(np.asarray(o["cov"])) + np.asarray(o["spread"]) ** 2).mean()
            print(f"  {f:11s} {np.mean(r['mean']) * 255:14.1f} {np.mean(o['mean']) * 255:6.1f}"
                  f"  {rs * 255:13.1f} {os_ * 255:6.1f}  {r['beta']:8.3f} {o['beta']:6.3f}")
        if [r[:4] for r in FROST_FIGURES[scale]] != [r[:4] for r in rows]:
            print("  (attacks/corruptions.py holds other figures: paste the rows above)")
        m_ref = np.mean([np.mean(r["mean"]) for r in ref]) * 255
        m_rtb = float(frost_texture(SampleRNG(range(1000)), side, side, scale=scale).mean()) * 255
        print(f"  average over the five (the reference draws them uniformly): "
              f"reference {m_ref:.1f}/255, rtb {m_rtb:.1f}/255")


if __name__ == "__main__":
    main()
