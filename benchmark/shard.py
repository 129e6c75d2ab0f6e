"""Sharded evaluation: one run's evaluation set split over several jobs.

``rtb run shards=N`` starts N jobs (one per shard, under any Hydra launcher);
``shard.index=K shard.count=N`` runs one shard by hand, on any machine that
reaches the same store. The pieces:

* **Blocks.** Every run, sharded or not, evaluates its samples in fixed
  blocks of ``shard.block`` samples: a stratified order (each class spread
  evenly), fixed by the run seed and the data fingerprint, cut into blocks.
  Each block is attacked on its own, with its own seed (block 0 with the
  run seed itself, so a run of one block attacks exactly as before), so a
  sample's outcome depends only on its block, never on which other samples
  a job holds. Corruptions, image faults and a table's noise draw per-sample
  noise from each sample's content and the run seed; a table's pipeline
  faults (which pick rows of the whole frame) run on the whole set in every
  job. A shard is the union of the blocks ``K, K + N, K + 2N, ...``: its
  per-sample outcomes are exactly the unsharded run's on those samples.
* **Claims.** A shard job claims ``KEY:shardKofN`` in the store's ``jobs``
  table (``Store.claim_shard``): a shard already complete, or claimed by a
  live process, is skipped, so running the same command again runs only the
  missing shards. ``KEY`` is the run's content key, the same as the
  unsharded run's (``shards`` and ``shard.index``/``count`` are left out).
* **Assembly.** A finished shard stores its outcomes in the ``shards``
  table. The job that finds every shard complete claims ``KEY`` and builds
  the one logical run from the merged outcomes, exactly as an unsharded run
  finishes: data and model checks, group metrics, CIs, slices and
  reliability flags and the example gallery (from the examples each shard
  kept of the gallery's pool points) on the whole set, never averaged over
  shards. Until then
  the run is incomplete, and ``rtb store list`` names the missing shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from attacks.budgets import ExampleKeeper
from benchmark.core.errors import ConfigError
from benchmark.core.specs import ShardSpec
from benchmark.core.types import EvalSet, Outcome
from benchmark.gallery import GalleryCollector

log = logging.getLogger(__name__)

#: Overrides and config keys that say how a run is split, not what it computes.
SHARD_OVERRIDES: tuple[str, ...] = ("shards=", "shard.index=", "shard.count=")
_SHARDS_ARG = re.compile(r"^shards=['\"]?(\d+)['\"]?$")
_MULTIRUN = ("-m", "--multirun")


# ----------------------------------------------------------------------------- blocks

def stratified_order(y: np.ndarray, seed: int, fingerprint: str) -> np.ndarray:
    """Every sample index once, classes interleaved in proportion: within each
    class a random order, fixed by ``seed`` and ``fingerprint``."""
    digest = hashlib.sha256(f"rtb-shards|{seed}|{fingerprint}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    y = np.asarray(y)
    position = np.empty(len(y), dtype=np.float64)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        ranks = rng.permutation(len(members))
        position[members] = (ranks + 0.5) / len(members)
    tiebreak = rng.permutation(len(y))
    return np.lexsort((tiebreak, position))


def blocks_of(y: np.ndarray, seed: int, fingerprint: str, block: int) -> list[np.ndarray]:
    """The run's evaluation blocks: the stratified order cut every ``block``
    samples (block ``b`` holds positions ``b * block ...``)."""
    order = stratified_order(y, seed, fingerprint)
    return [order[i:i + block] for i in range(0, len(order), block)]


def shard_blocks(n_blocks: int, count: int, index: int) -> list[int]:
    """The block ids of shard ``index`` of ``count``: every ``count``-th block."""
    return list(range(index, n_blocks, count))


def job_blocks(data: EvalSet, seed: int, shard: ShardSpec) -> tuple[np.ndarray,
                                                                     list[tuple[int, np.ndarray]]]:
    """What one job evaluates: the sample indices of its shard (all samples
    when unsharded, in their own order) and its blocks as ``(block id,
    positions in those samples)``."""
    blocks = blocks_of(data.y.numpy(), seed, data.fingerprint, shard.block)
    if not shard.sharded:
        return np.arange(len(data)), list(enumerate(blocks))
    if shard.index is None:
        raise ConfigError(
            f"Expected `shard.index` (0 to {shard.count - 1}) with shards={shard.count}, but got "
            f"null; `rtb run shards={shard.count}` starts one job per shard.")
    if len(blocks) < shard.count:
        raise ConfigError(
            f"Expected at most {len(blocks)} shards for {len(data)} samples in blocks of "
            f"{shard.block} (shard.block), but got shards={shard.count}; lower shards or "
            f"shard.block.")
    ids = shard_blocks(len(blocks), shard.count, shard.index)
    samples = np.concatenate([blocks[b] for b in ids])
    out, start = [], 0
    for b in ids:
        out.append((b, np.arange(start, start + len(blocks[b]))))
        start += len(blocks[b])
    return samples, out


def subset(data: EvalSet, idx: np.ndarray) -> EvalSet:
    """The samples ``idx`` of ``data``: inputs, labels, group columns and the
    raw frame of a table aligned; the training part, the schema and the
    fingerprint stay the whole set's (the run is keyed by it)."""
    import torch

    idx = np.asarray(idx, dtype=np.int64)
    ti = torch.from_numpy(idx)
    groups = data.groups.iloc[idx].reset_index(drop=True) if len(data.groups) == len(data) \
        else data.groups
    frame = data.frame.iloc[idx].reset_index(drop=True) if data.frame is not None else None
    return replace(data, x=data.x[ti], y=data.y[ti], groups=groups, frame=frame,
                   fingerprint=data.fingerprint)


