"""The house has floors, and imports point down only.

    benchmark (runner, commands, store, ...)   top: orchestrates
    metrics                                    pure functions of outcomes, data, logits
    attacks                                    threats
    benchmark.core                             types, errors, registry, specs, fields

``metrics`` may read what ``attacks`` define, but never runs an attack:
it imports neither the ART adapter nor the attack loops. Every import
counts, including imports inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ("benchmark", "attacks", "metrics", "conf")

#: What each floor may import of ours, by module-name prefix.
ALLOWED: dict[str, tuple[str, ...]] = {
    "benchmark.core": ("benchmark.core",),
    "attacks": ("benchmark.core", "attacks"),
    "metrics": ("benchmark.core", "attacks", "metrics"),
}
#: Modules of a lower floor that ``metrics`` must not import all the same:
#: they run attacks.
METRICS_NEVER = ("attacks.art_adapter", "attacks.budgets", "attacks.ensemble",
                 "attacks.diagnostics")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import statement in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            # ``from benchmark import runner`` imports benchmark.runner
            out.extend((node.lineno, f"{mod}.{a.name}") for a in node.names if a.name != "*")
    return out


def _floor(module: str) -> str | None:
    for floor in ALLOWED:
        if module == floor or module.startswith(floor + "."):
            return floor
    return None


def _is_module(name: str) -> bool:
    """Whether ``name`` is one of our modules or packages (not an attribute)."""
    rel = Path(*name.split("."))
    return (REPO / rel.with_suffix(".py")).is_file() or (REPO / rel / "__init__.py").is_file()


def _files() -> list[Path]:
    files = [p for d in ("benchmark/core", "attacks", "metrics") for p in (REPO / d).rglob("*.py")]
    assert files, "no source files found"
    return sorted(files)


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(REPO)))
def test_imports_point_down(path: Path) -> None:
    module = _module_name(path)
    floor = _floor(module)
    assert floor is not None
    bad = []
    for line, imported in _imports(path):
        if not imported.startswith(OURS) or not _is_module(imported):
            continue
        if not imported.startswith(ALLOWED[floor]) or (
            floor == "metrics" and imported.startswith(METRICS_NEVER)
        ):
            bad.append(f"{path.relative_to(REPO)}:{line} imports {imported}")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_lower_floors_load_nothing_above_them() -> None:
    """Importing every module of core, attacks and metrics loads no other
    part of ``benchmark`` (``import metrics.groups`` must not pull in the runner)."""
    modules = [_module_name(p) for p in _files()]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "up = sorted(m for m in sys.modules if m.startswith('benchmark.')"
        " and not m.startswith('benchmark.core'))\n"
        "print(','.join(up))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "", f"loaded from above: {proc.stdout.strip()}"


def test_the_walker_sees_an_upward_import(tmp_path: Path) -> None:
    """The check itself can fail: a planted upward import is reported."""
    planted = REPO / "metrics" / "_planted_for_layering_test.py"
    planted.write_text("def f():\n    from benchmark.runner import run_benchmark\n")
    try:
        found = [m for _, m in _imports(planted) if m.startswith(OURS) and _is_module(m)]
        assert "benchmark.runner" in found
        assert not found[0].startswith(ALLOWED["metrics"])
    finally:
        planted.unlink()
