"""Model formats: TorchScript without an architecture, ``timm:NAME``,
``hub:LOCAL_DIR:ENTRYPOINT`` (trusted on the command line only), and an
``nn.Module`` from Python; each under the security policy."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import REPO, write_npz

from benchmark.core.errors import ConfigError
from benchmark.models import (
    TRUST_HUB_ENV,
    load_model,
    module_sha256,
    module_under_test,
    trust_hub_dirs,
)
from benchmark.nets import TinyMLP
from benchmark.schema.models import parse_model

CPU = torch.device("cpu")
X = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def tiny(seed: int = 0) -> TinyMLP:
    torch.manual_seed(seed)
    return TinyMLP(in_features=64, num_classes=3, hidden=8).eval()


def base_entry(ckpt: Path, **more: object) -> dict[str, object]:
    return {"name": "m", "version": "v1", "checkpoint": str(ckpt), "num_classes": 3,
            "input_shape": [1, 8, 8], **more}


def test_torchscript_needs_no_architecture(tmp_path: Path) -> None:
    net = tiny()
    path = tmp_path / "net.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(net), str(path))
    spec = parse_model("m_v1", base_entry(path, format="torchscript"))
    assert spec.architecture is None
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        mut = load_model(spec, CPU)
    assert not [w for w in seen if "torch.jit" in str(w.message)]
    with torch.no_grad():
        torch.testing.assert_close(mut.module(X), net(X))
    with pytest.raises(ConfigError, match="Missing `model.m_v1.architecture`.*unless format: "
                                          "torchscript"):
        parse_model("m_v1", base_entry(path))


def test_timm_architecture_by_name(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model("test_resnet", pretrained=False, num_classes=3, in_chans=1).eval()
    path = tmp_path / "timm.pt"
    torch.save(net.state_dict(), path)
    entry = base_entry(path, architecture="timm:test_resnet", input_shape=[1, 32, 32])
    mut = load_model(parse_model("m_v1", entry), CPU)
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(mut.module(x), net(x))
    with pytest.raises(ConfigError, match="timm architecture name"):
        parse_model("m_v1", {**entry, "architecture": "timm:no_such_net"})


def hub_dir(tmp_path: Path, marker: Path) -> Path:
    d = tmp_path / "hub"
    d.mkdir()
    (d / "hubconf.py").write_text(
        "dependencies = ['torch']\n"
        f"open({str(marker)!r}, 'w').close()  # proof that this file ran\n"
        "from benchmark.nets import TinyMLP\n"
        "def tiny():\n"
        "    return TinyMLP(in_features=64, num_classes=3, hidden=8)\n")
    return d


def test_hub_dir_is_refused_unless_trusted(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TRUST_HUB_ENV, "")  # restored after the test
    marker = tmp_path / "MARKER_hubconf_ran"
    d = hub_dir(tmp_path, marker)
    net = tiny(3)
    ckpt = tmp_path / "w.pt"
    torch.save(net.state_dict(), ckpt)
    entry = base_entry(ckpt, architecture=f"hub:{d}:tiny")
    with pytest.raises(ConfigError, match="--trust-hub"):
        parse_model("m_v1", entry)
    assert not marker.exists()
    with pytest.raises(ConfigError, match="hub:LOCAL_DIR:ENTRYPOINT"):
        parse_model("m_v1", {**entry, "architecture": f"hub:{d}"})
    with pytest.raises(ConfigError, match="holding hubconf.py"):
        trust_hub_dirs([str(tmp_path)])
    # loading re-checks trust: a spec read back from a record is no way around it
    spec = parse_model("m_v1", entry, check_files=False)
    with pytest.raises(ConfigError, match="--trust-hub"):
        load_model(spec, CPU)
    assert not marker.exists()

    trust_hub_dirs([str(d)])
    mut = load_model(parse_model("m_v1", entry), CPU)
    assert marker.exists()
    with torch.no_grad():
        torch.testing.assert_close(mut.module(X), net(X))


def hub_run(tmp_path: Path) -> tuple[list[str], dict[str, str], Path, Path]:
    """`rtb run` of a hub version without trust: exit 2, one line, hubconf.py never ran."""
    marker = tmp_path / "MARKER_hubconf_ran"
    d = hub_dir(tmp_path, marker)
    ckpt = tmp_path / "w.pt"
    torch.save(tiny().state_dict(), ckpt)
    conf = tmp_path / "conf" / "model"
    conf.mkdir(parents=True)
    (conf / "hubby_v1.yaml").write_text(
        f"hubby_v1:\n  name: hubby\n  version: v1\n  architecture: hub:{d}:tiny\n"
        f"  checkpoint: {ckpt}\n  num_classes: 3\n  input_shape: [1, 8, 8]\n")
    npz = write_npz(tmp_path / "d.npz")
    args = [sys.executable, "-m", "benchmark.cli", "run", f"hydra.searchpath=[file://{conf.parent}]",
            "data=npz", f"data.root={npz}", "model=[hubby_v1]", "attack=[fgsm]",
            "attack.fgsm.eps=[0.1]", "store=null", "reliability.enabled=false",
            f"hydra.run.dir={tmp_path / 'run'}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTB_TRUST")}
    env.update(PYTHONPATH=str(REPO), PYTHONHASHSEED="0")
    proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("rtb: error: Refusing"), lines
    assert "--trust-hub" in lines[0] and "Traceback" not in proc.stderr
    assert not marker.exists() and not (tmp_path / "run" / "record.json").exists()
    return args, env, d, marker


def test_cli_refuses_an_untrusted_hub_dir_in_one_line(tmp_path: Path) -> None:
    hub_run(tmp_path)


@pytest.mark.slow
def test_cli_runs_a_hub_dir_trusted_on_the_command_line(tmp_path: Path) -> None:
    args, env, d, marker = hub_run(tmp_path)
    proc = subprocess.run([*args[:4], "--trust-hub", str(d), *args[4:]], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert marker.exists() and (tmp_path / "run" / "record.json").exists()


def test_a_module_from_python_is_copied_not_changed() -> None:
    net = tiny()
    net.train()
    digest = module_sha256(net)
    mut = module_under_test(net, name="m", version="v1", num_classes=3, input_shape=(1, 8, 8),
                            device=CPU)
    assert net.training and all(p.requires_grad for p in net.parameters())
    assert not mut.module.training
    assert not any(p.requires_grad for p in mut.module.parameters())
    assert mut.sha256 == digest == module_sha256(tiny())
    assert module_sha256(tiny(1)) != digest
    with pytest.raises(ConfigError, match="Expected a torch.nn.Module"):
        module_under_test("not a module", name="m", version="v1",  # type: ignore[arg-type]
                          num_classes=3, input_shape=(1, 8, 8), device=CPU)
