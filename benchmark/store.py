"""The results store: every run's record, tidy measurements and per-sample
outcomes in one embedded SQLite database (one file per project).

``compare``, ``gate`` and ``report`` read only the store. The per-run files
(``record.json`` + ``outcomes.parquet`` in each Hydra run directory) remain the
source of truth: ``rtb store rebuild`` recreates the store from them.

Concurrency and safety: WAL journal, a busy timeout plus retry with backoff
around every transaction, and one ``BEGIN IMMEDIATE`` transaction per run, so
parallel sweep jobs never see "database is locked", and a writer killed
mid-run leaves no partial run behind. The schema version lives in
``PRAGMA user_version`` and migrates forward when a writer opens the store.

Readers (``rtb store list|export|info``, ``compare``, ``gate``, ``report``)
open the file read-only (``mode=ro``): no migration, no journal-mode change, no
table creation, so a read-only store file or directory can be read. Before
anything is written, a file is told apart from a foreign one: an rtb store is
an SQLite database with a ``runs`` table and a schema version in
``user_version``; a missing or empty (0-byte) file is a new store; anything
else is refused with one line and left exactly as it was.

Job claims (the ``jobs`` table, schema v3) make skip-existing atomic: before a
job runs its threats it claims its content key in one ``BEGIN IMMEDIATE``
transaction (see ``Store.claim_job``), so identical sweeps started together
run each job once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from benchmark.core.errors import StoreError
from benchmark.rundir import find_run_dirs, read_run_dir

log = logging.getLogger(__name__)

STORE_ENV = "RTB_STORE"
DEFAULT_STORE = "rtb.sqlite"
DEFAULT_TIMEOUT_S = 120.0
CLAIM_TIMEOUT_ENV = "RTB_CLAIM_TIMEOUT_S"
#: A ``running`` job whose heartbeat is older than this is abandoned and may be
#: taken over (a live job refreshes its heartbeat every fifth of it).
DEFAULT_CLAIM_TIMEOUT_S = 300.0
SQLITE_HEADER = b"SQLite format 3\x00"

T = TypeVar("T")

#: Forward migrations: entry ``i`` takes the schema from version ``i`` to ``i + 1``.
#: Each is a function run inside the migrating transaction.
Migration = Callable[[sqlite3.Connection], None]


def _execute_script(conn: sqlite3.Connection, script: str) -> None:
    """Run ``;``-separated DDL inside the current transaction (``executescript``
    would commit it first)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _v1(conn: sqlite3.Connection) -> None:
    """Runs, model versions per run, tidy measurements, per-sample outcomes."""
    _execute_script(conn, """
        CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            run_key TEXT,
            config_hash TEXT,
            data_name TEXT,
            data_fingerprint TEXT,
            n_samples INTEGER,
            started TEXT,
            finished TEXT,
            sweep_id TEXT,
            status TEXT NOT NULL DEFAULT 'finished',
            run_dir TEXT,
            record TEXT NOT NULL,
            stored_at TEXT NOT NULL
        );
        CREATE INDEX runs_run_key ON runs(run_key);
        CREATE INDEX runs_fingerprint ON runs(data_fingerprint);
        CREATE INDEX runs_sweep ON runs(sweep_id);
        CREATE INDEX runs_started ON runs(started);
        CREATE TABLE models (
            run_id TEXT NOT NULL,
            key TEXT NOT NULL,
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            sha256 TEXT,
            PRIMARY KEY (run_id, key)
        );
        CREATE INDEX models_name_version ON models(name, version);
        CREATE TABLE measurements (
            run_id TEXT NOT NULL,
            model TEXT NOT NULL,
            version TEXT NOT NULL,
            family TEXT NOT NULL,
            threat TEXT NOT NULL,
            param REAL,
            group_feature TEXT NOT NULL DEFAULT '',
            group_value TEXT NOT NULL DEFAULT '',
            metric TEXT NOT NULL,
            value REAL,
            n INTEGER,
            ci_low REAL,
            ci_high REAL,
            definition TEXT
        );
        CREATE INDEX measurements_run ON measurements(run_id);
        CREATE TABLE outcomes (
            run_id TEXT NOT NULL,
            model TEXT NOT NULL,
            version TEXT NOT NULL,
            family TEXT NOT NULL,
            threat TEXT NOT NULL,
            param REAL,
            sample INTEGER NOT NULL,
            pred INTEGER,
            correct INTEGER NOT NULL,
            extras TEXT
        );
        CREATE INDEX outcomes_run ON outcomes(run_id, model, version);
    """)


def _v2(conn: sqlite3.Connection) -> None:
    """A ``checks`` table (validation and reliability results), backfilled
    from the records already stored."""
    conn.execute("""
        CREATE TABLE checks (
            run_id TEXT NOT NULL,
            name TEXT NOT NULL,
            status TEXT NOT NULL,
            subject TEXT NOT NULL DEFAULT '',
            message TEXT,
            evidence TEXT
        )""")
    conn.execute("CREATE INDEX checks_run ON checks(run_id)")
    for run_id, record in conn.execute("SELECT run_id, record FROM runs").fetchall():
        conn.executemany(_INSERT_CHECK, _check_rows(run_id, json.loads(record)))


def _v3(conn: sqlite3.Connection) -> None:
    """A ``jobs`` table: one claim per content key (``running``, ``complete`` or
    ``failed``), so concurrent sweeps run each job once."""
    conn.execute("""
        CREATE TABLE jobs (
            run_key TEXT PRIMARY KEY,
            state TEXT NOT NULL CHECK (state IN ('running', 'complete', 'failed')),
            owner TEXT NOT NULL,
            started TEXT NOT NULL,
            heartbeat REAL NOT NULL,
            finished TEXT,
            run_id TEXT,
            sweep_id TEXT,
            error TEXT
        )""")
    conn.execute("CREATE INDEX jobs_state ON jobs(state)")


def _v4(conn: sqlite3.Connection) -> None:
    """A ``samples`` table: per run and sample, the true label and the group
    values (JSON), which outcomes carry as columns; stored once per sample,
    not once per threat."""
    conn.execute("""
        CREATE TABLE samples (
            run_id TEXT NOT NULL,
            sample INTEGER NOT NULL,
            label INTEGER,
            groups TEXT,
            PRIMARY KEY (run_id, sample)
        )""")


