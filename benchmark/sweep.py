"""Sweeps at scale: the ``sweep:`` config section, per-job thread limits,
resume by content key, and the Hydra callback that tracks a multirun.

A sweep is ``rtb run -m ...``; each job is one run. The pieces here:

* ``SweepSpec`` (config ``sweep.id``, ``sweep.skip_existing``, ``sweep.threads``).
* ``prepare_job``: in each job, cap torch's threads (so parallel jobs do not
  oversubscribe the cores) and decide whether a job whose content key is
  already complete in the store is skipped (``JobSkipped``, raised by the
  runner's key hook before any threat runs).
* ``claim_hook``: that key hook. It claims the key in the store's ``jobs``
  table in one ``BEGIN IMMEDIATE`` transaction, so identical sweeps started
  together run each job once: a key that is complete, or claimed by a live
  process (heartbeat younger than ``$RTB_CLAIM_TIMEOUT_S``, default 300 s;
  refreshed every fifth of that), is skipped; a failed or abandoned claim is
  taken over. Storing the run marks the claim complete in the same
  transaction; a run that raises marks it failed.
* ``SweepCallback`` (``hydra.callbacks`` in ``conf/config.yaml``): writes
  ``sweep.json`` (id, start, job count) into the sweep dir, reports
  "job k/N done, ETA" after each job, and at the end prints and writes the
  sweep summary (``summary.md``, ``summary.csv``).

The sweep id is derived from the sweep's own overrides (or set with
``sweep.id=NAME``): running the same sweep command again continues the same
sweep, so an interrupted sweep resumes, and ``rtb compare --sweep ID`` sees
every job once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from benchmark.core.specs import RunSpec, SweepSpec

log = logging.getLogger(__name__)

SWEEP_FILE = "sweep.json"
JOB_FILE = "job.json"
SUMMARY_MD = "summary.md"
SUMMARY_CSV = "summary.csv"
UID_RESOLVER = "rtb_uid"

#: Environment variables that cap the thread pools of OpenMP / BLAS libraries.
THREAD_ENV_VARS: tuple[str, ...] = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

#: Overrides that choose how or where a sweep runs, not what it computes:
#: left out of the derived sweep id.
NON_CONTENT_PREFIXES: tuple[str, ...] = ("hydra.", "hydra/", "sweep.", "store=", "+sweep.")


def _register_resolvers() -> None:
    """``${rtb_uid:}``: a short random id, resolved once per config (cached), so
    two sweeps started in the same second get different sweep dirs."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(UID_RESOLVER):
        OmegaConf.register_new_resolver(UID_RESOLVER, lambda: uuid.uuid4().hex[:6],
                                        use_cache=True)


_register_resolvers()


# ----------------------------------------------------------------------------- config

# ----------------------------------------------------------------------------- threads

