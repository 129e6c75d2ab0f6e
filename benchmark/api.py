"""The Python API: ``evaluate`` a model from a notebook or a training script.

``evaluate`` composes the same Hydra config as ``rtb run`` (``compose_spec``,
with the same target policy), adds what Python can give and a config file
cannot (an ``nn.Module``, tensors, an ``EvalSet``), and calls the same
``run_benchmark``; the run directory it writes is the one ``rtb run`` writes,
so ``rtb report``, ``rtb compare`` and ``rtb export`` read it as well.

An ``nn.Module`` passed here is the caller's own code (trusted by
construction); a version name or a config dict goes through the target
policy like any config file.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import pandas as pd

from benchmark.core.errors import ConfigError
from benchmark.core.types import EvalSet, Measurement
from benchmark.schema.models import PYTHON_ARCH, PYTHON_DATA

if TYPE_CHECKING:
    import torch
    from torch import nn

    from benchmark.compare import Comparison
    from benchmark.record import RunRecord
    from benchmark.runner import RunResult

#: A model argument: a module, a version name (``mnist_cnn@v2``) or a config
#: option (``mnist_cnn_v2``).
ModelArg = Union["nn.Module", str]  # noqa: UP007 (a forward reference: torch loads lazily)
#: Threat and group arguments: option names, or config dicts as in the YAML.
SectionArg = str | Sequence[str | Mapping[str, Any]] | Mapping[str, Any] | None



def _is_module(obj: Any) -> bool:
    from torch import nn

    return isinstance(obj, nn.Module)


def _version_options() -> dict[str, str]:
    """``name@version`` -> config option, for every ``conf/model`` option."""
    from benchmark.compose import group_options, read_option

    out: dict[str, str] = {}
    for option in group_options("model"):
        for _, entry in read_option("model", option).items():
            if isinstance(entry, Mapping) and "name" in entry and "version" in entry:
                out[f"{entry['name']}@{entry['version']}"] = option
    return out


def _model_option(ref: str) -> str:
    from benchmark.compose import group_options

    if ref in group_options("model"):
        return ref
    versions = _version_options()
    if ref in versions:
        return versions[ref]
    raise ConfigError(f"Unknown model version {ref!r}; expected an nn.Module, NAME@VERSION or a "
                      f"model option: {', '.join(sorted(versions))} (see `rtb list`).")


def _models_list(model: Any) -> list[tuple[str | None, Any]]:
    """(explicit name@version or None, module-or-ref) for each model given."""
    if isinstance(model, Mapping):
        return [(str(k), v) for k, v in model.items()]
    if isinstance(model, (str, bytes)) or _is_module(model):
        return [(None, model)]
    if isinstance(model, Sequence):
        return [(None, m) for m in model]
    raise ConfigError(f"Expected `model` to be an nn.Module, a version name or a list of them, "
                      f"but got {type(model).__name__}.")


def _names(items: Any, what: str) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Option names and inline config dicts of one section argument."""
    if items is None:
        return [], {}
    if isinstance(items, str):
        return [items], {}
    if isinstance(items, Mapping):
        items = [items]
    names: list[str] = []
    dicts: dict[str, dict[str, Any]] = {}
    for item in items:
        if isinstance(item, str):
            names.append(item)
        elif isinstance(item, Mapping):
            for k, v in item.items():
                if not isinstance(v, Mapping):
                    raise ConfigError(f"Expected `{what}` entries as NAME or {{NAME: config}}, "
                                      f"but got {k!r}: {v!r}.")
                dicts[str(k)] = dict(v)
        else:
            raise ConfigError(f"Expected `{what}` entries as names or config dicts, but got "
                              f"{type(item).__name__}.")
    return names, dicts


def _suite(value: Any, what: str) -> tuple[list[str], dict[str, Any] | None]:
    """A corruption/fault/groups argument as (overrides, inline section):
    an option name, a config dict, or off (an empty dict: the section is null)."""
    if value is None:
        return [], None
    if value is False:  # off: the section is emptied after composing
        return [], {}
    if isinstance(value, str):
        return [f"{what}={value}"], None
    if isinstance(value, Mapping):
        return [], dict(value)
    raise ConfigError(f"Expected `{what}` to be an option name, a config dict or None, but got "
                      f"{type(value).__name__}.")