def _v5(conn: sqlite3.Connection) -> None:
    """Monitoring (``rtb monitor``): one row per window, and its measurements,
    drift tests, checks and alerts; a window processed again replaces its rows."""
    _execute_script(conn, """
        CREATE TABLE monitor_windows (
            monitor TEXT NOT NULL,
            window TEXT NOT NULL,
            seq INTEGER NOT NULL,
            source TEXT,
            modality TEXT,
            start TEXT,
            end_ TEXT,
            n INTEGER,
            has_labels INTEGER NOT NULL,
            content_hash TEXT,
            reference TEXT,
            benchmark_run TEXT,
            matched_threat TEXT,
            match_confidence REAL,
            status TEXT NOT NULL,
            details TEXT,
            processed_at TEXT NOT NULL,
            PRIMARY KEY (monitor, window)
        );
        CREATE TABLE monitor_metrics (
            monitor TEXT NOT NULL,
            window TEXT NOT NULL,
            model TEXT NOT NULL DEFAULT '',
            metric TEXT NOT NULL,
            group_feature TEXT NOT NULL DEFAULT '',
            group_value TEXT NOT NULL DEFAULT '',
            value REAL,
            ci_low REAL,
            ci_high REAL,
            n INTEGER
        );
        CREATE INDEX monitor_metrics_window ON monitor_metrics(monitor, window);
        CREATE TABLE monitor_drift (
            monitor TEXT NOT NULL,
            window TEXT NOT NULL,
            feature TEXT NOT NULL,
            kind TEXT,
            test TEXT,
            statistic REAL,
            p_value REAL,
            level REAL,
            distance REAL,
            drifted INTEGER NOT NULL
        );
        CREATE INDEX monitor_drift_window ON monitor_drift(monitor, window);
        CREATE TABLE monitor_checks (
            monitor TEXT NOT NULL,
            window TEXT NOT NULL,
            name TEXT NOT NULL,
            status TEXT NOT NULL,
            message TEXT
        );
        CREATE INDEX monitor_checks_window ON monitor_checks(monitor, window);
        CREATE TABLE monitor_alerts (
            monitor TEXT NOT NULL,
            window TEXT NOT NULL,
            rule TEXT NOT NULL,
            kind TEXT NOT NULL,
            status TEXT NOT NULL,
            message TEXT
        );
        CREATE INDEX monitor_alerts_window ON monitor_alerts(monitor, window)
    """)


def _v6(conn: sqlite3.Connection) -> None:
    """A ``shards`` table: the outcomes of each finished shard of a sharded run
    (or the error of a failed one), until the run is assembled from them."""
    conn.execute("""
        CREATE TABLE shards (
            run_key TEXT NOT NULL,
            shard_count INTEGER NOT NULL,
            shard_index INTEGER NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('complete', 'failed')),
            name TEXT,
            data_name TEXT,
            n_samples INTEGER,
            finished TEXT NOT NULL,
            error TEXT,
            outcomes BLOB,
            PRIMARY KEY (run_key, shard_count, shard_index)
        )""")


MIGRATIONS: list[Migration] = [_v1, _v2, _v3, _v4, _v5, _v6]
SCHEMA_VERSION = len(MIGRATIONS)

TABLES: tuple[str, ...] = ("runs", "models", "measurements", "outcomes", "checks", "jobs",
                           "samples", "monitor_windows", "monitor_metrics", "monitor_drift",
                           "monitor_checks", "monitor_alerts", "shards")
JOB_STATES: tuple[str, ...] = ("running", "complete", "failed")

