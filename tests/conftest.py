"""Shared fixtures: tiny seeded data and models, and a way to run the CLI.

Nothing here downloads; every model is built and trained (or not) in the
test itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.core.types import EvalSet, ModelUnderTest

REPO = Path(__file__).resolve().parents[1]


def make_evalset(n: int = 40, channels: int = 1, size: int = 8, classes: int = 3,
                 seed: int = 0) -> EvalSet:
    """Separable blobs: class k has brighter pixels in band k."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.rand(n, channels, size, size, generator=g) * 0.3
    band = size // classes
    for k in range(classes):
        x[y == k, :, k * band : (k + 1) * band, :] += 0.6
    return EvalSet(name="blobs", x=x.clamp(0, 1), y=y.long(),
                   classes=[str(i) for i in range(classes)])


class BandNet(nn.Module):
    """A linear model that reads the band means: accurate on ``make_evalset``."""

    def __init__(self, channels: int = 1, size: int = 8, classes: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(channels * size * size, classes)
        band = size // classes
        w = torch.zeros(classes, channels, size, size)
        for k in range(classes):
            w[k, :, k * band : (k + 1) * band, :] = 1.0 / (band * size * channels)
        self.fc.weight.data = w.flatten(1) * 10
        self.fc.bias.data.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def make_model(module: nn.Module | None = None, channels: int = 1, size: int = 8,
               classes: int = 3, version: str = "v1") -> ModelUnderTest:
    module = module or BandNet(channels, size, classes)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return ModelUnderTest(name="tiny", version=version, module=module, sha256="0" * 64,
                          num_classes=classes, input_shape=(channels, size, size),
                          device=torch.device("cpu"))


@pytest.fixture
def evalset() -> EvalSet:
    return make_evalset()


@pytest.fixture
def tiny_model() -> ModelUnderTest:
    return make_model()


def write_npz(path: Path, n: int = 30, size: int = 8, classes: int = 3, seed: int = 0,
              **columns: np.ndarray) -> Path:
    data = make_evalset(n=n, size=size, classes=classes, seed=seed)
    x = (data.x[:, 0].numpy() * 255).round().astype(np.uint8)
    np.savez(path, x=x, y=data.y.numpy(), **columns)
    return path


def train_tiny_mlp(size: int = 8, classes: int = 3, seed: int = 0, steps: int = 150) -> nn.Module:
    """A TinyMLP trained on ``make_evalset`` data (under a second on CPU)."""
    from benchmark.nets import TinyMLP

    torch.manual_seed(seed)
    net = TinyMLP(in_features=size * size, num_classes=classes, hidden=16)
    data = make_evalset(n=120, size=size, classes=classes, seed=seed + 1)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(net(data.x), data.y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def write_checkpoint(path: Path, size: int = 8, classes: int = 3, seed: int = 0) -> Path:
    torch.save(train_tiny_mlp(size, classes, seed).state_dict(), path)
    return path


TINY_MODEL_YAML = """\
tiny_{version}:
  name: tiny
  version: {version}
  architecture:
    _target_: benchmark.nets.TinyMLP
    in_features: {features}
    num_classes: {classes}
    hidden: 16
  checkpoint: {ckpt}
  format: state_dict
  sha256: null
  num_classes: {classes}
  input_shape: [1, {size}, {size}]
"""


def write_tiny_conf(root: Path, ckpt: Path, size: int = 8, classes: int = 3,
                    versions: tuple[str, ...] = ("v1",)) -> Path:
    """A config dir with ``model/tiny_<version>.yaml`` entries, for ``hydra.searchpath``."""
    (root / "model").mkdir(parents=True, exist_ok=True)
    for v in versions:
        (root / "model" / f"tiny_{v}.yaml").write_text(TINY_MODEL_YAML.format(
            version=v, features=size * size, classes=classes, ckpt=ckpt, size=size))
    return root


def tiny_overrides(ckpt: Path, npz: Path, size: int = 8, classes: int = 3,
                   versions: tuple[str, ...] = ("v1",)) -> list[str]:
    """Overrides that point `rtb run` at a tiny npz dataset and TinyMLP version(s)
    (all versions share the checkpoint unless the caller rewrites the YAML)."""
    conf = write_tiny_conf(ckpt.parent / "tiny_conf", ckpt, size, classes, versions)
    return [
        f"hydra.searchpath=[file://{conf}]",
        "data=npz",
        f"data.root={npz}",
        f"model=[{','.join('tiny_' + v for v in versions)}]",
        "attack=[fgsm]",
        "attack.fgsm.eps=[0.1,0.3]",
        "batch_size=16",
    ]


@pytest.fixture
def tiny_files(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny npz dataset and a matching trained TinyMLP checkpoint."""
    return write_checkpoint(tmp_path / "tiny.pt"), write_npz(tmp_path / "tiny.npz")


CLIRunner = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def run_cli(tmp_path: Path) -> CLIRunner:
    """Run ``rtb ARGS`` in a subprocess from a temporary directory."""

    def _run(*args: str, cwd: Path | None = None, timeout: int = 600,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        full_env = {**os.environ, "PYTHONHASHSEED": "0", **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "benchmark.cli", *args],
            cwd=cwd or tmp_path, capture_output=True, text=True, timeout=timeout, env=full_env,
        )

    return _run


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory):
    """Tiny data, a checkpoint and a store holding one run (built once per worker)."""
    from badinput import build_world

    return build_world(tmp_path_factory.mktemp("world"))
