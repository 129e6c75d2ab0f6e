"""Bad-input corpus: no config, record or checkpoint can run code (see ``badinput.py``).

Each security case plants a payload whose execution would create the
``{marker}`` file, in a different place a user's input can reach: nested
``_target_``s in every section, user config files that set ``hydra.*``, a
tampered record for ``rtb reproduce`` and a pickle payload in a checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from badinput import Case, World, cli, run_case, write_payload_pickle
from conftest import TINY_MODEL_YAML, train_tiny_mlp, write_tiny_conf

#: An override value that, built by Hydra's instantiate, creates the marker.
OPEN = "{{_target_:builtins.open,_args_:['{marker}',w]}}"
ALLOWED = "a _target_ is allowed only at model.*.architecture"


def _marker(tmp: Path) -> Path:
    return tmp / "MARKER_payload_ran"


def _open_payload(tmp: Path) -> dict:
    return {"_target_": "builtins.open", "_args_": [str(_marker(tmp)), "w"]}


def _conf(tmp: Path, world: World) -> Path:
    return write_tiny_conf(tmp / "conf", world.ckpt)


def _evil_model_yaml(tmp: Path, world: World) -> None:
    conf = _conf(tmp, world)
    (conf / "model" / "evil.yaml").write_text(
        TINY_MODEL_YAML.format(version="v1", features=64, classes=3, ckpt=world.ckpt, size=8)
        .replace("tiny_v1:", "evil:")
        .replace("    hidden: 16\n", "    hidden: 16\n    extra:\n      _target_: builtins.open\n"
                 f"      _args_: ['{_marker(tmp)}', w]\n"))


def _global_hydra(section: str):
    def setup(tmp: Path, world: World) -> None:
        conf = _conf(tmp, world)
        body = ("callbacks:\n    evil:\n      _target_: builtins.open\n"
                f"      _args_: ['{_marker(tmp)}', w]\n" if section == "callbacks" else
                "job_logging:\n    version: 1\n    handlers:\n      evil:\n"
                f"        (): builtins.open\n        file: '{_marker(tmp)}'\n        mode: w\n"
                "    root:\n      handlers: [evil]\n")
        (conf / "model" / "evil.yaml").write_text(
            f"# @package _global_\nhydra:\n  {body}")
    return setup


def _hydra_folder(tmp: Path, world: World) -> None:
    conf = _conf(tmp, world)
    (conf / "hydra" / "job_logging").mkdir(parents=True)
    (conf / "hydra" / "job_logging" / "evil.yaml").write_text(
        f"version: 1\nhandlers:\n  evil:\n    (): builtins.open\n    file: '{_marker(tmp)}'\n"
        "    mode: w\nroot:\n  handlers: [evil]\n")


def _allow_in_yaml(tmp: Path, world: World) -> None:
    conf = _conf(tmp, world)
    (conf / "model" / "evil.yaml").write_text(
        "# @package _global_\nallow_targets: [mypkg.nets]\nmodel:\n" + "".join(
            "  " + line + "\n" for line in TINY_MODEL_YAML.format(
                version="v1", features=64, classes=3, ckpt=world.ckpt, size=8)
            .replace("tiny_v1:", "evil:").replace("benchmark.nets.TinyMLP", "mypkg.nets.UserMLP")
            .splitlines()))


def _tampered_record(edit):
    def setup(tmp: Path, world: World) -> None:
        run = tmp / "run-copy"
        shutil.copytree(world.run_dir, run)
        path = run / "record.json"
        record = json.loads(path.read_text())
        edit(record, tmp)
        path.write_text(json.dumps(record))
    return setup


def _nested_in_record(record: dict, tmp: Path) -> None:
    record["config"]["model"]["tiny_v1"]["architecture"]["hidden"] = _open_payload(tmp)


def _trust_in_record(record: dict, tmp: Path) -> None:
    record["config"]["model"]["tiny_v1"]["trust_checkpoint"] = True


def _payload_ckpt(tmp: Path, world: World) -> None:
    write_payload_pickle(tmp / "evil.pt", _marker(tmp))


def _payload_in_record(record: dict, tmp: Path) -> None:
    from benchmark.models import sha256_file

    path = write_payload_pickle(tmp / "evil.pt", _marker(tmp))
    record["config"]["model"]["tiny_v1"]["checkpoint"] = str(path)
    record["models"]["tiny@v1"]["checkpoint"] = str(path)
    record["models"]["tiny@v1"]["sha256"] = sha256_file(path)


def _gate_rules(tmp: Path, world: World) -> None:
    (tmp / "rules.yaml").write_text(
        "candidates: [tiny@v1]\nrules:\n  - _target_: builtins.open\n"
        f"    _args_: ['{_marker(tmp)}', w]\n")


def _user_searchpath(tmp: Path, world: World) -> None:
    _conf(tmp, world)


SEARCHPATH = "hydra.searchpath=[file://{tmp}/conf]"
#: A working run from the case's own conf dir (Hydra keeps the first searchpath override).
RUN = ("run", SEARCHPATH, "data=npz", "data.root={npz}", "attack=[fgsm]", "batch_size=16",
       "store={store}")
VALIDATE = ("validate", "--only", "model", SEARCHPATH, "data=npz", "data.root={npz}",
            "model=[tiny_v1]", "model.tiny_v1.checkpoint={tmp}/evil.pt")

CASES = [
    Case("architecture nested target (override)", "policy",
         ("model.tiny_v1.architecture.hidden=" + OPEN,),
         f"Refusing `model.tiny_v1.architecture.hidden._target_` = 'builtins.open': {ALLOWED}",
         run_overrides=True, payload=True),
    Case("architecture nested target (yaml)", "policy", (*RUN, "model=[evil]"),
         "Refusing `model.evil.architecture.extra._target_` = 'builtins.open'",
         setup=_evil_model_yaml, payload=True),
    Case("attack kwargs nested target", "policy", ("+attack.fgsm.minimal=" + OPEN,),
         "Refusing `attack.fgsm.minimal._target_` = 'builtins.open'",
         run_overrides=True, payload=True),
    Case("nested attack map entry not an attack", "policy",
         ("attack=[fgsm,autoattack]", "attack.autoattack.attacks.square._target_=builtins.open"),
         "Refusing `attack.autoattack.attacks.square._target_` = 'builtins.open': expected an "
         "ART evasion attack class", run_overrides=True, payload=True),
    Case("data nested target", "policy", ("+data.options.x=" + OPEN,),
         "Refusing `data.options.x._target_` = 'builtins.open'", run_overrides=True,
         payload=True),
    Case("groups nested target", "policy", ("+groups.features.evil=" + OPEN,),
         "Refusing `groups.features.evil._target_` = 'builtins.open'", run_overrides=True,
         payload=True),
    Case("prefix is not a policy: torchvision.io", "policy",
         ("model.tiny_v1.architecture._target_=torchvision.io.write_file",),
         "expected an nn.Module class or torchvision model builder", run_overrides=True),
    Case("prefix is not a policy: __builtins__", "policy",
         ("attack.fgsm._target_=art.attacks.evasion.__builtins__",),
         "Refusing `attack.fgsm._target_` = 'art.attacks.evasion.__builtins__'",
         run_overrides=True),
    Case("user class without allow_targets", "policy",
         ("model.tiny_v1.architecture._target_=mypkg.nets.UserMLP",),
         "expected an nn.Module class or torchvision model builder under benchmark.nets",
         run_overrides=True),
    # rtb's own config.yaml composes last (_self_), so a group file's allow_targets
    # never wins; the class it wanted to admit is refused.
    Case("allow_targets in a model yaml", "policy", (*RUN, "model=[evil]"),
         "Refusing `model.evil.architecture._target_` = 'mypkg.nets.UserMLP'",
         setup=_allow_in_yaml),
    Case("gate rules with a _target_", "policy",
         ("gate", "--rules", "{tmp}/rules.yaml", "--store", "{store}"), "rules",
         setup=_gate_rules, payload=True),
    Case("hydra.callbacks from a user yaml", "policy", (SEARCHPATH,),
         "Refusing config file", run_overrides=True, setup=_global_hydra("callbacks"),
         payload=True),
    Case("hydra.job_logging from a user yaml", "policy", (SEARCHPATH,),
         "it sets `hydra` (package _global_)", run_overrides=True,
         setup=_global_hydra("job_logging"), payload=True),
    Case("hydra/ folder in a user search path", "policy",
         (SEARCHPATH, "hydra/job_logging=evil"), "under a hydra/ folder", run_overrides=True,
         setup=_hydra_folder, payload=True),
    Case("hydra/ folder in a --config-dir", "policy", ("-cd", "{tmp}/conf"),
         "under a hydra/ folder", run_overrides=True, setup=_hydra_folder, payload=True),
    Case("search path that does not exist", "compose",
         ("hydra.searchpath=[file://{tmp}/nope]",),
         "Expected `hydra.searchpath` entry", run_overrides=True),
    Case("key typo names the path and nearest keys", "compose",
         ("model.tiny_v1.versoin=v3",),
         "Unknown config key `model.tiny_v1.versoin` in the overrides; expected a key of the "
         "composed config (see `rtb run --cfg job`), or +KEY=VALUE to add one. Did you mean: "
         "model.tiny_v1.version?", run_overrides=True),
    Case("trust_checkpoint in a model yaml", "trust", ("+model.tiny_v1.trust_checkpoint=true",),
         "Refusing `model.tiny_v1.trust_checkpoint`: trust in a checkpoint is not read from "
         "a config file or a record; pass it on the command line instead: rtb run "
         "--trust-checkpoint PATH", run_overrides=True),
    Case("reproduce: tampered record with a nested target", "policy",
         ("reproduce", "{tmp}/run-copy", "--store", "{store}", "--out", "{tmp}/out"),
         "Refusing `model.tiny_v1.architecture.hidden._target_` = 'builtins.open'",
         setup=_tampered_record(_nested_in_record), payload=True),
    Case("reproduce: record that trusts its checkpoint", "trust",
         ("reproduce", "{tmp}/run-copy", "--store", "{store}", "--out", "{tmp}/out"),
         "Refusing `model.tiny_v1.trust_checkpoint`", setup=_tampered_record(_trust_in_record)),
    Case("reproduce: pickle payload checkpoint", "trust",
         ("reproduce", "{tmp}/run-copy", "--store", "{store}", "--out", "{tmp}/out"),
         "needs full unpickling, which can run arbitrary code; refusing. If you trust this "
         "file, pass it on the command line: rtb run --trust-checkpoint",
         setup=_tampered_record(_payload_in_record), payload=True),
    Case("run: pickle payload checkpoint", "trust",
         ("model.tiny_v1.checkpoint={tmp}/evil.pt",), "needs full unpickling",
         run_overrides=True, setup=_payload_ckpt, payload=True),
    Case("validate: pickle payload checkpoint", "trust", VALIDATE, "needs full unpickling",
         setup=lambda tmp, world: (_user_searchpath(tmp, world), _payload_ckpt(tmp, world)),
         payload=True),
    Case("trust flag without a file", "trust", ("--trust-checkpoint", "{tmp}/nope.pt"),
         "Expected `--trust-checkpoint` to name an existing checkpoint file",
         run_overrides=True),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.klass}:{c.name}")
def test_bad_input(case: Case, world: World, tmp_path: Path) -> None:
    run_case(case, world, tmp_path)


def test_trust_checkpoint_flag_loads_a_full_pickle(world: World, tmp_path: Path) -> None:
    from benchmark.models import sha256_file

    path = tmp_path / "full.pt"
    torch.save(train_tiny_mlp(), path)  # the whole module: needs full unpickling
    args = ["run", *world.overrides, f"store={tmp_path / 's.sqlite'}",
            f"hydra.run.dir={tmp_path / 'run'}", f"model.tiny_v1.checkpoint={path}",
            "validation=off", "groups=none"]
    refused = cli(args, cwd=tmp_path)
    assert refused.returncode == 2 and "--trust-checkpoint" in refused.stderr, refused.stderr
    proc = cli([args[0], "--trust-checkpoint", str(path), *args[1:]], cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-2000:]
    assert f"trusting checkpoint {path} (sha256 {sha256_file(path)})" in out


def test_allow_targets_on_the_command_line_admits_a_user_class(world: World,
                                                               tmp_path: Path) -> None:
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(
        "from benchmark.nets import TinyMLP\n\n\nclass UserMLP(TinyMLP):\n    pass\n")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    args = ["run", *world.overrides, f"store={tmp_path / 's.sqlite'}",
            f"hydra.run.dir={tmp_path / 'run'}", "validation=off", "groups=none",
            "model.tiny_v1.architecture._target_=mypkg.nets.UserMLP"]
    refused = cli(args, cwd=tmp_path, env=env)
    assert refused.returncode == 2 and "Refusing" in refused.stderr, refused.stderr
    proc = cli([*args, "allow_targets=[mypkg.nets]"], cwd=tmp_path, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-2000:]
    assert "tiny@v1" in proc.stdout


def test_allow_targets_set_by_a_config_file_is_refused() -> None:
    from benchmark.core.errors import ConfigError
    from benchmark.policy import check_allow_targets_source

    check_allow_targets_source({"allow_targets": []}, [])
    with pytest.raises(ConfigError, match=r"Refusing `allow_targets` = \['os'\] from a config "
                       r"file: it is honoured only on the command line"):
        check_allow_targets_source({"allow_targets": ["os"]}, ["model=[x]"])
