"""``rtb mlflow-log``: copy recorded runs into an MLflow tracking store, the
way MLflow users lay out an evaluation.

One rtb run becomes one MLflow parent run with one nested child run per
model version; a sweep adds one run above the jobs. Each run carries the
run's full resolved config flattened into params (``attack.pgd_linf.eps``,
``data.n_samples``, ...). A child's metrics are its version's tidy
measurements under keys such as ``acc.pgd_linf.eps_0.1`` or
``acc.clean.class_3`` (MLflow's key alphabet, no spaces), so versions share
keys and MLflow's compare view pairs them. The parent holds the artifacts:
``record.json``, ``outcomes.parquet`` and ``report.html``. Tags carry the
model versions, their sha256, the config hash, the run key and the data
fingerprint.

Only this command writes to MLflow, from one process, after the jobs have
finished: a parallel sweep's jobs never touch the tracking store, so they
cannot race on it. A run already logged (same ``rtb.run_id`` tag on a run of
kind ``run`` in the experiment) is skipped, so logging a sweep again adds
only its new jobs. MLflow is an optional extra:
``pip install 'robustness-testbench[mlflow]'``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmark.core.errors import DataError, StoreError, UserError
from benchmark.rundir import (
    OUTCOMES_FILE,
    RECORD_FILE,
    LoadedRun,
    load_run_dir,
    resolve_run_ref,
    stored_outcomes,
)

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "rtb"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
REPORT_FILE = "report.html"
#: Short metric names in keys; other metrics keep their own name.
METRIC_ABBREVIATIONS = {"accuracy": "acc"}
#: How a threat's param is named in a key, by threat family.
PARAM_NAMES = {"attack": "eps", "corruption": "sev", "fault": "p"}
#: Metrics whose ``group_value`` names the group that attains them (the worst
#: group of one version need not be the worst of another): keyed by feature only.
NAMED_GROUP_SUFFIXES = ("_worst_group", "_best_group")
# MLflow's portable key alphabet without the space: alphanumerics, _ - . /
_BAD_KEY_CHARS = re.compile(r"[^\w.\-/]")
MAX_PARAM_VALUE = 6000  # MLflow's limit on a param value
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
#: Run-level keys of a resolved config that are not the benchmark's settings.
CONFIG_KEYS_LEFT_OUT = ("hydra",)

NOT_INSTALLED = ("MLflow is not installed; expected it for `rtb mlflow-log` "
                 "(pip install 'robustness-testbench[mlflow]'), but `import mlflow` failed.")


def clean_key(key: str) -> str:
    """``key`` in MLflow's key alphabet (no spaces): every other character becomes ``_``."""
    return _BAD_KEY_CHARS.sub("_", key)


def metric_key(m: Mapping[str, Any], with_version: bool = True) -> str:
    """``metric.threat[.eps_P][.feature[_value]][.model_version]`` for one measurement row."""
    metric = str(m["metric"])
    parts = [METRIC_ABBREVIATIONS.get(metric, metric), str(m["threat"])]
    param = m.get("param")
    if param is not None and not (isinstance(param, float) and math.isnan(param)):
        parts.append(f"{PARAM_NAMES.get(str(m.get('family')), 'p')}_{float(param):g}")
    feature = m.get("group_feature")
    if feature:
        value = str(m.get("group_value") or "")
        named = metric.endswith(NAMED_GROUP_SUFFIXES)
        parts.append(f"{feature}_{value}" if value and not named else str(feature))
    if with_version:
        parts.append(f"{m['model']}_{m['version']}")
    return clean_key(".".join(parts))


