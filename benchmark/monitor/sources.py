"""Windows of production data: where they come from and how they are cut.

Two kinds of source:

* a directory of batch files, one window per file: ``.npz`` for images
  (``x``; optionally ``y``, ``pred`` and ``group_NAME`` arrays, and a scalar
  ``timestamp``), ``.csv`` or ``.parquet`` for tables; ordered by file name,
  or by their timestamp (``order="timestamp"``);
* one Parquet or CSV log with a timestamp column, cut into windows of a
  duration (``1h``, ``30min``, ``1d``) or of a number of rows (``1000rows``).
  The log streams through in chunks (``pyarrow`` batches, ``pandas`` CSV
  chunks), so at most one window plus one chunk is held in memory.

A window carries a stable ``key`` (the file name, or the window's start in
the log) and a ``content_hash`` of what it holds: the monitor re-processes
a stored window only when its content changed (labels that arrived later).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.core.errors import DataError, UserError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES: tuple[str, ...] = (".npz",)
TABLE_SUFFIXES: tuple[str, ...] = (".csv", ".parquet", ".pq")
SUFFIXES: tuple[str, ...] = IMAGE_SUFFIXES + TABLE_SUFFIXES
#: Names a writer uses for a file that is not complete yet: never read.
PARTIAL_SUFFIXES: tuple[str, ...] = (".tmp", ".part", ".partial", ".crdownload", ".lock")
GROUP_PREFIX = "group_"
_WINDOW_RE = re.compile(r"^\s*(\d+)\s*(rows?|s|sec|min|m|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"s": "s", "sec": "s", "min": "min", "m": "min", "h": "h", "d": "D", "w": "W"}


@dataclass
class Window:
    """One window of production data (images in ``x`` or a table in ``frame``)."""

    key: str
    source: str
    x: Any = None                      # torch.Tensor N x C x H x W (images)
    frame: pd.DataFrame | None = None  # raw feature table (tabular)
    y: np.ndarray | None = None
    groups: pd.DataFrame = field(default_factory=pd.DataFrame)
    served: np.ndarray | None = None   # predictions the production system logged
    start: str | None = None
    end: str | None = None
    content_hash: str = ""

    def __len__(self) -> int:
        return int(len(self.frame) if self.frame is not None else len(self.x))

    @property
    def modality(self) -> str:
        return "tabular" if self.frame is not None else "image"

    @property
    def has_labels(self) -> bool:
        return self.y is not None


@dataclass(frozen=True)
class TableColumns:
    """Which columns of a table are not features."""

    label: str | None = None
    timestamp: str | None = None
    groups: tuple[str, ...] = ()
    served: str | None = None


@dataclass(frozen=True)
class WindowSize:
    """``rows`` rows, or a duration (a pandas frequency string) per window."""

    rows: int | None = None
    freq: str | None = None

    @classmethod
    def parse(cls, text: str) -> WindowSize:
        m = _WINDOW_RE.match(str(text))
        if not m or int(m.group(1)) < 1:
            raise UserError(f"Expected `--window` to be a positive duration (30min, 1h, 1d) or a "
                            f"row count (1000rows), but got {text!r}.")
        n, unit = int(m.group(1)), m.group(2).lower()
        if unit.startswith("row"):
            return cls(rows=n)
        return cls(freq=f"{n}{_UNITS[unit]}")


def is_candidate(path: Path) -> bool:
    """A file a monitor may read: a known suffix, not hidden, not a partial write."""
    name = path.name
    return (path.is_file() and not name.startswith(".") and not name.endswith(PARTIAL_SUFFIXES)
            and path.suffix.lower() in SUFFIXES)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise DataError(f"Cannot read window file {str(path)!r} ({exc.strerror or exc}).") from None
    return h.hexdigest()


# ----------------------------------------------------------------------------- one file

def read_image_window(path: Path) -> Window:
    """An ``.npz`` window: images ``x``, optional ``y``, ``pred``, ``group_*``, ``timestamp``."""
    import torch

    from benchmark.data import _to_nchw, read_npz_arrays

    what = f"window {path.name}"
    arrays = read_npz_arrays(what, path, "x and optionally y, pred, group_NAME, timestamp")
    if "x" not in arrays:
        raise DataError(f"{what}: expected an array x in {str(path)!r}, but got {sorted(arrays)}.")
    x = _to_nchw(arrays["x"], what)
    n = len(x)

    def column(name: str) -> np.ndarray:
        a = np.asarray(arrays[name]).reshape(-1)
        if len(a) != n:
            raise DataError(f"{what}: expected {name} with one value per image ({n}), but got "
                            f"{len(a)}.")
        return a

    y = column("y").astype(np.int64) if "y" in arrays else None
    served = column("pred").astype(np.int64) if "pred" in arrays else None
    groups = pd.DataFrame({k[len(GROUP_PREFIX):]: column(k).astype(str)
                           for k in sorted(arrays) if k.startswith(GROUP_PREFIX)},
                          index=pd.RangeIndex(n))
    stamp = str(arrays["timestamp"].reshape(-1)[0]) if "timestamp" in arrays else None
    return Window(key=path.name, source=str(path), x=torch.as_tensor(x), y=y, groups=groups,
                  served=served, start=stamp, end=stamp, content_hash=file_digest(path))


def read_table(path: Path, what: str) -> pd.DataFrame:
    """A whole CSV or Parquet file, one line on failure."""
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except FileNotFoundError:
        raise DataError(f"{what}: file {str(path)!r} does not exist.") from None
    except Exception as exc:  # pandas / pyarrow raise many types for a bad file
        raise DataError(f"{what}: cannot read {str(path)!r} as "
                        f"{path.suffix.lstrip('.').upper()} ({' '.join(str(exc).split())[:200]})."
                        ) from None


def frame_window(frame: pd.DataFrame, key: str, source: str, cols: TableColumns,
                 content_hash: str = "") -> Window:
    """A window from a table: the label, group, served and timestamp columns
    taken out, the rest left as the raw features."""
    frame = frame.reset_index(drop=True)
    y = None
    if cols.label and cols.label in frame.columns and frame[cols.label].notna().all():
        y = frame[cols.label].to_numpy()
    missing = [g for g in cols.groups if g not in frame.columns]
    if missing:
        raise DataError(f"window {key}: expected group column(s) {missing} in {source!r}, but "
                        f"the columns are {list(frame.columns)[:12]}.")
    groups = frame[list(cols.groups)].astype(str) if cols.groups else pd.DataFrame(
        index=frame.index)
    served = frame[cols.served].to_numpy() if cols.served and cols.served in frame else None
    start = end = None
    if cols.timestamp and cols.timestamp in frame.columns and len(frame):
        ts = pd.to_datetime(frame[cols.timestamp], errors="coerce", utc=True)
        start, end = str(ts.min()), str(ts.max())
    drop = [c for c in (cols.label, cols.timestamp, cols.served) if c and c in frame.columns]
    if not content_hash:
        content_hash = hashlib.sha256(
            pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()
    return Window(key=key, source=source, frame=frame.drop(columns=drop), y=y,
                  groups=groups.reset_index(drop=True), served=served, start=start, end=end,
                  content_hash=content_hash)


def read_window(path: Path, cols: TableColumns) -> Window:
    """One batch file as a window (by its suffix)."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return read_image_window(path)
    if path.suffix.lower() in TABLE_SUFFIXES:
        frame = read_table(path, f"window {path.name}")
        return frame_window(frame, path.name, str(path), cols, file_digest(path))
    raise DataError(f"window {path.name}: expected a file ending in {', '.join(SUFFIXES)}, but "
                    f"got {path.suffix or 'no suffix'!r}.")


