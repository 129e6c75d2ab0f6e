"""Model versions as ``ModelUnderTest``: architecture + checkpoint, input
normalization folded into the module, eval mode, on the chosen device.

Checkpoints load with ``weights_only=True`` unless the version's config sets
``trust_checkpoint: true``.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmark.core.errors import CheckpointError, ConfigError
from benchmark.core.specs import ModelSpec
from benchmark.core.targets import check_target
from benchmark.core.types import ModelUnderTest
from benchmark.paths import resolve_path

log = logging.getLogger(__name__)


class Normalized(nn.Module):
    """Wraps a network so it takes [0,1] pixels: ``net((x - mean) / std)``."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"Expected a CUDA device for `device`={device!r}, but none is available; use device=auto or cpu.")
    return torch.device(device)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_architecture(spec: ModelSpec) -> nn.Module:
    """Instantiate the network named by ``spec.architecture`` (no weights)."""
    arch = spec.architecture
    if isinstance(arch, Mapping):
        from hydra.utils import instantiate

        check_target(f"model.{spec.key}.architecture._target_", arch.get("_target_"))
        try:
            net = instantiate(dict(arch))
        except Exception as exc:  # instantiate wraps constructor errors
            raise ConfigError(
                f"Could not build `model.{spec.key}.architecture` ({arch.get('_target_')}): {exc}"
            ) from None
    else:
        import torchvision.models as tvm

        net = tvm.get_model(arch, weights=None, num_classes=spec.num_classes)
    if not isinstance(net, nn.Module):
        raise ConfigError(
            f"Expected `model.{spec.key}.architecture` to build a torch.nn.Module, "
            f"but got {type(net).__name__}."
        )
    return net


def _load_state_dict(spec: ModelSpec, path: Path) -> Mapping[str, Any]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not spec.trust_checkpoint)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc) and "can still be loaded" not in str(exc):
            raise CheckpointError(
                f"Checkpoint {str(path)!r} of {spec.ref} could not be read as a torch file "
                f"(it is corrupt or not a checkpoint): {str(exc).splitlines()[-1][:200]}"
            ) from None
        raise CheckpointError(
            f"Checkpoint {str(path)!r} of {spec.ref} needs full unpickling, which can run "
            f"arbitrary code; refusing. If you trust this file, set "
            f"model.{spec.key}.trust_checkpoint=true."
        ) from None
    except Exception as exc:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} of {spec.ref} could not be read as a torch file: {exc}"
        ) from None
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"Expected checkpoint {str(path)!r} of {spec.ref} to hold a state_dict "
            f"(a mapping of names to tensors), but got {type(obj).__name__}."
        )
    return obj


def _fit_state_dict(spec: ModelSpec, net: nn.Module, state: Mapping[str, Any], path: Path) -> None:
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(own[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_few(unexpected)}")
        if wrong:
            parts.append(f"shape mismatches {_few(wrong)}")
        raise CheckpointError(
            f"Checkpoint {str(path)!r} does not fit the architecture of {spec.ref}: "
            + "; ".join(parts) + "."
        )
    net.load_state_dict(state)


def _few(items: list[str], k: int = 5) -> str:
    shown = ", ".join(items[:k])
    return f"[{shown}{', ...' if len(items) > k else ''}] ({len(items)})"


def load_model(spec: ModelSpec, device: torch.device) -> ModelUnderTest:
    """Load one model version: verify its checksum, build, load weights,
    fold in normalization, freeze parameters and switch to eval mode."""
    path = resolve_path(spec.checkpoint)
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint file of {spec.ref} not found: {str(path)!r} (expected a {spec.format} file)."
        )
    digest = sha256_file(path)
    if spec.sha256 and digest != spec.sha256:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} of {spec.ref} does not match its recorded checksum: "
            f"expected sha256 {spec.sha256}, but got {digest}."
        )
    if spec.format == "torchscript":
        try:
            net: nn.Module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise CheckpointError(
                f"Checkpoint {str(path)!r} of {spec.ref} is not a TorchScript file: {exc}"
            ) from None
    else:
        net = build_architecture(spec)
        _fit_state_dict(spec, net, _load_state_dict(spec, path), path)
    module = Normalized(net, spec.mean, spec.std).to(device)
    module.eval()
    # Attacks need gradients of the input only: frozen weights spare every
    # backward pass the gradients of the parameters.
    for p in module.parameters():
        p.requires_grad_(False)
    return ModelUnderTest(
        name=spec.name,
        version=spec.version,
        module=module,
        sha256=digest,
        num_classes=spec.num_classes,
        input_shape=spec.input_shape,
        device=device,
    )
