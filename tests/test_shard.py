"""Sharded evaluation: stratified blocks fixed by seed and fingerprint, the
``shards``/``shard`` config, stitching, the store's shard table, and real
sharded runs (basic and joblib launchers, an image run and a table; a
failed shard; submitit's local executor and a local Ray cluster as slow
tests) whose assembled run equals the unsharded one."""

from __future__ import annotations

import importlib.util
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_overrides

from benchmark.core.errors import ConfigError
from benchmark.core.specs import ShardSpec
from benchmark.core.types import Outcome, Threat
from benchmark.runner import block_seed
from benchmark.schema import parse_shard
from benchmark.shard import (
    blocks_of,
    expand_shard_args,
    shard_blocks,
    stitch,
    stratified_order,
    unsharded_config,
    unsharded_overrides,
)
from benchmark.store import Store

# ----------------------------------------------------------------------------- blocks


def test_order_is_a_permutation_fixed_by_seed_and_fingerprint() -> None:
    y = np.repeat(np.arange(4), [10, 20, 5, 65])
    a = stratified_order(y, 0, "f" * 64)
    assert sorted(a.tolist()) == list(range(len(y)))
    assert np.array_equal(a, stratified_order(y, 0, "f" * 64))
    assert not np.array_equal(a, stratified_order(y, 1, "f" * 64))
    assert not np.array_equal(a, stratified_order(y, 0, "e" * 64))


def test_shards_are_stratified() -> None:
    """Each shard's class mix is within a block's rounding of the whole set's."""
    y = np.repeat(np.arange(3), [60, 30, 210])
    blocks = blocks_of(y, 0, "x", 10)
    for k in range(3):
        idx = np.concatenate([blocks[b] for b in shard_blocks(len(blocks), 3, k)])
        share = np.bincount(y[idx], minlength=3) / len(idx)
        assert np.allclose(share, [0.2, 0.1, 0.7], atol=0.03)
    every = np.concatenate([blocks[b] for k in range(3) for b in shard_blocks(len(blocks), 3, k)])
    assert sorted(every.tolist()) == list(range(len(y)))


def _outcome(pred: list[int], y: list[int], name: str = "fgsm") -> Outcome:
    p = np.array(pred)
    return Outcome(model="m", version="v1", threat=Threat("attack", name, 0.1), pred=p,
                   correct=p == np.array(y), columns={"linf": p * 0.5})


def test_stitch_puts_each_part_back_in_place() -> None:
    y = [0, 1, 2, 0, 1]
    whole = _outcome([0, 2, 2, 1, 1], y)
    parts = [(np.array(idx), [_outcome([int(whole.pred[i]) for i in idx],
                                       [y[i] for i in idx])])
             for idx in ([3, 0], [1, 4, 2])]
    (got,) = stitch(parts, 5)
    assert got.pred.tolist() == whole.pred.tolist()
    assert got.correct.tolist() == whole.correct.tolist()
    assert got.columns["linf"].tolist() == whole.columns["linf"].tolist()


def test_stitch_rejects_gaps_and_mismatched_parts() -> None:
    with pytest.raises(ValueError, match="cover 3 samples once"):
        stitch([(np.array([0, 1]), [_outcome([0, 1], [0, 1])])], 3)
    with pytest.raises(ValueError, match="same threats"):
        stitch([(np.array([0]), [_outcome([0], [0])]),
                (np.array([1]), [_outcome([1], [1], name="pgd")])], 2)


def test_block_zero_attacks_with_the_run_seed() -> None:
    """A run of one block attacks exactly as an unblocked run did."""
    assert block_seed(7, 0) == 7 and block_seed(0, 0) == 0
    others = {block_seed(7, b) for b in range(1, 50)}
    assert len(others) == 49 and 7 not in others


# ----------------------------------------------------------------------------- config

def test_parse_shard_values() -> None:
    assert parse_shard(None, None) == ShardSpec()
    assert parse_shard(3, {"index": 2, "count": None, "block": 8}) == ShardSpec(3, 2, 8)
    assert parse_shard(None, {"index": 0, "count": 2}).sharded