def take(outcome: Outcome, idx: np.ndarray) -> Outcome:
    """``outcome`` on the samples ``idx`` only."""
    return replace(outcome, pred=outcome.pred[idx], correct=outcome.correct[idx],
                   columns={k: v[idx] for k, v in outcome.columns.items()})


# ----------------------------------------------------------------------------- gallery

class BlockGallery(GalleryCollector):
    """The gallery collector of one block: keepers for the pool points of the
    block (``positions``: the block's rows in ``collector.data``; ``sub`` the
    block's samples); ``merge_keepers`` folds them into ``collector``'s."""

    def __init__(self, collector: GalleryCollector, positions: np.ndarray,
                 sub: EvalSet) -> None:
        positions = np.asarray(positions, dtype=np.int64)
        member = np.isin(positions, collector.pool)
        self.data = sub
        self.pool = np.flatnonzero(member).astype(np.int64)  # sorted rows of ``sub``
        self.rows = np.searchsorted(collector.pool, positions[self.pool])  # in the collector's
        self.keepers: dict[tuple[str, str], ExampleKeeper] = {}


def merge_keepers(collector: GalleryCollector, blocks: Sequence[BlockGallery]) -> None:
    """The blocks' kept examples as ``collector``'s keepers (a keeper only
    where every block kept that attack; the pool points' clean inputs where
    no block holds them)."""
    import torch

    names = set(blocks[0].keepers) if blocks else set()
    for b in blocks[1:]:
        names &= set(b.keepers)
    for name in sorted(names):
        eps = set(blocks[0].keepers[name].kept)
        for b in blocks[1:]:
            eps &= set(b.keepers[name].kept)
        k = ExampleKeeper(collector.pool, collector.data.x)
        for e in sorted(eps):
            kept = k.current.clone()
            for b in blocks:
                if len(b.rows):
                    kept[torch.from_numpy(b.rows)] = b.keepers[name].kept[e]
            k.kept[e] = kept
        collector.keepers[name] = k


def kept_arrays(collector: GalleryCollector, samples: np.ndarray) -> dict[str, np.ndarray]:
    """A shard's kept examples as plain arrays: the whole set's indices of its
    pool points, and per (version, attack, eps) their examples."""
    out: dict[str, np.ndarray] = {"pool": np.asarray(samples, dtype=np.int64)[collector.pool]}
    names: list[list[Any]] = []
    for (model, attack), k in collector.keepers.items():
        for e, x in k.kept.items():
            out[f"kept{len(names)}"] = x.numpy()
            names.append([model, attack, float(e)])
    out["kept"] = np.asarray(json.dumps(names))
    return out


