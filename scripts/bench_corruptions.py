"""Corruption throughput: rtb's batched torch corruptions against per-image
numpy references of the same formulas, side by side in one run.

Prints, for every corruption at severity 3 on N 32x32 RGB images, the CPU
time per image of both, their ratio and the corruption's share of rtb's
pass (which corruptions dominate it); the time of one full pass of all 19
per image and its ratio, with the machine load and torch's thread count; and
the wall time to evaluate the reference CNN (mnist_cnn@v1, 28x28 gray) on
the whole ``all`` suite (19 corruptions x 5 severities) for 1000 mnist5k test
images.

The references follow the published per-image code (hendrycks/robustness):
numpy's global generator, one image at a time, with scipy / PIL / matplotlib
standing in for skimage; water spatter runs the published OpenCV steps and
frost crops the photographs (``--frost-dir``). Slow references run on fewer images (``--ref-n``)
and are scaled per image, which the table says.

Each figure is the best of ``--repeats`` rounds that interleave rtb and the
reference; the speed-up is the ratio of CPU times of the timing thread at 1
torch thread (on a shared machine, wall time also counts the time other
jobs hold the core; ``--threads 1 2`` adds wall-clock columns).

    python scripts/bench_corruptions.py            # a few minutes on 2 cores
    python scripts/bench_corruptions.py --quick --frost-dir DIR   # under a minute
    python scripts/bench_corruptions.py --n 200 --skip-cnn --threads 1 2
"""

from __future__ import annotations

import argparse
import io
import math
import os
import time
from collections.abc import Callable

import numpy as np
import torch
from matplotlib.colors import hsv_to_rgb, rgb_to_hsv
from PIL import Image
from scipy import ndimage as nd

from attacks.corruptions import COMMON_CORRUPTIONS, EXTRA_CORRUPTIONS, corrupt, param_table

Ref = Callable[[np.ndarray, object], np.ndarray]
SEVERITY = 3
LUMA = np.array([0.299, 0.587, 0.114])


# ------------------------------------------------ per-image numpy references


def _gauss(img: np.ndarray, sigma: float, mode: str = "nearest", truncate: float = 4.0
           ) -> np.ndarray:
    sig = (sigma, sigma, 0) if img.ndim == 3 else sigma
    return nd.gaussian_filter(img, sig, mode=mode, truncate=truncate)


def _disk(radius: float, alias: float) -> np.ndarray:
    grid = np.arange(-8, 9) if radius <= 8 else np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(grid, grid)
    d = ((xx**2 + yy**2) <= radius**2).astype(np.float64)
    d /= d.sum()
    k = 3 if radius <= 8 else 5
    t = np.arange(k) - (k - 1) / 2
    g = np.exp(-(t**2) / (2 * alias**2))
    g /= g.sum()
    return nd.correlate1d(nd.correlate1d(d, g, 0, mode="mirror"), g, 1, mode="mirror")