def _merge(base: Any, extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base) if isinstance(base, Mapping) else {}
    for k, v in extra.items():
        out[k] = _merge(out.get(k), v) if isinstance(v, Mapping) and isinstance(
            out.get(k), Mapping) else v
    return out


def tensors_evalset(x: torch.Tensor, y: torch.Tensor, *, name: str = "tensors",
                    classes: Sequence[str] | None = None,
                    groups: pd.DataFrame | None = None) -> EvalSet:
    """An ``EvalSet`` from image tensors (N,C,H,W in [0,1]) and int labels."""
    import torch

    xt = torch.as_tensor(x).detach().to("cpu", torch.float32).contiguous()
    yt = torch.as_tensor(y).detach().to("cpu", torch.int64).reshape(-1).contiguous()
    if xt.ndim == 3:
        xt = xt[:, None]
    if xt.ndim != 4 or len(xt) != len(yt) or not len(yt):
        raise ConfigError(f"Expected `data` tensors x as N x C x H x W and y as N labels, but got "
                          f"x {tuple(xt.shape)} and y {tuple(yt.shape)}.")
    if float(xt.min()) < 0.0 or float(xt.max()) > 1.0:
        raise ConfigError(f"Expected `data` x in [0, 1], but got values in "
                          f"[{float(xt.min()):g}, {float(xt.max()):g}].")
    names = list(classes) if classes is not None else [str(i) for i in range(int(yt.max()) + 1)]
    frame = groups.reset_index(drop=True) if groups is not None else pd.DataFrame()
    return EvalSet(name=name, x=xt, y=yt, classes=[str(c) for c in names], groups=frame)


def _evalset_arg(data: Any) -> EvalSet | None:
    if isinstance(data, EvalSet):
        return data
    if isinstance(data, tuple) and len(data) == 2:
        return tensors_evalset(*data)
    return None


def _safe_key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def _default_out_dir(name: str) -> Path:
    now = datetime.now()
    return Path("outputs") / now.strftime("%Y-%m-%d") / (
        f"{now.strftime('%H-%M-%S')}-{name}-api-{uuid.uuid4().hex[:6]}")


