"""The bad-input corpus: shared harness.

A case runs the real CLI in a subprocess against a copy of a store that
already holds a run, and checks the house rules for a user's mistake:
the expected exit status (2, or 3 for a failed validation), exactly one
line on stderr, which starts ``rtb: error:`` and contains the expected
words, no traceback, and the store's earlier runs untouched.

Security cases also plant a payload whose execution would create a marker
file, and assert that the marker never appears.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from conftest import tiny_overrides, write_checkpoint, write_npz


@dataclass(frozen=True)
class World:
    """Files every case may point at: a tiny dataset and checkpoint, the
    overrides of a working run, and a store that already holds that run."""

    root: Path
    ckpt: Path
    npz: Path
    overrides: tuple[str, ...]
    store: Path
    run_dir: Path


@dataclass(frozen=True)
class Case:
    """One bad input. ``args`` may name ``{store}``, ``{tmp}``, ``{marker}``,
    ``{ckpt}``, ``{npz}``, ``{run_dir}``; ``run_overrides`` prefixes the
    working run's overrides (for ``rtb run`` cases)."""

    name: str
    klass: str
    args: tuple[str, ...]
    needle: str
    code: int = 2
    run_overrides: bool = False
    setup: Callable[[Path, World], None] | None = None
    payload: bool = False
    env: dict[str, str] = field(default_factory=dict)


def build_world(root: Path) -> World:
    """Train the tiny model, write its npz data, and run it once into a store."""
    root.mkdir(parents=True, exist_ok=True)
    ckpt = write_checkpoint(root / "tiny.pt")
    npz = write_npz(root / "tiny.npz")
    overrides = tuple(tiny_overrides(ckpt, npz))
    store = root / "seed.sqlite"
    run_dir = root / "seed-run"
    proc = cli(["run", *overrides, f"store={store}", f"hydra.run.dir={run_dir}"], cwd=root)
    if proc.returncode != 0:
        raise RuntimeError(f"seeding the store failed: {proc.stderr[-2000:]}")
    return World(root=root, ckpt=ckpt, npz=npz, overrides=overrides, store=store,
                 run_dir=run_dir)


def cli(args: list[str], cwd: Path, env: dict[str, str] | None = None,
        timeout: int = 300) -> subprocess.CompletedProcess:
    import os

    full_env = {**os.environ, "PYTHONHASHSEED": "0", **(env or {})}
    full_env.pop("RTB_TRUST_CHECKPOINTS", None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "benchmark.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=full_env)


def store_digest(path: Path) -> str:
    """A digest of every row of every table of an SQLite store (not its bytes:
    opening a store may touch its header)."""
    if not path.is_file():
        return "absent"
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        h = hashlib.sha256()
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        for t in tables:
            h.update(t.encode())
            for row in con.execute(f"SELECT * FROM {t} ORDER BY rowid"):
                h.update(repr(row).encode())
        return h.hexdigest()
    finally:
        con.close()


def write_payload_pickle(path: Path, marker: Path) -> Path:
    """A torch file whose full unpickling creates ``marker``."""

    class Payload:
        def __reduce__(self) -> tuple:
            return (open, (str(marker), "w"))

    torch.save({"weight": Payload()}, path)
    return path


def run_case(case: Case, world: World, tmp: Path) -> subprocess.CompletedProcess:
    """Run one case and check every house rule; returns the process for more checks."""
    store = tmp / "store.sqlite"
    shutil.copy(world.store, store)
    marker = tmp / "MARKER_payload_ran"
    if case.setup is not None:
        case.setup(tmp, world)
    fmt = {"store": str(store), "tmp": str(tmp), "marker": str(marker), "ckpt": str(world.ckpt),
           "npz": str(world.npz), "run_dir": str(world.run_dir)}
    args = [a.format(**fmt) for a in case.args]
    if case.run_overrides:
        args = ["run", *world.overrides, f"store={store}", *args]
    before = store_digest(store)
    proc = cli(args, cwd=tmp, env={k: v.format(**fmt) for k, v in case.env.items()})
    context = f"{case.name}: exit {proc.returncode}\nstdout: {proc.stdout[-800:]}\nstderr: {proc.stderr[-2000:]}"
    assert proc.returncode == case.code, context
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, context
    assert lines[0].startswith("rtb: error:") and case.needle in lines[0], context
    assert "Traceback" not in proc.stderr + proc.stdout, context
    assert store_digest(store) == before, f"{case.name}: the store changed"
    assert not marker.exists(), f"{case.name}: the payload ran"
    assert not list(tmp.rglob(marker.name)), f"{case.name}: the payload ran"
    return proc