def gallery_of(data: EvalSet, seed: int, kept: Sequence[dict[str, np.ndarray]]
               ) -> GalleryCollector:
    """The whole run's collector from every shard's ``kept_arrays`` (an
    attack's examples only where every shard kept them)."""
    import torch

    collector = GalleryCollector(data, seed)
    parts = []
    for arrays in kept:
        names = [tuple(n) for n in json.loads(str(arrays["kept"]))]
        rows = np.searchsorted(collector.pool, np.asarray(arrays["pool"], dtype=np.int64))
        parts.append((rows, {n: arrays[f"kept{i}"] for i, n in enumerate(names)}))
    common = set(parts[0][1]) if parts else set()
    for _, got in parts[1:]:
        common &= set(got)
    for model, attack, e in sorted(common):
        k = collector.keepers.get((model, attack)) or ExampleKeeper(collector.pool, data.x)
        value = k.current.clone()
        for rows, got in parts:
            if len(rows):
                value[torch.from_numpy(rows)] = torch.from_numpy(got[(model, attack, e)])
        k.kept[float(e)] = value
        collector.keepers[(model, attack)] = k
    return collector


def _signature(o: Outcome) -> tuple[Any, ...]:
    return (o.model, o.version, o.threat.family, o.threat.name, o.threat.param,
            tuple(o.columns))


def stitch(parts: Sequence[tuple[np.ndarray, Sequence[Outcome]]], n: int) -> list[Outcome]:
    """One outcome list over ``n`` samples from parts over disjoint samples:
    part ``(idx, outcomes)`` holds the values of samples ``idx``. Every part
    must hold the same threats in the same order and cover the samples once."""
    if not parts:
        return []
    covered = np.zeros(n, dtype=np.int64)
    for idx, _ in parts:
        np.add.at(covered, np.asarray(idx, dtype=np.int64), 1)
    if not (covered == 1).all():
        raise ValueError(f"Expected the parts to cover {n} samples once each, but "
                         f"{int((covered != 1).sum())} are covered 0 or several times.")
    first = parts[0][1]
    for _, outs in parts[1:]:
        if [_signature(o) for o in outs] != [_signature(o) for o in first]:
            raise ValueError("Expected every part to hold the same threats in the same order, "
                             "but they differ.")
    merged: list[Outcome] = []
    for j, proto in enumerate(first):
        pred = np.empty(n, dtype=np.asarray(proto.pred).dtype)
        correct = np.empty(n, dtype=bool)
        columns = {k: np.empty(n, dtype=np.asarray(v).dtype) for k, v in proto.columns.items()}
        for idx, outs in parts:
            o = outs[j]
            pred[idx] = o.pred
            correct[idx] = o.correct
            for k in columns:
                columns[k][idx] = o.columns[k]
        merged.append(Outcome(model=proto.model, version=proto.version, threat=proto.threat,
                              pred=pred, correct=correct, columns=columns))
    return merged


# ----------------------------------------------------------------------------- config

def shard_key(run_key: str, count: int, index: int) -> str:
    """The claim key of one shard of the run ``run_key``."""
    return f"{run_key}:shard{index}of{count}"


def unsharded_config(config: dict[str, Any]) -> dict[str, Any]:
    """The resolved config as the unsharded run has it (``shards`` and
    ``shard.index``/``count`` null; ``shard.block`` kept: it is content)."""
    out = dict(config)
    if "shards" in out:
        out["shards"] = None
    if isinstance(out.get("shard"), dict):
        out["shard"] = {**out["shard"], "index": None, "count": None}
    return out


def unsharded_overrides(overrides: Sequence[str]) -> list[str]:
    return [o for o in overrides if not o.lstrip("+~").startswith(SHARD_OVERRIDES)]


def expand_shard_args(args: Sequence[str]) -> list[str]:
    """``rtb run shards=N ...`` as a multirun of one job per shard
    (``-m ... shard.index=0,...,N-1``); anything else unchanged."""
    args = list(args)
    counts = [int(m.group(1)) for a in args if (m := _SHARDS_ARG.match(a))]
    if not counts or counts[-1] <= 1 or any(a.startswith("shard.index=") for a in args):
        return args
    n = counts[-1]
    if not any(a in _MULTIRUN for a in args):
        args.insert(0, "-m")
    return [*args, f"shard.index={','.join(str(i) for i in range(n))}"]


@dataclass(frozen=True)
class ShardPlan:
    """One shard job: which samples, which blocks, which claim key."""

    run_key: str
    count: int
    index: int
    samples: np.ndarray
    blocks: list[tuple[int, np.ndarray]]

    @property
    def key(self) -> str:
        return shard_key(self.run_key, self.count, self.index)

    @property
    def label(self) -> str:
        return f"shard {self.index}/{self.count}"


