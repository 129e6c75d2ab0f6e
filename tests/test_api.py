"""The Python API (``benchmark.evaluate``): the same run as ``rtb run``.

Acceptance: ``evaluate`` on an nn.Module defined here, and on the built-in
versions (the README's example), gives the CLI's outcomes for the same
config, sample by sample.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, make_evalset, write_npz
from torch import nn

from benchmark import evaluate
from benchmark.core.errors import ConfigError

TESTS = Path(__file__).resolve().parent


class TinyNet(nn.Module):
    """A two-layer net of this test module (the CLI builds it by `_target_`)."""

    def __init__(self, features: int = 64, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(features, 12), nn.ReLU(),
                                  nn.Linear(12, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def trained_tiny(seed: int = 0, steps: int = 60) -> TinyNet:
    torch.manual_seed(seed)
    net = TinyNet()
    data = make_evalset(n=90, seed=seed + 7)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(net(data.x), data.y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


MODEL_YAML = """\
tiny_v1:
  name: tiny
  version: v1
  architecture:
    _target_: test_api.TinyNet
    features: 64
    classes: 3
  checkpoint: {ckpt}
  format: state_dict
  num_classes: 3
  input_shape: [1, 8, 8]
"""

KEY_COLUMNS = ["model", "version", "family", "threat", "param", "sample"]


def sorted_outcomes(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(KEY_COLUMNS).reset_index(drop=True)


def assert_same_outcomes(api: pd.DataFrame, cli: pd.DataFrame) -> None:
    """Sample by sample: every column both frames have, in the same rows."""
    a, c = sorted_outcomes(api), sorted_outcomes(cli)
    assert len(a) == len(c) and len(a) > 0
    common = [k for k in c.columns if k in a.columns]
    assert {"pred", "correct"} <= set(common)
    pd.testing.assert_frame_equal(a[common], c[common], check_dtype=False)


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONHASHSEED": "0",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)])}
    return subprocess.run([sys.executable, "-m", "benchmark.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_module_defined_here_equals_the_cli(tmp_path: Path) -> None:
    net = trained_tiny()
    ckpt = tmp_path / "tiny.pt"
    torch.save(net.state_dict(), ckpt)
    conf = tmp_path / "conf"
    (conf / "model").mkdir(parents=True)
    (conf / "model" / "tiny_v1.yaml").write_text(MODEL_YAML.format(ckpt=ckpt))
    npz = write_npz(tmp_path / "tiny.npz", n=36)
    cli_dir = tmp_path / "cli-run"
    proc = run_cli([
        "run", f"hydra.searchpath=[file://{conf}]", "data=npz", f"data.root={npz}",
        "model=[tiny_v1]", "attack=[fgsm]", "attack.fgsm.eps=[0.1,0.3]", "batch_size=16",
        "allow_targets=[test_api]", "store=null", "reliability.enabled=false",
        f"hydra.run.dir={cli_dir}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]

    with np.load(npz) as z:  # the same samples, handed over as tensors
        x = torch.from_numpy(z["x"]).float().div(255)[:, None]
        y = torch.from_numpy(z["y"]).long()
    result = evaluate({"tiny@v1": net}, (x, y), attacks=[{"fgsm": {"eps": [0.1, 0.3]}}],
                      batch_size=16, overrides=["reliability.enabled=false"],
                      out_dir=tmp_path / "api-run", progress=False)
    assert_same_outcomes(result.outcomes(), pd.read_parquet(cli_dir / "outcomes.parquet"))
    # the caller's module is untouched: still trainable, still in its own mode
    assert all(p.requires_grad for p in net.parameters())
    tidy = result.to_pandas()
    assert {"model", "version", "threat", "metric", "value", "n"} <= set(tidy.columns)
    assert set(tidy["version"]) == {"v1"}
    assert "fgsm eps=0.3" in result.table()


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    m = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README.md has no API example block"
    return m.group(1)


@pytest.mark.slow
def test_readme_example_equals_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)  # noqa: S102
    result = namespace["result"]
    comparison = namespace["comparison"]
    assert (tmp_path / "report.html").is_file()
    assert comparison.rows  # type: ignore[attr-defined]
    cli_dir = tmp_path / "cli-run"
    proc = run_cli(["run", "data.n_samples=100", "attack=[fgsm,pgd_linf]",
                    "attack.pgd_linf.eps=[0.1,0.3]", "attack.pgd_linf.max_iter=10",
                    "reliability.enabled=false", "store=null", f"hydra.run.dir={cli_dir}"],
                   tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_same_outcomes(result.outcomes(),  # type: ignore[attr-defined]
                         pd.read_parquet(cli_dir / "outcomes.parquet"))


def test_a_name_or_dict_goes_through_the_target_policy(tmp_path: Path) -> None:
    data = make_evalset(n=12)
    with pytest.raises(ConfigError, match="Refusing `attack.evil._target_`"):
        evaluate(trained_tiny(steps=1), (data.x, data.y),
                 attacks=[{"evil": {"_target_": "os.system", "eps": [0.1]}}],
                 out_dir=tmp_path / "r", progress=False)
    with pytest.raises(ConfigError, match="Unknown model version 'nope@v9'"):
        evaluate("nope@v9", out_dir=tmp_path / "r", progress=False)
    with pytest.raises(ConfigError, match="Expected `data` x in \\[0, 1\\]"):
        evaluate(trained_tiny(steps=1), (data.x * 3, data.y), out_dir=tmp_path / "r",
                 progress=False)
    assert not (tmp_path / "r").exists()


def test_save_and_compare(tmp_path: Path) -> None:
    data = make_evalset(n=30)
    result = evaluate({"tiny@v1": trained_tiny(0), "tiny@v2": trained_tiny(1, steps=5)},
                      (data.x, data.y), attacks=[{"fgsm": {"eps": [0.3]}}], groups=False,
                      validation="off", overrides=["reliability.enabled=false"],
                      out_dir=tmp_path / "run", progress=False)
    comparison = result.compare()
    assert comparison.baseline.key == "tiny@v1"
    assert [c.key for c in comparison.candidates] == ["tiny@v2"]
    store = tmp_path / "s.sqlite"
    assert result.save(store) == result.run_id
    # a record of Python objects cannot be re-run from the record alone: one clear line
    from benchmark.schema import parse_run

    with pytest.raises(ConfigError, match="records data passed to benchmark.evaluate"):
        parse_run(result.record.config)
    config = {**result.record.config, "data": {"name": "mnist5k", "loader": "mnist5k"}}
    with pytest.raises(ConfigError, match="records a Python object passed to benchmark.evaluate"):
        parse_run(config)
    from benchmark.store import open_store

    with open_store(store, readonly=True) as s:
        assert result.run_id in set(s.runs()["run_id"])
