"""The CLI starts fast: help, version, ``rtb list`` and the store-only
commands import neither torch nor ART (``rtb run`` needs them; it is not here).

Each command runs in a fresh interpreter, since this test process has long
imported torch itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from benchmark import __version__
from benchmark.cli import main
from benchmark.store import Store

HEAVY = ("torch", "art", "matplotlib")

PROBE = """\
import contextlib, io, json, sys
from benchmark.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        code = main(json.loads(sys.argv[1]))
    except SystemExit as exc:
        code = exc.code
print(json.dumps({"code": code, "heavy": [m for m in json.loads(sys.argv[2]) if m in sys.modules]}))
"""


def _probe(args: list[str], cwd: Path) -> dict[str, object]:
    res = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args), json.dumps(HEAVY)],
                         cwd=cwd, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "RTB_STORE": str(cwd / "rtb.sqlite")})
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("args", [
    ["--help"],
    ["--version"],
    ["list"],
    ["compare", "--help"],
    ["gate", "--help"],
    ["store", "--help"],
    ["store", "list"],
    ["report", "--help"],
    ["validate", "--help"],
    ["reproduce", "--help"],
    ["mlflow-log", "--help"],
], ids=" ".join)
def test_command_starts_without_torch(tmp_path: Path, args: list[str]) -> None:
    Store(tmp_path / "rtb.sqlite").close()  # an empty store for `rtb store list`
    result = _probe(args, tmp_path)
    assert result == {"code": 0, "heavy": []}


def test_version_is_the_installed_distribution(run_cli) -> None:
    try:
        want = metadata.version("robustness-testbench")
    except metadata.PackageNotFoundError:
        want = __version__
    res = run_cli("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"rtb {want}"


def test_version_falls_back_to_the_package(monkeypatch, capsys) -> None:
    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"rtb {__version__}"


@pytest.mark.parametrize("args", [["store", "list"], ["gate"], ["compare", "tiny@v1", "tiny@v1"]],
                         ids=" ".join)
def test_store_commands_on_a_real_run_start_without_torch(world, tmp_path: Path,
                                                          args: list[str]) -> None:
    """``rtb store list``, ``rtb gate`` and ``rtb compare`` read a store that holds a
    run without importing torch (exit 0 or 1 for the gate's verdict, never 2)."""
    import shutil

    shutil.copy(world.store, tmp_path / "rtb.sqlite")
    if args == ["gate"]:
        rules = tmp_path / "rules.yaml"
        rules.write_text("candidates: [tiny@v1]\nrules:\n"
                         "  - floor: {threat: clean, metric: accuracy, min: 0.1}\n")
        args = ["gate", "--rules", str(rules)]
    result = _probe(args, tmp_path)
    assert result["heavy"] == [] and result["code"] in (0, 1), result
