"""The run directory: what one run leaves on disk, and how a command finds a run.

A run directory holds ``record.json`` (provenance plus measurements) and
``outcomes.parquet`` (per-sample outcomes); while a run is in progress,
``pieces/`` holds the outcomes of its finished pieces (``benchmark.pieces``). This module is the only reader of
that layout, and the one place that turns a user's run reference (a run
directory, its ``record.json``, or a run id or unique prefix in the store)
into a run. It imports neither torch nor the store at import time, so the
commands that read results start fast. Every failure is a ``RunDirError``
(a ``StoreError``) with a one-line message.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.core.errors import RunDirError

RECORD_FILE = "record.json"
OUTCOMES_FILE = "outcomes.parquet"
#: Checkpoints of a run in progress: one file per finished piece (``benchmark.pieces``).
PIECES_DIR = "pieces"
#: The run's example gallery (``benchmark.gallery`` writes it; read here).
GALLERY_FILE = "gallery.npz"
#: Per-point arrays of ``gallery.npz`` (one row per (version, threat, point)).
POINT_ARRAYS = ("version", "family", "threat", "param", "sample", "label", "pred_clean", "pred",
                "other_version", "other_pred", "why", "group", "perturbed", "diff", "clean_row")
#: Keys without which a JSON file is not a run record.
RECORD_KEYS = ("run_id", "measurements")


@dataclass(frozen=True)
class LoadedRun:
    """One run's record (as in ``record.json``), where it came from, and how
    to read its per-sample outcomes (on demand: they can be large)."""

    record: dict[str, Any]
    source: str
    outcomes: Callable[[], pd.DataFrame] = field(default=pd.DataFrame, compare=False, repr=False)

    @property
    def run_id(self) -> str:
        return str(self.record.get("run_id", "?"))


def read_record(run_dir: Path) -> dict[str, Any]:
    """The record in ``run_dir``, checked to be an rtb run record."""
    path = run_dir / RECORD_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunDirError(f"Cannot read {str(path)!r}: {exc}.") from None
    if not isinstance(record, dict):
        raise RunDirError(f"Expected {str(path)!r} to be an rtb run record (a JSON object), "
                          f"but it holds a {type(record).__name__}.")
    missing = [k for k in RECORD_KEYS if not (record.get(k) if k == "run_id" else k in record)]
    if missing:
        raise RunDirError(f"Expected {str(path)!r} to be an rtb run record with "
                          f"{' and '.join(RECORD_KEYS)}, but it has no {', '.join(missing)}.")
    return record


def read_outcomes(run_dir: Path) -> pd.DataFrame:
    """The per-sample outcomes in ``run_dir`` (empty when the run wrote none)."""
    path = run_dir / OUTCOMES_FILE
    try:
        return pd.read_parquet(path) if path.exists() else pd.DataFrame()
    except (OSError, ValueError) as exc:
        raise RunDirError(f"Cannot read {str(path)!r}: {exc}.") from None


def read_run_dir(run_dir: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """``record.json`` and ``outcomes.parquet`` of one run directory."""
    return read_record(run_dir), read_outcomes(run_dir)


def load_run_dir(run_dir: Path) -> LoadedRun:
    """A run directory as a ``LoadedRun``; its outcomes are read on demand."""
    return LoadedRun(record=read_record(run_dir), source=str(run_dir),
                     outcomes=lambda: read_outcomes(run_dir))


def find_run_dirs(roots: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Every directory under ``roots`` (or a root itself) holding a ``record.json``."""
    found: set[Path] = set()
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise RunDirError(f"Expected an existing run directory, but {str(root)!r} does not exist.")
        if (root / RECORD_FILE).is_file():
            found.add(root)
        found.update(p.parent for p in root.rglob(RECORD_FILE))
    return sorted(found)


def looks_like_path(ref: str) -> bool:
    """Whether ``ref`` was meant as a path rather than a run id."""
    return "/" in ref or ref.startswith(".") or ref.endswith(".json") or ref.startswith("~")


