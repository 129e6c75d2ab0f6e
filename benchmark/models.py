"""Model versions as ``ModelUnderTest``: architecture + checkpoint, input
normalization folded into the module, eval mode, on the chosen device.

Checkpoints load with ``weights_only=True`` unless the user trusts the file
on the command line (``--trust-checkpoint PATH``, passed on to jobs in
``RTB_TRUST_CHECKPOINTS``); a config file or a record cannot trust one.

Architectures: a torchvision name, a checked ``_target_`` mapping,
``timm:NAME`` (the optional extra ``timm``; never a pretrained download),
``hub:LOCAL_DIR:ENTRYPOINT`` (``torch.hub.load(source="local")``: the
directory's ``hubconf.py`` runs, so the directory must be trusted on the
command line, ``--trust-hub DIR``, passed on in ``RTB_TRUST_HUB``), or none
for ``format: torchscript``. An ``nn.Module`` passed to the Python API is the
caller's own code and is wrapped by ``module_under_test``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import warnings
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

#: Local torch.hub directories the user trusts to run: ``os.pathsep``-separated paths.
TRUST_HUB_ENV = "RTB_TRUST_HUB"

#: Prefixes of the string architectures that are not torchvision names.
TIMM_PREFIX = "timm:"
HUB_PREFIX = "hub:"

#: Keys of an architecture mapping that are not constructor arguments.
_ARCH_META = ("_target_", "_partial_", "_recursive_", "_convert_")


def _env_paths(env: str) -> list[str]:
    """The entries of a path-list environment variable (``os.pathsep``-separated)."""
    return [p for p in os.environ.get(env, "").split(os.pathsep) if p]


def _add_env_paths(env: str, resolved: list[str]) -> None:
    """Append ``resolved`` to the path-list variable ``env`` of this process
    (each path once), so that its jobs and their launcher subprocesses see it."""
    os.environ[env] = os.pathsep.join(dict.fromkeys([*_env_paths(env), *resolved]))


def trusted_checkpoints() -> frozenset[Path]:
    """The resolved paths named in ``RTB_TRUST_CHECKPOINTS``."""
    return frozenset(Path(p).expanduser().resolve() for p in _env_paths(TRUST_ENV))


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
    _add_env_paths(TRUST_ENV, resolved)


def trusted_hub_dirs() -> frozenset[Path]:
    """The resolved directories named in ``RTB_TRUST_HUB``."""
    return frozenset(Path(p).expanduser().resolve() for p in _env_paths(TRUST_HUB_ENV))


def trust_hub_dirs(paths: list[str]) -> None:
    """Add ``paths`` (checked to be directories holding ``hubconf.py``) to
    ``RTB_TRUST_HUB`` of this process, so that its jobs see them."""
    resolved = []
    for p in paths:
        path = Path(p).expanduser().resolve()
        if not (path / "hubconf.py").is_file():
            raise ConfigError(
                f"Expected `--trust-hub` to name a local torch.hub directory holding "
                f"hubconf.py, but got {p!r} ({'no hubconf.py in it' if path.is_dir() else 'not a directory'})."
            )
        resolved.append(str(path))
    _add_env_paths(TRUST_HUB_ENV, resolved)


#: Why a hub directory is refused until the command line trusts it.
HUB_NOT_TRUSTED = (
    "Refusing `{where}.architecture` = {arch!r}: loading a torch.hub directory runs its "
    "hubconf.py, and trust in code is not read from a config file; if you trust {path}, "
    "pass it on the command line: rtb run --trust-hub {path} ..."
)


def split_hub(where: str, arch: str) -> tuple[Path, str]:
    """``hub:LOCAL_DIR:ENTRYPOINT`` as (resolved directory, entrypoint)."""
    body = arch[len(HUB_PREFIX):]
    directory, sep, entry = body.rpartition(":")
    if not sep or not directory or not entry.isidentifier():
        raise ConfigError(
            f"Expected `{where}.architecture` as hub:LOCAL_DIR:ENTRYPOINT (a local torch.hub "
            f"directory and the name of a function in its hubconf.py), but got {arch!r}."
        )
    return resolve_path(directory).resolve(), entry


def check_hub_trusted(where: str, arch: str) -> Path:
    """The hub directory of ``arch`` when it exists, holds ``hubconf.py`` and
    is trusted on the command line; else one ``ConfigError`` line."""
    path, _ = split_hub(where, arch)
    if not (path / "hubconf.py").is_file():
        raise ConfigError(
            f"Expected `{where}.architecture` to name a local torch.hub directory holding "
            f"hubconf.py, but {str(path)!r} has none."
        )
    if path not in trusted_hub_dirs():
        raise ConfigError(HUB_NOT_TRUSTED.format(where=where, arch=arch, path=path))
    return path


def timm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("timm") is not None


def check_timm_name(where: str, arch: str) -> str:
    """The timm architecture name of ``timm:NAME``, checked to be registered."""
    name = arch[len(TIMM_PREFIX):]
    if not timm_available():
        raise ConfigError(
            f"Expected the optional extra `timm` for `{where}.architecture` = {arch!r}, but "
            f"timm is not installed (pip install 'robustness-testbench[timm]')."
        )
    import timm

    if not name or not timm.is_model(name):
        raise ConfigError(
            f"Expected `{where}.architecture` to be timm:NAME with a timm architecture name "
            f"(timm.list_models()), but got {arch!r}."
        )
    return name


def _timm_architecture(spec: ModelSpec) -> nn.Module:
    """A timm network by name, with random weights (never a pretrained download)."""
    import timm

    name = check_timm_name(f"model.{spec.key}", str(spec.architecture))
    try:
        net: nn.Module = timm.create_model(name, pretrained=False,
                                           num_classes=spec.num_classes,
                                           in_chans=spec.input_shape[0])
    except Exception as exc:  # the architecture's own argument errors
        raise ConfigError(f"Could not build `model.{spec.key}.architecture` "
                          f"({spec.architecture}): {exc}") from None
    return net


def _hub_architecture(spec: ModelSpec) -> nn.Module:
    """``torch.hub.load(LOCAL_DIR, ENTRYPOINT, source="local")`` of a trusted directory."""
    where = f"model.{spec.key}"
    arch = str(spec.architecture)
    path = check_hub_trusted(where, arch)
    _, entry = split_hub(where, arch)
    log.warning("trusting torch.hub directory %s: running its hubconf.py (%s)", path, entry)
    try:
        net = torch.hub.load(str(path), entry, source="local", trust_repo=True)
    except Exception as exc:  # the hubconf's own errors
        raise ConfigError(f"Could not build `{where}.architecture` ({arch}): "
                          f"{type(exc).__name__}: {exc}") from None
    if not isinstance(net, nn.Module):
        raise ConfigError(f"Expected `{where}.architecture` ({arch}) to return a "
                          f"torch.nn.Module, but got {type(net).__name__}.")
    return net


def _load_torchscript(spec: ModelSpec, path: Path) -> nn.Module:
    """A TorchScript file (no architecture needed); torch's deprecation notice
    of ``torch.jit`` is filtered (it concerns writing new TorchScript)."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.jit.* is deprecated",
                                    category=FutureWarning)
            net: nn.Module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} of {spec.ref} is not a TorchScript file: "
            f"{' '.join(str(exc).split())[:300]}"
        ) from None
    return net