def _motion(img: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick's MotionBlurImage kernel, per image (imagecorruptions-style)."""
    width = int(2 * math.ceil(radius) + 1)
    i = np.arange(width)
    k = np.exp(-(i**2) / (2 * sigma**2))
    k /= k.sum()
    a = math.radians(angle)
    h, w = img.shape[:2]
    out = np.zeros_like(img)
    for t in range(width):
        dx = int(math.ceil(t * math.cos(a) - 0.5))
        dy = int(math.ceil(t * math.sin(a) - 0.5))
        rows = np.clip(np.arange(h) + dy, 0, h - 1)
        cols = np.clip(np.arange(w) + dx, 0, w - 1)
        out += k[t] * img[rows][:, cols]
    return out


def _clipped_zoom(img: np.ndarray, z: float) -> np.ndarray:
    h = img.shape[0]
    ch = int(np.ceil(h / z))
    top = (h - ch) // 2
    out = nd.zoom(img[top : top + ch, top : top + ch], (z, z, 1), order=1)
    trim = (out.shape[0] - h) // 2
    return out[trim : trim + h, trim : trim + h]


def _plasma(mapsize: int, decay: float) -> np.ndarray:
    """The published diamond-square fractal."""
    m = np.empty((mapsize, mapsize))
    m[0, 0] = 0
    step, wibble = mapsize, 100.0

    def wibbled(a: np.ndarray) -> np.ndarray:
        return a / 4 + wibble * np.random.uniform(-wibble, wibble, a.shape)

    while step >= 2:
        half = step // 2
        corner = m[0:mapsize:step, 0:mapsize:step]
        sq = corner + np.roll(corner, -1, axis=0)
        sq += np.roll(sq, -1, axis=1)
        m[half:mapsize:step, half:mapsize:step] = wibbled(sq)
        dr = m[half:mapsize:step, half:mapsize:step]
        ul = m[0:mapsize:step, 0:mapsize:step]
        m[0:mapsize:step, half:mapsize:step] = wibbled(dr + np.roll(dr, 1, axis=0) + ul
                                                       + np.roll(ul, -1, axis=1))
        m[half:mapsize:step, 0:mapsize:step] = wibbled(dr + np.roll(dr, 1, axis=1) + ul
                                                       + np.roll(ul, -1, axis=0))
        step //= 2
        wibble /= decay
    m -= m.min()
    return m / m.max()


def r_gaussian_noise(x: np.ndarray, c: object) -> np.ndarray:
    return np.clip(x + np.random.normal(size=x.shape, scale=c), 0, 1)


def r_shot_noise(x: np.ndarray, c: object) -> np.ndarray:
    return np.clip(np.random.poisson(x * c) / c, 0, 1)


def r_impulse_noise(x: np.ndarray, c: object) -> np.ndarray:
    flipped = np.random.random(x.shape) <= c
    salted = np.random.random(x.shape) <= 0.5
    out = x.copy()
    out[flipped & salted] = 1
    out[flipped & ~salted] = 0
    return out


def r_speckle_noise(x: np.ndarray, c: object) -> np.ndarray:
    return np.clip(x + x * np.random.normal(size=x.shape, scale=c), 0, 1)


def r_gaussian_blur(x: np.ndarray, c: object) -> np.ndarray:
    return np.clip(_gauss(x, c), 0, 1)


def r_glass_blur(x: np.ndarray, c: object) -> np.ndarray:
    sigma, delta, iters = c
    x = np.uint8(_gauss(x, sigma) * 255)
    h, w = x.shape[:2]
    for _ in range(iters):
        for r in range(h - delta, delta, -1):
            for q in range(w - delta, delta, -1):
                dx, dy = np.random.randint(-delta, delta, size=(2,))
                rp, qp = r + dy, q + dx
                x[r, q], x[rp, qp] = x[rp, qp], x[r, q]
    return np.clip(_gauss(x / 255.0, sigma), 0, 1)


def r_defocus_blur(x: np.ndarray, c: object) -> np.ndarray:
    k = _disk(*c)
    return np.clip(np.stack([nd.correlate(x[..., i], k, mode="mirror") for i in range(3)], -1),
                   0, 1)


def r_motion_blur(x: np.ndarray, c: object) -> np.ndarray:
    return np.clip(_motion(x, c[0], c[1], np.random.uniform(-45, 45)), 0, 1)


def r_zoom_blur(x: np.ndarray, c: object) -> np.ndarray:
    out = np.zeros_like(x)
    for z in c:
        out += _clipped_zoom(x, z)
    return np.clip((x + out) / (len(c) + 1), 0, 1)


def r_snow(x: np.ndarray, c: object) -> np.ndarray:
    loc, scale, zoom, thr, radius, sigma, blend = c
    layer = np.random.normal(size=x.shape[:2], loc=loc, scale=scale)
    layer = _clipped_zoom(layer[..., None], zoom)[..., 0]
    layer[layer < thr] = 0
    layer = np.floor(np.clip(layer, 0, 1) * 255) / 255
    layer = _motion(layer, radius, sigma, np.random.uniform(-135, -45))[..., None]
    gray = (x @ LUMA)[..., None]
    x = blend * x + (1 - blend) * np.maximum(x, gray * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, 2), 0, 1)


