"""Output paths checked before any work: a report, a JUnit file or a run
directory that cannot be written is refused in one line up front, not after
minutes of compute (or after reading the store)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from benchmark.core.errors import UserError


class OutputPathError(UserError):
    """An output file or directory cannot be created where the user asked."""


def _creatable(where: str, path: Path, kind: str) -> None:
    """Every existing ancestor of ``path`` is a directory and the nearest one is writable."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputPathError(
                    f"Expected {where} {str(path)!r} to be a writable {kind}, but "
                    f"{str(parent)!r} is a file, not a directory.")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise OutputPathError(
                    f"Expected {where} {str(path)!r} to be a writable {kind}, but the directory "
                    f"{str(parent)!r} is not writable.")
            return


def check_output_file(where: str, path: str | os.PathLike[str]) -> Path:
    """``path`` as a file that can be written (its directories may be created)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise OutputPathError(f"Expected {where} {str(p)!r} to be a file, but it is a directory.")
    if p.exists() and not os.access(p, os.W_OK):
        raise OutputPathError(f"Expected {where} {str(p)!r} to be a writable file, but it is "
                              "read-only.")
    _creatable(where, p, "file")
    return p


def check_output_dir(where: str, path: str | os.PathLike[str]) -> Path:
    """``path`` as a directory that exists writable or can be created."""
    p = Path(path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise OutputPathError(f"Expected {where} {str(p)!r} to be a directory, but it is a file.")
        if not os.access(p, os.W_OK | os.X_OK):
            raise OutputPathError(f"Expected {where} {str(p)!r} to be a writable directory, but "
                                  "it is not writable.")
        return p
    _creatable(where, p, "directory")
    return p


def write_text(where: str, path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` (creating its directories); an OS error is one line."""
    p = check_output_file(where, path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    except OSError as exc:
        raise OutputPathError(f"Could not write {where} {str(p)!r} "
                              f"({exc.strerror or exc}).") from None
    return p


def _static_prefix(value: str) -> str:
    """The part of a directory template before its first interpolation."""
    return value.split("${", 1)[0]


def _default_dir(key: str) -> str | None:
    """``hydra.run.dir`` / ``hydra.sweep.dir`` as conf/config.yaml sets it."""
    import yaml

    from benchmark.compose import conf_dir

    try:
        node = yaml.safe_load((conf_dir() / "config.yaml").read_text())
        for part in key.split("."):
            node = node[part]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    return node if isinstance(node, str) else None


def check_run_outputs(args: Sequence[str]) -> None:
    """Refuse a run whose Hydra run directory (``hydra.run.dir``, or
    ``hydra.sweep.dir`` with ``-m``) cannot be created, before any compute.
    Only the part of the template before its first ``${...}`` is checked:
    the rest is named at run time."""
    multirun = any(a in ("-m", "--multirun") for a in args)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    value = next((a.split("=", 1)[1] for a in reversed(args)
                  if a.lstrip("+").startswith(f"{key}=")), None)
    if value is None:
        value = _default_dir(key)
    if not value:
        return
    value = value.strip("'\"")
    prefix = _static_prefix(value)
    if not prefix:
        target = Path(".")
    elif "${" in value and not prefix.endswith("/"):
        target = Path(prefix).parent
    else:
        target = Path(prefix)
    check_output_dir(f"`{key}`", target)