_INSERT_RUN = (
    "INSERT INTO runs (run_id, name, run_key, config_hash, data_name, data_fingerprint, "
    "n_samples, started, finished, sweep_id, status, run_dir, record, stored_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_MODEL = "INSERT INTO models (run_id, key, name, version, sha256) VALUES (?, ?, ?, ?, ?)"
_INSERT_MEASUREMENT = (
    "INSERT INTO measurements (run_id, model, version, family, threat, param, group_feature, "
    "group_value, metric, value, n, ci_low, ci_high, definition) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_OUTCOME = (
    "INSERT INTO outcomes (run_id, model, version, family, threat, param, sample, pred, "
    "correct, extras) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_CHECK = (
    "INSERT INTO checks (run_id, name, status, subject, message, evidence) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)

OUTCOME_BASE_COLUMNS: tuple[str, ...] = (
    "model", "version", "family", "threat", "param", "sample", "pred", "correct",
)
#: The per-sample outcome column holding the true label (class index).
LABEL_COLUMN = "label"
_INSERT_SAMPLE = "INSERT INTO samples (run_id, sample, label, groups) VALUES (?, ?, ?, ?)"


def sample_columns(outcomes: pd.DataFrame) -> list[str]:
    """The outcome columns that describe the sample, not the threat: the true
    label and the group columns (text); the same for every threat."""
    if outcomes is None or len(outcomes.columns) == 0:
        return []
    return [c for c in outcomes.columns if c not in OUTCOME_BASE_COLUMNS
            and (c == LABEL_COLUMN or not pd.api.types.is_numeric_dtype(outcomes[c]))]


def _sample_rows(run_id: str, outcomes: pd.DataFrame) -> Iterator[tuple[Any, ...]]:
    """One tuple per sample: its label and group values (JSON), from its first row."""
    cols = sample_columns(outcomes)
    if not cols:
        return
    first = outcomes.drop_duplicates("sample")
    groups = [c for c in cols if c != LABEL_COLUMN]
    labels = first[LABEL_COLUMN] if LABEL_COLUMN in cols else None
    for i, sample in enumerate(first["sample"].to_numpy()):
        label = None if labels is None or pd.isna(labels.iloc[i]) else int(labels.iloc[i])
        values = {g: str(first[g].iloc[i]) for g in groups if not pd.isna(first[g].iloc[i])}
        yield (run_id, int(sample), label, _json(values) if values else None)


# ----------------------------------------------------------------------------- paths

def launch_dir() -> Path:
    """The directory the user launched rtb from (Hydra's original cwd inside a job)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            from hydra.utils import get_original_cwd

            return Path(get_original_cwd())
    except (ImportError, ValueError):
        pass
    return Path.cwd()


def resolve_store_path(value: str | os.PathLike[str] | None = None) -> Path:
    """The store file: ``value`` (``--store`` / the ``store:`` config key), else
    ``$RTB_STORE``, else ``rtb.sqlite``; relative paths count from the launch
    directory."""
    raw = os.fspath(value) if value else os.environ.get(STORE_ENV) or DEFAULT_STORE
    path = Path(raw).expanduser()
    return path if path.is_absolute() else launch_dir() / path


def _q(path: Path) -> str:
    return repr(str(path))


def _read_only_uri(path: Path, immutable: bool = False) -> str:
    from urllib.parse import quote

    return f"file:{quote(str(path.resolve()))}?mode=ro" + ("&immutable=1" if immutable else "")


def _has_write_bits(path: Path) -> bool:
    """Writable for this process, and not marked read-only by its mode bits (a
    file without any write bit counts as read-only even for root)."""
    try:
        return os.access(path, os.W_OK) and bool(path.stat().st_mode & 0o222)
    except OSError:
        return False


def _nearest_existing(path: Path) -> Path:
    """``path``'s nearest ancestor that exists; a file in the way is refused."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise StoreError(
                    f"Expected the store's parent {str(parent)!r} to be a directory, but it is "
                    f"a file (store path {str(path)!r})."
                )
            return parent
    return Path(path.anchor or ".")


def store_kind(path: str | os.PathLike[str]) -> str:
    """What ``path`` holds, read without changing it: ``"absent"``, ``"new"``
    (an empty file) or ``"rtb"`` (a results store of this or an older schema).

    A directory, a file that is not SQLite, a foreign SQLite database and a
    store newer than this rtb raise ``StoreError`` (what, expected, got).
    """
    p = Path(path)
    _nearest_existing(p)
    if p.is_dir():
        raise StoreError(
            f"Expected the store to be an SQLite file, but {_q(p)} is a directory."
        )
    if not p.exists():
        return "absent"
    try:
        with open(p, "rb") as fh:
            head = fh.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise StoreError(f"Cannot read the results store {_q(p)}: {exc.strerror}.") from None
    if not head:
        return "new"
    if head != SQLITE_HEADER:
        raise StoreError(
            f"Expected {_q(p)} to be an rtb results store (SQLite), but it is not an SQLite "
            f"database (file is not a database)."
        )
    version, tables = _peek(p)
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"The results store {_q(p)} has schema version {version}, newer than this rtb "
            f"understands ({SCHEMA_VERSION}); upgrade rtb."
        )
    if version >= 1 and "runs" in tables:
        return "rtb"
    if version == 0 and "runs" in tables and tables <= set(TABLES):
        return "rtb"  # another writer is creating this store: its schema lands with the version
    if version == 0 and not tables:
        return "new"
    shown = ", ".join(sorted(tables)[:5]) + (" ..." if len(tables) > 5 else "")
    raise StoreError(
        f"Expected {_q(p)} to be an rtb results store (an SQLite file with a `runs` table and "
        f"a schema version), but got a foreign SQLite database (schema version {version}, "
        f"tables: {shown or 'none'}); it was left unchanged."
    )