#: Frost photographs of the reference (``--frost-dir``), shrunk to a fifth as
#: the CIFAR-10-C code does; loaded once (the published code reads and
#: shrinks the file for every image, which would make the reference slower).
FROST: list[np.ndarray] = []


def load_frost(frost_dir: str) -> None:
    import cv2

    for f in ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg"):
        img = cv2.imread(os.path.join(frost_dir, f))
        if img is None:
            raise SystemExit(f"cannot read {os.path.join(frost_dir, f)}")
        FROST.append(cv2.resize(img, (0, 0), fx=0.2, fy=0.2))


def r_frost(x: np.ndarray, c: object) -> np.ndarray:
    """The published frost: a random 32x32 crop of one of the photographs."""
    frost = FROST[np.random.randint(5)]
    r0 = np.random.randint(0, frost.shape[0] - 32)
    c0 = np.random.randint(0, frost.shape[1] - 32)
    crop = frost[r0 : r0 + 32, c0 : c0 + 32][..., [2, 1, 0]] / 255.0
    return np.clip(c[0] * x + c[1] * crop, 0, 1)


def r_fog(x: np.ndarray, c: object) -> np.ndarray:
    top = x.max()
    x = x + c[0] * _plasma(32, c[1])[:32, :32][..., None]
    return np.clip(x * top / (top + c[0]), 0, 1)


def r_brightness(x: np.ndarray, c: object) -> np.ndarray:
    hsv = rgb_to_hsv(x)
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return np.clip(hsv_to_rgb(hsv), 0, 1)


def r_saturate(x: np.ndarray, c: object) -> np.ndarray:
    hsv = rgb_to_hsv(x)
    hsv[..., 1] = np.clip(hsv[..., 1] * c[0] + c[1], 0, 1)
    return np.clip(hsv_to_rgb(hsv), 0, 1)


def r_contrast(x: np.ndarray, c: object) -> np.ndarray:
    m = x.mean(axis=(0, 1), keepdims=True)
    return np.clip((x - m) * c + m, 0, 1)


