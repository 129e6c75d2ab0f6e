"""Datasets: built-ins, the published on-disk formats (written here in small
files), subsets and the errors a user meets."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.core.errors import DataError
from benchmark.core.specs import DataSpec
from benchmark.data import list_loaders, load_evalset, stratified_subset


def spec(loader: str, **kw) -> DataSpec:
    return DataSpec(name=loader, loader=loader, **kw)


def write_cifar10(root: Path, n: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(i % 10) for i in range(n)]
    with open(base / "test_batch", "wb") as f:
        pickle.dump({b"batch_label": b"testing batch 1 of 1", b"labels": labels, b"data": data,
                     b"filenames": [b"x.png"] * n}, f)
    for i in range(1, 6):
        with open(base / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"labels": labels, b"data": data}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer",
                                      b"dog", b"frog", b"horse", b"ship", b"truck"],
                     b"num_vis": 3072}, f)
    return data


def write_idx(root: Path, folder: str, n: int = 12, gz: bool = False) -> np.ndarray:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    imgs = np.random.default_rng(0).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    img_bytes = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28)) + imgs.tobytes()
    lab_bytes = bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + labels.tobytes()
    opener = gzip.open if gz else open
    suffix = ".gz" if gz else ""
    with opener(raw / f"t10k-images-idx3-ubyte{suffix}", "wb") as f:
        f.write(img_bytes)
    with opener(raw / f"t10k-labels-idx1-ubyte{suffix}", "wb") as f:
        f.write(lab_bytes)
    return imgs


def test_registry_lists_every_builtin_and_public_format():
    assert {"mnist5k", "digits", "cifar10", "cifar100", "mnist", "fashion_mnist", "svhn",
            "image_folder", "npz"} <= set(list_loaders())


def test_mnist5k_split_is_fixed_and_stratified():
    test = load_evalset(spec("mnist5k"))
    train = load_evalset(spec("mnist5k", split="train"))
    assert len(test) == 1000 and len(train) == 4000
    assert test.x.dtype == torch.float32 and test.x.shape[1:] == (1, 28, 28)
    assert float(test.x.min()) >= 0.0 and float(test.x.max()) <= 1.0
    counts = np.bincount(test.y.numpy(), minlength=10)
    all_counts = counts + np.bincount(train.y.numpy(), minlength=10)
    np.testing.assert_allclose(counts / 1000, all_counts / 5000, atol=0.002)
    again = load_evalset(spec("mnist5k"))
    assert again.fingerprint == test.fingerprint
    assert test.fingerprint != train.fingerprint
    assert test.train_x is not None and len(test.train_x) == 4000


def test_digits_builtin():
    d = load_evalset(spec("digits"))
    assert d.x.shape[1:] == (1, 8, 8) and float(d.x.max()) <= 1.0
    assert d.num_classes == 10


def test_n_samples_is_a_seeded_stratified_subset():
    full = load_evalset(spec("digits"))
    sub = load_evalset(spec("digits", n_samples=100, seed=3))
    assert len(sub) == 100
    assert load_evalset(spec("digits", n_samples=100, seed=3)).fingerprint == sub.fingerprint
    assert load_evalset(spec("digits", n_samples=100, seed=4)).fingerprint != sub.fingerprint
    full_share = np.bincount(full.y.numpy(), minlength=10) / len(full)
    np.testing.assert_allclose(np.bincount(sub.y.numpy(), minlength=10) / 100, full_share,
                               atol=0.011)


def test_stratified_subset_rejects_nonpositive():
    with pytest.raises(DataError, match="n_samples"):
        stratified_subset(np.array([0, 1, 1]), 0, 0)


def test_cifar10_real_format(tmp_path):
    data = write_cifar10(tmp_path)
    ev = load_evalset(spec("cifar10", root=str(tmp_path)))
    assert ev.x.shape == (20, 3, 32, 32)
    assert ev.classes[0] == "airplane"
    expected = torch.from_numpy(data.reshape(-1, 3, 32, 32)).float() / 255
    torch.testing.assert_close(ev.x, expected)
    train = load_evalset(spec("cifar10", root=str(tmp_path), split="train"))
    assert len(train) == 100


def test_cifar100_real_format(tmp_path):
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    data = np.random.default_rng(0).integers(0, 256, size=(6, 3072), dtype=np.uint8)
    with open(base / "test", "wb") as f:
        pickle.dump({b"data": data, b"fine_labels": [0, 1, 2, 3, 4, 5], b"coarse_labels": [0] * 6}, f)
    with open(base / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}, f)
    ev = load_evalset(spec("cifar100", root=str(tmp_path)))
    assert len(ev) == 6 and len(ev.classes) == 100


def test_cifar_pickle_that_runs_code_is_refused(tmp_path):
    write_cifar10(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": [0]}, f)
    with pytest.raises(DataError, match="refusing to load builtins.print"):
        load_evalset(spec("cifar10", root=str(tmp_path)))


@pytest.mark.parametrize("loader,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_formats(tmp_path, loader, folder, gz):
    imgs = write_idx(tmp_path, folder, gz=gz)
    ev = load_evalset(spec(loader, root=str(tmp_path)))
    torch.testing.assert_close(ev.x[:, 0], torch.from_numpy(imgs).float() / 255)
    assert ev.y.tolist() == [i % 10 for i in range(12)]


def test_svhn_mat_format(tmp_path):
    from scipy.io import savemat

    x = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3, 5), dtype=np.uint8)
    savemat(tmp_path / "test_32x32.mat", {"X": x, "y": np.array([[10], [1], [2], [3], [4]])})
    ev = load_evalset(spec("svhn", root=str(tmp_path)))
    assert ev.y.tolist() == [0, 1, 2, 3, 4]
    torch.testing.assert_close(ev.x[2], torch.from_numpy(x[..., 2]).permute(2, 0, 1).float() / 255)


def test_image_folder(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("RGB", (10, 12), color=(i * 40, 0, 0)).save(tmp_path / cls / f"{i}.png")
    ev = load_evalset(DataSpec(name="f", loader="image_folder", root=str(tmp_path), image_size=8))
    assert ev.x.shape == (6, 3, 8, 8) and ev.classes == ["cat", "dog"]


def test_image_folder_needs_one_size(tmp_path):
    from PIL import Image

    (tmp_path / "a").mkdir()
    Image.new("L", (10, 10)).save(tmp_path / "a" / "1.png")
    Image.new("L", (12, 10)).save(tmp_path / "a" / "2.png")
    with pytest.raises(DataError, match="images of one size"):
        load_evalset(DataSpec(name="f", loader="image_folder", root=str(tmp_path)))


def test_npz_with_group_columns(tmp_path):
    from conftest import write_npz

    path = write_npz(tmp_path / "d.npz", n=9, sex=np.array([0, 1, 1] * 3))
    ev = load_evalset(spec("npz", root=str(path)))
    assert len(ev) == 9 and list(ev.groups.columns) == ["sex"]
    sub = load_evalset(spec("npz", root=str(path), n_samples=6))
    assert len(sub.groups) == 6


@pytest.mark.parametrize("loader,needle", [
    ("cifar10", "cifar-10-batches-py"),
    ("cifar100", "cifar-100-python"),
    ("mnist", "t10k-images-idx3-ubyte"),
    ("fashion_mnist", "t10k-images-idx3-ubyte"),
    ("svhn", "test_32x32.mat"),
    ("image_folder", "sub-directory per class"),
])
def test_missing_root_names_path_and_expected_files(tmp_path, loader, needle):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        load_evalset(spec(loader, root=str(missing)))
    assert str(missing) in str(err.value) and needle in str(err.value)


@pytest.mark.parametrize("loader", ["cifar10", "mnist", "svhn"])
def test_existing_root_without_files(tmp_path, loader):
    with pytest.raises(DataError, match="not found; expected"):
        load_evalset(spec(loader, root=str(tmp_path)))


def test_no_root_given():
    with pytest.raises(DataError, match="set data.root"):
        load_evalset(spec("cifar10"))


def test_npz_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_evalset(spec("npz", root=str(tmp_path / "x.npz")))
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 4, 4)))
    with pytest.raises(DataError, match="expected arrays x and y"):
        load_evalset(spec("npz", root=str(tmp_path / "bad.npz")))
    np.savez(tmp_path / "range.npz", x=np.full((2, 4, 4), 3.0), y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"floats in \[0, 1\]"):
        load_evalset(spec("npz", root=str(tmp_path / "range.npz")))
    np.savez(tmp_path / "len.npz", x=np.zeros((3, 4, 4)), y=np.array([0, 1]))
    with pytest.raises(DataError, match="as many labels as images"):
        load_evalset(spec("npz", root=str(tmp_path / "len.npz")))


def test_corrupt_idx_header(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "t10k-images-idx3-ubyte").write_bytes(b"garbage!")
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"garbage!")
    with pytest.raises(DataError, match="IDX file"):
        load_evalset(spec("mnist", root=str(tmp_path)))


def test_loads_are_cached_until_the_files_change(tmp_path):
    from conftest import write_npz

    path = write_npz(tmp_path / "d.npz", n=9)
    first = load_evalset(spec("npz", root=str(path)))
    again = load_evalset(spec("npz", root=str(path)))
    assert again.x is first.x and again.fingerprint == first.fingerprint
    import os

    write_npz(path, n=12, seed=5)
    os.utime(path, ns=(1, 1))  # a different signature even within one clock tick
    changed = load_evalset(spec("npz", root=str(path)))
    assert len(changed) == 12 and changed.fingerprint != first.fingerprint