@pytest.mark.parametrize(("shards", "section", "message"), [
    (0, None, "Expected `shards` to be a positive number of shards or null, but got 0"),
    (3, {"count": 2}, "Expected `shard.count` to be the same number as shards=3"),
    (3, {"index": 3}, "Expected `shard.index` to be a shard number from 0 to 2"),
    (None, {"index": -1, "count": 2}, "Expected `shard.index` to be a shard number from 0"),
    (None, {"block": 0}, "Expected `shard.block` to be a positive number of samples"),
    (None, {"size": 3}, "shard.size"),
])
def test_parse_shard_rejects_bad_values(shards, section, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_shard(shards, section)


def test_shards_expand_to_one_job_per_shard() -> None:
    assert expand_shard_args(["shards=3", "seed=1"]) == [
        "-m", "shards=3", "seed=1", "shard.index=0,1,2"]
    assert expand_shard_args(["-m", "model=a,b", "shards=2"]) == [
        "-m", "model=a,b", "shards=2", "shard.index=0,1"]
    for unchanged in (["shards=1"], ["shards=3", "shard.index=1"], ["seed=3"]):
        assert expand_shard_args(unchanged) == unchanged


def test_the_split_is_not_content() -> None:
    cfg = {"shards": 3, "shard": {"index": 1, "count": 3, "block": 8}, "seed": 0}
    assert unsharded_config(cfg) == {"shards": None,
                                     "shard": {"index": None, "count": None, "block": 8},
                                     "seed": 0}
    assert unsharded_overrides(["shards=3", "shard.index=1", "seed=0"]) == ["seed=0"]


# ----------------------------------------------------------------------------- store

def test_store_names_missing_and_failed_shards(tmp_path) -> None:
    with Store(tmp_path / "s.sqlite") as s:
        assert s.claim_shard("k", 3, 0, "me").outcome == "claimed"
        assert s.claim_shard("k", 3, 0, "you").outcome == "running"
        s.save_shard("k", 3, 0, state="complete", name="n", data_name="d", outcomes=b"x")
        s.save_shard("k", 3, 0, state="failed", error="late")  # never over a complete one
        s.save_shard("k", 3, 2, state="failed", name="n", data_name="d", error="boom")
        assert s.claim_shard("k", 3, 0, "you").outcome == "complete"
        assert s.claim_shard("k", 3, 0, "you", skip_complete=False).outcome == "claimed"
        assert s.shard_states("k", 3) == {0: "complete", 2: "failed"}
        (row,) = s.incomplete_shards().itertuples()
        assert (row.done, row.failed, row.missing) == ([0], [2], [1, 2])


# ----------------------------------------------------------------------------- runs

SUITES = ["corruption.corruptions=[gaussian_noise,fog]", "corruption.severities=[1,3]",
          "corruption.baseline=null", "fault=scaling"]


def shard_overrides(ckpt: Path, npz: Path) -> list[str]:
    """FGSM and PGD (random start: the block seeds matter), two corruptions
    and the scaling faults, on 30 samples in blocks of 4 (8 blocks)."""
    base = [o for o in tiny_overrides(ckpt, npz) if not o.startswith("attack")]
    return [*base, "attack=[fgsm,pgd_linf]", "attack.fgsm.eps=[0.1,0.3]",
            "attack.pgd_linf.eps=[0.1,0.3]", "attack.pgd_linf.max_iter=3", *SUITES,
            "shard.block=4", "reliability.n_samples=8"]


def stored(store: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict, Path]:
    """Outcomes, measurements and checks of the one run in ``store`` (run id
    dropped), its record and its run directory."""
    with Store(store, readonly=True) as s:
        (run_id,) = s.run_ids()
        record = s.record(run_id)
        frames = [s.outcomes([run_id]), s.measurements([run_id]), s.checks([run_id])]
        run_dir = Path(str(s.runs()["run_dir"].iloc[0]))
    frames[2] = frames[2][["run_id", "name", "status", "subject", "message"]]
    out = [df.drop(columns=["run_id"]).reset_index(drop=True) for df in frames]
    return out[0], out[1], out[2], record, run_dir


def assert_same_run(plain: Path, sharded: Path, count: int = 3) -> None:
    a_out, a_meas, a_checks, a_rec, a_dir = stored(plain)
    b_out, b_meas, b_checks, b_rec, b_dir = stored(sharded)
    # 30 samples x (clean + 2 attacks x 2 eps + 2 corruptions x 2 severities + 4 faults)
    assert len(a_out) == 30 * 13
    pd.testing.assert_frame_equal(a_out, b_out)
    pd.testing.assert_frame_equal(a_meas, b_meas)
    pd.testing.assert_frame_equal(a_checks, b_checks)
    assert a_rec["run_key"] == b_rec["run_key"]
    assert a_rec["config"] == {**b_rec["config"], "store": a_rec["config"]["store"]}
    assert b_rec["extra"]["shards"] == {"count": count, "block": 4}
    a_gal, b_gal = np.load(a_dir / "gallery.npz"), np.load(b_dir / "gallery.npz")
    assert sorted(a_gal.files) == sorted(b_gal.files)
    assert (a_gal["family"] == "attack").any()  # the attacks' kept examples came back
    for k in a_gal.files:
        np.testing.assert_array_equal(a_gal[k], b_gal[k], err_msg=k)


@pytest.fixture
def plain_run(run_cli, tiny_files, tmp_path) -> Path:
    ckpt, npz = tiny_files
    store = tmp_path / "plain.sqlite"
    res = run_cli("run", *shard_overrides(ckpt, npz), f"store={store}")
    assert res.returncode == 0, res.stderr[-3000:]
    return store


def test_sharded_run_equals_the_unsharded_one(run_cli, tiny_files, tmp_path, plain_run) -> None:
    """Shard 0 by hand leaves the run incomplete (store list names shards 1
    and 2); `shards=3` under the basic launcher then runs only those two and
    assembles the run, whose outcomes, measurements, checks and gallery equal
    the unsharded run's."""
    ckpt, npz = tiny_files
    store = tmp_path / "sharded.sqlite"
    args = [*shard_overrides(ckpt, npz), f"store={store}"]
    res = run_cli("run", *args, "shard.index=0", "shard.count=3")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "waiting for shards 1, 2 of 3" in res.stdout
    listed = run_cli("store", "list", "--store", str(store))
    assert "incomplete: 1/3 shards" in listed.stdout and "1, 2" in listed.stdout
    res = run_cli("run", *args, "shards=3")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 ran, 1 skipped" in res.stdout
    assert_same_run(plain_run, store)
    listed = run_cli("store", "list", "--store", str(store))
    assert "incomplete" not in listed.stdout
    with sqlite3.connect(store) as conn:
        assert conn.execute("SELECT count(*) FROM shards").fetchone() == (0,)
    again = run_cli("run", *args, "shards=3")  # everything done: nothing runs
    assert again.returncode == 0 and "0 ran, 3 skipped" in again.stdout


def test_a_failed_shard_is_named_and_run_again(run_cli, tiny_files, tmp_path,
                                               plain_run) -> None:
    """A shard whose version breaks mid-run is stored as failed; store list
    names it (and the missing one); the same command then runs only the
    shards not complete, and the assembled run equals the unsharded one."""
    from dataclasses import replace

    import torch

    from benchmark.compose import compose_spec
    from benchmark.data import load_evalset
    from benchmark.models import load_model
    from benchmark.runner import run_benchmark

    ckpt, npz = tiny_files
    store = tmp_path / "sharded.sqlite"
    args = [*shard_overrides(ckpt, npz), f"store={store}"]
    res = run_cli("run", *args, "shard.index=0", "shard.count=3")
    assert res.returncode == 0, res.stderr[-3000:]

    class Broken(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            if self.calls > 3:
                raise RuntimeError("the accelerator went away")
            return self.inner(x)

    spec, resolved = compose_spec([*args, "shard.index=1", "shard.count=3"])
    data = load_evalset(spec.data)
    models = [load_model(m, torch.device("cpu")) for m in spec.models.values()]
    broken = [replace(m, module=Broken(m.module).eval()) for m in models]
    with pytest.raises(RuntimeError, match="accelerator went away"):
        run_benchmark(spec, tmp_path / "shard1", resolved_config=resolved, progress=False,
                      data=data, models=broken)
    listed = run_cli("store", "list", "--store", str(store))
    (line,) = [ln for ln in listed.stdout.splitlines() if "incomplete" in ln]
    assert "incomplete: 1/3 shards" in line and line.split()[-3:] == ["1,", "2", "1"]
    res = run_cli("run", *args, "shards=3")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 ran, 1 skipped" in res.stdout
    assert_same_run(plain_run, store)


PARALLEL = {
    "joblib": ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"],
    "submitit_local": ["hydra/launcher=slurm_local"],
    "ray": ["hydra/launcher=ray_local"],
}


def _launcher(name: str) -> list[str]:
    if name == "ray" and importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None:
        pytest.skip("hydra-ray-launcher is not importable (the separate `ray` extra: it pins "
                    "cloudpickle<3; see README 'Scaling out')")
    if name == "submitit_local" and importlib.util.find_spec(
            "hydra_plugins.hydra_submitit_launcher") is None:
        pytest.skip("hydra-submitit-launcher is not importable (the `sweep` extra)")
    if name == "joblib" and importlib.util.find_spec(
            "hydra_plugins.hydra_joblib_launcher") is None:
        pytest.skip("hydra-joblib-launcher is not importable (the `sweep` extra)")
    return PARALLEL[name]


@pytest.mark.parametrize("launcher", [
    "joblib",
    pytest.param("submitit_local", marks=pytest.mark.slow),
    pytest.param("ray", marks=pytest.mark.slow),
])
def test_sharded_run_under_parallel_launchers(run_cli, tiny_files, tmp_path, plain_run,
                                              launcher) -> None:
    ckpt, npz = tiny_files
    store = tmp_path / "sharded.sqlite"
    res = run_cli("run", *shard_overrides(ckpt, npz), f"store={store}", "shards=3",
                  *_launcher(launcher))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "3 ran, 0 skipped" in res.stdout
    assert_same_run(plain_run, store)


@pytest.mark.slow
def test_sweep_under_ray(run_cli, tiny_files, tmp_path) -> None:
    """A plain two-job sweep on a local Ray cluster started by the launcher."""
    launcher = _launcher("ray")
    ckpt, npz = tiny_files
    store = tmp_path / "sweep.sqlite"
    base = [o for o in tiny_overrides(ckpt, npz) if not o.startswith("attack.fgsm.eps")]
    res = run_cli("run", "-m", *base, "~corruption", "~fault", f"store={store}",
                  "attack.fgsm.eps=[0.1],[0.3]", *launcher)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 ran, 0 skipped" in res.stdout
    with Store(store, readonly=True) as s:
        assert len(s.run_ids()) == 2


def test_shards_need_a_store(run_cli, tiny_files) -> None:
    ckpt, npz = tiny_files
    res = run_cli("run", *shard_overrides(ckpt, npz), "store=null", "shard.index=0",
                  "shard.count=3")
    assert res.returncode == 2
    assert "Expected a results store with shards=3" in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_more_shards_than_blocks_is_refused(run_cli, tiny_files, tmp_path) -> None:
    ckpt, npz = tiny_files
    res = run_cli("run", *shard_overrides(ckpt, npz), f"store={tmp_path / 's.sqlite'}",
                  "shard.block=16", "shard.index=0", "shard.count=3")
    assert res.returncode == 2
    assert "Expected at most 2 shards for 30 samples in blocks of 16" in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("args", "needle"), [
    (["shard.index=3", "shard.count=3"], "Expected `shard.index` to be a shard number from 0 to 2"),
    (["shards=3", "shard.count=2"], "Expected `shard.count` to be the same number as shards=3"),
    (["shards=0"], "Expected `shards` to be a positive number of shards or null, but got 0"),
    (["shard.block=0"], "Expected `shard.block` to be a positive number of samples"),
    (["shard.count=3"], "Expected `shard.index` (0 to 2) with shards=3, but got null"),
])
def test_bad_shard_config_is_one_line_exit_2(run_cli, tiny_files, tmp_path, args,
                                             needle) -> None:
    ckpt, npz = tiny_files
    store = tmp_path / "s.sqlite"
    res = run_cli("run", *shard_overrides(ckpt, npz), f"store={store}", *args)
    assert res.returncode == 2, res.stderr[-2000:]
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("rtb: error:") and needle in line, line
    assert not store.exists() or not Store(store, readonly=True).run_ids()


def test_sharded_table_equals_the_unsharded_one(tmp_path) -> None:
    """A feature table sharded 3 ways in process (shard.index by hand): each
    shard carries its rows of the raw frame and group columns, a pipeline
    fault still breaks the whole frame, and the assembled run's outcomes and
    measurements equal the unsharded run's."""
    from test_tabular_run import tiny_table_run

    from benchmark.compose import compose_spec
    from benchmark.runner import run_benchmark
    from benchmark.shard import ShardStored

    base = [*tiny_table_run(tmp_path, 120, 30), "batch_size=8", "shard.block=8"]

    def run(store: Path, *extra: str, out: str = "run") -> object:
        spec, resolved = compose_spec([*base, f"store={store}", *extra])
        return run_benchmark(spec, tmp_path / out, resolved_config=resolved, progress=False)

    plain = tmp_path / "plain.sqlite"
    run(plain)
    sharded = tmp_path / "sharded.sqlite"
    for k in range(2):
        with pytest.raises(ShardStored, match=f"shard {k}/3 stored"):
            run(sharded, f"shard.index={k}", "shard.count=3", out=f"shard{k}")
    run(sharded, "shard.index=2", "shard.count=3", out="shard2")
    frames = []
    for store in (plain, sharded):
        with Store(store, readonly=True) as s:
            (run_id,) = s.run_ids()
            frames.append([df.drop(columns=["run_id"]).reset_index(drop=True)
                           for df in (s.outcomes([run_id]), s.measurements([run_id]))])
    families = set(frames[0][0]["family"])
    assert families == {"clean", "attack", "corruption", "fault"}
    for a, b in zip(*frames, strict=True):
        pd.testing.assert_frame_equal(a, b)
