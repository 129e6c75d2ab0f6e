"""The monitor loop: windows in, rows in the store, alerts out.

A window whose content the store already holds (same key, same content
hash) is not processed again: its stored alerts count. So a killed monitor
resumes with the first window it had not finished, and a window whose file
gained labels is processed again and replaces its rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.monitor import records
from benchmark.monitor.bench_lookup import BenchmarkMap
from benchmark.monitor.engine import WindowResult, process_window
from benchmark.monitor.reference import Reference
from benchmark.monitor.rules import Alert, MonitorConfig
from benchmark.monitor.sources import TableColumns, Window, read_window, stable_files
from benchmark.store import Store

log = logging.getLogger(__name__)


@dataclass
class Handled:
    """One window of this invocation: processed now, or already stored."""

    key: str
    seq: int
    alerts: list[Alert]
    result: WindowResult | None = None  # None when resumed from the store
    planted: dict[str, object] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return any(a.status == "fail" for a in self.alerts)


def handle(window: Window, *, ref: Reference, cfg: MonitorConfig, store: Store | None,
           monitor: str, bench: BenchmarkMap, seen: dict[str, str], seq: int) -> Handled:
    """Process one window (or take its stored result) and store it."""
    if store is not None and seen.get(window.key) == window.content_hash:
        stored = records.stored_alerts(store, monitor, window.key)
        log.info("window %s already stored; skipped", window.key)
        stored_seq = records.window_seq(store, monitor, window.key)
        return Handled(window.key, seq if stored_seq is None else stored_seq,
                       [Alert(*a) for a in stored])
    if store is not None and window.key in seen:
        stored_seq = records.window_seq(store, monitor, window.key)
        seq = seq if stored_seq is None else stored_seq  # a window redone keeps its place
    res = process_window(ref, window, seq, cfg.settings, bench)
    res.alerts = cfg.evaluate(res)
    if store is not None:
        records.save_window(store, monitor, ref.source, res)
        seen[window.key] = window.content_hash
    return Handled(window.key, seq, res.alerts, res)


def run_windows(windows: Iterable[Window], *, ref: Reference, cfg: MonitorConfig,
                store: Store | None, monitor: str, bench: BenchmarkMap,
                max_windows: int | None = None,
                on_window: Callable[[Handled], None] | None = None) -> list[Handled]:
    seen = records.stored_hashes(store, monitor) if store is not None else {}
    out: list[Handled] = []
    for window in windows:
        if max_windows is not None and len(out) >= max_windows:
            break
        seq = records.next_seq(store, monitor) if store is not None else len(out)
        h = handle(window, ref=ref, cfg=cfg, store=store, monitor=monitor, bench=bench,
                   seen=seen, seq=seq)
        out.append(h)
        if on_window is not None:
            on_window(h)
    return out


def watch_windows(directory: Path, cols: TableColumns, *, poll_s: float = 1.0,
                  max_windows: int | None = None, idle_s: float | None = None
                  ) -> Iterator[Window]:
    """New window files of ``directory`` as they land, in name order: a file
    is read once its size and mtime held still for one poll (never while it
    is being written; ``*.tmp`` and hidden names are never read)."""
    sizes: dict[Path, tuple[int, int]] = {}
    done: set[Path] = set()
    idle_since = time.monotonic()
    given = 0
    while max_windows is None or given < max_windows:
        ready = [p for p in stable_files(directory, sizes) if p not in done]
        for p in ready:
            done.add(p)
            given += 1
            idle_since = time.monotonic()
            yield read_window(p, cols)
            if max_windows is not None and given >= max_windows:
                return
        if idle_s is not None and time.monotonic() - idle_since > idle_s:
            log.info("watch: nothing new for %.0f s; stopping", idle_s)
            return
        time.sleep(poll_s)
