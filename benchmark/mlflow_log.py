"""``rtb mlflow-log``: copy recorded runs into an MLflow tracking store.

A run becomes one MLflow run; a sweep becomes one parent run with one child
per job. Metrics are the run's tidy measurements flattened into keys such as
``acc.pgd_linf.eps_0.1.mnist_cnn_v2``; params are the run's overrides; tags
carry the model versions, their sha256, the config hash, the run key and the
data fingerprint.

Only this command writes to MLflow, from one process, after the jobs have
finished: a parallel sweep's jobs never touch the tracking store, so they
cannot race on it. A run already logged (same ``rtb.run_id`` tag in the
experiment) is skipped, so logging a sweep again adds only its new jobs.
MLflow is an optional extra: ``pip install 'robustness-testbench[mlflow]'``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmark.core.errors import DataError, StoreError, UserError
from benchmark.rundir import RECORD_FILE, read_record, resolve_run_ref

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "rtb"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
#: Short metric names in keys; other metrics keep their own name.
METRIC_ABBREVIATIONS = {"accuracy": "acc"}
#: How a threat's param is named in a key, by threat family.
PARAM_NAMES = {"attack": "eps", "corruption": "sev", "fault": "p"}
# MLflow's portable key alphabet (its Windows rule): alphanumerics, _ - . space /
_BAD_KEY_CHARS = re.compile(r"[^\w.\- ]")
MAX_PARAM_VALUE = 6000  # MLflow's limit on a param value
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100

NOT_INSTALLED = ("MLflow is not installed; expected it for `rtb mlflow-log` "
                 "(pip install 'robustness-testbench[mlflow]'), but `import mlflow` failed.")


def clean_key(key: str) -> str:
    """``key`` in MLflow's key alphabet: every other character becomes ``_``."""
    return _BAD_KEY_CHARS.sub("_", key)


def metric_key(m: Mapping[str, Any]) -> str:
    """``metric.threat[.eps_P][.feature_value].model_version`` for one measurement row."""
    metric = str(m["metric"])
    parts = [METRIC_ABBREVIATIONS.get(metric, metric), str(m["threat"])]
    param = m.get("param")
    if param is not None and not (isinstance(param, float) and math.isnan(param)):
        parts.append(f"{PARAM_NAMES.get(str(m.get('family')), 'p')}_{float(param):g}")
    if m.get("group_feature"):
        parts.append(f"{m['group_feature']}_{m.get('group_value', '')}")
    parts.append(f"{m['model']}_{m['version']}")
    return clean_key(".".join(parts))