def flatten_metrics(measurements: Iterable[Mapping[str, Any]], with_version: bool = True
                    ) -> dict[str, float]:
    """Every measurement as one ``key -> value``; missing values are left out."""
    out: dict[str, float] = {}
    for m in measurements:
        value = m.get("value")
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        key = metric_key(m, with_version)
        if key in out:
            raise DataError(
                f"Expected one measurement per metric key, but {key!r} occurs twice in the record."
            )
        out[key] = float(value)
    return out


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as ``a.b.c -> value`` params; lists of scalars as one
    JSON value, lists holding mappings by index (``faults.0.name``)."""
    out: dict[str, str] = {}
    for k, v in config.items():
        if not prefix and k in CONFIG_KEYS_LEFT_OUT:
            continue
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            if v:
                out.update(flatten_config(v, key + "."))
            else:
                out[clean_key(key)] = "{}"
        elif isinstance(v, list | tuple) and any(isinstance(i, Mapping | list | tuple)
                                                 for i in v):
            for i, item in enumerate(v):
                if isinstance(item, Mapping):
                    out.update(flatten_config(item, f"{key}.{i}."))
                else:
                    out[clean_key(f"{key}.{i}")] = _param_value(item)
        else:
            out[clean_key(key)] = _param_value(v)
    return out


def _param_value(v: Any) -> str:
    text = json.dumps(v, default=str) if isinstance(v, list | tuple | bool) or v is None else str(v)
    return text[:MAX_PARAM_VALUE]


def run_params(record: Mapping[str, Any]) -> dict[str, str]:
    """What the run was: its data, seed, device and versions, plus its whole
    resolved config flattened (``attack.pgd_linf.eps``, ``seed``, ...)."""
    data = record.get("data") or {}
    base = {
        "rtb.data": str(data.get("name", "")),
        "rtb.n_samples": str(data.get("n", "")),
        "rtb.seed": str(record.get("seed", "")),
        "rtb.device": str(record.get("device", "")),
        "rtb.versions": " ".join(record.get("models") or {}),
        "rtb.overrides": " ".join(str(o) for o in record.get("overrides") or [])[:MAX_PARAM_VALUE],
    }
    return {**base, **flatten_config(record.get("config") or {})}


def run_tags(record: Mapping[str, Any]) -> dict[str, str]:
    """Model versions with their sha256, config hash, run key, data fingerprint, commit."""
    models = record.get("models") or {}
    git = record.get("git") or {}
    tags = {
        "rtb.kind": "run",
        "rtb.run_id": str(record.get("run_id", "")),
        "rtb.name": str(record.get("name", "")),
        "rtb.config_hash": str(record.get("config_hash", "")),
        "rtb.run_key": str(record.get("run_key", "")),
        "rtb.data_fingerprint": str((record.get("data") or {}).get("fingerprint", "")),
        "rtb.git_commit": str(git.get("commit") or ""),
        "rtb.model_versions": " ".join(models),
    }
    for key, m in models.items():
        tags[clean_key(f"rtb.sha256.{key}")] = str(m.get("sha256", ""))
    return tags


def version_keys(record: Mapping[str, Any]) -> list[str]:
    """``name@version`` of every model version of the run, in record order."""
    keys = list(record.get("models") or {})
    for m in record.get("measurements") or []:
        key = f"{m['model']}@{m['version']}"
        if key not in keys:
            keys.append(key)
    return keys


def version_metrics(record: Mapping[str, Any], version: str) -> dict[str, float]:
    """One version's measurements as metric keys without the version."""
    rows = [m for m in record.get("measurements") or []
            if f"{m['model']}@{m['version']}" == version]
    return flatten_metrics(rows, with_version=False)


def version_tags(record: Mapping[str, Any], version: str) -> dict[str, str]:
    m = (record.get("models") or {}).get(version) or {}
    name, _, ver = version.partition("@")
    return {
        "rtb.kind": "version",
        "rtb.run_id": str(record.get("run_id", "")),
        "rtb.model_version": version,
        "rtb.model": str(m.get("name", name)),
        "rtb.version": str(m.get("version", ver)),
        "rtb.sha256": str(m.get("sha256", "")),
        "rtb.data_fingerprint": str((record.get("data") or {}).get("fingerprint", "")),
    }


def _millis(iso: Any) -> int | None:
    try:
        return int(datetime.fromisoformat(str(iso)).timestamp() * 1000)
    except ValueError:
        return None


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


