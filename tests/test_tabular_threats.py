"""Tabular threats on a tiny table and model built here: every output is a
valid row of the schema, immutable (and, for attacks, every locked) column
never changes, outcomes are per sample, and success is recomputed on the
projected rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from attacks.tabular_attacks import TabularAttack, run_tabular_attack
from attacks.tabular_noise import apply_tabular_noise, tabular_noise_names
from attacks.tabular_suite import noise_outcomes
from benchmark.core.errors import ConfigError
from benchmark.core.forward import predict
from benchmark.core.specs import CorruptionSuiteSpec
from benchmark.core.tabular import TabularSchema
from benchmark.core.types import EvalSet, ModelUnderTest
from benchmark.schema import parse_attack
from benchmark.tabular_models import TabularMLP, cardinalities

CONF = Path(__file__).resolve().parents[1] / "conf" / "attack"
#: Every shipped feature-table attack (``units: std``); the minimum-norm ones are slow.
TAB_NAMES = sorted(p.stem for p in CONF.glob("*.yaml") if "units: std" in p.read_text())
TAB_ATTACKS = [pytest.param(n, marks=pytest.mark.slow) if "minimum_norm: true"
               in (CONF / f"{n}.yaml").read_text() else n for n in TAB_NAMES]


def test_the_tabular_attacks_are_found() -> None:
    assert {"tab_fgsm", "tab_pgd", "lowprofool", "tab_hopskipjump"} <= set(TAB_NAMES)


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    income = rng.normal(50, 15, n).round(1)
    visits = rng.integers(0, 9, n)
    colour = rng.choice(["a", "b", "c"], n)
    sex = rng.choice(["f", "m"], n)
    year = rng.integers(2000, 2005, n)
    score = 0.05 * (income - 50) + 0.4 * (visits - 4) + (colour == "a") + rng.normal(0, 1, n)
    return pd.DataFrame({"income": income, "visits": visits, "colour": colour, "sex": sex,
                         "year": year, "label": np.where(score > 0, "yes", "no")})


@pytest.fixture(scope="module")
def world() -> tuple[EvalSet, ModelUnderTest]:
    train, test = _frame(300, 0), _frame(60, 1)
    schema = TabularSchema.infer(pd.concat([train, test]), "label", sensitive=["sex"],
                                 categorical=["colour", "sex"], immutable=["year"])
    feats = schema.names
    xtr = torch.from_numpy(schema.encode(train[feats]))
    ytr = torch.from_numpy((train["label"] == "yes").to_numpy().astype(np.int64))
    data = EvalSet(name="tiny", x=torch.from_numpy(schema.encode(test[feats])),
                   y=torch.from_numpy((test["label"] == "yes").to_numpy().astype(np.int64)),
                   classes=["no", "yes"], groups=test[["sex"]].reset_index(drop=True),
                   train_x=xtr, train_y=ytr, schema=schema,
                   frame=test[feats].reset_index(drop=True), train_frame=train[feats])
    torch.manual_seed(0)
    net = TabularMLP(cardinalities(schema), hidden=(16,), num_classes=2)
    net.fit_preprocessing(xtr.numpy())
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(net(xtr), ytr)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    model = ModelUnderTest(name="tiny", version="v1", module=net, sha256="0" * 64,
                           num_classes=2, input_shape=(len(feats),), device=torch.device("cpu"))
    return data, model


def _valid(schema: TabularSchema, x: np.ndarray) -> None:
    lo, hi = schema.bounds()
    fin = np.isfinite(x)
    assert np.all((x >= lo - 1e-4) | ~fin) and np.all((x <= hi + 1e-4) | ~fin)
    whole = schema.mask("integer") | schema.mask("categorical")
    v = x[:, whole]
    assert np.all((v == np.rint(v)) | np.isnan(v))


def _locked_same(x: np.ndarray, x0: np.ndarray, cols: np.ndarray) -> None:
    a, b = x[:, cols], x0[:, cols]
    assert np.all((a == b) | (np.isnan(a) & np.isnan(b)))


# ----------------------------------------------------------------------------- noise

@pytest.mark.parametrize("name", tabular_noise_names())
def test_noise_is_valid_keeps_immutables_and_grows_with_severity(world, name: str) -> None:
    data, _ = world
    s = data.schema
    x0 = data.x.numpy()
    changed = []
    for sev in range(1, 6):
        x = apply_tabular_noise(name, x0, s, data.train_x.numpy(), sev, seed=3)
        _valid(s, x)
        _locked_same(x, x0, ~np.array([c.mutable for c in s.columns]))
        changed.append(float(np.mean(~((x == x0) | (np.isnan(x) & np.isnan(x0))))))
    assert changed[-1] > changed[0] >= 0


@pytest.mark.parametrize("name", tabular_noise_names())
def test_noise_is_seeded_per_sample(world, name: str) -> None:
    data, _ = world
    x0 = data.x.numpy()
    full = apply_tabular_noise(name, x0, data.schema, data.train_x.numpy(), 4, seed=5)
    part = apply_tabular_noise(name, x0[::-1][:20], data.schema, data.train_x.numpy(), 4, seed=5)
    np.testing.assert_array_equal(part, full[::-1][:20])        # any batch, any order
    other = apply_tabular_noise(name, x0, data.schema, data.train_x.numpy(), 4, seed=6)
    assert not np.array_equal(np.nan_to_num(other, nan=-1), np.nan_to_num(full, nan=-1))


def test_noise_outcomes_are_per_sample(world) -> None:
    data, model = world
    suite = CorruptionSuiteSpec(name="t", corruptions=tuple(tabular_noise_names()),
                                severities=(1, 5))
    outs = list(noise_outcomes(suite, model, data, 32, seed=0))
    assert len(outs) == 2 * len(tabular_noise_names())
    for o in outs:
        assert len(o.pred) == len(data) and o.threat.family == "corruption"
        assert set(o.columns) >= {"finite", "l0", "missing"}


# ----------------------------------------------------------------------------- attacks

def _spec(name: str):
    d = yaml.safe_load((CONF / f"{name}.yaml").read_text())[name]
    return parse_attack(name, d, None)


@pytest.mark.parametrize("name", TAB_ATTACKS)
def test_attack_examples_are_valid_and_touch_only_attackable_columns(world, name: str) -> None:
    data, model = world
    s = data.schema
    spec = _spec(name)
    ta = TabularAttack(model, spec, data, 64, seed=0)
    idx = np.arange(len(data))
    for eps in (None,) if spec.minimum_norm else spec.eps:
        x_adv = ta.examples(idx, eps)
        _valid(s, x_adv)
        _locked_same(x_adv, data.x.numpy(), ~s.mask("attackable"))
        if eps is not None:   # the budget holds in std units, rounding included
            d = np.abs(x_adv - data.x.numpy()) / ta.view.scale
            assert float(np.nanmax(d)) <= eps + 1e-5


@pytest.mark.parametrize("name", TAB_ATTACKS)
def test_attack_outcomes_are_per_sample_and_recomputed(world, name: str) -> None:
    data, model = world
    spec = _spec(name)
    clean = predict(model, data.x)
    outs = list(run_tabular_attack(model, spec, data, clean, seed=0, batch_size=64))
    assert [o.threat.param for o in outs] == list(spec.eps)
    prev = np.ones(len(data), dtype=bool)
    for o in outs:
        assert len(o.pred) == len(data) and o.threat.params["units"] == "std"
        assert not np.any(o.correct & ~(clean == data.y.numpy()))   # never repairs a point
        assert np.all(~o.correct | prev)                  # nested budgets: broken stays broken
        prev = o.correct
        broken = o.columns["success"] > 0
        assert np.all(o.columns["linf"][broken & (clean == data.y.numpy())] > 0)
    # success is our own forward pass on the projected rows
    assert outs[-1].columns["success"].sum() == np.sum(outs[-1].pred != data.y.numpy())


def test_strong_pgd_breaks_some_points(world) -> None:
    data, model = world
    spec = _spec("tab_pgd")
    clean = predict(model, data.x)
    last = list(run_tabular_attack(model, spec, data, clean, seed=0, batch_size=64))[-1]
    assert last.accuracy < float(np.mean(clean == data.y.numpy()))


def test_image_attack_on_a_table_is_refused(world) -> None:
    data, model = world
    d = yaml.safe_load((CONF / "fgsm.yaml").read_text())["fgsm"]
    with pytest.raises(ConfigError, match="feature-table attack"):
        TabularAttack(model, parse_attack("fgsm", d, None), data, 64, seed=0)


def test_std_budgets_are_not_bounded_by_the_pixel_range() -> None:
    d = yaml.safe_load((CONF / "tab_fgsm.yaml").read_text())["tab_fgsm"]
    assert max(parse_attack("tab_fgsm", d, (1, 28, 28)).eps) == 2.0
    with pytest.raises(ConfigError, match="units"):
        parse_attack("x", {**d, "units": "metres"}, None)