# ----------------------------------------------------------------------------- directory

def _file_timestamp(path: Path, cols: TableColumns) -> str:
    if path.suffix.lower() == ".npz":
        w = read_image_window(path)
        return w.start or ""
    frame = read_table(path, f"window {path.name}")
    if not cols.timestamp or cols.timestamp not in frame:
        raise DataError(f"window {path.name}: expected a timestamp column "
                        f"{cols.timestamp!r} to order by, but the columns are "
                        f"{list(frame.columns)[:12]}.")
    return str(pd.to_datetime(frame[cols.timestamp], utc=True).min())


def list_window_files(directory: Path, order: str = "name",
                      cols: TableColumns | None = None) -> list[Path]:
    """The window files of ``directory`` (partial writes left out), in order."""
    if not directory.is_dir():
        raise DataError(f"Expected a directory of window files, but {str(directory)!r} "
                        f"{'is a file' if directory.exists() else 'does not exist'}.")
    files = sorted((p for p in directory.iterdir() if is_candidate(p)), key=lambda p: p.name)
    if order == "timestamp":
        stamps = {p: _file_timestamp(p, cols or TableColumns()) for p in files}
        files.sort(key=lambda p: (stamps[p], p.name))
    return files


def directory_windows(directory: Path, cols: TableColumns, order: str = "name"
                      ) -> Iterator[Window]:
    for path in list_window_files(directory, order, cols):
        yield read_window(path, cols)


