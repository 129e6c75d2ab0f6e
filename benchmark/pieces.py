"""Per-piece checkpoints of a run: the outcomes of each finished piece of work.

A piece is one unit the runner finishes at a time: a version's clean pass,
one attack's budget sweep, the corruption suite or the fault suite. Each is
written atomically into ``RUN_DIR/pieces/`` as it finishes, tagged with the
run's content key (``runner.run_key``) and the piece id, so a run started
again in the same directory reuses what is done and runs only the rest. A
piece with another key (another config, data set or checkpoint) is never
read. Files are ``.npz`` loaded with ``allow_pickle=False``: arrays plus one
JSON header, so a run directory cannot carry code.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.core.types import Outcome, Threat
from benchmark.rundir import PIECES_DIR

log = logging.getLogger(__name__)

PIECE_SCHEMA = 1
PIECE_SUFFIX = ".npz"
_HEADER = "header"


def piece_path(run_dir: Path, piece: str) -> Path:
    """Where piece ``piece`` of the run in ``run_dir`` lives."""
    return run_dir / PIECES_DIR / (re.sub(r"[^A-Za-z0-9._-]", "_", piece) + PIECE_SUFFIX)


def _plain(value: Any) -> bool:
    """Whether ``value`` survives a JSON round trip unchanged (types included)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return True
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def _arrays(outcomes: list[Outcome], header: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """``outcomes`` as named arrays plus one JSON header; None when a threat's
    params would not read back identically."""
    entries: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    for i, o in enumerate(outcomes):
        t = o.threat
        if not _plain(t.params):
            log.debug("outcomes not saved: params of %s do not round-trip", t.label)
            return None
        entries.append({"model": o.model, "version": o.version, "family": t.family,
                        "name": t.name, "param": t.param, "params": t.params,
                        "columns": list(o.columns)})
        arrays[f"{i}.pred"] = np.asarray(o.pred)
        arrays[f"{i}.correct"] = np.asarray(o.correct)
        for j, v in enumerate(o.columns.values()):
            arrays[f"{i}.c{j}"] = np.asarray(v)
    arrays[_HEADER] = np.array(json.dumps({**header, "outcomes": entries}))
    return arrays


def save_piece(run_dir: Path, piece: str, key: str, outcomes: list[Outcome]) -> Path | None:
    """Write ``outcomes`` as piece ``piece`` (tmp file, then ``os.replace``).

    Returns None, writing nothing, when a threat's params would not read back
    identically (the piece is then simply recomputed on resume)."""
    arrays = _arrays(outcomes, {"schema": PIECE_SCHEMA, "key": key, "piece": piece})
    if arrays is None:
        return None
    path = piece_path(run_dir, piece)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def outcomes_to_bytes(outcomes: list[Outcome], header: dict[str, Any],
                      extra: dict[str, np.ndarray] | None = None) -> bytes | None:
    """``outcomes`` (a JSON ``header``, and ``extra`` arrays named ``x.NAME``)
    as the bytes of one ``.npz``; None when a threat's params would not read
    back identically."""
    arrays = _arrays(outcomes, {"schema": PIECE_SCHEMA, **header})
    if arrays is None:
        return None
    arrays.update({f"x.{k}": np.asarray(v) for k, v in (extra or {}).items()})
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def outcomes_from_bytes(blob: bytes) -> tuple[dict[str, Any], list[Outcome],
                                              dict[str, np.ndarray]]:
    """The header, outcomes and extra arrays of ``outcomes_to_bytes`` (arrays
    only, no pickle)."""
    header, outcomes = _read(io.BytesIO(blob))
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        extra = {k[2:]: z[k] for k in z.files if k.startswith("x.")}
    return header, outcomes, extra


def _read(path: Path | io.BytesIO) -> tuple[dict[str, Any], list[Outcome]]:
    with np.load(path, allow_pickle=False) as z:
        header = json.loads(str(z[_HEADER]))
        outcomes = []
        for i, e in enumerate(header["outcomes"]):
            threat = Threat(family=e["family"], name=e["name"], param=e["param"],
                            params=e["params"])
            columns = {c: z[f"{i}.c{j}"] for j, c in enumerate(e["columns"])}
            outcomes.append(Outcome(model=e["model"], version=e["version"], threat=threat,
                                    pred=z[f"{i}.pred"], correct=z[f"{i}.correct"],
                                    columns=columns))
    return header, outcomes


def load_pieces(run_dir: Path, key: str) -> dict[str, list[Outcome]]:
    """The finished pieces in ``run_dir`` whose key is ``key``, by piece id.

    Pieces of another key, unreadable ones and stale tmp files are deleted
    (one log line says how many)."""
    folder = run_dir / PIECES_DIR
    if not folder.is_dir():
        return {}
    found: dict[str, list[Outcome]] = {}
    dropped = 0
    for path in sorted(folder.iterdir()):
        try:
            if path.suffix != PIECE_SUFFIX:
                raise ValueError("not a piece")
            header, outcomes = _read(path)
            if header.get("schema") != PIECE_SCHEMA or header.get("key") != key:
                raise ValueError("another run key")
            if path != piece_path(run_dir, str(header.get("piece"))):
                raise ValueError("misnamed")
        except (OSError, ValueError, KeyError, TypeError):
            dropped += 1
            path.unlink(missing_ok=True)
            continue
        found[header["piece"]] = outcomes
    if dropped:
        log.warning("Discarded %d piece(s) in %s from another config, data set or checkpoint "
                    "(or unreadable)", dropped, folder)
    return found


def clear_pieces(run_dir: Path) -> None:
    """Remove the pieces once the run's record and outcomes are written."""
    shutil.rmtree(run_dir / PIECES_DIR, ignore_errors=True)
