"""Every option of every config group composes and validates, every attack
config builds its ART attack at each budget, and every launcher config
builds its Hydra launcher.

The options are listed from ``conf/`` itself: a new YAML is tested the day
it is added, with no edit here.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import pytest
from conftest import make_model
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.plugins.launcher import Launcher
from omegaconf import OmegaConf

from benchmark.compose import compose_spec, conf_dir, group_options

CONF = conf_dir()
#: Groups that select several options with a list (model=[a,b]).
LIST_GROUPS = ("model", "attack")
#: Groups whose options are not run configs (read by other commands).
OTHER_GROUPS = ("gate", "hydra", "monitor")
#: Launcher plugins that are optional extras, by the schema their YAML extends.
LAUNCHER_PLUGINS = {
    "joblib": "hydra_plugins.hydra_joblib_launcher",
    "submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
    "submitit_local": "hydra_plugins.hydra_submitit_launcher",
    "ray": "hydra_plugins.hydra_ray_launcher",
}


def _groups() -> list[str]:
    return sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in OTHER_GROUPS
                  and not p.name.startswith("_"))


def _options() -> list[tuple[str, str]]:
    pairs = [(g, o) for g in _groups() for o in group_options(g)]
    assert len(pairs) > 30, pairs  # the walk found the config tree
    return pairs


#: Groups that pin a whole combination and are appended (+experiment=NAME).
APPEND_GROUPS = ("experiment",)


def _override(group: str, option: str) -> str:
    if group in APPEND_GROUPS:
        return f"+{group}={option}"
    return f"{group}=[{option}]" if group in LIST_GROUPS else f"{group}={option}"


@pytest.mark.parametrize(("group", "option"), _options(), ids=lambda v: str(v))
def test_every_option_composes_and_validates(group: str, option: str) -> None:
    spec, resolved = compose_spec([_override(group, option)])
    section = {"model": spec.models, "attack": spec.attacks, "data": spec.data,
               "experiment": spec.models}.get(group)
    if section is None:
        section = getattr(spec, group)
    assert section is not None and section != {}, f"{group}={option} left its section empty"
    assert group in resolved or group in APPEND_GROUPS


@pytest.mark.parametrize("option", group_options("attack"))
def test_every_attack_config_builds_its_art_attack(option: str) -> None:
    from art.attacks.attack import EvasionAttack

    from attacks.art_adapter import ArtAdapter

    spec, _ = compose_spec([f"attack=[{option}]", "model=[mnist_cnn_v1]"])
    adapter = ArtAdapter(make_model(channels=1, size=28, classes=10), batch_size=8)
    (attack,) = spec.attacks.values()
    for member in attack.members or (attack,):
        for eps in member.eps if not member.minimum_norm else (None,):
            built = adapter.make_attack(member, eps)
            assert isinstance(built, EvasionAttack), type(built)


@pytest.mark.parametrize("option", group_options("gate"))
def test_every_gate_config_parses(option: str) -> None:
    from benchmark.gate import load_rules

    assert load_rules(option).rules


def _launcher_schema(option: str) -> str:
    text = (CONF / "hydra" / "launcher" / f"{option}.yaml").read_text()
    for schema in LAUNCHER_PLUGINS:
        if f"- {schema} " in text or f"- {schema}\n" in text:
            return schema
    return "basic"


@pytest.mark.parametrize("option", group_options("hydra/launcher"))
def test_every_launcher_config_builds_its_launcher(option: str, tmp_path: Path) -> None:
    plugin = LAUNCHER_PLUGINS.get(_launcher_schema(option))
    if plugin and importlib.util.find_spec(plugin) is None:
        pytest.skip(f"{plugin} is not installed (an optional extra)")
    import benchmark.sweep  # noqa: F401  (registers the resolvers the sweep dir uses)

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = hydra_compose(config_name="config", return_hydra_config=True,
                                overrides=[f"hydra/launcher={option}",
                                           f"hydra.sweep.dir={tmp_path}"])
        params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    finally:
        GlobalHydra.instance().clear()
    assert isinstance(params, dict)
    # Hydra refuses to build its own basic launcher from a config
    # (it exposes internal state), so the class is called directly, as
    # Hydra's plugin loader does.
    module, _, name = str(params.pop("_target_")).rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    launcher = cls(**params)
    assert isinstance(launcher, Launcher), type(launcher)