# ----------------------------------------------------------------------------- one log

def _chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The log in chunks of about ``chunk_rows`` rows."""
    what = f"log {path.name}"
    if not path.is_file():
        raise DataError(f"{what}: file {str(path)!r} does not exist; expected a Parquet or CSV "
                        "log.")
    try:
        if path.suffix.lower() == ".csv":
            yield from pd.read_csv(path, chunksize=chunk_rows)
            return
        import pyarrow.parquet as pq

        # pre_buffer off: otherwise the reader keeps every row group it read,
        # and memory grows with the log instead of staying at one batch.
        pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
        for batch in pf.iter_batches(batch_size=chunk_rows):
            yield batch.to_pandas()
    except UserError:
        raise
    except Exception as exc:
        raise DataError(f"{what}: cannot read {str(path)!r} "
                        f"({' '.join(str(exc).split())[:200]}).") from None


def log_windows(path: Path, size: WindowSize, cols: TableColumns,
                chunk_rows: int = 65536) -> Iterator[Window]:
    """Windows cut from one log, streamed: by row count, or by the period of
    ``cols.timestamp`` (the log must be in time order)."""
    if size.freq and not cols.timestamp:
        raise UserError("Expected `--timestamp COLUMN` with a duration `--window`, but got none.")
    pending: list[pd.DataFrame] = []
    held = 0
    start_row = 0
    current: pd.Timestamp | None = None
    last: pd.Timestamp | None = None
    src = str(path)

    def emit(parts: list[pd.DataFrame], key: str) -> Window:
        frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        return frame_window(frame, key, src, cols)

    for chunk in _chunks(path, chunk_rows if size.rows is None else max(1, min(chunk_rows,
                                                                                size.rows))):
        if size.rows is not None:
            while len(chunk):
                take = size.rows - held
                pending.append(chunk.iloc[:take])
                held += len(pending[-1])
                chunk = chunk.iloc[take:]
                if held == size.rows:
                    yield emit(pending, f"rows:{start_row}-{start_row + held - 1}")
                    start_row += held
                    pending, held = [], 0
            continue
        assert cols.timestamp is not None and size.freq is not None
        if cols.timestamp not in chunk.columns:
            raise DataError(f"log {path.name}: expected a timestamp column {cols.timestamp!r}, "
                            f"but the columns are {list(chunk.columns)[:12]}.")
        ts = pd.to_datetime(chunk[cols.timestamp], errors="coerce", utc=True)
        if ts.isna().any():
            bad = chunk[cols.timestamp][ts.isna()].iloc[0]
            raise DataError(f"log {path.name}: expected timestamps in {cols.timestamp!r}, but "
                            f"got {bad!r}.")
        if (last is not None and ts.iloc[0] < last) or not ts.is_monotonic_increasing:
            raise DataError(f"log {path.name}: expected rows in time order of "
                            f"{cols.timestamp!r} for duration windows; sort the log first.")
        last = ts.iloc[-1]
        period = ts.dt.floor(size.freq)
        for p in pd.unique(period):
            part = chunk[(period == p).to_numpy()]
            if current is not None and p != current:
                yield emit(pending, f"time:{current.isoformat()}")
                pending = []
            current = pd.Timestamp(p)
            pending.append(part)
    if pending:
        if size.rows is not None:
            yield emit(pending, f"rows:{start_row}-{start_row + held - 1}")
        elif current is not None:
            yield emit(pending, f"time:{current.isoformat()}")


def stable_files(directory: Path, sizes: dict[Path, tuple[int, int]]) -> list[Path]:
    """Files of ``directory`` whose size and mtime did not change since the
    previous poll (``sizes`` is updated): a file still being written is left
    for a later poll."""
    ready = []
    for p in sorted(directory.iterdir(), key=lambda p: p.name):
        if not is_candidate(p):
            continue
        try:
            st = p.stat()
        except OSError:
            continue
        now = (st.st_size, st.st_mtime_ns)
        if sizes.get(p) == now and st.st_size > 0:
            ready.append(p)
        sizes[p] = now
    return ready


def describe_columns(cols: TableColumns) -> Sequence[str]:
    return [c for c in (cols.label, cols.timestamp, cols.served, *cols.groups) if c]