def module_sha256(module: nn.Module) -> str:
    """A content digest of a Python-side module: its class and every tensor of
    its state (what a checkpoint's sha256 is for a loaded version)."""
    h = hashlib.sha256()
    cls = type(module)
    h.update(f"{cls.__module__}.{cls.__qualname__}".encode())
    for k, v in module.state_dict().items():
        h.update(k.encode())
        t = v.detach().to("cpu").contiguous()
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def module_under_test(module: nn.Module, *, name: str, version: str, num_classes: int,
                      input_shape: tuple[int, ...], device: torch.device,
                      mean: tuple[float, ...] = (0.0,), std: tuple[float, ...] = (1.0,)
                      ) -> ModelUnderTest:
    """A caller's own ``nn.Module`` (trusted: the caller holds it) as a version
    under test, prepared like a loaded one. The caller's module is not changed:
    it is copied, so its mode and ``requires_grad`` flags stay as they were."""
    import copy

    if not isinstance(module, nn.Module):
        raise ConfigError(f"Expected a torch.nn.Module for model {name}@{version}, but got "
                          f"{type(module).__name__}.")
    digest = module_sha256(module)
    wrapped = Normalized(copy.deepcopy(module), mean, std).to(device)
    return _prepared(wrapped, name, version, digest, num_classes, input_shape, device)


def _prepared(module: nn.Module, name: str, version: str, digest: str, num_classes: int,
              input_shape: tuple[int, ...], device: torch.device) -> ModelUnderTest:
    module.eval()
    # Attacks need gradients of the input only: frozen weights spare every
    # backward pass the gradients of the parameters.
    for p in module.parameters():
        p.requires_grad_(False)
    return ModelUnderTest(name=name, version=version, module=module, sha256=digest,
                          num_classes=num_classes, input_shape=input_shape, device=device)


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
    if isinstance(arch, str) and arch.startswith(TIMM_PREFIX):
        return _timm_architecture(spec)
    if isinstance(arch, str) and arch.startswith(HUB_PREFIX):
        return _hub_architecture(spec)
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
    elif arch is None:
        raise ConfigError(f"Missing `model.{spec.key}.architecture`; every model version "
                          "names it (unless format: torchscript).")
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
        net = _load_torchscript(spec, path)
    else:
        net = build_architecture(spec)
        _fit_state_dict(spec, net, _load_state_dict(spec, path, digest), path)
    # a feature-table model folds its own preprocessing in (benchmark.tabular_models)
    module = (net if getattr(net, "takes_raw_features", False)
              else Normalized(net, spec.mean, spec.std)).to(device)
    return _prepared(module, spec.name, spec.version, digest, spec.num_classes,
                     spec.input_shape, device)