def flatten_metrics(measurements: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Every measurement as one ``key -> value``; missing values are left out."""
    out: dict[str, float] = {}
    for m in measurements:
        value = m.get("value")
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        key = metric_key(m)
        if key in out:
            raise DataError(
                f"Expected one measurement per metric key, but {key!r} occurs twice in the record."
            )
        out[key] = float(value)
    return out


def override_params(overrides: Iterable[str]) -> dict[str, str]:
    """``a.b=c`` overrides as params ``a.b -> c`` (Hydra's own ``hydra.*`` left out)."""
    params: dict[str, str] = {}
    for o in overrides:
        key, sep, value = str(o).partition("=")
        key = key.lstrip("+~")
        if not sep or key.startswith("hydra."):
            continue
        params[clean_key(key)] = value[:MAX_PARAM_VALUE]
    return params


def run_params(record: Mapping[str, Any]) -> dict[str, str]:
    """What the run was: its data, seed, device and versions, plus its overrides."""
    data = record.get("data") or {}
    base = {
        "rtb.data": str(data.get("name", "")),
        "rtb.n_samples": str(data.get("n", "")),
        "rtb.seed": str(record.get("seed", "")),
        "rtb.device": str(record.get("device", "")),
        "rtb.versions": " ".join(record.get("models") or {}),
    }
    return {**base, **override_params(record.get("overrides") or [])}


def run_tags(record: Mapping[str, Any]) -> dict[str, str]:
    """Model versions with their sha256, config hash, run key, data fingerprint, commit."""
    models = record.get("models") or {}
    git = record.get("git") or {}
    tags = {
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
    if len(models) == 1:
        tags["rtb.model_version"] = next(iter(models))
    return tags


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
    """One rtb run and the MLflow run it went to (``skipped``: it was there already)."""

    run_id: str
    mlflow_run_id: str
    skipped: bool = False


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

    def find(self, tag: str, value: str) -> str | None:
        """The MLflow run id of the run tagged ``tag = value``, if any."""
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{tag}` = '{value}'", max_results=1)
        return runs[0].info.run_id if runs else None

    def _write(self, tags: dict[str, str], params: dict[str, str], metrics: dict[str, float],
               name: str, start: int | None, end: int | None, parent: str | None = None) -> str:
        from mlflow.entities import Metric, Param

        if parent is not None:
            tags = {**tags, "mlflow.parentRunId": parent}
        run = self.client.create_run(self.experiment_id, start_time=start, run_name=name,
                                     tags=tags)
        rid = run.info.run_id
        try:
            stamp = end or start or 0
            for chunk in _chunks([Param(k, v) for k, v in params.items()],
                                 MAX_PARAMS_TAGS_PER_BATCH):
                self.client.log_batch(rid, params=chunk)
            for chunk in _chunks([Metric(k, v, stamp, 0) for k, v in metrics.items()],
                                 MAX_METRICS_PER_BATCH):
                self.client.log_batch(rid, metrics=chunk)
            self.client.set_terminated(rid, "FINISHED", end_time=end)
        except BaseException:
            self.client.set_terminated(rid, "FAILED")
            raise
        return rid

    def log_run(self, record: Mapping[str, Any], parent: str | None = None) -> Logged:
        """One rtb run as one MLflow run (a child of ``parent`` when given)."""
        run_id = str(record.get("run_id", ""))
        existing = self.find("rtb.run_id", run_id)
        if existing is not None:
            return Logged(run_id, existing, skipped=True)
        try:
            rid = self._write(run_tags(record), run_params(record),
                              flatten_metrics(record.get("measurements") or []),
                              name=run_id, start=_millis(record.get("started")),
                              end=_millis(record.get("finished")), parent=parent)
        except self._error as exc:
            raise UserError(f"MLflow refused run {run_id!r}: {_first_line(exc)}") from None
        return Logged(run_id, rid)

    def sweep_parent(self, sweep_id: str, records: Sequence[Mapping[str, Any]]) -> str:
        """The parent run of a sweep: found by its ``rtb.sweep_id`` tag, else created."""
        existing = self.find("rtb.sweep_id", sweep_id)
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


def log_to_mlflow(records: Sequence[Mapping[str, Any]], *, tracking_uri: str,
                  experiment: str = DEFAULT_EXPERIMENT, sweep_id: str | None = None
                  ) -> tuple[str | None, list[Logged]]:
    """Log ``records`` (as in ``record.json``): as children of one sweep parent
    when ``sweep_id`` is given, else each as a top-level run. Returns the
    parent's MLflow run id (or None) and what happened to each run."""
    writer = MlflowWriter(tracking_uri, experiment)
    parent = writer.sweep_parent(sweep_id, records) if sweep_id else None
    return parent, [writer.log_run(r, parent) for r in records]


# ----------------------------------------------------------------------------- sources

def run_record(ref: str, store: str | None = None) -> dict[str, Any]:
    """A run's record from its directory (or ``record.json``), else from the store by id."""
    return resolve_run_ref(ref, store).record


def sweep_records(ref: str, store: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """A sweep's id and its jobs' records, oldest first: from a sweep directory
    (every ``record.json`` under it), else from the store by sweep id."""
    path = Path(ref).expanduser()
    if path.is_dir():
        dirs = sorted(p.parent for p in path.rglob(RECORD_FILE))
        if not dirs:
            raise DataError(f"Expected a sweep directory with job records ({RECORD_FILE}) under "
                            f"it, but {str(path)!r} has none.")
        records = sorted((read_record(d) for d in dirs), key=lambda r: str(r.get("started", "")))
        ids = {str((r.get("extra") or {}).get("sweep_id") or "") for r in records}
        sweep_id = ids.pop() if len(ids) == 1 and "" not in ids else path.name
        return sweep_id, records
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
        return ref, [s.record(r) for r in run_ids]
