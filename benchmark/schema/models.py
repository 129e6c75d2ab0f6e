"""The ``data`` and ``model`` sections: one dataset, one or more model versions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from benchmark.core import fields as F
from benchmark.core.errors import ConfigError
from benchmark.core.specs import DataSpec, ModelSpec
from benchmark.core.targets import ARCHITECTURE, check_target
from benchmark.data import list_loaders, loader_options
from benchmark.paths import resolve_path
from benchmark.tabular_data import TABLE_LOADERS, check_table_options

DATA_KEYS = ("name", "loader", "root", "split", "n_samples", "seed", "image_size", "channels",
             "options")
MODEL_KEYS = ("name", "version", "architecture", "checkpoint", "format", "sha256", "mean", "std",
              "num_classes", "input_shape")
MODEL_FORMATS = ("state_dict", "torchscript")
#: How a run records a module passed from Python (``benchmark.api``): never rebuilt.
PYTHON_ARCH = "python:"
#: How a run records tensors or an EvalSet passed from Python.
PYTHON_DATA = "python"


def parse_data(d: Any, check_files: bool = True) -> DataSpec:
    """Validate the ``data`` section; the loader must be registered (a
    feature-table loader's options, and its schema file, are checked too)."""
    d = F.mapping("data", d)
    if d.get("loader") == PYTHON_DATA:
        raise ConfigError(
            f"Expected `data` to name a dataset loader, but it records data passed to "
            f"benchmark.evaluate ({d.get('name')!r}, fingerprint {d.get('fingerprint')}); a "
            "config or record cannot reload it: call evaluate with the data again."
        )
    F.check_keys("data", d, DATA_KEYS)
    loader = F.text("data.loader", d.get("loader", d.get("name")))
    if loader not in list_loaders():
        raise ConfigError(
            f"Unknown dataset loader {loader!r}; expected one of: {', '.join(list_loaders())}."
        )
    n = d.get("n_samples")
    if n is not None:
        F.integer("data.n_samples", n, minimum=1)
    for key in ("image_size", "channels"):
        if d.get(key) is not None:
            F.integer(f"data.{key}", d[key], minimum=1)
    options = _data_options(loader, d.get("options"))
    if loader in TABLE_LOADERS:
        check_table_options(loader, options, check_files)
    return DataSpec(
        name=F.text("data.name", d.get("name", loader)),
        loader=loader,
        root=F.optional_text("data.root", d.get("root")),
        split=F.text("data.split", d.get("split", "test")),
        n_samples=n,
        seed=F.integer("data.seed", d.get("seed", 0)),
        image_size=d.get("image_size"),
        channels=d.get("channels"),
        options=options,
    )


def _data_options(loader: str, options: Any) -> dict[str, Any]:
    """``data.options``: only the keys the loader reads (a typo would be ignored)."""
    options = dict(F.mapping("data.options", options or {}))
    valid = loader_options(loader)
    unknown = sorted(str(k) for k in options if k not in valid)
    if unknown:
        expected = (f"expected one of: {', '.join(valid)}" if valid
                    else f"the {loader!r} loader reads no options")
        raise ConfigError(f"Unknown dataset option `data.options.{unknown[0]}`; {expected}.")
    return options


def _architecture(where: str, arch: Any, allow: tuple[str, ...] = (),
                  check_files: bool = True) -> str | dict[str, Any]:
    """A torchvision model name, ``timm:NAME``, ``hub:LOCAL_DIR:ENTRYPOINT``
    (trusted on the command line only), or a mapping whose ``_target_`` is an
    ``nn.Module`` class or torchvision builder (``benchmark.core.targets``)."""
    if isinstance(arch, Mapping):
        check_target(f"{where}.architecture._target_", arch.get("_target_"), ARCHITECTURE, allow)
        return dict(arch)
    arch = F.text(f"{where}.architecture", arch)
    prefixed = _prefixed_architecture(where, arch, check_files)
    if prefixed is not None:
        return prefixed
    import torchvision.models as tvm

    if arch not in tvm.list_models():
        raise ConfigError(
            f"Expected `{where}.architecture` to be a torchvision model name or a mapping "
            f"with _target_, but got {arch!r}."
        )
    return arch


def _prefixed_architecture(where: str, arch: str, check_files: bool) -> str | None:
    """``timm:NAME`` or ``hub:DIR:ENTRY`` checked (None for any other string).
    A hub directory must be trusted on the command line; ``check_files`` off
    (a record read back) defers that check to loading."""
    from benchmark.models import (
        HUB_PREFIX,
        TIMM_PREFIX,
        check_hub_trusted,
        check_timm_name,
        split_hub,
    )

    if arch.startswith(TIMM_PREFIX):
        check_timm_name(where, arch)
        return arch
    if arch.startswith(HUB_PREFIX):
        if check_files:
            check_hub_trusted(where, arch)
        else:
            split_hub(where, arch)
        return arch
    return None


#: Why ``trust_checkpoint`` is not read from a config file or a record.
TRUST_FROM_FLAG = (
    "Refusing `{where}.trust_checkpoint`: trust in a checkpoint is not read from a config "
    "file or a record; pass it on the command line instead: "
    "rtb run --trust-checkpoint PATH ... (also rtb validate / rtb reproduce)."
)


def parse_model(key: str, d: Any, check_files: bool = True,
                allow_targets: tuple[str, ...] = ()) -> ModelSpec:
    """Validate one model version (``model.<key>``); ``check_files`` also
    requires its checkpoint to exist; ``allow_targets`` are the run's
    command-line module prefixes for architectures."""
    where = f"model.{key}"
    d = F.mapping(where, d)
    if "trust_checkpoint" in d:
        raise ConfigError(TRUST_FROM_FLAG.format(where=where))
    F.check_keys(where, d, MODEL_KEYS)
    if str(d.get("architecture") or "").startswith(PYTHON_ARCH):
        raise ConfigError(
            f"Expected `{where}` to name an architecture and checkpoint, but it records a "
            f"Python object passed to benchmark.evaluate ({d['architecture']}); a config or "
            "record cannot rebuild it: call evaluate with the module again."
        )
    fmt = F.choice(f"{where}.format", F.text(f"{where}.format", d.get("format", "state_dict")),
                   MODEL_FORMATS, "'state_dict' or 'torchscript'")
    # A TorchScript file holds its network: it needs no architecture.
    needed = ("name", "version", "checkpoint") if fmt == "torchscript" else (
        "name", "version", "architecture", "checkpoint")
    for required in needed:
        if d.get(required) in (None, ""):
            raise ConfigError(f"Missing `{where}.{required}`; every model version names it"
                              f"{' (unless format: torchscript)' if required == 'architecture' else ''}.")
    arch = (None if d.get("architecture") in (None, "") and fmt == "torchscript"
            else _architecture(where, d["architecture"], allow_targets, check_files))
    checkpoint = F.text(f"{where}.checkpoint", d["checkpoint"])
    if check_files:
        path = resolve_path(checkpoint)
        if not path.is_file():
            raise ConfigError(
                f"Checkpoint file for {where} not found: {str(path)!r} "
                f"(expected an existing {fmt} file)."
            )
    sha = d.get("sha256")
    if isinstance(sha, int) and not isinstance(sha, bool):
        raise ConfigError(
            f"Expected `{where}.sha256` to be 64 hex digits as a quoted string, but got the "
            f"number {sha} (an unquoted all-digit value is read as a number: quote it)."
        )
    if sha is not None:
        sha = F.text(f"{where}.sha256", sha).lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise F.fail(f"{where}.sha256", "64 hex digits", sha)
    shape = d.get("input_shape", [1, 28, 28])
    if not isinstance(shape, (list, tuple)) or len(shape) not in (1, 3):
        raise F.fail(f"{where}.input_shape", "[channels, height, width] (images) or "
                     "[features] (a feature table)", shape)
    shape_t = tuple(F.integer(f"{where}.input_shape[{i}]", s, minimum=1)
                    for i, s in enumerate(shape))
    mean = F.numbers(f"{where}.mean", d.get("mean", [0.0]), item=F.number)
    std = F.numbers(f"{where}.std", d.get("std", [1.0]), item=F.number)
    if any(s <= 0 for s in std):
        raise F.fail(f"{where}.std", "positive numbers", list(std))
    for what, v in (("mean", mean), ("std", std)):
        if len(v) not in (1, shape_t[0]):
            raise F.fail(f"{where}.{what}", f"1 or {shape_t[0]} values (one per channel)", list(v))
    return ModelSpec(
        key=key,
        name=F.text(f"{where}.name", d["name"]),
        version=str(d["version"]),
        architecture=arch,
        checkpoint=checkpoint,
        format=fmt,
        sha256=sha,
        mean=mean,
        std=std,
        num_classes=F.integer(f"{where}.num_classes", d.get("num_classes", 10), minimum=2),
        input_shape=shape_t,
        allow_targets=allow_targets,
    )
