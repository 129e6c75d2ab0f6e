"""User file locations, including files shipped inside an installed package."""

from __future__ import annotations

from pathlib import Path

from benchmark.core.errors import ConfigError


def resolve_path(path: str) -> Path:
    """A user path, or ``pkg://package/relative`` for a file shipped inside a package."""
    if path.startswith("pkg://"):
        package, _, rel = path[len("pkg://") :].partition("/")
        from importlib.resources import files

        try:
            return Path(str(files(package).joinpath(rel)))
        except ModuleNotFoundError:
            raise ConfigError(f"Expected an installed package in {path!r}, but {package!r} is not one.") from None
    return Path(path).expanduser()
