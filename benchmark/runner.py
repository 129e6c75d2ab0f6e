"""One run: data, model versions, checks, threats, measurements, record.

The runner is the only place that turns specs into live objects (datasets,
models, ART attacks). Everything it computes comes from per-sample outcomes.
"""

from __future__ import annotations

import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from attacks.art_adapter import ArtAdapter, derive_seed
from attacks.budgets import run_attack
from attacks.corruption_suite import suite_outcomes, suite_steps
from benchmark.core.errors import ConfigError
from benchmark.core.forward import predict_finite
from benchmark.core.specs import AttackSpec, RunSpec
from benchmark.core.types import (
    CheckResult,
    EvalSet,
    Measurement,
    ModelUnderTest,
    Outcome,
    Threat,
    threat_label,
)
from benchmark.data import load_evalset
from benchmark.gallery import GalleryCollector, collect_and_write
from benchmark.models import load_model, resolve_device
from benchmark.pieces import clear_pieces, load_pieces, save_piece
from benchmark.record import RunRecord, config_hash, environment, package_versions, write_record
from benchmark.reliability_run import flags_after_threats, flags_before_threats
from metrics.bias import BiasInputs, bias_inputs, bias_measurements
from metrics.corruption import corruption_measurements
from metrics.groups import check_groups, sample_frame
from metrics.robustness import accuracy_measurements
from metrics.validation import run_pre_checks

log = logging.getLogger(__name__)

CLEAN = Threat(family="clean", name="clean")


