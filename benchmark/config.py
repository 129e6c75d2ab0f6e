"""The structured schema of a run: the composed Hydra config is turned into
typed, frozen dataclasses here, before any work starts.

Every problem raises ``ConfigError`` with one line: where, what was expected,
what arrived. Library code receives these dataclasses, never a DictConfig.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.core.errors import ConfigError
from benchmark.data import DataSpec, list_loaders

#: Prefixes a ``_target_`` may start with: a config file is not a way to run
#: arbitrary code.
ALLOWED_TARGET_PREFIXES: tuple[str, ...] = (
    "art.",
    "torchvision.",
    "torch.nn.",
    "benchmark.",
    "attacks.",
    "metrics.",
)

#: Keys of an attack config that rtb reads itself; every other key goes to ART.
ATTACK_RTB_KEYS: tuple[str, ...] = ("eps", "eps_step_ratio", "threat_norm", "minimum_norm",
                                    "target", "budget_arg", "output", "members")

#: Target-selection rules of a targeted attack (``targeted: true``).
TARGET_RULES: tuple[str, ...] = ("random", "least_likely", "next")

NORMS: dict[str, float] = {"inf": math.inf, "2": 2.0, "1": 1.0}

TOP_LEVEL_KEYS: tuple[str, ...] = (
    "name",
    "seed",
    "device",
    "batch_size",
    "deterministic",
    "data",
    "model",
    "attack",
    "store",
)


@dataclass(frozen=True)
class ModelSpec:
    """Typed view of one model version in ``conf/model/``."""

    key: str
    name: str
    version: str
    architecture: str | dict[str, Any]
    checkpoint: str
    format: str = "state_dict"
    sha256: str | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    num_classes: int = 10
    input_shape: tuple[int, int, int] = (1, 28, 28)
    trust_checkpoint: bool = False

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class AttackSpec:
    """Typed view of one attack in ``conf/attack/``.

    ``kwargs`` go to the ART class named by ``target`` (with ``eps`` and
    ``eps_step`` filled in per budget); ``eps`` is the list of budgets.
    """

    name: str
    target: str
    kwargs: dict[str, Any]
    eps: tuple[float, ...]
    norm: float
    eps_step_ratio: float | None = None
    minimum_norm: bool = False
    #: ART argument that receives each budget (``eps``; e.g. ``max_rotation``
    #: for a spatial attack); None for minimum-norm attacks.
    budget_arg: str | None = "eps"
    #: Target-selection rule when ``kwargs["targeted"]`` is true.
    target_rule: str | None = None
    #: What the estimator returns: ``logits`` or ``probabilities`` (softmax
    #: appended, for attacks that require probabilities).
    output: str = "logits"
    #: An ensemble's attacks in order (empty for a single attack).
    members: tuple[AttackSpec, ...] = ()

    @property
    def targeted(self) -> bool:
        return bool(self.kwargs.get("targeted", False))

    @property
    def has_ball(self) -> bool:
        """Whether the budget is an Lp ball (``threat_norm: none`` has none)."""
        return not math.isnan(self.norm)


@dataclass(frozen=True)
class RunSpec:
    """A whole validated run."""

    data: DataSpec
    models: dict[str, ModelSpec]
    attacks: dict[str, AttackSpec]
    name: str = "default"
    seed: int = 0
    device: str = "auto"
    batch_size: int = 256
    deterministic: bool = True
    store: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def _fail(where: str, wanted: str, got: Any) -> ConfigError:
    return ConfigError(f"Expected `{where}` to be {wanted}, but got {got!r}.")


def _unknown_key(where: str, d: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(k for k in d if k not in allowed)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"Unknown config key `{prefix}{unknown[0]}`; expected one of: {', '.join(allowed)}."
        )


def _int(where: str, v: Any, minimum: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _fail(where, "an integer", v)
    if minimum is not None and v < minimum:
        raise _fail(where, f"an integer >= {minimum}", v)
    return v


def _float(where: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _fail(where, "a number", v)
    return float(v)


def _str(where: str, v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise _fail(where, "a non-empty string", v)
    return v


def _bool(where: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise _fail(where, "true or false", v)
    return v


def _mapping(where: str, v: Any) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise _fail(where, "a mapping", v)
    return v


def check_target(where: str, target: Any) -> str:
    """Accept a ``_target_`` only under the allowed prefixes and only if it imports."""
    if not isinstance(target, str) or not target:
        raise _fail(where, "a dotted class path", target)
    if not target.startswith(ALLOWED_TARGET_PREFIXES):
        raise ConfigError(
            f"Refusing `{where}` = {target!r}: a _target_ must start with one of "
            f"{', '.join(ALLOWED_TARGET_PREFIXES)}."
        )
    module_name, _, attr = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ConfigError(
            f"Expected `{where}` to name an importable class, but module {module_name!r} "
            "cannot be imported."
        ) from None
    if not hasattr(module, attr):
        raise ConfigError(
            f"Expected `{where}` to name an importable class, but {module_name!r} has no {attr!r}."
        )
    return target


def resolve_path(path: str) -> Path:
    """A user path, or ``pkg://package/relative`` for a file shipped inside a package."""
    if path.startswith("pkg://"):
        package, _, rel = path[len("pkg://") :].partition("/")
        from importlib.resources import files

        try:
            return Path(str(files(package).joinpath(rel)))
        except ModuleNotFoundError:
            raise ConfigError(f"Expected an installed package in {path!r}, but {package!r} is not one.") from None
    return Path(path).expanduser()


