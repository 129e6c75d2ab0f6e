"""The tabular model: preprocessing folded into the module (checked against
scikit-learn's own imputer, scaler and one-hot encoder), the shipped arrests
versions (weights-only, checksums), and the byte-for-byte rebuild."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.compose import compose_spec
from benchmark.models import load_model
from benchmark.tabular_models import TabularMLP

ROOT = Path(__file__).resolve().parents[1]


def _raw(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.normal(5, 2, n), rng.integers(0, 3, n), rng.integers(10, 60, n),
                         rng.integers(0, 2, n)]).astype(np.float32)
    x[rng.random((n, 4)) < 0.1] = np.nan
    return x


def test_folded_preprocessing_equals_sklearn_pipeline() -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    card = [0, 3, 0, 2]
    train, test = _raw(200, 0), _raw(50, 1)
    m = TabularMLP(card, hidden=(4,), num_classes=2)
    m.fit_preprocessing(train)
    ref = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), [0, 2]),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(
            categories=[np.arange(3.0), np.arange(2.0)])), [1, 3]),
    ], sparse_threshold=0.0)
    ref.fit(train.astype(np.float64))
    want = ref.transform(test.astype(np.float64))
    got = m.features(torch.from_numpy(test)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bad_cardinalities_are_refused() -> None:
    with pytest.raises(ValueError, match="cardinalities"):
        TabularMLP([0, 1])


def test_shipped_arrests_versions_load_weights_only() -> None:
    spec, _ = compose_spec(["data=arrests", "model=[arrests_mlp_v1,arrests_mlp_v2]", "attack=[]"])
    for ms in spec.models.values():
        m = load_model(ms, torch.device("cpu"))
        assert isinstance(m.module, TabularMLP) and not m.module.training
        assert m.input_shape == (7,) and m.num_classes == 2
        x = torch.full((3, 7), float("nan"))
        assert torch.isfinite(m.module(x)).all()   # missing everywhere: imputed, finite logits
        assert all(not p.requires_grad for p in m.module.parameters())


@pytest.mark.slow
def test_arrests_versions_rebuild_byte_for_byte() -> None:
    spec = importlib.util.spec_from_file_location("rtb_train", ROOT / "scripts" / "train.py")
    assert spec is not None and spec.loader is not None
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    torch.set_num_threads(2)
    for version in ("v1", "v2"):
        a, b = train.train_tabular(version), train.train_tabular(version)
        sha = hashlib.sha256(a).hexdigest()
        assert sha == hashlib.sha256(b).hexdigest()
        assert sha in (ROOT / "conf" / "model" / f"arrests_mlp_{version}.yaml").read_text()
