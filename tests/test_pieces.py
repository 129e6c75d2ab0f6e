"""Per-piece checkpoints: a run killed after some pieces, started again in its
own directory (same command, or ``rtb run --resume DIR``), runs only the
rest, and ends with the outcomes of an uninterrupted run, bit for bit."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_overrides

from benchmark.commands.run import resume_args
from benchmark.compose import compose_spec
from benchmark.core.errors import UserError
from benchmark.core.types import Outcome
from benchmark.pieces import load_pieces, piece_path, save_piece
from benchmark.rundir import OUTCOMES_FILE, PIECES_DIR
from benchmark.runner import CLEAN, run_benchmark, run_key

#: fgsm finishes at once; pgd_linf (many steps) is where the kill lands.
THREATS = ["attack=[fgsm,pgd_linf]", "attack.fgsm.eps=[0.1]", "attack.pgd_linf.eps=[0.1,0.2]",
           "attack.pgd_linf.max_iter=200",
           "reliability.enabled=false", "store=null"]


def overrides(ckpt: Path, npz: Path) -> list[str]:
    base = [o for o in tiny_overrides(ckpt, npz) if not o.startswith("attack")]
    return [*base, *THREATS]


def rtb(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.Popen([sys.executable, "-m", "benchmark.cli", "run", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return out + err


def kill_after_piece(proc: subprocess.Popen[str], run_dir: Path, pattern: str,
                     timeout: float = 300) -> None:
    """SIGKILL the run as soon as a piece matching ``pattern`` is on disk."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if any((run_dir / PIECES_DIR).glob(pattern)):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.02)
    raise AssertionError(f"run ended or stalled before the piece: {proc.communicate()}")


def interrupted(ckpt: Path, npz: Path, run_dir: Path, cwd: Path) -> None:
    """A run of ``overrides`` in ``run_dir`` killed while pgd_linf runs."""
    kill_after_piece(rtb(*overrides(ckpt, npz), f"hydra.run.dir={run_dir}", cwd=cwd), run_dir,
                     "*attack--fgsm.npz")
    names = sorted(p.name for p in (run_dir / PIECES_DIR).glob("*.npz"))
    assert len(names) == 2 and not (run_dir / OUTCOMES_FILE).exists(), names  # clean, fgsm


@pytest.mark.slow
@pytest.mark.parametrize("how", ["same command", "--resume"])
def test_killed_run_resumes_with_only_the_missing_pieces(tiny_files, tmp_path, how) -> None:
    ckpt, npz = tiny_files
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    reference = rtb(*overrides(ckpt, npz), f"hydra.run.dir={whole}", cwd=tmp_path)
    interrupted(ckpt, npz, cut, tmp_path)
    finish(reference)

    args = ([*overrides(ckpt, npz), f"hydra.run.dir={cut}"] if how == "same command"
            else ["--resume", str(cut)])
    log = finish(rtb(*args, cwd=tmp_path))
    assert "Reusing 2 finished piece(s)" in log
    assert not (cut / PIECES_DIR).exists()  # the outcomes file holds everything now
    pd.testing.assert_frame_equal(pd.read_parquet(cut / OUTCOMES_FILE),
                                  pd.read_parquet(whole / OUTCOMES_FILE))


def _fake_clean(result_outcomes: list[Outcome]) -> Outcome:
    clean = next(o for o in result_outcomes if o.threat.family == "clean")
    return Outcome(model=clean.model, version=clean.version, threat=CLEAN,
                   pred=np.full_like(clean.pred, 2), correct=np.zeros_like(clean.correct),
                   columns={"finite": np.ones(len(clean.pred))})


def test_a_piece_is_reused_only_under_the_runs_key(tiny_files, tmp_path, caplog) -> None:
    ckpt, npz = tiny_files
    spec, resolved = compose_spec([*tiny_overrides(ckpt, npz), "store=null"])
    first = run_benchmark(spec, tmp_path / "a", resolved_config=resolved, progress=False)
    assert not (tmp_path / "a" / PIECES_DIR).exists()
    key = first.record.run_key
    fake = _fake_clean(first.outcomes)
    piece = f"{first.models[0].key}--clean"

    # another key (another config, data set or checkpoint): discarded, recomputed
    save_piece(tmp_path / "b", piece, "another-key", [fake])
    with caplog.at_level(logging.WARNING, logger="benchmark.pieces"):
        second = run_benchmark(spec, tmp_path / "b", resolved_config=resolved, progress=False)
    assert "Discarded 1 piece(s)" in caplog.text
    assert second.outcomes[0].pred.tolist() == first.outcomes[0].pred.tolist()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a" / OUTCOMES_FILE),
                                  pd.read_parquet(tmp_path / "b" / OUTCOMES_FILE))

    # the run's own key: read back instead of run, and later pieces start from it
    save_piece(tmp_path / "c", piece, key, [fake])
    third = run_benchmark(spec, tmp_path / "c", resolved_config=resolved, progress=False)
    assert third.outcomes[0].pred.tolist() == fake.pred.tolist()
    attacked = [o for o in third.outcomes if o.threat.family == "attack"]
    assert attacked and all(o.pred.tolist() == fake.pred.tolist() for o in attacked)
    assert run_key(resolved, third.models, third.evalset) == key


def test_pieces_read_back_exactly(tiny_files, tmp_path) -> None:
    ckpt, npz = tiny_files
    spec, resolved = compose_spec([*tiny_overrides(ckpt, npz), "store=null",
                                   "corruption=noise", "fault=all"])
    result = run_benchmark(spec, tmp_path / "run", resolved_config=resolved, progress=False)
    save_piece(tmp_path, "all", "k", result.outcomes)
    (tmp_path / PIECES_DIR / "junk.npz.tmp").write_text("half a file")
    [(name, back)] = load_pieces(tmp_path, "k").items()
    assert name == "all" and len(back) == len(result.outcomes)
    for a, b in zip(result.outcomes, back, strict=True):
        assert (a.model, a.version, a.threat) == (b.model, b.version, b.threat)
        assert a.pred.dtype == b.pred.dtype and np.array_equal(a.pred, b.pred)
        assert np.array_equal(a.correct, b.correct)
        assert list(a.columns) == list(b.columns)
        for k in a.columns:
            np.testing.assert_array_equal(a.columns[k], b.columns[k])
    assert load_pieces(tmp_path, "other") == {}
    assert not piece_path(tmp_path, "all").exists()  # another key's piece is deleted


def test_resume_args_read_the_runs_saved_overrides(tmp_path) -> None:
    hydra = tmp_path / "run" / ".hydra"
    hydra.mkdir(parents=True)
    (hydra / "hydra.yaml").write_text(
        "hydra:\n  overrides:\n    hydra:\n    - hydra.searchpath=[file:///x]\n"
        "    - hydra.run.dir=/elsewhere\n    task:\n    - data.n_samples=8\n")
    run_dir = (tmp_path / "run").resolve()
    assert resume_args(["--resume", str(tmp_path / "run"), "seed=3"]) == [
        "hydra.searchpath=[file:///x]", "data.n_samples=8", f"hydra.run.dir={run_dir}",
        "seed=3"]
    assert resume_args(["seed=3"]) == ["seed=3"]
    with pytest.raises(UserError, match="cannot read the overrides"):
        resume_args(["--resume", str(tmp_path / "nowhere")])
    with pytest.raises(UserError, match="Expected a run directory after --resume"):
        resume_args(["--resume"])