DATA_KEYS = ("name", "loader", "root", "split", "n_samples", "seed", "image_size", "channels",
             "options")


def parse_data(d: Any) -> DataSpec:
    d = _mapping("data", d)
    _unknown_key("data", d, DATA_KEYS)
    loader = _str("data.loader", d.get("loader", d.get("name")))
    if loader not in list_loaders():
        raise ConfigError(
            f"Unknown dataset loader {loader!r}; expected one of: {', '.join(list_loaders())}."
        )
    n = d.get("n_samples")
    if n is not None:
        _int("data.n_samples", n, minimum=1)
    root = d.get("root")
    if root is not None:
        root = _str("data.root", root)
    for key in ("image_size", "channels"):
        if d.get(key) is not None:
            _int(f"data.{key}", d[key], minimum=1)
    return DataSpec(
        name=_str("data.name", d.get("name", loader)),
        loader=loader,
        root=root,
        split=_str("data.split", d.get("split", "test")),
        n_samples=n,
        seed=_int("data.seed", d.get("seed", 0)),
        image_size=d.get("image_size"),
        channels=d.get("channels"),
        options=dict(_mapping("data.options", d.get("options") or {})),
    )


MODEL_KEYS = ("name", "version", "architecture", "checkpoint", "format", "sha256", "mean", "std",
              "num_classes", "input_shape", "trust_checkpoint")


def _floats(where: str, v: Any) -> tuple[float, ...]:
    if not isinstance(v, (list, tuple)) or not v:
        raise _fail(where, "a non-empty list of numbers", v)
    return tuple(_float(f"{where}[{i}]", x) for i, x in enumerate(v))