@dataclass(frozen=True)
class Logged:
    """One rtb run and the MLflow run it went to (``skipped``: it was there
    already); ``children`` maps each version to its nested MLflow run."""

    run_id: str
    mlflow_run_id: str
    skipped: bool = False
    children: tuple[tuple[str, str], ...] = ()


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise UserError(NOT_INSTALLED) from None
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return mlflow


def require_mlflow() -> None:
    """Fail with one line (``NOT_INSTALLED``) when the optional extra is missing."""
    _mlflow()


def write_artifacts(run: LoadedRun, folder: Path) -> list[Path]:
    """``record.json``, ``outcomes.parquet`` and ``report.html`` of ``run`` in ``folder``."""
    from benchmark.report_html import build_report, render_html

    record_file = folder / RECORD_FILE
    record_file.write_text(json.dumps(run.record, indent=2, default=str))
    outcomes_file = folder / OUTCOMES_FILE
    run.outcomes().to_parquet(outcomes_file, index=False)
    report_file = folder / REPORT_FILE
    report_file.write_text(render_html(build_report([run])), encoding="utf-8")
    return [record_file, outcomes_file, report_file]


class MlflowWriter:
    """The one writer of a tracking store for one ``rtb mlflow-log`` call."""

    def __init__(self, tracking_uri: str, experiment: str = DEFAULT_EXPERIMENT) -> None:
        mlflow = _mlflow()
        from mlflow.exceptions import MlflowException

        self._mlflow = mlflow
        self._error = MlflowException
        try:
            self.client = mlflow.MlflowClient(tracking_uri=tracking_uri)
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = (found.experiment_id if found is not None
                                  else self.client.create_experiment(experiment))
        except (MlflowException, OSError, ValueError) as exc:
            raise UserError(
                f"Expected a usable MLflow tracking URI (e.g. {DEFAULT_TRACKING_URI}), but "
                f"{tracking_uri!r} failed: {_first_line(exc)}"
            ) from None

    def find(self, tags: Mapping[str, str]) -> str | None:
        """The MLflow run id of the run carrying every tag in ``tags``, if any."""
        where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs([self.experiment_id], filter_string=where, max_results=1)
        return runs[0].info.run_id if runs else None

    def _start(self, tags: dict[str, str], name: str, start: int | None,
               parent: str | None) -> str:
        if parent is not None:
            tags = {**tags, "mlflow.parentRunId": parent}
        return str(self.client.create_run(self.experiment_id, start_time=start, run_name=name,
                                          tags=tags).info.run_id)

    def _fill(self, rid: str, params: dict[str, str], metrics: dict[str, float],
              stamp: int) -> None:
        from mlflow.entities import Metric, Param

        for chunk in _chunks([Param(k, v) for k, v in params.items()],
                             MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(rid, params=chunk)
        for chunk in _chunks([Metric(k, v, stamp, 0) for k, v in metrics.items()],
                             MAX_METRICS_PER_BATCH):
            self.client.log_batch(rid, metrics=chunk)

    def _write(self, tags: dict[str, str], params: dict[str, str], metrics: dict[str, float],
               name: str, start: int | None, end: int | None, parent: str | None = None) -> str:
        rid = self._start(tags, name, start, parent)
        try:
            self._fill(rid, params, metrics, end or start or 0)
            self.client.set_terminated(rid, "FINISHED", end_time=end)
        except BaseException:
            self.client.set_terminated(rid, "FAILED")
            raise
        return rid

    def log_run(self, run: LoadedRun, parent: str | None = None) -> Logged:
        """One rtb run as one MLflow run (a child of ``parent`` when given)
        with one nested child per model version and the run's artifacts."""
        record = run.record
        run_id = str(record.get("run_id", ""))
        existing = self.find({"rtb.run_id": run_id, "rtb.kind": "run"})
        if existing is not None:
            return Logged(run_id, existing, skipped=True)
        start, end = _millis(record.get("started")), _millis(record.get("finished"))
        params = run_params(record)
        rid = self._start(run_tags(record), run_id, start, parent)
        children = []
        try:
            self._fill(rid, params, {}, end or start or 0)
            for version in version_keys(record):
                child = self._write(version_tags(record, version), params,
                                    version_metrics(record, version), name=version,
                                    start=start, end=end, parent=rid)
                children.append((version, child))
            with tempfile.TemporaryDirectory(prefix="rtb-mlflow-") as tmp:
                for path in write_artifacts(run, Path(tmp)):
                    self.client.log_artifact(rid, str(path))
            self.client.set_terminated(rid, "FINISHED", end_time=end)
        except self._error as exc:
            self.client.set_terminated(rid, "FAILED")
            raise UserError(f"MLflow refused run {run_id!r}: {_first_line(exc)}") from None
        except BaseException:
            self.client.set_terminated(rid, "FAILED")
            raise
        return Logged(run_id, rid, children=tuple(children))

    def sweep_parent(self, sweep_id: str, records: Sequence[Mapping[str, Any]]) -> str:
        """The parent run of a sweep: found by its ``rtb.sweep_id`` tag, else created."""
        existing = self.find({"rtb.sweep_id": sweep_id, "rtb.kind": "sweep"})
        if existing is not None:
            return existing
        starts = [t for t in (_millis(r.get("started")) for r in records) if t is not None]
        ends = [t for t in (_millis(r.get("finished")) for r in records) if t is not None]
        tags = {"rtb.sweep_id": sweep_id, "rtb.kind": "sweep",
                "rtb.name": str(records[0].get("name", "")) if records else ""}
        return self._write(tags, {}, {}, name=f"sweep {sweep_id}",
                           start=min(starts) if starts else None, end=max(ends) if ends else None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def log_to_mlflow(runs: Sequence[LoadedRun], *, tracking_uri: str,
                  experiment: str = DEFAULT_EXPERIMENT, sweep_id: str | None = None
                  ) -> tuple[str | None, list[Logged]]:
    """Log ``runs``: under one sweep run when ``sweep_id`` is given, else each
    as a top-level run; each with one child per version. Returns the sweep
    run's MLflow id (or None) and what happened to each run."""
    writer = MlflowWriter(tracking_uri, experiment)
    records = [r.record for r in runs]
    parent = writer.sweep_parent(sweep_id, records) if sweep_id else None
    return parent, [writer.log_run(r, parent) for r in runs]


# ----------------------------------------------------------------------------- sources

def run_source(ref: str, store: str | None = None) -> LoadedRun:
    """A run from its directory (or ``record.json``), else from the store by id."""
    return resolve_run_ref(ref, store)


def sweep_runs(ref: str, store: str | None = None) -> tuple[str, list[LoadedRun]]:
    """A sweep's id and its jobs' runs, oldest first: from a sweep directory
    (every ``record.json`` under it), else from the store by sweep id."""
    path = Path(ref).expanduser()
    if path.is_dir():
        dirs = sorted(p.parent for p in path.rglob(RECORD_FILE))
        if not dirs:
            raise DataError(f"Expected a sweep directory with job records ({RECORD_FILE}) under "
                            f"it, but {str(path)!r} has none.")
        runs = sorted((load_run_dir(d) for d in dirs),
                      key=lambda r: str(r.record.get("started", "")))
        ids = {str((r.record.get("extra") or {}).get("sweep_id") or "") for r in runs}
        sweep_id = ids.pop() if len(ids) == 1 and "" not in ids else path.name
        return sweep_id, runs
    if "/" in ref or path.exists():
        raise DataError(f"Expected an existing sweep directory or sweep id, but {ref!r} does not exist.")
    from benchmark.store import open_store, resolve_store_path

    store_path = resolve_store_path(store)
    if not store_path.exists():
        raise StoreError(f"Unknown sweep {ref!r}: it is not a directory, and there is no results "
                         f"store at {str(store_path)!r} to look it up in.")
    with open_store(store_path, readonly=True) as s:
        run_ids = [str(r) for r in s.runs(sweep_id=ref)["run_id"]]
        if not run_ids:
            raise StoreError(f"Unknown sweep {ref!r}: no run in {str(store_path)!r} belongs to it.")
        return ref, [LoadedRun(record=s.record(r), source=f"store {store_path}",
                               outcomes=stored_outcomes(store_path, r)) for r in run_ids]
