"""Shipped attack configs through ``rtb run`` on a tiny model."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_overrides
from omegaconf import OmegaConf

from benchmark.compose import group_options

#: Overrides that keep every shipped attack tiny on the CLI.
TINY = [
    "attack.pgd_linf.max_iter=3", "attack.pgd_l2.max_iter=3",
    "attack.apgd_ce.max_iter=3", "attack.apgd_dlr.max_iter=3",
    "attack.autoattack.attacks.apgd_ce.max_iter=3",
    "attack.autoattack.attacks.apgd_dlr.max_iter=3",
    "attack.autoattack.attacks.square.max_iter=10",
    "attack.autoattack_standard.n_target_classes=2",
    "attack.autoattack_standard.attacks.apgd_ce.max_iter=3",
    "attack.autoattack_standard.attacks.apgd_t.max_iter=3",
    "attack.autoattack_standard.attacks.fab_t.max_iter=3",
    "attack.autoattack_standard.attacks.square.max_iter=10",
    "attack.ensemble_linf.members.apgd_ce.max_iter=3",
    "attack.ensemble_linf.members.apgd_dlr.max_iter=3",
    "attack.ensemble_linf.members.square.max_iter=10",
    "attack.carlini_l2.max_iter=3", "attack.carlini_l2.binary_search_steps=1",
    "attack.deepfool.max_iter=5", "attack.square.max_iter=10",
    "attack.hopskipjump.max_iter=2", "attack.hopskipjump.max_eval=20",
    "attack.hopskipjump.init_eval=5", "attack.hopskipjump.init_size=5",
    "attack.boundary.max_iter=3", "attack.boundary.num_trial=3",
    "attack.boundary.sample_size=3", "attack.boundary.init_size=5",
    "attack.simba.max_iter=20",
]


def _base(tiny_files: tuple[Path, Path]) -> list[str]:
    ckpt, npz = tiny_files
    keep = [o for o in tiny_overrides(ckpt, npz) if not o.startswith("attack")]
    return keep + ["reliability.n_samples=3", "store=null", "data.n_samples=6"]


def _record(cwd: Path) -> dict[str, Any]:
    (path,) = list(cwd.glob("outputs/*/*/record.json"))
    return json.loads(path.read_text())


def test_two_attacks_through_the_cli(run_cli: Any, tiny_files: tuple[Path, Path],
                                     tmp_path: Path) -> None:
    proc = run_cli("run", *_base(tiny_files), "attack=[fgsm,deepfool]",
                   "attack.deepfool.max_iter=5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "deepfool eps=" in proc.stdout and "fgsm eps=" in proc.stdout
    rec = _record(tmp_path)
    threats = {m["threat"] for m in rec["measurements"]}
    assert {"fgsm", "deepfool"} <= threats
    assert any(c["check"] == "unbounded_budget" for c in rec["checks"])


def test_bad_attack_setting_is_one_line(run_cli: Any, tiny_files: tuple[Path, Path]) -> None:
    proc = run_cli("run", *_base(tiny_files), "attack=[fgsm]", "+attack.fgsm.max_iterations=3")
    assert proc.returncode == 2
    assert "max_iterations" in proc.stderr and "Traceback" not in proc.stderr


def _table_attacks() -> set[str]:
    """Shipped attacks with budgets in a table's standard deviations (units: std)."""
    conf = resources.files("conf") / "attack"
    return {name for name in group_options("attack")
            if OmegaConf.create((conf / f"{name}.yaml").read_text())[name].get("units") == "std"}


def test_feature_table_attack_on_images_is_one_line(run_cli: Any,
                                                    tiny_files: tuple[Path, Path]) -> None:
    assert {"lowprofool", "tab_pgd"} <= _table_attacks()
    proc = run_cli("run", *_base(tiny_files), "attack=[fgsm,lowprofool]")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "`attack.lowprofool`" in proc.stderr and "units: std" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_every_shipped_attack_through_the_cli(run_cli: Any, tiny_files: tuple[Path, Path],
                                              tmp_path: Path) -> None:
    """Every shipped image attack (the feature-table ones run in the tabular tests)."""
    attacks = [a for a in group_options("attack") if a not in _table_attacks()]
    proc = run_cli("run", *_base(tiny_files), f"attack=[{','.join(attacks)}]", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    threats = {m["threat"] for m in _record(tmp_path)["measurements"]}
    assert set(attacks) <= threats


def test_budgets_as_fractions_through_the_cli(run_cli: Any, tiny_files: tuple[Path, Path],
                                              tmp_path: Path) -> None:
    """`attack.pgd_linf.eps=[2/255,8/255]`: Hydra hands the budgets over as
    strings; they run as floats and print as written."""
    proc = run_cli("run", *_base(tiny_files), "attack=[pgd_linf]", "attack.pgd_linf.max_iter=2",
                   "attack.pgd_linf.eps=[2/255,8/255]", "reliability.enabled=false")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "eps=2/255" in proc.stdout and "eps=8/255" in proc.stdout
    params = {m["param"] for m in _record(tmp_path)["measurements"] if m["threat"] == "pgd_linf"}
    assert params == {2 / 255, 8 / 255}


def test_fraction_budgets_parse_and_bad_ones_name_the_entry() -> None:
    from benchmark.core.errors import ConfigError
    from benchmark.schema import parse_attack

    spec = parse_attack("p", {"_target_": "art.attacks.evasion.FastGradientMethod",
                              "eps": ["8/255", "2/255", 0.1]}, (1, 8, 8))
    assert spec.eps == (2 / 255, 8 / 255, 0.1)
    assert parse_attack("p", {"_target_": "art.attacks.evasion.FastGradientMethod",
                              "eps": "8/255"}, (1, 8, 8)).eps == (8 / 255,)
    with pytest.raises(ConfigError, match=r"attack\.p\.eps\[1\]"):
        parse_attack("p", {"_target_": "art.attacks.evasion.FastGradientMethod",
                           "eps": [0.1, "1/x"]}, (1, 8, 8))
