"""Monitor windows in the results store (tables ``monitor_*``).

Each window is written in one transaction that first deletes whatever the
store held for (monitor, window): processing a window again replaces it, and
a monitor killed mid-window leaves that window absent, never half-written.
"""

from __future__ import annotations

import json
import math
import sqlite3
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from benchmark.monitor.engine import WindowResult
from benchmark.store import Store

WINDOW_TABLES = ("monitor_metrics", "monitor_drift", "monitor_checks", "monitor_alerts",
                 "monitor_windows")


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _plain(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item"):
        return _plain(obj.item())
    return obj


def save_window(store: Store, monitor: str, reference: str, res: WindowResult) -> None:
    """Replace the rows of one window by ``res`` (one transaction)."""
    w = res.window
    failed = any(a.status == "fail" for a in res.alerts)
    match = res.match or {}
    details = {"match": match, "benchmark_note": res.benchmark_note,
               "drifted": res.drifted}

    def body(conn: sqlite3.Connection) -> None:
        for table in WINDOW_TABLES:
            conn.execute(f"DELETE FROM {table} WHERE monitor = ? AND window = ?",
                         (monitor, w.key))
        conn.execute(
            "INSERT INTO monitor_windows (monitor, window, seq, source, modality, start, end_, n, "
            "has_labels, content_hash, reference, benchmark_run, matched_threat, "
            "match_confidence, status, details, processed_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (monitor, w.key, res.index, w.source, w.modality, w.start, w.end, len(w),
             int(w.has_labels), w.content_hash, reference, res.benchmark_run,
             match.get("threat"), _num(match.get("confidence")),
             "alert" if failed else "ok", json.dumps(_plain(details)),
             datetime.now(timezone.utc).isoformat(timespec="seconds")))
        conn.executemany(
            "INSERT INTO monitor_metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(monitor, w.key, m.model, m.metric, m.group_feature, m.group_value, _num(m.value),
              _num(m.ci_low), _num(m.ci_high), m.n) for m in res.metrics])
        conn.executemany(
            "INSERT INTO monitor_drift VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(monitor, w.key, d.feature, d.kind, d.test, _num(d.statistic), _num(d.p_value),
              _num(d.level), _num(d.distance), int(d.drifted)) for d in res.drift])
        conn.executemany(
            "INSERT INTO monitor_checks VALUES (?, ?, ?, ?, ?)",
            [(monitor, w.key, c.check, c.status, c.message) for c in res.checks])
        conn.executemany(
            "INSERT INTO monitor_alerts VALUES (?, ?, ?, ?, ?, ?)",
            [(monitor, w.key, a.rule, a.kind, a.status, a.message) for a in res.alerts])

    store._write(body)


def stored_hashes(store: Store, monitor: str) -> dict[str, str]:
    """window -> content hash of every window stored for ``monitor``."""
    rows = store._read("SELECT window, content_hash FROM monitor_windows WHERE monitor = ?",
                       (monitor,))
    return {str(a): str(b) for a, b in rows}


def next_seq(store: Store, monitor: str) -> int:
    rows = store._read("SELECT max(seq) FROM monitor_windows WHERE monitor = ?", (monitor,))
    return 0 if rows[0][0] is None else int(rows[0][0]) + 1


def window_seq(store: Store, monitor: str, window: str) -> int | None:
    rows = store._read("SELECT seq FROM monitor_windows WHERE monitor = ? AND window = ?",
                       (monitor, window))
    return None if not rows else int(rows[0][0])


def has_monitor_tables(store: Store) -> bool:
    return "monitor_windows" in store._tables


def monitors(store: Store) -> list[str]:
    if not has_monitor_tables(store):
        return []
    return [str(r[0]) for r in store._read(
        "SELECT DISTINCT monitor FROM monitor_windows ORDER BY monitor")]


def monitor_frames(store: Store, monitor: str) -> dict[str, pd.DataFrame]:
    """Every monitor table's rows of ``monitor`` (windows in stream order)."""
    out = {}
    for table in WINDOW_TABLES:
        order = "seq" if table == "monitor_windows" else "rowid"
        out[table.removeprefix("monitor_")] = store._frame(
            f"SELECT * FROM {table} WHERE monitor = ? ORDER BY {order}", (monitor,))
    return out


def stored_alerts(store: Store, monitor: str, window: str) -> list[tuple[str, str, str, str]]:
    return [(str(a), str(b), str(c), str(d)) for a, b, c, d in store._read(
        "SELECT rule, kind, status, message FROM monitor_alerts WHERE monitor = ? AND "
        "window = ? ORDER BY rowid", (monitor, window))]


def delete_monitor(store: Store, monitor: str) -> None:
    """Forget every window of ``monitor`` (the demo starts afresh)."""
    def body(conn: sqlite3.Connection) -> None:
        for table in WINDOW_TABLES:
            conn.execute(f"DELETE FROM {table} WHERE monitor = ?", (monitor,))

    store._write(body)