def _peek(path: Path) -> tuple[int, set[str]]:
    """Schema version and table names of an SQLite file, opened read-only."""
    try:
        conn = _connect_read_only(path, DEFAULT_TIMEOUT_S)
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            tables = {str(r[0]) for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(
            f"Expected {_q(path)} to be an rtb results store (SQLite), but reading it "
            f"failed: {exc}."
        ) from None
    return version, tables


def _connect_read_only(path: Path, timeout: float) -> sqlite3.Connection:
    """A read-only connection; in a read-only directory where a WAL store's
    ``-shm`` file cannot be created, the file is opened as immutable."""
    conn = sqlite3.connect(_read_only_uri(path), uri=True, timeout=timeout,
                           isolation_level=None, check_same_thread=False)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError as exc:
        conn.close()
        if "unable to open" not in str(exc) and "readonly" not in str(exc).lower():
            raise
    return sqlite3.connect(_read_only_uri(path, immutable=True), uri=True, timeout=timeout,
                           isolation_level=None, check_same_thread=False)


def check_writable_store(path: str | os.PathLike[str] | None) -> Path:
    """Refuse, before any compute, a store a run could not write: a parent that
    is a file, a directory, a junk file, a foreign SQLite database, a newer
    store, or a read-only file or directory. Returns the resolved path."""
    p = resolve_store_path(path)
    kind = store_kind(p)
    if kind == "absent":
        where = _nearest_existing(p)
        if not _has_write_bits(where):
            raise StoreError(
                f"Expected a writable directory for the new store {_q(p)}, but "
                f"{str(where)!r} is read-only."
            )
        return p
    if not _has_write_bits(p):
        raise StoreError(
            f"Expected a writable results store, but {_q(p)} is read-only; readers "
            f"(`rtb store list`, compare, gate, report) can still use it."
        )
    if not _has_write_bits(p.parent):
        raise StoreError(
            f"Expected the store's directory {str(p.parent)!r} to be writable (SQLite keeps its "
            f"journal there), but it is read-only."
        )
    return p


def claim_timeout_s() -> float:
    """Seconds after which a ``running`` claim without a heartbeat is abandoned
    (``$RTB_CLAIM_TIMEOUT_S``, default 300)."""
    raw = os.environ.get(CLAIM_TIMEOUT_ENV)
    if not raw:
        return DEFAULT_CLAIM_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value > 0:
        raise StoreError(
            f"Expected ${CLAIM_TIMEOUT_ENV} to be a positive number of seconds, but got {raw!r}."
        )
    return value


def _abandoned(owner: str, heartbeat: float, now: float, timeout: float) -> bool:
    """A running claim is abandoned when its heartbeat is older than ``timeout``,
    or its owner is a process of this host that no longer exists."""
    if now - heartbeat >= timeout:
        return True
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


def job_owner() -> str:
    """This process as a claim owner: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


# ----------------------------------------------------------------------------- rows

def _num(v: Any) -> float | None:
    """A float for SQLite, with None for missing / NaN."""
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _json(obj: Any) -> str:
    return json.dumps(obj, default=_json_default, separators=(",", ":"))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def _check_rows(run_id: str, record: Mapping[str, Any]) -> Iterator[tuple[Any, ...]]:
    for c in record.get("checks") or []:
        yield (run_id, str(c.get("check", "")), str(c.get("status", "")),
               str(c.get("subject", "") or ""), c.get("message"), _json(c.get("evidence", {})))


def _measurement_rows(run_id: str, record: Mapping[str, Any]) -> Iterator[tuple[Any, ...]]:
    for m in record.get("measurements") or []:
        yield (run_id, m["model"], str(m["version"]), m["family"], m["threat"], _num(m.get("param")),
               m.get("group_feature") or "", str(m.get("group_value") or ""), m["metric"],
               _num(m.get("value")), m.get("n"), _num(m.get("ci_low")), _num(m.get("ci_high")),
               m.get("definition") or "")


def _outcome_rows(run_id: str, outcomes: pd.DataFrame) -> Iterator[tuple[Any, ...]]:
    """One tuple per (model, threat, sample); columns beyond the base ones go
    into a JSON object (NaN entries left out)."""
    if outcomes is None or len(outcomes) == 0:
        return
    missing = [c for c in OUTCOME_BASE_COLUMNS if c not in outcomes.columns]
    if missing:
        raise StoreError(
            f"Expected outcomes with columns {', '.join(OUTCOME_BASE_COLUMNS)}, but "
            f"{', '.join(missing)} missing."
        )
    per_sample = set(sample_columns(outcomes))
    extra_cols = [c for c in outcomes.columns
                  if c not in OUTCOME_BASE_COLUMNS and c not in per_sample]
    base = outcomes[list(OUTCOME_BASE_COLUMNS)].itertuples(index=False, name=None)
    extras = outcomes[extra_cols].itertuples(index=False, name=None) if extra_cols else None
    for row in base:
        model, version, family, threat, param, sample, pred, correct = row
        ex = None
        if extras is not None:
            vals = next(extras)
            d = {k: float(v) for k, v in zip(extra_cols, vals, strict=True)
                 if v is not None and not (isinstance(v, float) and math.isnan(v))}
            ex = _json(d) if d else None
        yield (run_id, model, str(version), family, threat, _num(param), int(sample),
               None if pred is None else int(pred), int(bool(correct)), ex)


def _sweep_id(record: Mapping[str, Any]) -> str | None:
    sid = record.get("sweep_id") or (record.get("extra") or {}).get("sweep_id")
    return str(sid) if sid else None


# ----------------------------------------------------------------------------- store

def _is_busy(exc: sqlite3.OperationalError) -> bool:
    msg = str(exc).lower()
    return "locked" in msg or "busy" in msg


@dataclass(frozen=True)
class Claim:
    """The answer to ``Store.claim_job``: ``claimed`` (run it), ``complete``
    (a finished run holds the key: ``run_id``) or ``running`` (another live
    process holds the claim: ``owner``)."""

    outcome: str
    run_key: str
    owner: str
    run_id: str | None = None


class Store:
    """One SQLite results store. Use as a context manager or call ``close``.

    ``readonly`` opens the file with ``mode=ro``: nothing is migrated, created
    or switched, and an older schema is read as far as its tables go."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True,
                 timeout: float = DEFAULT_TIMEOUT_S, readonly: bool = False) -> None:
        self.path = Path(path)
        self.timeout = timeout
        kind = store_kind(self.path)
        self.readonly = readonly
        if kind == "absent":
            if not create or readonly:
                raise StoreError(
                    f"No results store at {str(self.path)!r}; run `rtb run` first, or point "
                    f"--store / ${STORE_ENV} at an existing store."
                )
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"Cannot create the store's directory {str(self.path.parent)!r}: "
                    f"{exc.strerror}."
                ) from None
        elif kind == "new" and readonly:
            raise StoreError(
                f"Expected a results store at {str(self.path)!r}, but the file is empty; run "
                f"`rtb run` first."
            )
        try:
            if readonly:
                self._conn = _connect_read_only(self.path, timeout)
            else:
                self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None,
                                             check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"Cannot open the results store {str(self.path)!r}: {exc}.") from None
        try:
            if readonly:
                self._retry(lambda: self._conn.execute(
                    f"PRAGMA busy_timeout = {int(self.timeout * 1000)}"))
            else:
                self._retry(self._setup)
                self._retry(self._migrate)
            self._tables = {str(r[0]) for r in self._read(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            if "readonly" in str(exc).lower():
                raise StoreError(
                    f"Expected a writable results store, but {str(self.path)!r} is read-only "
                    f"({exc})."
                ) from None
            raise StoreError(
                f"Expected {str(self.path)!r} to be an rtb results store (SQLite), but "
                f"opening it failed: {exc}."
            ) from None
        except BaseException:
            self._conn.close()
            raise

    # -- plumbing

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def _retry(self, fn: Callable[[], T]) -> T:
        """Run ``fn``, retrying with jittered backoff while the database is busy."""
        deadline = time.monotonic() + self.timeout
        delay = 0.02
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    if _is_busy(exc):
                        raise StoreError(
                            f"The results store {str(self.path)!r} stayed busy for "
                            f"{self.timeout:g} s ({exc})."
                        ) from None
                    raise
                time.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 0.5)

    def _setup(self) -> None:
        c = self._conn
        c.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        mode = c.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("Store %s runs in journal mode %s, not WAL", self.path, mode)
        c.execute("PRAGMA synchronous = NORMAL")

    def _write(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """One write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``), retried while busy."""

        def attempt() -> T:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                out = body(self._conn)
                self._conn.execute("COMMIT")
                return out
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

        return self._retry(attempt)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._retry(lambda: self._conn.execute(sql, params).fetchall())

    def _frame(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        def q() -> pd.DataFrame:
            cur = self._conn.execute(sql, params)
            cols = [d[0] for d in cur.description]
            return pd.DataFrame(cur.fetchall(), columns=cols)

        return self._retry(q)

    @property
    def schema_version(self) -> int:
        return int(self._read("PRAGMA user_version")[0][0])

    def _migrate(self) -> None:
        if self.schema_version == SCHEMA_VERSION:
            return

        def body(conn: sqlite3.Connection) -> None:
            current = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"The results store {str(self.path)!r} has schema version {current}, newer "
                    f"than this rtb understands ({SCHEMA_VERSION}); upgrade rtb."
                )
            # a fresh store is created, not migrated: only an existing one's upgrade is news
            say = log.info if current > 0 else log.debug
            for version in range(current, SCHEMA_VERSION):
                say("Migrating store %s to schema version %d", self.path, version + 1)
                MIGRATIONS[version](conn)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

        self._write(body)

    # -- writing

    def save_run(self, record: Mapping[str, Any], outcomes: pd.DataFrame | None = None, *,
                 run_dir: str | os.PathLike[str] | None = None, sweep_id: str | None = None,
                 status: str = "finished") -> str:
        """Store one run (record dict as in ``record.json`` plus its outcomes
        frame) in one transaction; a run with the same id is replaced."""
        run_id = _record_id(record)
        frame = outcomes if outcomes is not None else pd.DataFrame()
        self._write(lambda conn: _insert_run(conn, record, frame, run_dir, sweep_id, status))
        log.info("Stored run %s in %s", run_id, self.path)
        return run_id

    def claim_job(self, run_key: str, owner: str | None = None, *,
                  stale_after: float | None = None, sweep_id: str | None = None) -> Claim:
        """Claim ``run_key`` for ``owner`` in one ``BEGIN IMMEDIATE`` transaction.

        A finished run with the key: ``complete``. A ``running`` claim of another
        owner whose heartbeat is younger than ``stale_after`` seconds: ``running``.
        Otherwise (no claim, a failed or abandoned one): the claim is taken."""
        owner = owner or job_owner()
        timeout = claim_timeout_s() if stale_after is None else stale_after

        def body(conn: sqlite3.Connection) -> Claim:
            now = time.time()
            done = conn.execute(
                "SELECT run_id FROM runs WHERE run_key = ? AND status = 'finished' "
                "ORDER BY started DESC, run_id DESC LIMIT 1", (run_key,)).fetchone()
            if done:
                return Claim("complete", run_key, owner, str(done[0]))
            row = conn.execute("SELECT state, owner, heartbeat FROM jobs WHERE run_key = ?",
                               (run_key,)).fetchone()
            if row and row[0] == "running" and row[1] != owner and not _abandoned(
                    str(row[1]), float(row[2]), now, timeout):
                return Claim("running", run_key, str(row[1]))
            if row:
                log.info("Taking over job %s (%s by %s)", run_key[:12], row[0], row[1])
            conn.execute(
                "INSERT OR REPLACE INTO jobs (run_key, state, owner, started, heartbeat, "
                "finished, run_id, sweep_id, error) VALUES (?, 'running', ?, ?, ?, NULL, NULL, ?, "
                "NULL)", (run_key, owner, _now_iso(), now, sweep_id))
            return Claim("claimed", run_key, owner)

        return self._write(body)

    def heartbeat(self, run_key: str, owner: str) -> bool:
        """Refresh ``owner``'s running claim of ``run_key``; False once it is not theirs."""
        def body(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("UPDATE jobs SET heartbeat = ? WHERE run_key = ? AND owner = ? "
                               "AND state = 'running'", (time.time(), run_key, owner))
            return cur.rowcount > 0

        return self._write(body)

    def fail_job(self, run_key: str, owner: str, error: str = "") -> bool:
        """Mark ``owner``'s running claim of ``run_key`` failed (no-op otherwise)."""
        def body(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE jobs SET state = 'failed', finished = ?, error = ? WHERE run_key = ? "
                "AND owner = ? AND state = 'running'",
                (_now_iso(), error[:500], run_key, owner))
            return cur.rowcount > 0

        return self._write(body)

    def jobs(self, *, stale_after: float | None = None) -> pd.DataFrame:
        """Job claims, oldest first, with ``status``: the state, or ``abandoned``
        for a running claim whose heartbeat is older than ``stale_after``."""
        cols = ["run_key", "state", "owner", "started", "heartbeat", "finished", "run_id",
                "sweep_id", "error"]
        if "jobs" not in self._tables:
            return pd.DataFrame(columns=[*cols, "status"])
        df = self._frame(f"SELECT {', '.join(cols)} FROM jobs ORDER BY started, run_key")
        timeout = claim_timeout_s() if stale_after is None else stale_after
        now = time.time()
        df["status"] = [
            "abandoned" if st == "running" and _abandoned(str(ow), float(hb), now, timeout)
            else st for st, ow, hb in zip(df["state"], df["owner"], df["heartbeat"], strict=True)]
        return df

    # -- shards of a sharded run

    def claim_shard(self, run_key: str, count: int, index: int, owner: str | None = None, *,
                    skip_complete: bool = True, stale_after: float | None = None) -> Claim:
        """Claim shard ``index`` of ``count`` of the run ``run_key`` in one
        transaction: ``complete`` when the assembled run is stored (``run_id``)
        or, with ``skip_complete``, when the shard's outcomes are; ``running``
        when another live process holds it; otherwise ``claimed``."""
        from benchmark.shard import shard_key

        owner = owner or job_owner()
        timeout = claim_timeout_s() if stale_after is None else stale_after
        key = shard_key(run_key, count, index)

        def body(conn: sqlite3.Connection) -> Claim:
            now = time.time()
            done = conn.execute(
                "SELECT run_id FROM runs WHERE run_key = ? AND status = 'finished' "
                "ORDER BY started DESC, run_id DESC LIMIT 1", (run_key,)).fetchone()
            if done:
                return Claim("complete", key, owner, str(done[0]))
            if skip_complete and conn.execute(
                    "SELECT 1 FROM shards WHERE run_key = ? AND shard_count = ? AND "
                    "shard_index = ? AND state = 'complete'", (run_key, count, index)).fetchone():
                return Claim("complete", key, owner)
            row = conn.execute("SELECT state, owner, heartbeat FROM jobs WHERE run_key = ?",
                               (key,)).fetchone()
            if row and row[0] == "running" and row[1] != owner and not _abandoned(
                    str(row[1]), float(row[2]), now, timeout):
                return Claim("running", key, str(row[1]))
            conn.execute(
                "INSERT OR REPLACE INTO jobs (run_key, state, owner, started, heartbeat, "
                "finished, run_id, sweep_id, error) VALUES (?, 'running', ?, ?, ?, NULL, NULL, "
                "NULL, NULL)", (key, owner, _now_iso(), now))
            return Claim("claimed", key, owner)

        return self._write(body)

    def save_shard(self, run_key: str, count: int, index: int, *, state: str,
                   name: str = "", data_name: str = "", n_samples: int | None = None,
                   outcomes: bytes | None = None, error: str = "") -> None:
        """Store a shard's outcomes (``complete``) or its error (``failed``;
        never over a complete one) and settle its job claim, in one transaction."""
        from benchmark.shard import shard_key

        key = shard_key(run_key, count, index)

        def body(conn: sqlite3.Connection) -> None:
            if state == "failed" and conn.execute(
                    "SELECT 1 FROM shards WHERE run_key = ? AND shard_count = ? "
                    "AND shard_index = ? AND state = 'complete'",
                    (run_key, count, index)).fetchone():
                return
            conn.execute(
                "INSERT OR REPLACE INTO shards (run_key, shard_count, shard_index, state, name, "
                "data_name, n_samples, finished, error, outcomes) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_key, count, index, state, name, data_name, n_samples, _now_iso(),
                 error[:500] or None, outcomes))
            if state == "complete":
                conn.execute("UPDATE jobs SET state = 'complete', finished = ?, heartbeat = ?, "
                             "error = NULL WHERE run_key = ?", (_now_iso(), time.time(), key))

        self._write(body)

    def shard_states(self, run_key: str, count: int) -> dict[int, str]:
        """``{shard index: 'complete' | 'failed'}`` of the shards stored so far."""
        if "shards" not in self._tables:
            return {}
        return {int(i): str(st) for i, st in self._read(
            "SELECT shard_index, state FROM shards WHERE run_key = ? AND shard_count = ?",
            (run_key, count))}

    def shard_outcomes(self, run_key: str, count: int) -> dict[int, bytes]:
        """The stored outcome blobs of the complete shards, by shard index."""
        return {int(i): bytes(b) for i, b in self._read(
            "SELECT shard_index, outcomes FROM shards WHERE run_key = ? AND shard_count = ? "
            "AND state = 'complete'", (run_key, count))}

    def drop_shards(self, run_key: str) -> None:
        """Forget the shards of ``run_key`` (once the assembled run is stored)."""
        self._write(lambda conn: conn.execute("DELETE FROM shards WHERE run_key = ?",
                                              (run_key,)))

    def incomplete_shards(self) -> pd.DataFrame:
        """One row per sharded run not yet assembled: its key, name, data, shard
        count and the shard ids done, failed and missing (not yet complete)."""
        cols = ["run_key", "name", "data_name", "shards", "done", "failed", "missing"]
        if "shards" not in self._tables:
            return pd.DataFrame(columns=cols)
        rows = self._read(
            "SELECT run_key, shard_count, shard_index, state, name, data_name FROM shards s "
            "WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.run_key = s.run_key AND "
            "r.status = 'finished') ORDER BY finished, run_key, shard_index")
        groups: dict[tuple[str, int], dict[str, Any]] = {}
        for key, count, index, state, name, data_name in rows:
            g = groups.setdefault((str(key), int(count)), {
                "run_key": str(key), "name": name or "", "data_name": data_name or "",
                "shards": int(count), "done": [], "failed": []})
            g["done" if state == "complete" else "failed"].append(int(index))
        out = []
        for g in groups.values():
            g["missing"] = [i for i in range(g["shards"]) if i not in g["done"]]
            out.append(g)
        return pd.DataFrame(out, columns=cols)

    def delete_runs(self, run_ids: Iterable[str]) -> None:
        ids = list(run_ids)

        def body(conn: sqlite3.Connection) -> None:
            for r in ids:
                _delete_run(conn, r)

        self._write(body)

    # -- reading

    def runs(self, *, model: str | None = None, version: str | None = None,
             sweep_id: str | None = None, run_key: str | None = None,
             fingerprint: str | None = None, status: str | None = None) -> pd.DataFrame:
        """One row per run (without the record JSON), oldest first; filters combine."""
        where, params = [], []
        for col, val in (("sweep_id", sweep_id), ("run_key", run_key),
                         ("data_fingerprint", fingerprint), ("status", status)):
            if val is not None:
                where.append(f"r.{col} = ?")
                params.append(val)
        if model is not None or version is not None:
            sub, sub_params = [], []
            if model is not None:
                sub.append("m.name = ?")
                sub_params.append(model)
            if version is not None:
                sub.append("m.version = ?")
                sub_params.append(version)
            where.append("EXISTS (SELECT 1 FROM models m WHERE m.run_id = r.run_id AND "
                         + " AND ".join(sub) + ")")
            params.extend(sub_params)
        sql = (
            "SELECT r.run_id, r.name, r.run_key, r.config_hash, r.data_name, r.data_fingerprint, "
            "r.n_samples, r.started, r.finished, r.sweep_id, r.status, r.run_dir, "
            "(SELECT group_concat(key, ' ') FROM (SELECT key FROM models m2 "
            " WHERE m2.run_id = r.run_id ORDER BY key)) AS models "
            "FROM runs r" + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY r.started, r.run_id"
        )
        return self._frame(sql, params)

    def run_ids(self) -> list[str]:
        return [r[0] for r in self._read("SELECT run_id FROM runs ORDER BY started, run_id")]

    def has_run_key(self, run_key: str) -> bool:
        """Whether a finished run with this content key is stored (for resumable sweeps)."""
        return bool(self._read(
            "SELECT 1 FROM runs WHERE run_key = ? AND status = 'finished' LIMIT 1", (run_key,)))

    def resolve_run(self, ref: str) -> str:
        """A run id from an exact id or a unique prefix of one."""
        rows = self._read("SELECT run_id FROM runs WHERE run_id = ?", (ref,))
        if rows:
            return str(rows[0][0])
        like = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._read("SELECT run_id FROM runs WHERE run_id LIKE ? ESCAPE '\\' "
                          "ORDER BY run_id", (like,))
        if len(rows) == 1:
            return str(rows[0][0])
        if not rows:
            raise StoreError(
                f"Unknown run {ref!r} in {str(self.path)!r}; expected a run id from `rtb store list`."
            )
        raise StoreError(
            f"Run prefix {ref!r} is ambiguous; it matches {', '.join(r[0] for r in rows[:5])}"
            + (" ..." if len(rows) > 5 else "") + "."
        )

    def record(self, run_id: str) -> dict[str, Any]:
        """The full record of one run, as written to ``record.json``."""
        rows = self._read("SELECT record FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            raise StoreError(f"Unknown run {run_id!r}; expected a run id from `rtb store list`.")
        return dict(json.loads(rows[0][0]))

    def models(self, run_ids: Sequence[str] | None = None) -> pd.DataFrame:
        return self._by_runs("SELECT * FROM models", run_ids, "run_id, key")

    def measurements(self, run_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """Tidy measurement rows (``param`` NaN where a threat has none)."""
        df = self._by_runs("SELECT * FROM measurements", run_ids, "rowid")
        return df.astype({"param": float, "value": float, "ci_low": float, "ci_high": float})

    def checks(self, run_ids: Sequence[str] | None = None) -> pd.DataFrame:
        if "checks" not in self._tables:  # a v1 store opened read-only
            return pd.DataFrame(columns=["run_id", "name", "status", "subject", "message",
                                         "evidence"])
        df = self._by_runs("SELECT * FROM checks", run_ids, "rowid")
        df["evidence"] = [json.loads(e) if isinstance(e, str) else {} for e in df["evidence"]]
        return df

    def outcomes(self, run_ids: Sequence[str] | str | None = None, *, model: str | None = None,
                 version: str | None = None) -> pd.DataFrame:
        """Per-sample outcomes, one row per (run, model, threat, sample), with the
        threat's extras (norms, distances, ...) expanded into columns."""
        if isinstance(run_ids, str):
            run_ids = [run_ids]
        where, params = [], []
        if model is not None:
            where.append("model = ?")
            params.append(model)
        if version is not None:
            where.append("version = ?")
            params.append(version)
        df = expand_extras(self._by_runs("SELECT * FROM outcomes", run_ids, "rowid", where,
                                         params))
        if "samples" not in self._tables or df.empty:
            return df
        samples = self._by_runs("SELECT * FROM samples", sorted(set(df["run_id"])), "rowid")
        if samples.empty:
            return df
        return df.merge(expand_samples(samples), on=["run_id", "sample"], how="left")

    def row_counts(self) -> dict[str, int]:
        """Rows per table, for ``rtb store info``."""
        return {t: int(self._read(f"SELECT count(*) FROM {t}")[0][0]) for t in TABLES
                if t in self._tables}

    def frame(self, table: str, run_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """One whole table as a pandas DataFrame (``runs`` includes the record JSON)."""
        if table not in TABLES:
            raise StoreError(f"Unknown store table {table!r}; expected one of: {', '.join(TABLES)}.")
        if table not in self._tables:
            raise StoreError(
                f"The results store {str(self.path)!r} has schema version {self.schema_version}, "
                f"without a {table!r} table; a write command (`rtb run`, `rtb store rebuild`) "
                f"migrates it to version {SCHEMA_VERSION}."
            )
        if table == "outcomes":
            return self.outcomes(run_ids)
        if table == "measurements":
            return self.measurements(run_ids)
        order = "started, run_id" if table == "runs" else "rowid"
        return self._by_runs(f"SELECT * FROM {table}", run_ids, order)

    def _by_runs(self, select: str, run_ids: Sequence[str] | None, order: str,
                 where: list[str] | None = None, params: list[Any] | None = None) -> pd.DataFrame:
        where = list(where or [])
        params = list(params or [])
        if run_ids is not None:
            ids = list(run_ids)
            where.append(f"run_id IN ({', '.join('?' * len(ids))})" if ids else "0")
            params.extend(ids)
        sql = select + (" WHERE " + " AND ".join(where) if where else "") + f" ORDER BY {order}"
        return self._frame(sql, params)

    def integrity_problems(self) -> list[str]:
        """What is inconsistent: SQLite's integrity check plus rows without a run."""
        problems = [r[0] for r in self._read("PRAGMA integrity_check") if r[0] != "ok"]
        for table in ("models", "measurements", "outcomes", "checks"):
            if table not in self._tables:
                continue
            n = self._read(f"SELECT count(*) FROM {table} WHERE run_id NOT IN "
                           "(SELECT run_id FROM runs)")[0][0]
            if n:
                problems.append(f"{n} {table} rows belong to no run")
        return problems


def _record_id(record: Mapping[str, Any]) -> str:
    run_id = record.get("run_id")
    if not isinstance(run_id, str) or not run_id:
        raise StoreError(f"Expected a record with a non-empty `run_id`, but got {run_id!r}.")
    return run_id


def _insert_run(conn: sqlite3.Connection, record: Mapping[str, Any], outcomes: pd.DataFrame,
                run_dir: str | os.PathLike[str] | None, sweep_id: str | None,
                status: str) -> str:
    """Replace-or-insert every row of one run (inside the caller's transaction)."""
    run_id = _record_id(record)
    data = record.get("data") or {}
    _delete_run(conn, run_id)
    conn.execute(_INSERT_RUN, (
        run_id, str(record.get("name", "")), record.get("run_key"), record.get("config_hash"),
        data.get("name"), data.get("fingerprint"), data.get("n"), record.get("started"),
        record.get("finished"), sweep_id or _sweep_id(record), status,
        None if run_dir is None else str(Path(run_dir).resolve()), _json(record),
        datetime.now(timezone.utc).isoformat(),
    ))
    conn.executemany(_INSERT_MODEL, [
        (run_id, key, str(m.get("name", "")), str(m.get("version", "")), m.get("sha256"))
        for key, m in (record.get("models") or {}).items()])
    conn.executemany(_INSERT_MEASUREMENT, _measurement_rows(run_id, record))
    conn.executemany(_INSERT_CHECK, _check_rows(run_id, record))
    conn.executemany(_INSERT_OUTCOME, _outcome_rows(run_id, outcomes))
    conn.executemany(_INSERT_SAMPLE, _sample_rows(run_id, outcomes))
    key = record.get("run_key")
    if isinstance(key, str) and key and status == "finished":
        _complete_job(conn, key, run_id, sweep_id or _sweep_id(record))
    return run_id


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def _complete_job(conn: sqlite3.Connection, run_key: str, run_id: str,
                  sweep_id: str | None) -> None:
    """Mark the job of ``run_key`` complete (in the transaction storing its run)."""
    now = _now_iso()
    cur = conn.execute("UPDATE jobs SET state = 'complete', finished = ?, run_id = ?, "
                       "heartbeat = ?, error = NULL WHERE run_key = ?",
                       (now, run_id, time.time(), run_key))
    if cur.rowcount == 0:
        conn.execute("INSERT INTO jobs (run_key, state, owner, started, heartbeat, finished, "
                     "run_id, sweep_id) VALUES (?, 'complete', ?, ?, ?, ?, ?, ?)",
                     (run_key, job_owner(), now, time.time(), now, run_id, sweep_id))


def _delete_run(conn: sqlite3.Connection, run_id: str) -> None:
    for table in ("samples", "outcomes", "measurements", "checks", "models", "runs"):
        conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))


def expand_extras(df: pd.DataFrame) -> pd.DataFrame:
    """Turn the JSON ``extras`` column of outcome rows into float columns."""
    if "extras" not in df.columns:
        return df
    # one JSON document for all rows: much faster than one json.loads per row
    parsed = json.loads("[" + ",".join(e if isinstance(e, str) else "{}"
                                       for e in df["extras"]) + "]")
    out = df.drop(columns=["extras"])
    out["correct"] = out["correct"].astype(bool)
    out["param"] = out["param"].astype(float)
    if parsed and any(parsed):
        wide = pd.DataFrame.from_records(parsed, index=out.index).astype(float)
        for k in wide.columns:
            out[k] = wide[k]
    return out


def expand_samples(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of the ``samples`` table as ``run_id, sample, label`` and one text
    column per group feature."""
    parsed = [json.loads(g) if isinstance(g, str) else {} for g in df["groups"]]
    out = df[["run_id", "sample"]].copy()
    out[LABEL_COLUMN] = df["label"].astype("Int64")
    keys: list[str] = []
    for d in parsed:
        keys += [k for k in d if k not in keys]
    for k in keys:
        out[k] = pd.Series([d.get(k) for d in parsed], index=out.index, dtype=object)
    return out


def open_store(path: str | os.PathLike[str] | None = None, *, create: bool = True,
               readonly: bool = False) -> Store:
    """Open the store at ``path`` (or the default, see ``resolve_store_path``);
    ``readonly`` for commands that only read (see ``Store``)."""
    return Store(resolve_store_path(path), create=create, readonly=readonly)


def fail_claim(store: str | os.PathLike[str] | None, run_key: str,
               error: BaseException | str = "") -> None:
    """Mark this process's running claim of ``run_key`` failed, if it holds one;
    never raises (it runs while another error is on its way out)."""
    try:
        path = resolve_store_path(store)
        if store_kind(path) != "rtb":
            return
        text = error if isinstance(error, str) else (
            f"{type(error).__name__}: {error}".rstrip(": "))
        with Store(path, create=False) as s:
            if s.fail_job(run_key, job_owner(), text):
                log.info("Job %s marked failed in %s", run_key[:12], path)
    except Exception as exc:
        log.warning("Could not mark job %s failed in the store: %s", run_key[:12], exc)


# ----------------------------------------------------------------------------- run dirs

def save_run_dir(store: str | os.PathLike[str] | None, run_dir: str | os.PathLike[str], *,
                 sweep_id: str | None = None) -> str:
    """Store the run written into ``run_dir`` (the runner's hook after ``write_record``)."""
    run_dir = Path(run_dir)
    record, outcomes = read_run_dir(run_dir)
    try:
        with open_store(store) as s:
            return s.save_run(record, outcomes, run_dir=run_dir, sweep_id=sweep_id)
    except StoreError as exc:
        raise StoreError(
            f"{str(exc).rstrip('.')}; the run's files are safe in {str(run_dir)!r} "
            f"(`rtb store rebuild {run_dir}` adds them)."
        ) from None


def rebuild(store: str | os.PathLike[str] | None, roots: Iterable[str | os.PathLike[str]], *,
            fresh: bool = False) -> list[str]:
    """Re-read the runs under ``roots`` into the store, in one transaction.

    Without ``fresh`` the runs found are added or replaced and every other run
    stays; with ``fresh`` the store holds exactly the runs found afterwards.
    """
    check_writable_store(store)
    dirs = find_run_dirs(roots)
    loaded = [(d, *read_run_dir(d)) for d in dirs]
    with open_store(store) as s:
        def body(conn: sqlite3.Connection) -> list[str]:
            if fresh:
                for table in ("samples", "outcomes", "measurements", "checks", "models", "runs"):
                    conn.execute(f"DELETE FROM {table}")
            return [_insert_run(conn, record, outcomes, d, None, "finished")
                    for d, record, outcomes in loaded]

        return s._write(body)


EXPORT_FORMATS: dict[str, Callable[[pd.DataFrame, Path], None]] = {
    "csv": lambda df, p: df.to_csv(p, index=False),
    "parquet": lambda df, p: df.to_parquet(p, index=False),
}


def _empty_text_as_missing(df: pd.DataFrame) -> pd.DataFrame:
    """Empty strings (no group feature, no group value) as missing values: CSV
    cannot tell "" from a missing value, so both formats write them missing."""
    df = df.copy()
    for col in df.columns:
        if pd.api.types.is_object_dtype(df[col]) or pd.api.types.is_string_dtype(df[col]):
            empty = df[col].eq("").fillna(False).astype(bool)
            if empty.any():
                df[col] = df[col].astype(object).where(~empty, None)
    return df


def export(store: Store, table: str, path: str | os.PathLike[str], fmt: str | None = None,
           run_ids: Sequence[str] | None = None) -> int:
    """Write one table to CSV or Parquet (format from ``fmt`` or the suffix); returns rows."""
    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".").lower()
    if fmt not in EXPORT_FORMATS:
        raise StoreError(
            f"Expected an export format in: {', '.join(EXPORT_FORMATS)} (from --format or the "
            f"file suffix), but got {fmt!r}."
        )
    df = _empty_text_as_missing(store.frame(table, run_ids))
    path.parent.mkdir(parents=True, exist_ok=True)
    EXPORT_FORMATS[fmt](df, path)
    return len(df)
