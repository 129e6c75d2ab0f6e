"""A whole run on a tiny CSV table and a TabularMLP trained here: the same
run_benchmark, outcomes, measurements and record as an image run, with the
schema checks and one fault_caught result per fault."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from benchmark.compose import compose_spec
from benchmark.data import load_evalset
from benchmark.runner import run_benchmark
from benchmark.schema import parse_data
from benchmark.tabular_models import TabularMLP, cardinalities

SCHEMA = """\
target: label
positive: "yes"
sensitive: [group]
categorical: [group, colour]
immutable: [fixed]
"""

MODEL = """\
tiny_tab_v1:
  name: tiny_tab
  version: v1
  architecture:
    _target_: benchmark.tabular_models.TabularMLP
    cardinalities: {cards}
    hidden: [8]
    num_classes: 2
  checkpoint: {ckpt}
  num_classes: 2
  input_shape: [{n}]
"""

GROUPS = """\
features:
  group: {kind: metadata, column: group}
  class: {kind: label}
min_size: 5
missing: group
n_boot: 0
slices: {enabled: false}
"""


def _table(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    size = rng.uniform(0, 100, n).round(2)
    visits = rng.integers(0, 9, n)
    group = rng.choice(["a", "b"], n)
    colour = rng.choice(["red", "green", "blue"], n)
    score = 0.04 * (size - 50) + 0.3 * (visits - 4) + (group == "a") + rng.normal(0, 1, n)
    return pd.DataFrame({"size": size, "visits": visits, "group": group, "colour": colour,
                         "fixed": rng.integers(0, 3, n),
                         "label": np.where(score > 0, "yes", "no")})


def tiny_table_run(tmp_path: Path, rows: int, epochs: int) -> list[str]:
    """A CSV table of ``rows`` rows with its schema, a TabularMLP version trained
    for ``epochs`` on its train split and a groups config, under ``tmp_path``;
    returns the overrides that run them (attacks, noise, faults, groups)."""
    _table(rows, 0).to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "s.yaml").write_text(SCHEMA)
    data_cfg = {"name": "t", "loader": "csv", "root": str(tmp_path / "t.csv"),
                "options": {"schema": str(tmp_path / "s.yaml")}}
    train = load_evalset(parse_data({**data_cfg, "split": "train"}))
    assert train.schema is not None
    torch.manual_seed(0)
    net = TabularMLP(cardinalities(train.schema), hidden=(8,), num_classes=2)
    net.fit_preprocessing(train.x.numpy())
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(epochs):
        loss = torch.nn.functional.cross_entropy(net(train.x), train.y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save(net.state_dict(), tmp_path / "tab.pt")
    conf = tmp_path / "conf"
    (conf / "model").mkdir(parents=True)
    (conf / "groups").mkdir()
    (conf / "model" / "tiny_tab_v1.yaml").write_text(MODEL.format(
        cards=cardinalities(train.schema), ckpt=tmp_path / "tab.pt", n=len(train.schema.names)))
    (conf / "groups" / "tiny_tab.yaml").write_text(GROUPS)
    return [f"hydra.searchpath=[file://{conf}]", "data=table_csv",
            f"data.root={tmp_path / 't.csv'}", f"data.options.schema={tmp_path / 's.yaml'}",
            "model=[tiny_tab_v1]", "attack=[tab_fgsm,tab_pgd]", "corruption=tabular_noise",
            "corruption.severities=[1,5]", "fault=tabular", "groups=tiny_tab",
            "validation=report_only", "reliability.enabled=false"]


@pytest.mark.slow
def test_tabular_run_end_to_end(tmp_path: Path) -> None:
    overrides = [*tiny_table_run(tmp_path, 200, 60), "store=null", "batch_size=32"]
    spec, resolved = compose_spec(overrides)
    result = run_benchmark(spec, tmp_path / "run", resolved_config=resolved, progress=False)
    n = len(result.evalset)
    families = {o.threat.family for o in result.outcomes}
    assert families == {"clean", "attack", "corruption", "fault"}
    assert all(len(o.pred) == n for o in result.outcomes)
    faults = {o.threat.name for o in result.outcomes if o.threat.family == "fault"}
    assert len(faults) >= 10
    caught = {c.evidence["fault"]: c.status for c in result.record.checks
              if c.check == "fault_caught"}
    assert set(caught) == faults
    assert any(c.subject == "schema" for c in result.record.checks)
    groups_under_attack = {(m.threat, m.group_value) for m in result.measurements
                           if m.family == "attack" and m.group_feature == "group"}
    assert {g for _, g in groups_under_attack} - {""} == {"a", "b"}   # "": feature-level rows
    rec = result.record
    assert rec.data["modality"] == "tabular" and rec.data["schema"]["target"] == "label"
    assert "impute" in rec.models["tiny_tab@v1"]["preprocessing"]
