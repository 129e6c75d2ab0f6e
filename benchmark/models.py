"""Model versions as ``ModelUnderTest``: architecture + checkpoint, input
normalization folded into the module, eval mode, on the chosen device.

Checkpoints load with ``weights_only=True`` unless the user trusts the file
on the command line (``--trust-checkpoint PATH``, passed on to jobs in
``RTB_TRUST_CHECKPOINTS``); a config file or a record cannot trust one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmark.core.errors import CheckpointError, ConfigError
from benchmark.core.specs import ModelSpec
from benchmark.core.targets import ARCHITECTURE, resolve_target
from benchmark.core.types import ModelUnderTest
from benchmark.paths import resolve_path

log = logging.getLogger(__name__)

#: Checkpoints the user trusts for full unpickling: ``os.pathsep``-separated paths.
TRUST_ENV = "RTB_TRUST_CHECKPOINTS"

#: Keys of an architecture mapping that are not constructor arguments.
_ARCH_META = ("_target_", "_partial_", "_recursive_", "_convert_")


def trusted_checkpoints() -> frozenset[Path]:
    """The resolved paths named in ``RTB_TRUST_CHECKPOINTS``."""
    raw = os.environ.get(TRUST_ENV, "")
    return frozenset(Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p)


def trust_checkpoints(paths: list[str]) -> None:
    """Add ``paths`` (checked to exist) to ``RTB_TRUST_CHECKPOINTS`` of this
    process, so that its jobs and their launcher subprocesses see them."""
    resolved = []
    for p in paths:
        path = Path(p).expanduser().resolve()
        if not path.is_file():
            raise CheckpointError(
                f"Expected `--trust-checkpoint` to name an existing checkpoint file, but got "
                f"{p!r} (not found)."
            )
        resolved.append(str(path))
    old = [p for p in os.environ.get(TRUST_ENV, "").split(os.pathsep) if p]
    os.environ[TRUST_ENV] = os.pathsep.join(dict.fromkeys([*old, *resolved]))


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
        where = f"model.{spec.key}.architecture"
        # Resolved and checked by kind here too, and called directly rather
        # than through Hydra's (recursive) instantiate: no nested _target_
        # is ever built, even if a checker upstream missed one.
        cls = resolve_target(f"{where}._target_", arch.get("_target_"), ARCHITECTURE,
                             spec.allow_targets)
        args = arch.get("_args_") or []
        kwargs = {k: v for k, v in arch.items() if k not in (*_ARCH_META, "_args_")}
        for k, v in [*enumerate(args), *kwargs.items()]:
            _no_nested_target(f"{where}.{k}", v)
        try:
            net = cls(*args, **kwargs)
        except Exception as exc:  # the constructor's own argument errors
            raise ConfigError(
                f"Could not build `{where}` ({arch.get('_target_')}): {exc}"
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


def _no_nested_target(where: str, value: Any) -> None:
    if isinstance(value, Mapping):
        if "_target_" in value:
            from benchmark.core.targets import WHERE_ALLOWED

            raise ConfigError(f"Refusing `{where}._target_` = {value['_target_']!r}: {WHERE_ALLOWED}")
        for k, v in value.items():
            _no_nested_target(f"{where}.{k}", v)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _no_nested_target(f"{where}[{i}]", v)


def _load_state_dict(spec: ModelSpec, path: Path, digest: str) -> Mapping[str, Any]:
    trusted = path.resolve() in trusted_checkpoints()
    if trusted:
        log.warning("trusting checkpoint %s (sha256 %s): fully unpickling it, which can run "
                    "code", path, digest)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc) and "can still be loaded" not in str(exc):
            raise CheckpointError(
                f"Checkpoint {str(path)!r} of {spec.ref} could not be read as a torch file "
                f"(it is corrupt or not a checkpoint): {str(exc).splitlines()[-1][:200]}"
            ) from None
        raise CheckpointError(
            f"Checkpoint {str(path)!r} of {spec.ref} needs full unpickling, which can run "
            f"arbitrary code; refusing. If you trust this file, pass it on the command line: "
            f"rtb run --trust-checkpoint {path} ... (also rtb validate / rtb reproduce)."
        ) from None
    except Exception as exc:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} of {spec.ref} could not be read as a torch file: {exc}"
        ) from None
    if isinstance(obj, nn.Module):  # a trusted torch.save(model)
        obj = obj.state_dict()
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
        _fit_state_dict(spec, net, _load_state_dict(spec, path, digest), path)
    # a feature-table model folds its own preprocessing in (benchmark.tabular_models)
    module = (net if getattr(net, "takes_raw_features", False)
              else Normalized(net, spec.mean, spec.std)).to(device)
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