# ----------------------------------------------------------------------------- jobs

class ShardStored(Exception):
    """This job stored its shard; the run waits for the shards named in the message."""


def _skipped(plan: ShardPlan, run_id: str | None, owner: str | None, message: str) -> Exception:
    from benchmark.sweep import JobSkipped

    exc = JobSkipped(plan.key, run_id, owner)
    exc.args = (message,)
    return exc


def _keep_alive(path: Any, key: str, owner: str) -> None:
    import threading

    from benchmark.store import claim_timeout_s
    from benchmark.sweep import _keep_alive as beat

    threading.Thread(target=beat, args=(path, key, owner, claim_timeout_s() / 5),
                     name=f"rtb-heartbeat-{key[:8]}", daemon=True).start()


def run_shard(spec: Any, out_dir: Any, data: EvalSet, models: list[Any], key: str,
              samples: np.ndarray, blocks: list[tuple[int, np.ndarray]], *, started: Any,
              resolved_config: dict[str, Any], overrides: list[str] | None, progress: bool,
              extra: dict[str, Any] | None) -> Any:
    """One shard job: claim the shard, evaluate its samples, store its
    outcomes, and assemble the run if every shard is now complete.

    Returns the assembled run's ``RunResult``; raises ``JobSkipped`` (shard
    complete or claimed elsewhere) or ``ShardStored`` (shards still missing)."""
    from tqdm.auto import tqdm

    from benchmark.pieces import clear_pieces, outcomes_to_bytes
    from benchmark.runner import count_steps, pre_checks, run_pieces
    from benchmark.store import Store, fail_claim, job_owner, resolve_store_path

    if spec.store is None:
        raise ConfigError(f"Expected a results store with shards={spec.shard.count} (the shards "
                          "meet there), but got store=null.")
    plan = ShardPlan(key, spec.shard.count, int(spec.shard.index), samples, blocks)
    path = resolve_store_path(spec.store.path)
    skip = not (spec.sweep is not None and spec.sweep.skip_existing is False)
    owner = job_owner()
    with Store(path) as s:
        got = s.claim_shard(key, plan.count, plan.index, owner, skip_complete=skip)
    finish = {"resolved_config": resolved_config, "overrides": overrides, "extra": extra,
              "out_dir": out_dir, "progress": progress, "started": started}
    if got.outcome == "complete" and got.run_id is None:
        assembled = assemble(spec, path, key, data, **finish)
        if assembled is not None:
            return assembled
        raise _skipped(plan, None, None, f"{plan.label} (key {key[:12]}) is already stored; "
                       f"{waiting(path, key, plan.count)}")
    if got.outcome == "complete":
        raise _skipped(plan, got.run_id, None,
                       f"run {got.run_id} already holds this sharded run (key {key[:12]})")
    if got.outcome == "running":
        raise _skipped(plan, None, got.owner, f"{plan.label} (key {key[:12]}) is claimed by "
                       f"another process ({got.owner})")
    _keep_alive(path, plan.key, owner)
    try:
        log.info("Evaluating %s of %s: %d of %d samples, %d version(s)", plan.label, data.name,
                 len(samples), len(data), len(models))
        pre_checks(spec, data, models)  # fail fast; the assembled run records the checks
        part = subset(data, samples)
        collector = GalleryCollector(part, spec.seed)
        whole_pool = GalleryCollector(data, spec.seed).pool
        collector.pool = np.flatnonzero(np.isin(samples, whole_pool)).astype(np.int64)
        bar = tqdm(total=len(models) * count_steps(spec, data) + 1, desc=f"rtb {plan.label}",
                   unit="step", disable=not progress, dynamic_ncols=True)
        outcomes = run_pieces(spec, models, part, out_dir, plan.key, bar, collector, blocks,
                              whole=(data, samples))
        blob = outcomes_to_bytes(outcomes, {"run_key": key, "shard": [plan.index, plan.count],
                                            "samples": [int(i) for i in samples]},
                                 kept_arrays(collector, samples))
        if blob is None:
            raise ConfigError("Expected every threat setting of a sharded run to be plain "
                              "values (numbers, text, lists), but one is not; run it unsharded.")
        bar.set_postfix_str("store")
        with Store(path) as s:
            s.save_shard(key, plan.count, plan.index, state="complete", name=spec.name,
                         data_name=data.name, n_samples=len(samples), outcomes=blob)
        bar.update(1)
        bar.close()
        clear_pieces(out_dir)
    except BaseException as exc:
        text = f"{type(exc).__name__}: {exc}".rstrip(": ")
        try:
            with Store(path) as s:
                s.save_shard(key, plan.count, plan.index, state="failed", name=spec.name,
                             data_name=data.name, n_samples=len(samples), error=text)
        except Exception as store_exc:  # the original error is the one to show
            log.warning("Could not mark %s failed in the store: %s", plan.label, store_exc)
        fail_claim(path, plan.key, exc)
        raise
    assembled = assemble(spec, path, key, data, **finish)
    if assembled is not None:
        return assembled
    raise ShardStored(f"{plan.label} stored ({len(samples)} samples); "
                      f"{waiting(path, key, plan.count)}")


