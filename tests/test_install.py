"""A plain (non-editable) ``pip install .`` works from any directory: the
configs and reference checkpoints travel inside the installed packages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO


@pytest.mark.slow
def test_plain_install_runs_from_another_directory(tmp_path: Path) -> None:
    # build from a copy: setuptools writes build/ into the source tree, and a
    # stale build/ there would leak removed files into later installs
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".ci-venv", "build", "*.egg-info", "outputs", "multirun",
        "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", "*.sqlite*"))
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run(
        [sys.executable, "-c", "import benchmark, conf; print(benchmark.__file__, conf.__file__)"],
        cwd=work, env=env, capture_output=True, text=True,
    )
    assert str(target) in where.stdout and str(REPO) not in where.stdout
    res = subprocess.run(
        [sys.executable, "-m", "benchmark", "data.n_samples=50", "attack=[fgsm]",
         "attack.fgsm.eps=[0.1]"],
        cwd=work, env=env, capture_output=True, text=True, timeout=600,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "mnist_cnn@v1" in res.stdout and "mnist_cnn@v2" in res.stdout
    assert list((work / "outputs").rglob("record.json"))