def evaluate(
    model: ModelArg | Sequence[ModelArg] | Mapping[str, ModelArg],
    data: str | EvalSet | tuple[torch.Tensor, torch.Tensor] = "mnist5k",
    *,
    attacks: SectionArg = None,
    corruptions: str | Mapping[str, Any] | bool | None = None,
    faults: str | Mapping[str, Any] | bool | None = None,
    groups: str | Mapping[str, Any] | bool | None = None,
    validation: str | None = None,
    n_samples: int | None = None,
    seed: int | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    name: str = "api",
    overrides: Sequence[str] = (),
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (1.0,),
    out_dir: str | Path | None = None,
    store: str | Path | None = None,
    progress: bool = True,
) -> Evaluation:
    """Evaluate model versions under attacks, corruptions and faults, with
    group metrics and checks: the same run as ``rtb run`` with the same config.

    ``model``: an ``nn.Module`` (taking inputs in [0, 1] after ``mean``/``std``,
    which are folded in), a version name (``"mnist_cnn@v2"``) or config option
    (``"mnist_cnn_v2"``), a list of these, or ``{"name@version": module}``.
    ``data``: a dataset option (``"mnist5k"``), an ``EvalSet``, or ``(x, y)``
    tensors. ``attacks``: option names (``["fgsm", "pgd_linf"]``) and/or
    ``{name: config}`` dicts as in ``conf/attack/*.yaml`` (a dict for a known
    option is merged over it: ``{"fgsm": {"eps": [0.1]}}``); None keeps the
    default, ``[]`` runs none. ``corruptions``, ``faults``, ``groups``: an
    option name, a config dict (the YAML's schema), False for off, None for the
    default. ``overrides`` are any further ``key=value`` as on the command line.
    The run directory (``out_dir``; default ``outputs/DATE/TIME-NAME-api-*``)
    holds the same files ``rtb run`` writes; ``store`` also saves the run there
    (none by default: see ``Evaluation.save``).
    """
    from benchmark.compose import compose_spec
    from benchmark.models import module_under_test, resolve_device
    from benchmark.runner import run_benchmark
    from benchmark.schema import parse_run

    evalset = _evalset_arg(data)
    ov: list[str] = [f"name={name}"]
    if evalset is None:
        if not isinstance(data, str):
            raise ConfigError(f"Expected `data` to be a dataset name, an EvalSet or (x, y) "
                              f"tensors, but got {type(data).__name__}.")
        ov.append(f"data={data}")
        if n_samples is not None:
            ov.append(f"data.n_samples={n_samples}")
    elif n_samples is not None:
        raise ConfigError("Expected `n_samples` only with a dataset name; select the samples of "
                          "an EvalSet or tensors yourself.")
    entries = _models_list(model)
    options = [_model_option(m) for _, m in entries if isinstance(m, str)]
    if options:  # with modules only, the default versions are composed and then replaced
        ov.append(f"model=[{','.join(options)}]")
    attack_names, attack_dicts = _names(attacks, "attacks")
    if attacks is not None:
        from benchmark.compose import group_options

        known = [a for a in attack_dicts if a in group_options("attack")]
        ov.append(f"attack=[{','.join(dict.fromkeys([*attack_names, *known]))}]")
    sections: dict[str, dict[str, Any] | None] = {}
    for key, value in (("corruption", corruptions), ("fault", faults), ("groups", groups)):
        more, inline = _suite(value, key)
        ov += more
        sections[key] = inline
    if validation is not None:
        ov.append(f"validation={validation}")
    for key, v in (("seed", seed), ("device", device), ("batch_size", batch_size)):
        if v is not None:
            ov.append(f"{key}={v}")
    ov.append(f"store={store}" if store is not None else "store=null")
    ov += list(overrides)

    # The command line's own composition, policy checks and validation.
    spec, resolved = compose_spec(ov)
    resolved = dict(resolved)
    if attack_dicts:
        resolved["attack"] = {
            **(resolved.get("attack") or {}),
            **{k: _merge((resolved.get("attack") or {}).get(k), v) for k, v in attack_dicts.items()},
        }
    for key, inline in sections.items():
        if inline is not None:
            resolved[key] = inline or None

    # Python-side modules: described in the config, prepared here.
    device_t = resolve_device(str(resolved.get("device", "auto")))
    sample_shape = evalset.sample_shape if evalset is not None else None
    model_cfg: dict[str, Any] = {}
    prebuilt_specs: dict[str, Any] = {}
    prebuilt: dict[str, Any] = {}
    named = iter(resolved.get("model") or {})
    named_cfg = dict(resolved.get("model") or {}) if options else {}
    used: set[str] = set()
    for i, (ref, m) in enumerate(entries):
        if isinstance(m, str):
            key = next(named)
            model_cfg[key] = named_cfg[key]
            continue
        if not _is_module(m):
            raise ConfigError(f"Expected each model to be an nn.Module or a version name, but "
                              f"got {type(m).__name__}.")
        mname, _, mversion = (ref or "").rpartition("@")
        if not mname:
            mname = _safe_key(type(m).__name__.lower())
            mversion = f"v{i + 1}" if len(entries) > 1 else "v1"
        key = _safe_key(f"{mname}_{mversion}")
        while key in used or key in named_cfg:
            key += "_"
        used.add(key)
        shape = sample_shape or _shape_of(spec)
        num_classes = len(evalset.classes) if evalset is not None else _classes_of(spec)
        mut = module_under_test(m, name=mname, version=mversion, num_classes=num_classes,
                                input_shape=shape, device=device_t, mean=tuple(mean),
                                std=tuple(std))
        cls = type(m)
        model_cfg[key] = {"name": mname, "version": mversion,
                          "architecture": f"{PYTHON_ARCH}{cls.__module__}.{cls.__qualname__}",
                          "checkpoint": None, "format": "module", "sha256": mut.sha256,
                          "mean": list(mean), "std": list(std), "num_classes": num_classes,
                          "input_shape": list(shape)}
        prebuilt_specs[key] = _module_spec(key, mut, tuple(mean), tuple(std))
        prebuilt[key] = mut
    resolved["model"] = model_cfg
    spec = parse_run(resolved, prebuilt=prebuilt_specs)
    if evalset is not None:  # the record says what was evaluated (the key holds its fingerprint)
        resolved["data"] = {"name": evalset.name, "loader": PYTHON_DATA, "n": len(evalset),
                            "fingerprint": evalset.fingerprint}

    out = Path(out_dir) if out_dir is not None else _default_out_dir(spec.name)
    models = None
    if prebuilt:
        from benchmark.models import load_model

        models = [prebuilt[k] if k in prebuilt else load_model(ms, device_t)
                  for k, ms in spec.models.items()]
    result = run_benchmark(spec, out, resolved_config=resolved, overrides=ov,
                           progress=progress, data=evalset, models=models)
    return Evaluation(result)