def waiting(path: Any, key: str, count: int) -> str:
    """``"waiting for shards 1, 2 (rtb store list shows them)"``, or that the run is assembled."""
    from benchmark.store import Store

    with Store(path, readonly=True) as s:
        states = s.shard_states(key, count)
        runs = s.runs(run_key=key, status="finished")
    if not runs.empty:
        return f"run {runs['run_id'].iloc[-1]} holds the assembled run"
    missing = [i for i in range(count) if states.get(i) != "complete"]
    if not missing:
        return "every shard is stored; another job is assembling the run"
    return (f"waiting for shard{'s' if len(missing) > 1 else ''} "
            f"{', '.join(map(str, missing))} of {count} (rtb store list shows them)")


def assemble(spec: Any, path: Any, key: str, data: EvalSet, *, resolved_config: dict[str, Any],
             overrides: list[str] | None, extra: dict[str, Any] | None, out_dir: Any,
             progress: bool, started: Any) -> Any:
    """The whole run from its stored shards, if every one is complete and no
    other job is assembling it (claimed on the run's own key): the merged
    outcomes, then checks, group metrics, reliability flags, gallery, record
    and store exactly as an unsharded run computes them. None when not (yet)
    this job's."""
    from tqdm.auto import tqdm

    from benchmark.models import load_model, resolve_device
    from benchmark.pieces import outcomes_from_bytes
    from benchmark.runner import (
        FINISH_STEPS,
        RunResult,
        checks_before_threats,
        configure_determinism,
        finish_run,
    )
    from benchmark.store import Store, fail_claim, job_owner

    count = spec.shard.count
    with Store(path, readonly=True) as s:
        states = s.shard_states(key, count)
    if any(states.get(i) != "complete" for i in range(count)):
        return None
    owner = job_owner()
    with Store(path) as s:
        got = s.claim_job(key, owner)
    if got.outcome != "claimed":
        return None
    _keep_alive(path, key, owner)
    try:
        with Store(path, readonly=True) as s:
            blobs = s.shard_outcomes(key, count)
        parts, kept = [], []
        for i in range(count):
            header, outs, arrays = outcomes_from_bytes(blobs[i])
            parts.append((np.asarray(header["samples"], dtype=np.int64), outs))
            kept.append(arrays)
        outcomes = stitch(parts, len(data))
        log.info("Assembling %d shards of %s (%d samples)", count, data.name, len(data))
        # fresh versions, as an unsharded run has them before any threat touches them
        configure_determinism(spec.seed, spec.deterministic)
        device = resolve_device(spec.device)
        models = [load_model(m, device) for m in spec.models.values()]
        checks = checks_before_threats(spec, data, models)
        bar = tqdm(total=FINISH_STEPS + bool(spec.store), desc="rtb assemble", unit="step",
                   disable=not progress, dynamic_ncols=True)
        record = finish_run(
            spec, data, models, outcomes, out_dir, bar, key=key, checks=checks, started=started,
            resolved_config=unsharded_config(resolved_config),
            overrides=unsharded_overrides(overrides or []),
            extra={**(extra or {}), "shards": {"count": count, "block": spec.shard.block}},
            gallery=gallery_of(data, spec.seed, kept))
        with Store(path) as s:
            s.drop_shards(key)
    except BaseException as exc:
        fail_claim(path, key, exc)
        raise
    return RunResult(record=record, outcomes=outcomes, evalset=data, models=models,
                     out_dir=out_dir)