def parse_model(key: str, d: Any, check_files: bool = True) -> ModelSpec:
    where = f"model.{key}"
    d = _mapping(where, d)
    _unknown_key(where, d, MODEL_KEYS)
    for required in ("name", "version", "architecture", "checkpoint"):
        if d.get(required) in (None, ""):
            raise ConfigError(f"Missing `{where}.{required}`; every model version names it.")
    arch = d["architecture"]
    if isinstance(arch, Mapping):
        check_target(f"{where}.architecture._target_", arch.get("_target_"))
        arch = dict(arch)
    else:
        arch = _str(f"{where}.architecture", arch)
        import torchvision.models as tvm

        if arch not in tvm.list_models():
            raise ConfigError(
                f"Expected `{where}.architecture` to be a torchvision model name or a mapping "
                f"with _target_, but got {arch!r}."
            )
    fmt = _str(f"{where}.format", d.get("format", "state_dict"))
    if fmt not in ("state_dict", "torchscript"):
        raise _fail(f"{where}.format", "'state_dict' or 'torchscript'", fmt)
    checkpoint = _str(f"{where}.checkpoint", d["checkpoint"])
    if check_files:
        path = resolve_path(checkpoint)
        if not path.is_file():
            raise ConfigError(
                f"Checkpoint file for {where} not found: {str(path)!r} "
                f"(expected an existing {fmt} file)."
            )
    sha = d.get("sha256")
    if sha is not None:
        sha = _str(f"{where}.sha256", sha).lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise _fail(f"{where}.sha256", "64 hex digits", sha)
    shape = d.get("input_shape", [1, 28, 28])
    if not isinstance(shape, (list, tuple)) or len(shape) != 3:
        raise _fail(f"{where}.input_shape", "[channels, height, width]", shape)
    shape_t = tuple(_int(f"{where}.input_shape[{i}]", s, minimum=1) for i, s in enumerate(shape))
    mean = _floats(f"{where}.mean", d.get("mean", [0.0]))
    std = _floats(f"{where}.std", d.get("std", [1.0]))
    if any(s <= 0 for s in std):
        raise _fail(f"{where}.std", "positive numbers", list(std))
    for what, v in (("mean", mean), ("std", std)):
        if len(v) not in (1, shape_t[0]):
            raise _fail(f"{where}.{what}", f"1 or {shape_t[0]} values (one per channel)", list(v))
    return ModelSpec(
        key=key,
        name=_str(f"{where}.name", d["name"]),
        version=str(d["version"]),
        architecture=arch,
        checkpoint=checkpoint,
        format=fmt,
        sha256=sha,
        mean=mean,
        std=std,
        num_classes=_int(f"{where}.num_classes", d.get("num_classes", 10), minimum=2),
        input_shape=(shape_t[0], shape_t[1], shape_t[2]),
        trust_checkpoint=_bool(f"{where}.trust_checkpoint", d.get("trust_checkpoint", False)),
    )


def _norm(where: str, v: Any) -> float:
    """The Lp norm of a threat; NaN for ``none`` (no Lp ball: e.g. rotations)."""
    s = str(v).lower()
    if s == "none":
        return math.nan
    if s in ("inf", "np.inf", "infinity"):
        s = "inf"
    if s in ("2.0", "1.0"):
        s = s[0]
    if s not in NORMS:
        raise _fail(where, "one of inf, 2, 1, none", v)
    return NORMS[s]


def max_budget(norm: float, input_shape: tuple[int, int, int]) -> float:
    """The largest meaningful perturbation size in [0,1]^d under ``norm``."""
    d = input_shape[0] * input_shape[1] * input_shape[2]
    if math.isinf(norm):
        return 1.0
    return float(d) ** (1.0 / norm)