def resolve_run_ref(ref: str, store: str | os.PathLike[str] | None = None) -> LoadedRun:
    """A run from a run directory (or its ``record.json``), else a run id (or
    unique prefix) in the results store (``store``, ``$RTB_STORE`` or the default)."""
    path = Path(ref).expanduser()
    if path.is_file() and path.name == RECORD_FILE:
        path = path.parent
    if path.is_dir():
        if not (path / RECORD_FILE).is_file():
            raise RunDirError(
                f"Expected a run directory holding {RECORD_FILE}, but {str(path)!r} has none."
            )
        return load_run_dir(path)
    if path.exists():
        raise RunDirError(f"Expected a run directory (holding {RECORD_FILE}) or a run id, but "
                          f"{ref!r} is a file, not a run directory.")
    if looks_like_path(ref):
        raise RunDirError(f"Expected an existing run directory or run id, but {ref!r} does not exist.")
    from benchmark.store import open_store, resolve_store_path

    store_path = resolve_store_path(store)
    if not store_path.exists():
        raise RunDirError(
            f"Unknown run {ref!r}: it is not a run directory, and there is no results store at "
            f"{str(store_path)!r} to look it up in."
        )
    with open_store(store_path, readonly=True) as s:
        run_id = s.resolve_run(ref)
        return LoadedRun(record=s.record(run_id), source=f"store {store_path}",
                         outcomes=stored_outcomes(store_path, run_id))


def stored_outcomes(store_path: Path, run_id: str) -> Callable[[], pd.DataFrame]:
    """A reader of one stored run's outcomes, opening the store when called."""
    def read() -> pd.DataFrame:
        from benchmark.store import open_store

        with open_store(store_path, readonly=True) as s:
            return s.outcomes(run_id).drop(columns=["run_id"], errors="ignore")

    return read


@dataclass(frozen=True)
class Gallery:
    """A run's gallery, read back: ``arrays`` as in ``gallery.npz``."""

    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(len(self.arrays.get("sample", ())))

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.arrays.get("classes", [])]

    @property
    def modality(self) -> str:
        m = self.arrays.get("modality")
        return str(m) if m is not None else "image"

    def entries(self) -> list[tuple[str, str, str, float]]:
        """Distinct (version, family, threat, param) in stored order."""
        a = self.arrays
        seen: dict[tuple[str, str, str, float], None] = {}
        for i in range(len(self)):
            seen.setdefault((str(a["version"][i]), str(a["family"][i]), str(a["threat"][i]),
                             float(a["param"][i])), None)
        return list(seen)

    def rows(self, version: str | None = None, family: str | None = None,
             threat: str | None = None, param: float | None = None) -> np.ndarray:
        """Indices of the points matching every filter given."""
        a = self.arrays
        keep = np.ones(len(self), dtype=bool)
        if version is not None:
            keep &= a["version"] == version
        if family is not None:
            keep &= a["family"] == family
        if threat is not None:
            keep &= a["threat"] == threat
        if param is not None:
            keep &= np.isclose(a["param"], param, rtol=0, atol=1e-9)
        return np.flatnonzero(keep)

    def clean(self, rows: Iterable[int]) -> np.ndarray:
        r = np.asarray(list(rows), dtype=np.int64)
        return self.arrays["clean"][self.arrays["clean_row"][r]]


def read_gallery(run_dir: Path) -> Gallery:
    """The gallery of a run directory; a missing or unreadable file is one ``RunDirError``."""
    path = Path(run_dir) / GALLERY_FILE
    if not path.is_file():
        raise RunDirError(f"Expected {GALLERY_FILE} in the run directory {str(run_dir)!r} (a run "
                          f"of this version of rtb keeps one), but it has none.")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as exc:
        raise RunDirError(f"Cannot read {str(path)!r} as a gallery: {exc}.") from None
    missing = [k for k in POINT_ARRAYS if k not in arrays]
    if missing:
        raise RunDirError(f"Expected {str(path)!r} to hold the gallery arrays, but it has no "
                          f"{', '.join(missing)}.")
    return Gallery(arrays)