def _joblib_threads(launcher: Mapping[str, Any]) -> int | None:
    cpus = os.cpu_count() or 1
    n_jobs = int(launcher.get("n_jobs") or -1)
    workers = cpus + 1 + n_jobs if n_jobs < 0 else n_jobs
    return max(1, cpus // max(1, min(workers, cpus)))


def _submitit_threads(launcher: Mapping[str, Any]) -> int | None:
    cpus = launcher.get("cpus_per_task")
    return int(cpus) if cpus else None


def _ray_threads(launcher: Mapping[str, Any]) -> int | None:
    remote = (launcher.get("ray") or {}).get("remote") or {}
    cpus = remote.get("num_cpus")
    return max(1, int(cpus)) if cpus else None


#: Per launcher class: the torch threads one job should use when ``sweep.threads`` is auto.
AUTO_THREADS: dict[str, Callable[[Mapping[str, Any]], int | None]] = {
    "JoblibLauncher": _joblib_threads,
    "SlurmLauncher": _submitit_threads,
    "LocalLauncher": _submitit_threads,
    "RayLauncher": _ray_threads,
}


def auto_threads(launcher: Mapping[str, Any] | None) -> int | None:
    """Threads per job for a launcher config (None: leave torch's default)."""
    if not launcher:
        return None
    cls = str(launcher.get("_target_", "")).rpartition(".")[2]
    rule = AUTO_THREADS.get(cls)
    return rule(launcher) if rule else None


def apply_threads(threads: int | None) -> int:
    """Cap torch's intra-op threads and the OpenMP/BLAS env for this process;
    returns the thread count in effect."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
        for var in THREAD_ENV_VARS:
            os.environ[var] = str(threads)
    return torch.get_num_threads()


# ----------------------------------------------------------------------------- skip

class JobSkipped(Exception):
    """Nothing to run: a finished run already holds the job's content key
    (``run_id``), or another live process has claimed it (``owner``)."""

    def __init__(self, run_key: str, run_id: str | None, owner: str | None = None) -> None:
        if run_id is not None:
            msg = f"run {run_id} already holds this job (key {run_key[:12]})"
        else:
            msg = f"job (key {run_key[:12]}) claimed by another process ({owner})"
        super().__init__(msg)
        self.run_key = run_key
        self.run_id = run_id
        self.owner = owner


def complete_run(store: str | None, run_key: str) -> str | None:
    """The id of a finished run with ``run_key`` in the store, if any."""
    from benchmark.store import Store, resolve_store_path

    path = resolve_store_path(store)
    if not path.is_file() or path.stat().st_size == 0:
        return None
    with Store(path, readonly=True) as s:
        runs = s.runs(run_key=run_key, status="finished")
    return None if runs.empty else str(runs["run_id"].iloc[-1])


def _keep_alive(store: Path, run_key: str, owner: str, every: float) -> None:
    """Refresh a claim's heartbeat until the claim is no longer this owner's
    running one (the run was stored, or failed)."""
    from benchmark.store import Store

    stop = threading.Event()
    while not stop.wait(every):
        try:
            with Store(store, create=False) as s:
                if not s.heartbeat(run_key, owner):
                    return
        except Exception as exc:  # a heartbeat must never break the job it guards
            log.warning("Heartbeat of job %s failed: %s", run_key[:12], exc)


def claim_hook(store: str | None, sweep_id: str | None = None) -> Callable[[str], None]:
    """A runner key hook that claims the job's key in the store atomically:
    raises ``JobSkipped`` when the key is complete or claimed by a live
    process; otherwise the claim is this process's, and a daemon thread keeps
    its heartbeat fresh until the run is stored or marked failed."""
    from benchmark.store import Store, claim_timeout_s, job_owner, resolve_store_path

    def claim(run_key: str) -> None:
        path = resolve_store_path(store)
        owner = job_owner()
        timeout = claim_timeout_s()
        with Store(path) as s:
            got = s.claim_job(run_key, owner, stale_after=timeout, sweep_id=sweep_id)
        if got.outcome == "complete":
            raise JobSkipped(run_key, got.run_id)
        if got.outcome == "running":
            raise JobSkipped(run_key, None, got.owner)
        threading.Thread(target=_keep_alive, args=(path, run_key, owner, timeout / 5),
                         name=f"rtb-heartbeat-{run_key[:8]}", daemon=True).start()

    return claim


def skip_hook(store: str | None) -> Callable[[str], None]:
    """A runner key hook: raises ``JobSkipped`` when the key is complete in
    ``store`` or claimed by another live process (see ``claim_hook``)."""
    return claim_hook(store)


# ----------------------------------------------------------------------------- job side

@dataclass
class Job:
    """What a job needs to know about the sweep it belongs to."""

    sweep_id: str | None
    skip_existing: bool
    threads: int
    store: str | None
    job_dir: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def key_hook(self) -> Callable[[str], None] | None:
        """The runner's key hook: skip a completed job, or nothing."""
        return claim_hook(self.store, self.sweep_id) if self.skip_existing and self.store else None

    @property
    def record_extra(self) -> dict[str, Any]:
        """What goes into ``record.extra`` (the store reads ``sweep_id`` from it)."""
        return {"sweep_id": self.sweep_id} if self.sweep_id else {}

    def result(self, status: str, run_id: str, record: Mapping[str, Any] | None) -> dict[str, Any]:
        """The job's return value, read by ``SweepCallback.on_job_end``."""
        return {"status": status, "run_id": run_id, "sweep_id": self.sweep_id,
                "seconds": round(time.monotonic() - self.started, 3),
                "threads": self.threads,
                "metrics": summary_metrics(record.get("measurements", [])) if record else []}

    def skipped(self, exc: JobSkipped) -> dict[str, Any]:
        record = None
        if self.store and exc.run_id is not None:
            from benchmark.store import open_store

            with open_store(self.store, readonly=True) as s:
                record = s.record(exc.run_id)
        return self.result("skipped", exc.run_id or "", record)


def read_sweep_file(sweep_dir: Path) -> dict[str, Any]:
    path = sweep_dir / SWEEP_FILE
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def prepare_job(spec: SweepSpec | None, *, multirun: bool, sweep_dir: Path | None,
                launcher: Mapping[str, Any] | None, store: str | None, job_dir: Path) -> Job:
    """Set this job's thread limit and work out its sweep id and skip policy."""
    spec = spec or SweepSpec()
    threads = spec.threads if spec.threads is not None else (
        auto_threads(launcher) if multirun else None)
    in_effect = apply_threads(threads)
    sweep_id = spec.id
    if multirun and sweep_id is None and sweep_dir is not None:
        sweep_id = read_sweep_file(sweep_dir).get("sweep_id") or sweep_dir.name
    skip = spec.skip_existing if spec.skip_existing is not None else multirun
    return Job(sweep_id=sweep_id, skip_existing=skip, threads=in_effect, store=store,
               job_dir=job_dir)


# ----------------------------------------------------------------------------- summary

def summary_metrics(measurements: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per model version: clean accuracy and the worst accuracy over every
    attack budget (whole-set accuracy rows only)."""
    by_version: dict[str, dict[str, Any]] = {}
    for m in measurements:
        if m.get("metric") != "accuracy" or m.get("group_feature"):
            continue
        key = f"{m['model']}@{m['version']}"
        row = by_version.setdefault(key, {"model": key, "clean": None, "worst": None,
                                          "worst_threat": ""})
        value = m.get("value")
        if m.get("family") == "clean":
            row["clean"] = value
        elif m.get("family") == "attack" and value is not None and (
                row["worst"] is None or value < row["worst"]):
            row["worst"] = value
            row["worst_threat"] = f"{m['threat']} eps={m['param']:g}"
    return list(by_version.values())


def sweep_id_for(name: str, overrides: Sequence[str]) -> str:
    """A sweep's id from what it computes: its name and content overrides
    (launcher, threads, store and Hydra settings left out), so running the
    same sweep again continues it."""
    content = sorted(o for o in overrides if not o.startswith(NON_CONTENT_PREFIXES))
    digest = hashlib.sha256(json.dumps([name, content]).encode()).hexdigest()[:10]
    return f"{name}-{digest}"


def count_jobs(overrides: Sequence[str], params: Mapping[str, Any] | None = None) -> int | None:
    """Jobs of a basic sweep: the product of each sweep override's value count."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    lines = [*overrides, *(f"{k}={v}" for k, v in (params or {}).items())]
    try:
        parsed = OverridesParser.create().parse_overrides(lines)
    except Exception:  # an override the basic sweeper would reject: count unknown
        return None
    n = 1
    for ov in parsed:
        if ov.is_sweep_override():
            if ov.is_discrete_sweep():
                n *= len(list(ov.sweep_string_iterator()))
            else:
                return None
    return n


def _fmt(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def summary_rows(jobs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (job, model version) from the jobs' ``job.json`` files."""
    rows: list[dict[str, Any]] = []
    for j in sorted(jobs, key=lambda j: j.get("num", 0)):
        base = {"job": j.get("num"), "overrides": " ".join(j.get("overrides", [])),
                "status": j.get("status"), "run": j.get("run_id") or "",
                "seconds": j.get("seconds")}
        metrics = j.get("metrics") or [{}]
        for m in metrics:
            rows.append({**base, "model": m.get("model", ""), "clean": m.get("clean"),
                         "worst": m.get("worst"), "worst_threat": m.get("worst_threat", "")})
    return rows


def format_summary(sweep_id: str, rows: Sequence[Mapping[str, Any]]) -> str:
    from benchmark.console import format_table

    table = format_table(
        ["job", "status", "run", "model", "clean", "worst attack", "at", "overrides"],
        [[str(r["job"]), str(r["status"]), str(r["run"]), str(r["model"]), _fmt(r["clean"]),
          _fmt(r["worst"]), str(r["worst_threat"]), str(r["overrides"])] for r in rows],
        align="rlllrrll",
    )
    ran = len({r["job"] for r in rows if r["status"] == "ran"})
    skipped = len({r["job"] for r in rows if r["status"] == "skipped"})
    failed = len({r["job"] for r in rows if r["status"] == "failed"})
    return (f"sweep {sweep_id}: {ran} ran, {skipped} skipped (already in the store), "
            f"{failed} failed\n\n{table}\n\ncompare: rtb compare --sweep {sweep_id}")


def read_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    jobs = []
    for path in sorted(sweep_dir.glob(f"*/{JOB_FILE}")):
        try:
            jobs.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            log.warning("Unreadable job file %s", path)
    return jobs


def write_summary(sweep_dir: Path, sweep_id: str) -> str:
    """Write ``summary.md`` and ``summary.csv`` into the sweep dir; returns the text."""
    import pandas as pd

    rows = summary_rows(read_jobs(sweep_dir))
    text = format_summary(sweep_id, rows)
    (sweep_dir / SUMMARY_MD).write_text(f"```\n{text}\n```\n")
    pd.DataFrame(rows).to_csv(sweep_dir / SUMMARY_CSV, index=False)
    return text


def eta(done: int, total: int | None, elapsed: float) -> str:
    """``"ETA 0:01:05"`` from the mean wall time per finished job so far."""
    if not total or done <= 0 or done >= total:
        return "ETA 0:00:00" if total and done >= total else "ETA ?"
    remaining = elapsed / done * (total - done)
    return f"ETA {timedelta(seconds=round(remaining))}"


# ----------------------------------------------------------------------------- callback

try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra-core is a dependency
    Callback = object  # type: ignore[assignment,misc]


class SweepCallback(Callback):
    """Tracks a multirun in its sweep dir: id and start, progress, summary."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        overrides = list(config.hydra.overrides.task)
        sweep_id = (config.get("sweep") or {}).get("id") or sweep_id_for(
            str(config.get("name", "sweep")), overrides)
        total = count_jobs(overrides, config.hydra.sweeper.get("params"))
        info = {"sweep_id": sweep_id, "started": time.time(),
                "started_iso": datetime.now(timezone.utc).isoformat(), "jobs": total,
                "overrides": overrides, "dir": str(sweep_dir.resolve())}
        (sweep_dir / SWEEP_FILE).write_text(json.dumps(info, indent=2))
        threads = auto_threads(config.hydra.launcher)
        requested = (config.get("sweep") or {}).get("threads")
        if isinstance(requested, int) and not isinstance(requested, bool):
            threads = requested
        if threads is not None:  # inherited by worker processes started after this
            for var in THREAD_ENV_VARS:
                os.environ[var] = str(threads)
        log.info("sweep %s: %s jobs in %s", sweep_id, total if total else "?", sweep_dir)

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return
        job_dir = Path(hc.runtime.output_dir)
        value = getattr(job_return, "_return_value", None)
        info: dict[str, Any] = dict(value) if isinstance(value, Mapping) else {}
        if not info:
            info = {"status": "failed", "error": repr(value)}
        info.update(num=hc.job.num, overrides=list(hc.overrides.task), dir=str(job_dir))
        tmp = job_dir / (JOB_FILE + ".tmp")
        tmp.write_text(json.dumps(info, indent=2, default=str))
        os.replace(tmp, job_dir / JOB_FILE)
        sweep_dir = Path(str(hc.sweep.dir))
        sweep = read_sweep_file(sweep_dir)
        done = len(list(sweep_dir.glob(f"*/{JOB_FILE}")))
        total = sweep.get("jobs")
        elapsed = time.time() - float(sweep.get("started", time.time()))
        log.info("sweep %s: job %d/%s done (%s), %s", sweep.get("sweep_id", "?"), done,
                 total or "?", info["status"], eta(done, total, elapsed))

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_id = read_sweep_file(sweep_dir).get("sweep_id") or sweep_dir.name
        text = write_summary(sweep_dir, sweep_id)
        print(f"\n{text}\nsummary: {sweep_dir / SUMMARY_MD}")


def job_for_hydra(spec: RunSpec, hc: Any) -> Job:
    """``prepare_job`` for the current Hydra job (``spec`` is its ``RunSpec``)."""
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    multirun = hc.mode == RunMode.MULTIRUN
    raw = OmegaConf.to_container(hc.launcher, resolve=False) if multirun else None
    launcher = {str(k): v for k, v in raw.items()} if isinstance(raw, dict) else None
    return prepare_job(
        spec.sweep, multirun=multirun,
        sweep_dir=Path(str(hc.sweep.dir)) if multirun else None,
        launcher=launcher,
        store=spec.store.path if spec.store else None, job_dir=Path(hc.runtime.output_dir),
    )