def parse_attack(name: str, d: Any, input_shape: tuple[int, int, int] | None) -> AttackSpec:
    where = f"attack.{name}"
    d = dict(_mapping(where, d))
    if "members" in d:
        return parse_ensemble(name, d, input_shape)
    target = check_target(f"{where}._target_", d.pop("_target_", None))
    if not target.startswith("art.attacks.evasion."):
        raise ConfigError(
            f"Expected `{where}._target_` to be an ART evasion attack (art.attacks.evasion.*), "
            f"but got {target!r}."
        )
    d.pop("_partial_", None)
    minimum_norm = _bool(f"{where}.minimum_norm", d.pop("minimum_norm", False))
    raw_eps = d.pop("eps", None)
    if raw_eps is None:
        raise ConfigError(f"Missing `{where}.eps`; expected a list of budgets such as [0.1, 0.3].")
    if isinstance(raw_eps, (int, float)) and not isinstance(raw_eps, bool):
        raw_eps = [raw_eps]
    if not isinstance(raw_eps, (list, tuple)) or not raw_eps:
        raise _fail(f"{where}.eps", "a non-empty list of budgets", raw_eps)
    norm_v = d.pop("threat_norm", d.get("norm", "inf"))
    norm = _norm(f"{where}.norm", norm_v)
    top = max_budget(norm, input_shape) if input_shape and not math.isnan(norm) else math.inf
    eps: list[float] = []
    for i, e in enumerate(raw_eps):
        e = _float(f"{where}.eps[{i}]", e)
        if e < 0:
            raise _fail(f"{where}.eps[{i}]", "a non-negative number", e)
        if e > top:
            raise ConfigError(
                f"Expected `{where}.eps[{i}]` to lie within the input range [0, 1] "
                f"(at most {top:g} under the L{'inf' if math.isinf(norm) else int(norm)} norm), "
                f"but got {e:g}."
            )
        eps.append(e)
    ratio = d.pop("eps_step_ratio", None)
    if ratio is not None:
        ratio = _float(f"{where}.eps_step_ratio", ratio)
        if ratio <= 0:
            raise _fail(f"{where}.eps_step_ratio", "a positive number", ratio)
    rule = d.pop("target", None)
    if rule is not None and rule not in TARGET_RULES:
        raise _fail(f"{where}.target", f"one of {', '.join(TARGET_RULES)}", rule)
    targeted = _bool(f"{where}.targeted", d.get("targeted", False))
    if targeted and rule is None:
        rule = "random"
    budget_arg = d.pop("budget_arg", "eps")
    budget_arg = None if minimum_norm else _str(f"{where}.budget_arg", budget_arg)
    output = d.pop("output", "logits")
    if output not in ("logits", "probabilities"):
        raise _fail(f"{where}.output", "logits or probabilities", output)
    for key, value in d.items():  # nested ART attacks (AutoAttack's `attacks`)
        if isinstance(value, Mapping) and all(isinstance(v, Mapping) for v in value.values()):
            for sub, sub_d in value.items():
                if isinstance(sub_d, Mapping) and "_target_" in sub_d:
                    check_target(f"{where}.{key}.{sub}._target_", sub_d["_target_"])
    return AttackSpec(
        name=name,
        target=target,
        kwargs=d,
        eps=tuple(sorted(set(eps))),
        norm=norm,
        eps_step_ratio=ratio,
        minimum_norm=minimum_norm,
        budget_arg=budget_arg,
        target_rule=rule,
        output=output,
    )


ENSEMBLE_KEYS = ("eps", "threat_norm", "members")


def parse_ensemble(name: str, d: Mapping[str, Any], input_shape: tuple[int, int, int] | None
                   ) -> AttackSpec:
    """An ensemble: several attacks at the same budgets; its own eps and
    norm replace the members'."""
    where = f"attack.{name}"
    _unknown_key(where, d, ENSEMBLE_KEYS)
    members_cfg = _mapping(f"{where}.members", d["members"])
    if not members_cfg:
        raise _fail(f"{where}.members", "a non-empty mapping of attacks", dict(members_cfg))
    head = {"eps": d.get("eps"), "threat_norm": d.get("threat_norm", "inf")}
    members = []
    for key, m in members_cfg.items():
        m = dict(_mapping(f"{where}.members.{key}", m))
        if "members" in m:
            raise _fail(f"{where}.members.{key}", "a single attack", "an ensemble")
        if m.get("minimum_norm"):
            raise _fail(f"{where}.members.{key}", "a budgeted attack", "a minimum-norm attack")
        m.update(head)
        if "norm" in m:  # the ART argument follows the ensemble's norm
            m["norm"] = head["threat_norm"]
        members.append(parse_attack(f"{name}.members.{key}", m, input_shape))
    first = members[0]
    return AttackSpec(name=name, target="ensemble", kwargs={}, eps=first.eps, norm=first.norm,
                      members=tuple(members))