def configure_determinism(seed: int, deterministic: bool) -> None:
    """Seed python, numpy (ART draws from its global generator) and torch;
    ask torch for deterministic algorithms."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


@dataclass
class RunResult:
    record: RunRecord
    outcomes: list[Outcome]
    evalset: EvalSet
    models: list[ModelUnderTest]
    out_dir: Path

    @property
    def measurements(self) -> list[Measurement]:
        return self.record.measurements


def clean_outcome(model: ModelUnderTest, data: EvalSet, batch_size: int) -> Outcome:
    pred, finite = predict_finite(model, data.x, batch_size)
    return Outcome(
        model=model.name,
        version=model.version,
        threat=CLEAN,
        pred=pred,
        correct=pred == data.y.numpy(),
        columns={"finite": finite.astype(np.float64)},
    )


def _check_compatible(model: ModelUnderTest, data: EvalSet) -> None:
    if tuple(model.input_shape) != data.sample_shape:
        raise ConfigError(
            f"Model {model.key} expects inputs of shape {list(model.input_shape)}, but dataset "
            f"{data.name!r} has samples of shape {list(data.sample_shape)}."
        )
    if model.num_classes < data.num_classes:
        raise ConfigError(
            f"Model {model.key} predicts {model.num_classes} classes, but dataset "
            f"{data.name!r} has {data.num_classes}."
        )


def _check_attack_units(spec: RunSpec, data: EvalSet) -> None:
    """An image run refuses a feature-table attack (budgets in training
    standard deviations of a table's columns; LowProFool also needs the
    table's feature importance), as a table run refuses pixel budgets."""
    if data.modality == "tabular":
        return
    for a in spec.attacks.values():
        if a.units == "std":
            raise ConfigError(
                f"Expected `attack.{a.name}` to be an attack with budgets in input units for "
                f"dataset {data.name!r} (not a feature table), but it is a feature-table attack "
                "(units: std).")


def count_steps(spec: RunSpec, data: EvalSet | None = None) -> int:
    """Progress units per model version: clean plus one per threat setting."""
    if data is not None and data.modality == "tabular":
        from benchmark.tabular_run import tabular_steps

        return tabular_steps(spec, data)
    attack_steps = sum(len(a.eps) for a in spec.attacks.values())
    return 1 + attack_steps + suite_steps(spec.corruption, spec.fault)


def pre_checks(spec: RunSpec, data: EvalSet, models: list[ModelUnderTest]) -> list[CheckResult]:
    """Data and model checks that run before any threat (validation policy);
    a failing check under ``on_fail: stop`` raises ``ValidationFailed``. A
    feature table gets its schema checks against the training part instead,
    and one ``fault_caught`` result per pipeline fault of the run."""
    if data.modality == "tabular":
        from benchmark.tabular_run import fault_checks, tabular_pre_checks

        return tabular_pre_checks(spec, data) + fault_checks(spec, data)
    return run_pre_checks(spec.validation, data, models, list(spec.models.values()))


def derived_measurements(
    spec: RunSpec, data: EvalSet, models: list[ModelUnderTest], outcomes: list[Outcome],
    inputs: BiasInputs | None = None,
) -> list[Measurement]:
    """Every tidy measurement of the run, computed from the per-sample outcomes."""
    measurements = accuracy_measurements(outcomes)
    baseline = spec.corruption.baseline if spec.corruption else None
    measurements += corruption_measurements(outcomes, baseline)
    measurements += bias_measurements(spec.groups, data, outcomes, seed=spec.seed,
                                      num_classes=max((m.num_classes for m in models), default=None),
                                      inputs=inputs)
    return measurements


def _measure(spec: RunSpec, data: EvalSet, models: list[ModelUnderTest],
             outcomes: list[Outcome]) -> tuple[list[Measurement], BiasInputs]:
    """The run's measurements, and the group columns the outcomes are written with."""
    inputs = bias_inputs(spec.groups, data)
    return derived_measurements(spec, data, models, outcomes, inputs), inputs


@dataclass(frozen=True)
class Piece:
    """One unit of a run that is checkpointed as it finishes: a version's
    clean pass, one attack's budget sweep, or a corruption or fault suite.

    ``outcomes`` runs it (calling its argument once per progress step). Each
    piece seeds itself (attacks reseed per attack and budget from the block
    seed, version and attack; suites draw per-sample noise from counter
    seeds), so its outcomes do not depend on which pieces ran before. A
    piece runs once per evaluation block (``run_pieces``), except a
    ``whole_set`` one, which runs once per job on the whole set."""

    id: str
    label: str
    steps: int
    outcomes: Callable[[Callable[[], None]], Iterator[Outcome]]
    #: The threat each progress step evaluates, for the bar's postfix (default: ``label``).
    step_labels: tuple[str, ...] = ()
    #: Its per-sample values depend on the whole set: run once per job, not per block.
    whole_set: bool = False


def clean_piece(spec: RunSpec, model: ModelUnderTest, data: EvalSet) -> Piece:
    def run(on_step: Callable[[], None]) -> Iterator[Outcome]:
        yield clean_outcome(model, data, spec.batch_size)
        on_step()

    return Piece(f"{model.key}--clean", "clean", 1, run)


def threat_pieces(spec: RunSpec, model: ModelUnderTest, data: EvalSet,
                  clean: Outcome, gallery: GalleryCollector | None = None, *,
                  seed: int | None = None, adapters: list[ArtAdapter] | None = None,
                  whole: tuple[EvalSet, np.ndarray] | None = None) -> Iterator[Piece]:
    """Every threat of the run against one model version, as pieces;
    ``gallery`` keeps the attacks' examples of its pool points. Attacks are
    seeded from ``seed`` (default: the run seed; an evaluation block's own,
    see ``block_seed``); ``adapters`` caches the version's ART adapter across
    calls. ``whole`` (the whole set, and the indices in it of the rows of
    ``data``): pieces whose per-sample values depend on the whole set (a
    table's pipeline faults choose rows and columns of the whole frame) run on
    it and keep ``data``'s rows."""
    attack_seed = spec.seed if seed is None else seed
    if data.modality == "tabular":
        from benchmark.tabular_run import tabular_threats

        # attacks take the block's seed; noise is per-sample from each row's content
        seeded = tabular_threats(replace(spec, seed=attack_seed), model, data, clean)
        for (suffix, label, steps, run), (_, _, _, attack_run) in zip(
                tabular_threats(spec, model, data, clean), seeded, strict=True):
            if suffix.startswith("attack--"):
                yield Piece(f"{model.key}--{suffix}", label, steps, attack_run)
            elif suffix.startswith("faults--"):
                run = _whole_set(spec, model, suffix, whole, clean) or run
                yield Piece(f"{model.key}--{suffix}", label, steps, run, whole_set=True)
            else:
                yield Piece(f"{model.key}--{suffix}", label, steps, run)
        return
    adapters = [] if adapters is None else adapters

    def attack(spec_a: AttackSpec, on_step: Callable[[], None]) -> Iterator[Outcome]:
        if not adapters:
            adapters.append(ArtAdapter(model, spec.batch_size))
        keeper = gallery.keeper(model, spec_a.name) if gallery is not None else None
        yield from run_attack(adapters[0], spec_a, data.x, data.y, clean.pred, attack_seed,
                              on_step=on_step, keeper=keeper)

    for a in spec.attacks.values():
        yield Piece(f"{model.key}--attack--{a.name}", a.name, len(a.eps), partial(attack, a),
                    tuple(threat_label("attack", a.name, float(e)) for e in a.eps))
    suites = (("corruptions", spec.corruption, None), ("faults", None, spec.fault))
    for kind, corruption, fault in suites:
        suite = corruption or fault
        if suite is None:
            continue
        labels = (tuple(threat_label("corruption", c, float(sev)) for c in corruption.corruptions
                        for sev in corruption.severities) if corruption is not None
                  else tuple(f.name for f in fault.faults) if fault is not None else ())
        # per-sample noise from each sample's content (and the run seed): never block-seeded
        yield Piece(f"{model.key}--{kind}--{suite.name}", f"{kind} {suite.name}",
                    suite_steps(corruption, fault),
                    partial(suite_outcomes, corruption, fault, model, data, spec.batch_size,
                            spec.seed, spec.models), labels)


def _whole_set(spec: RunSpec, model: ModelUnderTest, suffix: str,
               whole: tuple[EvalSet, np.ndarray] | None, clean: Outcome
               ) -> Callable[[Callable[[], None]], Iterator[Outcome]] | None:
    """Piece ``suffix`` run on the whole set, keeping the rows ``whole[1]``."""
    if whole is None:
        return None
    from benchmark.shard import take
    from benchmark.tabular_run import tabular_threats

    full, rows = whole
    full_clean = replace(clean, pred=np.zeros(len(full), dtype=np.asarray(clean.pred).dtype),
                         correct=np.zeros(len(full), dtype=bool), columns={})
    (run,) = [r for s, _, _, r in tabular_threats(spec, model, full, full_clean) if s == suffix]

    def on_rows(on_step: Callable[[], None]) -> Iterator[Outcome]:
        for o in run(on_step):
            yield take(o, rows)

    return on_rows


def block_seed(seed: int, block: int) -> int:
    """The attack seed of evaluation block ``block``: the run seed itself for
    block 0 (a run of one block attacks as it always did), a seed derived
    from it for every other block (see ``benchmark.shard``)."""
    return seed if block == 0 else derive_seed(seed, "block", block)


def run_pieces(spec: RunSpec, models: list[ModelUnderTest], data: EvalSet, out_dir: Path,
               key: str, bar: Any, gallery: GalleryCollector | None = None,
               blocks: list[tuple[int, np.ndarray]] | None = None,
               whole: tuple[EvalSet, np.ndarray] | None = None) -> list[Outcome]:
    """Every outcome of the run, piece by piece: a piece already finished in
    ``out_dir`` under the same run key is read back, every other one runs
    and is saved there as soon as it finishes.

    Each piece runs block by block (``blocks``: block id and the positions of
    its samples in ``data``; default one block of everything), each block on
    its own with its own attack seed, so a sample's outcome depends only on
    its block (``benchmark.shard``). ``whole``: the whole set and the indices
    in it of ``data``'s rows, when ``data`` is one shard of it."""
    from benchmark.shard import BlockGallery, merge_keepers, stitch, subset, take

    blocks = blocks or [(0, np.arange(len(data)))]
    # one block of everything runs on ``data`` as it is (in its own order)
    one = len(blocks) == 1 and len(blocks[0][1]) == len(data)
    parts = [(b, idx, data if one else subset(data, idx)) for b, idx in blocks]
    done = load_pieces(out_dir, key)
    if done:
        log.info("Reusing %d finished piece(s) from %s", len(done), out_dir,
                 extra={"console": True})

    def run(per_block: list[Piece], model: ModelUnderTest,
            galleries: list[BlockGallery] | None = None) -> list[Outcome]:
        piece = per_block[0]
        labels = piece.step_labels or (piece.label,)
        bar.set_postfix_str(f"{model.key} {labels[0]}")
        if piece.id in done:
            bar.update(piece.steps)
            return done[piece.id]
        share = 1.0 / len(per_block)
        step = [0.0]

        def on_step() -> None:  # the postfix names the threat the next step evaluates
            bar.update(share)
            step[0] += share
            i = int(step[0] + 1e-9)
            if i < len(labels):
                bar.set_postfix_str(f"{model.key} {labels[i]}")

        if len(per_block) == 1:
            got = list(piece.outcomes(on_step))
        else:
            got = stitch([(idx, list(p.outcomes(on_step)))
                          for (_, idx, _), p in zip(parts, per_block, strict=True)], len(data))
            if galleries is not None and gallery is not None:
                merge_keepers(gallery, galleries)
        save_piece(out_dir, piece.id, key, got)
        return got

    outcomes: list[Outcome] = []
    try:
        for model in models:
            clean = run([clean_piece(spec, model, sub) for _, _, sub in parts], model)
            outcomes.extend(clean)
            adapters: list[ArtAdapter] = []
            if one:
                for piece in threat_pieces(spec, model, data, clean[0], gallery,
                                           seed=block_seed(spec.seed, blocks[0][0]),
                                           adapters=adapters, whole=whole):
                    outcomes.extend(run([piece], model))
                continue
            galleries = [BlockGallery(gallery, idx, sub) for _, idx, sub in parts] \
                if gallery is not None else None
            per_block = [list(threat_pieces(spec, model, sub, take(clean[0], idx),
                                            galleries[i] if galleries else None,
                                            seed=block_seed(spec.seed, b), adapters=adapters))
                         for i, (b, idx, sub) in enumerate(parts)]
            job_level = list(threat_pieces(spec, model, data, clean[0], None,
                                           adapters=adapters, whole=whole))
            for j, piece in enumerate(per_block[0]):
                if piece.whole_set:  # once for the job, on the whole set
                    outcomes.extend(run([job_level[j]], model))
                else:
                    outcomes.extend(run([pieces[j] for pieces in per_block], model, galleries))
    except BaseException:
        bar.close()  # end the bar's line before the error is shown
        raise
    return outcomes


def in_phase(bar: Any, name: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` as one step of the progress bar, its postfix naming the phase."""
    bar.set_postfix_str(name)
    started = time.perf_counter()
    try:
        out = fn(*args)
    except BaseException:
        bar.close()  # end the bar's line before the error is shown
        raise
    bar.update(1)
    log.info("Phase %s took %.2f s", name, time.perf_counter() - started)
    return out


#: Progress steps after the threats: group metrics, reliability re-attacks, gallery, record.
FINISH_STEPS = 4


def _without_paths(config: dict[str, Any]) -> dict[str, Any]:
    """The config without file locations (data.root, model checkpoints): their
    content enters the key as the data fingerprint and the model sha256s."""
    out = dict(config)
    if isinstance(out.get("data"), dict):
        out["data"] = {k: v for k, v in out["data"].items() if k != "root"}
    if isinstance(out.get("model"), dict):
        out["model"] = {name: {k: v for k, v in m.items() if k != "checkpoint"}
                        if isinstance(m, dict) else m for name, m in out["model"].items()}
    return out


def _preprocessing(model: ModelUnderTest) -> dict[str, Any]:
    """What the record says about preprocessing folded into a version's module."""
    text = getattr(model.module, "preprocessing", None)
    return {"preprocessing": text} if isinstance(text, str) else {}


def run_key(resolved: dict[str, Any], models: list[ModelUnderTest], data: EvalSet) -> str:
    """Content key of a job: resolved config (no paths, no launcher, no shard
    split: every shard of a run has the run's key), model checksums, data
    fingerprint and rtb version."""
    from benchmark.shard import unsharded_config

    config = {k: v for k, v in unsharded_config(resolved).items()
              if k not in ("hydra", "store", "name", "sweep")}
    content = {
        "config": _without_paths(config),
        "models": sorted((m.key, m.sha256) for m in models),
        "data": data.fingerprint,
        "rtb": package_versions().get("robustness-testbench"),
    }
    return config_hash(content)


def run_benchmark(
    spec: RunSpec,
    out_dir: Path,
    *,
    resolved_config: dict[str, Any],
    overrides: list[str] | None = None,
    progress: bool = True,
    on_key: Callable[[str], None] | None = None,
    extra: dict[str, Any] | None = None,
    data: EvalSet | None = None,
    models: list[ModelUnderTest] | None = None,
) -> RunResult:
    """Run ``spec`` end to end and write its record into ``out_dir``.

    ``on_key`` gets the run's content key before any threat runs (a sweep
    uses it to skip a job already complete in the store, by raising);
    ``extra`` goes into the record (e.g. the sweep id). ``data`` and
    ``models`` (the Python API's prebuilt EvalSet and modules, in the order of
    ``spec.models``) replace loading them from ``spec``."""
    started = datetime.now(timezone.utc)
    if spec.store:  # a store this run could not write is refused before any work
        from benchmark.store import check_writable_store

        check_writable_store(spec.store.path)
    configure_determinism(spec.seed, spec.deterministic)
    device = resolve_device(spec.device)
    data = data if data is not None else load_evalset(spec.data)
    models = models if models is not None else [load_model(m, device)
                                                for m in spec.models.values()]
    for m in models:
        _check_compatible(m, data)
    check_groups(spec.groups, data)
    _check_attack_units(spec, data)
    key = run_key(resolved_config, models, data)
    from benchmark.shard import job_blocks

    samples, blocks = job_blocks(data, spec.seed, spec.shard)
    if spec.shard.sharded:  # the shard's own claim replaces the run's
        from benchmark.shard import run_shard

        return run_shard(spec, out_dir, data, models, key, samples, blocks, started=started,
                         resolved_config=resolved_config, overrides=overrides,
                         progress=progress, extra=extra)
    if on_key is not None:
        on_key(key)
    try:
        log.info("Evaluating %d version(s) on %s (%d samples) on %s", len(models), data.name,
                 len(data), device)
        checks = checks_before_threats(spec, data, models)
        bar = tqdm(total=len(models) * count_steps(spec, data) + FINISH_STEPS + bool(spec.store),
                   desc="rtb", unit="step", disable=not progress, dynamic_ncols=True)
        gallery = GalleryCollector(data, spec.seed)
        outcomes = run_pieces(spec, models, data, out_dir, key, bar, gallery, blocks)
        record = finish_run(spec, data, models, outcomes, out_dir, bar, key=key, checks=checks,
                            started=started, resolved_config=resolved_config,
                            overrides=overrides, extra=extra, gallery=gallery)
        clear_pieces(out_dir)  # the record and outcomes now hold everything the pieces held
    except BaseException as exc:  # the job's claim, if this process holds one, failed
        if spec.store:
            from benchmark.store import fail_claim

            fail_claim(spec.store.path, key, exc)
        raise
    return RunResult(record=record, outcomes=outcomes, evalset=data, models=models,
                     out_dir=out_dir)


def checks_before_threats(spec: RunSpec, data: EvalSet, models: list[ModelUnderTest]
                          ) -> list[CheckResult]:
    """The data and model checks, then the reliability flags that need no
    outcomes (the attack flags re-attack images; a table's attacks are
    projected and re-checked in ``attacks.tabular_attacks`` instead)."""
    checks = pre_checks(spec, data, models)
    return checks + ([] if data.modality == "tabular"
                     else flags_before_threats(spec, data, models))


def finish_run(spec: RunSpec, data: EvalSet, models: list[ModelUnderTest],
               outcomes: list[Outcome], out_dir: Path, bar: Any, *, key: str,
               checks: list[CheckResult], started: datetime, resolved_config: dict[str, Any],
               overrides: list[str] | None, extra: dict[str, Any] | None,
               gallery: GalleryCollector) -> RunRecord:
    """Everything after the threats, from the outcomes of the whole set
    (``checks``: those that ran before the threats): group metrics,
    reliability re-attacks, gallery, record, store. Shared by an unsharded
    run and the assembly of a sharded one."""
    tabular = data.modality == "tabular"
    checks = list(checks)
    measurements, inputs = in_phase(bar, "group metrics", _measure, spec, data, models,
                                    outcomes)
    checks += in_phase(bar, "reliability re-attacks",
                       (lambda *a: []) if tabular else flags_after_threats, spec, data,
                       models, outcomes)
    in_phase(bar, "gallery", collect_and_write, spec, data, models, outcomes, measurements,
             gallery, out_dir)
    device = resolve_device(spec.device)
    run_id = f"{started.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    for row in measurements:
        row.run = run_id
    record = RunRecord(
        run_id=run_id,
        name=spec.name,
        started=started.isoformat(),
        finished=datetime.now(timezone.utc).isoformat(),
        config=resolved_config,
        overrides=list(overrides or []),
        config_hash=config_hash(resolved_config),
        run_key=key,
        models={
            m.key: {"name": m.name, "version": m.version, "sha256": m.sha256,
                    "checkpoint": spec.models[k].checkpoint,
                    **_preprocessing(m)}
            for k, m in zip(spec.models, models, strict=True)
        },
        data={"name": data.name, "fingerprint": data.fingerprint, "n": len(data),
              "classes": data.classes, "shape": list(data.sample_shape),
              **({"modality": "tabular", "schema": data.schema.as_dict()}
                 if data.schema is not None else {})},
        seed=spec.seed,
        device=str(device),
        env=environment(device),
        measurements=measurements,
        checks=checks,
        extra=dict(extra or {}),
    )
    extras = sorted({k for o in outcomes for k in o.columns})
    in_phase(bar, "record", write_record, out_dir, record, outcomes,
             sample_frame(data.y.numpy(), inputs.columns, extras))
    if spec.store:  # the run's files are written first: the store can be rebuilt from them
        from benchmark.store import save_run_dir

        in_phase(bar, "store", save_run_dir, spec.store.path, out_dir)
    bar.close()
    return record
