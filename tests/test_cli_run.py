"""`rtb run` end to end on tiny inputs: records, determinism, public formats,
and every bad-input case of the config schema (one line, exit status 2)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_evalset, tiny_overrides

from benchmark.record import OUTCOMES_FILE, RECORD_FILE


def record_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob(RECORD_FILE))


def run_ok(run_cli, *args, cwd=None):
    res = run_cli("run", *args, cwd=cwd)
    assert res.returncode == 0, res.stderr[-2000:]
    return res


def test_tiny_run_writes_record_and_outcomes(run_cli, tiny_files, tmp_path):
    ckpt, npz = tiny_files
    res = run_ok(run_cli, *tiny_overrides(ckpt, npz, versions=("v1", "v2")),
                 "~corruption", "~fault")
    assert "tiny@v1" in res.stdout and "fgsm eps=0.3" in res.stdout
    (run_dir,) = record_dirs(tmp_path / "outputs")
    record = json.loads((run_dir / RECORD_FILE).read_text())
    for key in ("run_id", "started", "finished", "config", "overrides", "config_hash", "run_key",
                "models", "data", "packages", "git", "device", "seed", "measurements", "env"):
        assert key in record, key
    assert record["models"]["tiny@v1"]["sha256"] == __import__("hashlib").sha256(
        ckpt.read_bytes()).hexdigest()
    assert record["data"]["n"] == 30 and len(record["data"]["fingerprint"]) == 64
    assert record["packages"]["torch"] and record["device"] == "cpu"
    assert any(o.startswith("data.root=") for o in record["overrides"])
    outcomes = pd.read_parquet(run_dir / OUTCOMES_FILE)
    # 2 versions x (clean + 2 eps) x 30 samples
    assert len(outcomes) == 2 * 3 * 30
    acc = outcomes.groupby(["version", "threat", "param"], dropna=False)["correct"].mean()
    by_metric = {(m["version"], m["threat"], m["param"]): m["value"]
                 for m in record["measurements"] if m["metric"] == "accuracy"}
    for (version, threat, param), value in acc.items():
        key = (version, threat, None if np.isnan(param) else param)
        assert by_metric[key] == pytest.approx(value)


def test_same_command_twice_gives_identical_outcomes(run_cli, tiny_files, tmp_path):
    ckpt, npz = tiny_files
    base = [a for a in tiny_overrides(ckpt, npz) if not a.startswith("attack")]
    args = [*base, "attack=[pgd_linf]", "attack.pgd_linf.eps=[0.05,0.2]",
            "attack.pgd_linf.max_iter=5"]
    run_ok(run_cli, *args, cwd=tmp_path)
    run_ok(run_cli, *args, cwd=tmp_path)
    first, second = record_dirs(tmp_path / "outputs")
    a = pd.read_parquet(first / OUTCOMES_FILE)
    b = pd.read_parquet(second / OUTCOMES_FILE)
    pd.testing.assert_frame_equal(a, b)
    ra, rb = (json.loads((d / RECORD_FILE).read_text()) for d in (first, second))
    assert ra["run_key"] == rb["run_key"] and ra["run_id"] != rb["run_id"]


def test_python_m_benchmark_is_rtb_run(tmp_path, tiny_files):
    import subprocess
    import sys

    ckpt, npz = tiny_files
    res = subprocess.run([sys.executable, "-m", "benchmark", *tiny_overrides(ckpt, npz)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "tiny@v1" in res.stdout and record_dirs(tmp_path / "outputs")


def _write_cifar(root: Path, n: int = 12) -> None:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    data = make_evalset(n=n, channels=3, size=32, classes=3)
    raw = (data.x.numpy() * 255).round().astype(np.uint8).reshape(n, -1)
    with open(base / "test_batch", "wb") as f:
        pickle.dump({b"data": raw, b"labels": data.y.tolist()}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"a", b"b", b"c"]}, f)


def test_cifar10_directory_through_the_cli(run_cli, tmp_path):
    import torch

    from benchmark.nets import TinyMLP

    _write_cifar(tmp_path / "cifar")
    ckpt = tmp_path / "c.pt"
    torch.save(TinyMLP(in_features=3 * 32 * 32, num_classes=3, hidden=16).state_dict(), ckpt)
    conf = tmp_path / "conf" / "model"
    conf.mkdir(parents=True)
    (conf / "cif.yaml").write_text(
        "cif:\n  name: cif\n  version: v1\n  architecture:\n    _target_: benchmark.nets.TinyMLP\n"
        "    in_features: 3072\n    num_classes: 3\n    hidden: 16\n"
        f"  checkpoint: {ckpt}\n  num_classes: 3\n  input_shape: [3, 32, 32]\n"
        "  mean: [0.49, 0.48, 0.45]\n  std: [0.25, 0.24, 0.26]\n")
    res = run_ok(run_cli, f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "data=cifar10",
                 f"data.root={tmp_path / 'cifar'}", "model=[cif]", "attack=[fgsm]",
                 "attack.fgsm.eps=[0.01]")
    assert "cif@v1" in res.stdout
    (run_dir,) = record_dirs(tmp_path / "outputs")
    assert json.loads((run_dir / RECORD_FILE).read_text())["data"]["shape"] == [3, 32, 32]


BAD_INPUTS = [
    # (extra overrides, substring of the one-line message)
    (["+foo=1"], "Unknown config key `foo`"),
    (["bogus=1"], "Unknown config key `bogus`"),
    (["seed=abc"], "Expected `seed` to be an integer, but got 'abc'"),
    (["batch_size=0"], "Expected `batch_size` to be an integer >= 1, but got 0"),
    (["attack.fgsm.eps=[-0.1]"], "Expected `attack.fgsm.eps[0]` to be a non-negative number"),
    (["attack.fgsm.eps=[1.5]"], "to lie within the input range [0, 1]"),
    (["model.tiny_v1.checkpoint=/no/such/file.pt"], "Checkpoint file for model.tiny_v1 not found: '/no/such/file.pt'"),
    (["attack=[nosuch]"], "Unknown attack 'nosuch'; expected one of:"),
    (["data=nosuch"], "Unknown data 'nosuch'; expected one of:"),
    (["device=tpu"], "Expected `device` to be auto, cpu or cuda, but got 'tpu'"),
    (["model.tiny_v1.sha256=abc"], "Expected `model.tiny_v1.sha256` to be 64 hex digits"),
    (["model.tiny_v1.format=onnx"], "Expected `model.tiny_v1.format` to be 'state_dict' or 'torchscript'"),
    (["model.tiny_v1.architecture._target_=os.system"], "Refusing `model.tiny_v1.architecture._target_` = 'os.system'"),
    (["attack.fgsm._target_=builtins.eval"], "Refusing `attack.fgsm._target_` = 'builtins.eval'"),
    (["+attack.fgsm.bogus_arg=3"], "Unknown argument `attack.fgsm.bogus_arg`"),
    (["+model.tiny_v1.colour=red"], "Unknown config key `model.tiny_v1.colour`"),
    (["data.n_samples=-5"], "Expected `data.n_samples` to be an integer >= 1, but got -5"),
    (["model.tiny_v1.input_shape=[1,9,9]"], "expects inputs of shape [1, 9, 9], but dataset 'npz' has samples of shape [1, 8, 8]"),
    (["model.tiny_v1.sha256=" + "0" * 64], "does not match its recorded checksum"),
    (["data.root=/no/such.npz"], "file '/no/such.npz' does not exist"),
    (["model=[]"], "Expected at least one model version"),
]


@pytest.mark.parametrize("extra,needle", BAD_INPUTS, ids=[b[1][:40] for b in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2(run_cli, tiny_files, extra, needle):
    ckpt, npz = tiny_files
    res = run_cli("run", *tiny_overrides(ckpt, npz), *extra)
    assert res.returncode == 2, (res.stdout[-500:], res.stderr[-2000:])
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("rtb: error:")]
    assert len(errors) == 1 and needle in errors[0], res.stderr[-2000:]
    assert "Traceback" not in res.stderr


def test_bad_input_in_a_sweep_is_caught_before_any_job(run_cli, tiny_files, tmp_path):
    ckpt, npz = tiny_files
    res = run_cli("run", "-m", *tiny_overrides(ckpt, npz), "attack.fgsm.eps=[0.1],[2.0]")
    assert res.returncode == 2 and "to lie within the input range" in res.stderr
    assert not list(tmp_path.rglob(RECORD_FILE))


def test_bad_run_keeps_earlier_records(run_cli, tiny_files, tmp_path):
    ckpt, npz = tiny_files
    run_ok(run_cli, *tiny_overrides(ckpt, npz))
    before = {p: p.read_bytes() for p in tmp_path.rglob(RECORD_FILE)}
    ckpt.write_bytes(b"broken")  # a checkpoint corrupted after the first run
    res = run_cli("run", *tiny_overrides(ckpt, npz))
    assert res.returncode == 2 and "could not be read as a torch file" in res.stderr
    assert {p: p.read_bytes() for p in tmp_path.rglob(RECORD_FILE)} == before


def test_rtb_help_and_unknown_command(run_cli):
    res = run_cli("--help")
    assert res.returncode == 0 and "rtb run" in res.stdout
    res = run_cli("frobnicate")
    assert res.returncode == 2 and "Unknown command 'frobnicate'" in res.stderr


def test_rtb_list_shows_groups(run_cli):
    res = run_cli("list")
    assert res.returncode == 0
    for needle in ("mnist5k", "mnist_cnn@v1", "mnist_cnn@v2", "pgd_linf", "cifar10"):
        assert needle in res.stdout
    res = run_cli("list", "nosuchgroup")
    assert res.returncode == 2 and "Unknown config group 'nosuchgroup'" in res.stderr
