"""Model versions: checkpoints, checksums, trust, fit, normalization, device."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmark.core.errors import CheckpointError, ConfigError
from benchmark.core.forward import forward_logits
from benchmark.core.specs import ModelSpec
from benchmark.models import Normalized, load_model, resolve_device
from benchmark.nets import TinyMLP

ARCH = {"_target_": "benchmark.nets.TinyMLP", "in_features": 64, "num_classes": 3, "hidden": 8}


def mspec(ckpt: Path, **kw) -> ModelSpec:
    base = dict(key="m", name="m", version="v1", architecture=ARCH, checkpoint=str(ckpt),
                num_classes=3, input_shape=(1, 8, 8))
    base.update(kw)
    return ModelSpec(**base)


@pytest.fixture
def net() -> TinyMLP:
    torch.manual_seed(0)
    return TinyMLP(in_features=64, num_classes=3, hidden=8)


@pytest.fixture
def ckpt(tmp_path, net) -> Path:
    path = tmp_path / "m.pt"
    torch.save(net.state_dict(), path)
    return path


def test_load_state_dict_eval_frozen_and_sha(ckpt, net):
    m = load_model(mspec(ckpt), torch.device("cpu"))
    assert not m.module.training
    assert all(not p.requires_grad for p in m.module.parameters())
    assert m.sha256 == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(forward_logits(m, x), net(x))


def test_normalization_is_folded_in(ckpt, net):
    m = load_model(mspec(ckpt, mean=(0.5,), std=(0.25,)), torch.device("cpu"))
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(forward_logits(m, x), net((x - 0.5) / 0.25))
    assert isinstance(m.module, Normalized)


def test_sha256_checked_when_given(ckpt):
    good = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    load_model(mspec(ckpt, sha256=good), torch.device("cpu"))
    with pytest.raises(CheckpointError, match=f"expected sha256 {'0' * 64}, but got {good}"):
        load_model(mspec(ckpt, sha256="0" * 64), torch.device("cpu"))


class Unsafe:
    """An object that only full unpickling can restore."""


def test_full_pickle_refused_unless_trusted(tmp_path, net, monkeypatch, caplog):
    from benchmark.models import TRUST_ENV, sha256_file, trust_checkpoints

    monkeypatch.delenv(TRUST_ENV, raising=False)
    path = tmp_path / "full.pt"
    torch.save({"state_dict": net.state_dict(), "extra": Unsafe()}, path)
    with pytest.raises(CheckpointError, match=r"rtb run --trust-checkpoint .*full\.pt"):
        load_model(mspec(path), torch.device("cpu"))
    trust_checkpoints([str(path)])
    m = load_model(mspec(path), torch.device("cpu"))
    assert m.num_classes == 3
    assert f"trusting checkpoint {path} (sha256 {sha256_file(path)})" in caplog.text


def test_trust_flag_needs_an_existing_file(tmp_path):
    from benchmark.models import trust_checkpoints

    with pytest.raises(CheckpointError, match="`--trust-checkpoint` to name an existing"):
        trust_checkpoints([str(tmp_path / "nope.pt")])


def test_architecture_is_built_without_nested_targets(tmp_path, net):
    from benchmark.core.errors import ConfigError
    from benchmark.models import build_architecture

    marker = tmp_path / "MARKER"
    arch = {**ARCH, "hidden": {"_target_": "builtins.open", "_args_": [str(marker), "w"]}}
    with pytest.raises(ConfigError, match=r"Refusing `model\.m\.architecture\.hidden\._target_`"):
        build_architecture(mspec(tmp_path / "x.pt", architecture=arch))
    assert not marker.exists()


def test_wrapped_state_dict_accepted(tmp_path, net):
    path = tmp_path / "wrapped.pt"
    torch.save({"state_dict": net.state_dict(), "epoch": 3}, path)
    load_model(mspec(path), torch.device("cpu"))


def test_state_dict_that_does_not_fit_lists_keys(tmp_path):
    path = tmp_path / "other.pt"
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        load_model(mspec(path), torch.device("cpu"))
    msg = str(err.value)
    assert "missing keys [net.1.bias" in msg and "unexpected keys [1.bias, 1.weight]" in msg


def test_shape_mismatch_reported(tmp_path):
    path = tmp_path / "wide.pt"
    torch.save(TinyMLP(in_features=64, num_classes=3, hidden=16).state_dict(), path)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_model(mspec(path), torch.device("cpu"))


def test_not_a_torch_file(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="could not be read as a torch file"):
        load_model(mspec(path), torch.device("cpu"))


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="to hold a state_dict"):
        load_model(mspec(path), torch.device("cpu"))


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(mspec(tmp_path / "nope.pt"), torch.device("cpu"))


def test_torchscript(tmp_path, net):
    path = tmp_path / "m.ts"
    torch.jit.script(net).save(str(path))
    m = load_model(mspec(path, format="torchscript"), torch.device("cpu"))
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(forward_logits(m, x), net(x))
    with pytest.raises(CheckpointError, match="not a TorchScript file"):
        load_model(mspec(tmp_path / "m.ts", format="torchscript", checkpoint=str(
            _write(tmp_path / "x.ts", b"nope"))), torch.device("cpu"))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_torchvision_architecture_by_name(tmp_path):
    import torchvision

    net = torchvision.models.get_model("resnet18", weights=None, num_classes=10)
    path = tmp_path / "r.pt"
    torch.save(net.state_dict(), path)
    m = load_model(mspec(path, architecture="resnet18", num_classes=10, input_shape=(3, 32, 32),
                         mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2)), torch.device("cpu"))
    assert forward_logits(m, torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_architecture_constructor_error_is_one_line(ckpt):
    bad = {**ARCH, "hidden": -3}
    with pytest.raises(ConfigError, match="Could not build"):
        load_model(mspec(ckpt, architecture=bad), torch.device("cpu"))


def test_device_auto_and_cuda_request():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA|none is available"):
            resolve_device("cuda")