def _shape_of(spec: Any) -> tuple[int, ...]:
    from benchmark.data import load_evalset

    return load_evalset(spec.data).sample_shape


def _classes_of(spec: Any) -> int:
    from benchmark.data import load_evalset

    return load_evalset(spec.data).num_classes


def _module_spec(key: str, mut: Any, mean: tuple[float, ...], std: tuple[float, ...]) -> Any:
    from benchmark.core.specs import ModelSpec

    shape = tuple(mut.input_shape)
    return ModelSpec(key=key, name=mut.name, version=mut.version, architecture=None,
                     checkpoint="", format="module", sha256=mut.sha256, mean=mean, std=std,
                     num_classes=mut.num_classes,
                     input_shape=(shape + (1, 1, 1))[:3] if len(shape) < 3 else shape[:3])


@dataclass
class Evaluation:
    """One run's results, as ``evaluate`` returns them."""

    result: RunResult

    @property
    def record(self) -> RunRecord:
        return self.result.record

    @property
    def run_id(self) -> str:
        return self.result.record.run_id

    @property
    def out_dir(self) -> Path:
        return self.result.out_dir

    @property
    def measurements(self) -> list[Measurement]:
        return self.result.measurements

    def table(self, metric: str = "accuracy") -> str:
        """The console's accuracy table (versions side by side), as text."""
        from benchmark.console import accuracy_table, corruption_table

        parts = [accuracy_table(self.measurements, metric)]
        if corruption := corruption_table(self.measurements):
            parts.append(corruption)
        return "\n\n".join(parts)

    def to_pandas(self) -> pd.DataFrame:
        """Tidy measurements: one row per (version, threat, group, metric)."""
        rows = [{**m.as_dict(), "run": self.run_id} for m in self.measurements]
        return pd.DataFrame(rows)

    def outcomes(self) -> pd.DataFrame:
        """Per-sample outcomes (``outcomes.parquet`` of the run directory)."""
        from benchmark.rundir import read_outcomes

        return read_outcomes(self.out_dir)

    def save(self, store: str | Path | None = None) -> str:
        """Save the run into the results store (``store``, ``$RTB_STORE`` or
        ``rtb.sqlite``); returns the run id."""
        from benchmark.store import save_run_dir

        return save_run_dir(store, self.out_dir)

    def compare(self, other: Evaluation | None = None, *, alpha: float = 0.05,
                versions: Sequence[str] | None = None) -> Comparison:
        """Paired comparison of the versions of this run (and ``other``'s),
        as ``rtb compare`` computes it; the first version is the baseline."""
        import tempfile

        from benchmark.compare import compare, select_sides
        from benchmark.store import open_store, save_run_dir

        runs = [self] + ([other] if other is not None else [])
        with tempfile.TemporaryDirectory(prefix="rtb-compare-") as tmp:
            path = Path(tmp) / "compare.sqlite"
            for r in runs:
                save_run_dir(path, r.out_dir)
            refs = list(versions) if versions else list(dict.fromkeys(
                k for r in runs for k in r.record.models))
            with open_store(path, readonly=True) as s:
                sides = select_sides(s, refs, runs=[r.run_id for r in runs])
                return compare(s, sides, alpha=alpha)

    def report(self, path: str | Path, fmt: str | None = None) -> Path:
        """Write the HTML (or Markdown, by suffix or ``fmt``) report of this run."""
        from benchmark.report_html import build_report, report_format, write_report
        from benchmark.rundir import load_run_dir

        p = Path(path)
        kind = report_format(str(p), fmt)
        write_report(build_report([load_run_dir(self.out_dir)]), p, kind)
        return p


__all__ = ["Evaluation", "evaluate", "tensors_evalset"]