def r_elastic_transform(x: np.ndarray, c: object) -> np.ndarray:
    h, w = x.shape[:2]
    alpha, sigma, aff = (v * h for v in c)
    centre = np.array([h // 2, w // 2], dtype=np.float64)
    s = h // 3
    p1 = np.array([centre + s, [centre[0] + s, centre[1] - s], centre - s])
    p2 = p1 + np.random.uniform(-aff, aff, size=p1.shape)
    inv = np.linalg.solve(np.c_[p2, np.ones(3)], p1)  # dst (x, y, 1) -> src (x, y)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    src = np.stack([xx.ravel(), yy.ravel(), np.ones(h * w)], 1) @ inv
    warped = np.stack([nd.map_coordinates(x[..., i], [src[:, 1], src[:, 0]], order=1,
                                          mode="mirror").reshape(h, w) for i in range(3)], -1)
    dx = _gauss(np.random.uniform(-1, 1, (h, w)), sigma, "reflect", 3.0) * alpha
    dy = _gauss(np.random.uniform(-1, 1, (h, w)), sigma, "reflect", 3.0) * alpha
    out = np.stack([nd.map_coordinates(warped[..., i], [yy + dy, xx + dx], order=1,
                                       mode="reflect") for i in range(3)], -1)
    return np.clip(out, 0, 1)


def r_pixelate(x: np.ndarray, c: object) -> np.ndarray:
    im = Image.fromarray(np.uint8(np.round(x * 255)))
    im = im.resize((int(32 * c), int(32 * c)), Image.BOX).resize((32, 32), Image.BOX)
    return np.asarray(im) / 255.0


def r_jpeg_compression(x: np.ndarray, c: object) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(np.uint8(np.round(x * 255))).save(buf, "JPEG", quality=c)
    return np.asarray(Image.open(buf)) / 255.0


def r_spatter(x: np.ndarray, c: object) -> np.ndarray:
    loc, scale, sigma, thr, intensity, mud = c
    liquid = _gauss(np.random.normal(size=x.shape[:2], loc=loc, scale=scale), sigma)
    liquid[liquid < thr] = 0
    if mud:
        m = _gauss((liquid > thr).astype(np.float64), intensity)
        m[m < 0.8] = 0
        color = np.array([63, 42, 20]) / 255
        return np.clip(x * (1 - m[..., None]) + color * m[..., None], 0, 1)
    import cv2

    liquid = (liquid * 255).astype(np.uint8)
    dist = cv2.distanceTransform(255 - cv2.Canny(liquid, 50, 150), cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
    dist = cv2.filter2D(dist, cv2.CV_8U, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]))
    dist = cv2.blur(dist, (3, 3)).astype(np.float32)
    m = liquid * dist
    m = m / m.max() * intensity if m.max() > 0 else m
    return np.clip(x + m[..., None] * (np.array([175, 238, 238]) / 255), 0, 1)


REFERENCES: dict[str, Ref] = {name: globals()[f"r_{name}"]
                              for name in COMMON_CORRUPTIONS + EXTRA_CORRUPTIONS}
#: References slow enough to time on fewer images (scaled per image).
SLOW = {"glass_blur": 50, "elastic_transform": 200, "spatter": 200, "frost": 200,
        "zoom_blur": 200, "snow": 200, "fog": 200, "motion_blur": 200, "defocus_blur": 200}


def images(n: int, seed: int = 0) -> torch.Tensor:
    """Structured 32x32 RGB test images (smooth upsampled random patterns)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(small, size=(32, 32), mode="bilinear",
                                           align_corners=False) * 0.8 + 0.1


def _timed(fn: Callable[[], object], count: int) -> tuple[float, float]:
    """(wall, this thread's CPU) seconds per item of one call of ``fn``."""
    w, c = time.perf_counter(), time.thread_time()
    fn()
    return (time.perf_counter() - w) / count, (time.thread_time() - c) / count


def _best_times(name: str, ref: Ref, x: torch.Tensor, ref_imgs: np.ndarray,
                batch_size: int, threads: list[int], repeats: int) -> dict[str, float]:
    """Best per-image times over interleaved rounds: rtb wall at each thread
    count, rtb CPU at 1 thread, reference wall and CPU."""
    c = param_table("cifar")[name][SEVERITY - 1]
    n = len(x)
    corrupt(x[:8], name, SEVERITY, keys=range(8))  # warm up
    best: dict[str, float] = {}
    for _ in range(repeats):
        for t in threads:
            torch.set_num_threads(t)
            wall, cpu = _timed(lambda: corrupt(x, name, SEVERITY, keys=range(n),
                                               batch_size=batch_size), n)
            best[f"wall{t}"] = min(best.get(f"wall{t}", math.inf), wall)
            if t == 1:
                best["cpu1"] = min(best.get("cpu1", math.inf), cpu)
        wall, cpu = _timed(lambda: [ref(img, c) for img in ref_imgs], len(ref_imgs))
        best["ref_wall"] = min(best.get("ref_wall", math.inf), wall)
        best["ref_cpu"] = min(best.get("ref_cpu", math.inf), cpu)
    return best


def bench(n: int, ref_cap: int | None, batch_size: int, threads: list[int],
          repeats: int, only: list[str] | None = None, frost: bool = True) -> None:
    """Per corruption, ``repeats`` interleaved rounds (rtb at each thread
    count, then the reference); each figure is the best round. CPU time (of
    the calling thread) is compared at 1 thread: on a shared machine it does
    not count the time other jobs hold the core, so the ratio stays fair."""
    x = images(n)
    np.random.seed(0)
    hwc = x.permute(0, 2, 3, 1).double().numpy()
    load = os.getloadavg()[0]
    rows = []
    for name, ref in REFERENCES.items():
        if (only and name not in only) or (name == "frost" and not frost):
            continue
        k = min(n, SLOW.get(name, n), ref_cap or n)
        rows.append((name, _best_times(name, ref, x, hwc[:k], batch_size, threads, repeats), k))
    torch.set_num_threads(1)
    print(f"severity {SEVERITY}, {n} images 32x32 RGB, batch {batch_size}, best of {repeats} "
          f"interleaved rounds, samples keyed by index (the runner hashes content once per "
          f"run); torch threads 1 for the CPU columns (numpy single-threaded); load average "
          f"{load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    print("CPU time of the timing thread per image, in microseconds; speed-up = reference / "
          "rtb; share: of rtb's pass; wall x t: wall-clock speed-up at t torch threads")
    head = "".join(f"{f'wall x t={t}':>11s}" for t in threads)
    print(f"{'corruption':18s} {'rtb us/img':>10s} {'ref us/img':>10s} {'speed-up':>8s} "
          f"{'share':>6s}{head}  ref on")
    totals = {key: 0.0 for key in rows[0][1]}
    for _, best, _ in rows:
        for key, v in best.items():
            totals[key] += v
    for name, best, k in rows:
        walls = "".join(f"{best['ref_wall'] / best[f'wall{t}']:10.1f}x" for t in threads)
        print(f"{name:18s} {best['cpu1'] * 1e6:10.1f} {best['ref_cpu'] * 1e6:10.1f} "
              f"{best['ref_cpu'] / best['cpu1']:7.1f}x {best['cpu1'] / totals['cpu1']:6.1%}"
              f"{walls}  {k} img")
    walls = ", ".join(f"{totals['ref_wall'] / totals[f'wall{t}']:.1f}x wall at {t} thread(s) "
                      f"(rtb {totals[f'wall{t}'] * 1e3:.3f} ms)" for t in threads)
    print(f"\none full pass of all {len(rows)} per image: rtb {totals['cpu1'] * 1e3:.3f} ms CPU, "
          f"reference {totals['ref_cpu'] * 1e3:.3f} ms CPU: speed-up "
          f"{totals['ref_cpu'] / totals['cpu1']:.1f}x CPU at 1 thread; {walls}")
    slower = [name for name, best, _ in rows if best["ref_cpu"] < best["cpu1"]]
    print("corruptions slower than their reference (CPU, 1 thread): " + (", ".join(slower) or "none"))


def thread_check(batch_size: int, rounds: int) -> None:
    """Wall time of one batch of every corruption at 1 and 2 torch threads,
    with rtb's thread choice for the pass (``corruption_threads``, as the
    runner sets it) and without it (every op on 2 threads): the best of
    ``rounds`` interleaved rounds, so that a burst of load on a shared
    machine rarely hits the best one."""
    import attacks.corruptions as C

    x = images(batch_size)
    chosen = C.SINGLE_THREAD_MAX_VALUES
    names = list(REFERENCES)
    best = {(name, cfg): math.inf for name in names for cfg in ("1", "2", "2 forced")}
    for r in range(rounds):
        # per configuration one block over all corruptions, as the runner's
        # corruption pass (which sets the thread count once for the pass)
        for cfg, threads, limit in (("1", 1, chosen), ("2", 2, chosen), ("2 forced", 2, 0)):
            torch.set_num_threads(threads)
            C.SINGLE_THREAD_MAX_VALUES = limit
            with C.corruption_threads(x):
                for name in names[r % len(names):] + names[: r % len(names)]:
                    t = time.perf_counter()
                    corrupt(x, name, SEVERITY, keys=range(batch_size), batch_size=batch_size)
                    best[name, cfg] = min(best[name, cfg], time.perf_counter() - t)
    C.SINGLE_THREAD_MAX_VALUES = chosen
    torch.set_num_threads(1)
    print(f"\nthreads: one batch of {batch_size} 32x32 images, best of {rounds} interleaved "
          f"calls, wall ms; load average {os.getloadavg()[0]:.1f}")
    print(f"{'corruption':18s} {'1 thread':>9s} {'2 (rtb)':>9s} {'2 forced':>9s}")
    tot = dict.fromkeys(("1", "2", "2 forced"), 0.0)
    for name in names:
        for cfg in tot:
            tot[cfg] += best[name, cfg]
        print(f"{name:18s} {best[name, '1'] * 1e3:9.2f} {best[name, '2'] * 1e3:9.2f} "
              f"{best[name, '2 forced'] * 1e3:9.2f}")
    print(f"{'pass of the 19':18s} {tot['1'] * 1e3:9.2f} {tot['2'] * 1e3:9.2f} "
          f"{tot['2 forced'] * 1e3:9.2f}   (2 threads as chosen / 1 thread: "
          f"{tot['2'] / tot['1']:.2f}x; forced: {tot['2 forced'] / tot['1']:.2f}x)")


def bench_cnn(n: int, batch_size: int) -> None:
    from attacks.corruption_suite import corruption_outcomes
    from benchmark.compose import compose_spec, read_option
    from benchmark.data import load_evalset
    from benchmark.models import load_model
    from benchmark.schema import parse_corruption_suite

    spec, _ = compose_spec([f"data.n_samples={n}", "model=[mnist_cnn_v1]"])
    data = load_evalset(spec.data)
    model = load_model(spec.models["mnist_cnn_v1"], torch.device("cpu"))
    suite = parse_corruption_suite(read_option("corruption", "all"))
    t = time.perf_counter()
    outs = list(corruption_outcomes(suite, model, data, batch_size, seed=0))
    wall = time.perf_counter() - t
    print(f"\nmnist_cnn@v1 on the `all` suite ({len(outs)} settings) x {len(data)} mnist5k "
          f"test images: {wall:.1f} s wall ({wall / len(outs) * 1e3:.0f} ms per setting)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="images per corruption (default 1000)")
    p.add_argument("--ref-n", type=int, default=None, help="cap on reference images")
    p.add_argument("--batch-size", type=int, default=64,
                   help="images per torch batch (default 64: a batch stays in a core's L2 "
                        "cache; on the 2-core dev machine the pass at --n 300 took 0.354 ms "
                        "per image at 64 and 100, 0.374-0.392 ms at 128)")
    p.add_argument("--skip-cnn", action="store_true", help="skip the CNN wall-time part")
    p.add_argument("--threads", type=int, nargs="+", default=[1],
                   help="torch thread counts to time rtb at (default 1, like the "
                        "single-threaded numpy references; e.g. 1 2 adds wall-clock columns)")
    p.add_argument("--repeats", type=int, default=5,
                   help="interleaved rounds (default 5: the best of them counts, so a burst "
                        "of load on a shared machine rarely hits every one)")
    p.add_argument("--only", nargs="+", default=None, help="time only these corruptions")
    p.add_argument("--thread-check", type=int, default=0, metavar="ROUNDS",
                   help="also time one batch at 1 and 2 threads, with rtb's thread choice "
                        "and without it, best of ROUNDS calls (e.g. 30)")
    p.add_argument("--frost-dir", default=os.environ.get("FROST_DIR"),
                   help="folder of the reference frost photographs (frost1.png .. frost5.jpg; "
                        "default $FROST_DIR); without it frost is not timed")
    p.add_argument("--quick", action="store_true",
                   help="a quick look (well under a minute on 2 cores): --n 256, references "
                        "on at most 25 images, 5 rounds, no CNN part")
    a = p.parse_args()
    if a.quick:
        a.n, a.repeats, a.skip_cnn = min(a.n, 256), 5, True
        a.ref_n = min(a.ref_n or 25, 25)
    if a.frost_dir:
        load_frost(a.frost_dir)
    if 1 not in a.threads:
        p.error("--threads must include 1 (the CPU-time comparison runs at 1 thread)")
    bench(a.n, a.ref_n, a.batch_size, a.threads, a.repeats, a.only, bool(a.frost_dir))
    if a.thread_check:
        thread_check(a.batch_size, a.thread_check)
    if not a.skip_cnn:
        bench_cnn(1000, a.batch_size)


if __name__ == "__main__":
    main()
