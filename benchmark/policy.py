"""What a user's config files may do, checked before a run starts.

``benchmark.core.targets`` decides which ``_target_`` may appear where. This
module adds the checks that need the whole command line or the composition:

- every YAML file of a user search path (``hydra.searchpath=[file://DIR]``,
  ``--config-dir/-cd DIR``) is read before composing: a file under a
  ``hydra/`` folder, or a ``_global_``/``hydra*`` package file that sets a
  ``hydra`` key, is refused (callbacks, logging handlers and launchers run
  code at start-up). ``hydra.*`` overrides on the command line are the
  user's own decision and stay allowed;
- the composed ``hydra.callbacks``, ``hydra.launcher`` and ``hydra.sweeper``
  are checked by kind, and ``hydra.job_logging``/``hydra.hydra_logging`` may
  not add ``()`` factories or non-``logging`` classes to what rtb's own conf
  composes;
- ``allow_targets`` is honoured only from the command line: the config is
  composed without the command-line ``allow_targets`` override, and it must
  then still be rtb's default ``[]`` (so no config-group file set it).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from benchmark.core.errors import ConfigError
from benchmark.core.targets import CALLBACK, LAUNCHER, SWEEPER, check_target

#: Command-line flags of ``rtb run`` (Hydra's) that add a config directory.
CONFIG_DIR_FLAGS = ("--config-dir", "-cd")


def override_key(arg: str) -> str:
    """The key of an override ``[+|++|~]key=value`` (``''`` for a flag)."""
    if arg.startswith("-"):
        return ""
    return arg.split("=", 1)[0].lstrip("+~")


def normalize_overrides(args: Sequence[str]) -> list[str]:
    """``+allow_targets=...`` sets the existing default like ``allow_targets=...``."""
    return [a[a.index("allow_targets"):] if override_key(a) == "allow_targets"
            and a.startswith("+") else a for a in args]


# ----------------------------------------------------------------------------- search paths

def _searchpath_entries(overrides: Sequence[str]) -> list[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    lines = [a for a in overrides if override_key(a) == "hydra.searchpath"]
    if not lines:
        return []
    try:
        parsed = OverridesParser.create().parse_overrides(lines)
    except Exception as exc:
        raise ConfigError(f"Could not parse override: {' '.join(str(exc).split())}") from None
    out: list[str] = []
    for ov in parsed:
        value = ov.value()
        out.extend(str(v) for v in (value if isinstance(value, list) else [value]))
    return out


def _entry_dir(entry: str) -> Path:
    if entry.startswith("pkg://"):
        name = entry[len("pkg://"):].strip("/").replace("/", ".")
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(
                f"Expected `hydra.searchpath` entry {entry!r} to name an importable package "
                "directory, but it does not exist."
            )
        return Path(next(iter(spec.submodule_search_locations)))
    path = Path(entry[len("file://"):] if entry.startswith("file://") else entry).expanduser()
    if not path.is_dir():
        raise ConfigError(
            f"Expected `hydra.searchpath` entry {entry!r} to be an existing directory, but "
            f"{str(path)!r} does not exist."
        )
    return path


def searchpath_dirs(overrides: Sequence[str]) -> list[Path]:
    """The directories of the ``hydra.searchpath`` overrides (each must exist)."""
    return [_entry_dir(e) for e in _searchpath_entries(overrides)]


def config_dir_flags(args: Sequence[str]) -> list[Path]:
    """The directories of ``--config-dir/-cd`` flags (each must exist)."""
    out: list[str] = []
    for i, a in enumerate(args):
        for flag in CONFIG_DIR_FLAGS:
            if a == flag and i + 1 < len(args):
                out.append(args[i + 1])
            elif a.startswith(flag + "="):
                out.append(a.split("=", 1)[1])
    dirs = []
    for d in out:
        path = Path(d).expanduser()
        if not path.is_dir():
            raise ConfigError(
                f"Expected `--config-dir` to be an existing directory, but {d!r} does not exist."
            )
        dirs.append(path)
    return dirs


def _package(text: str) -> str | None:
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        if not s.startswith("#"):
            return None
        body = s.lstrip("#").strip()
        if body.startswith("@package"):
            return body[len("@package"):].strip()
    return None


def check_user_config_files(dirs: Sequence[Path]) -> None:
    """Refuse a user config file that would set ``hydra.*`` (see the module doc)."""
    for root in dirs:
        for f in sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml")):
            rel = f.relative_to(root)
            if rel.parts and rel.parts[0] == "hydra":
                raise ConfigError(
                    f"Refusing config file {str(f)!r}: a file under a hydra/ folder of a user "
                    "search path can run code at start-up (callbacks, logging, launchers); "
                    "set hydra.* on the command line instead."
                )
            try:
                text = f.read_text()
                data = yaml.safe_load(text)
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                continue  # composing reports an unreadable file if the run uses it
            package = (_package(text) or "").strip()
            sets_hydra = isinstance(data, Mapping) and "hydra" in data
            if (package.startswith("_global_") and sets_hydra) or (
                    package.startswith("hydra") and data):
                raise ConfigError(
                    f"Refusing config file {str(f)!r}: it sets `hydra` (package "
                    f"{package}), which can run code at start-up; set hydra.* on the command "
                    "line instead."
                )


# ----------------------------------------------------------------------------- hydra section

def check_hydra_section(hydra: Mapping[str, Any]) -> None:
    """Callback, launcher and sweeper targets by kind; logging adds no factories."""
    callbacks = hydra.get("callbacks") or {}
    if isinstance(callbacks, Mapping):
        for name, cb in callbacks.items():
            if isinstance(cb, Mapping):
                check_target(f"hydra.callbacks.{name}._target_", cb.get("_target_"), CALLBACK)
    for key, kind in (("launcher", LAUNCHER), ("sweeper", SWEEPER)):
        node = hydra.get(key)
        if isinstance(node, Mapping) and "_target_" in node:
            check_target(f"hydra.{key}._target_", node["_target_"], kind)
    own = _own_logging()
    for section in ("job_logging", "hydra_logging"):
        for where, key, value in _factories(hydra.get(section), f"hydra.{section}"):
            if (where, key, value) in own:
                continue
            if key == "()" or not (isinstance(value, str) and value.startswith("logging.")):
                raise ConfigError(
                    f"Refusing `{where}.{key}` = {value!r}: hydra logging may use only "
                    "logging.* classes, and no () factories beyond rtb's own conf."
                )


def _factories(node: Any, path: str) -> Iterator[tuple[str, str, Any]]:
    if isinstance(node, Mapping):
        for k, v in node.items():
            if k in ("()", "class"):
                yield path, str(k), v
            yield from _factories(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _factories(v, f"{path}[{i}]")


@functools.cache
def _own_logging() -> frozenset[tuple[str, str, Any]]:
    """The logging factories of rtb's own conf, with Hydra's logging choices."""
    from benchmark.compose import compose, hydra_section

    out: set[tuple[str, str, Any]] = set()
    hydra = hydra_section(compose([], with_hydra=True))
    for section in ("job_logging", "hydra_logging"):
        out.update((w, k, v) for w, k, v in _factories(hydra.get(section), f"hydra.{section}")
                   if isinstance(v, str))
    return frozenset(out)


# ----------------------------------------------------------------------------- allow_targets

ALLOW_FROM_FILE = (
    "Refusing `allow_targets` = {value!r} from a config file: it is honoured only on the "
    "command line (rtb run 'allow_targets=[mypkg.nets]')."
)


def check_allow_targets_source(composed: Any, overrides: Sequence[str]) -> None:
    """``allow_targets`` may differ from the default ``[]`` only by a command-line override."""
    from benchmark.compose import compose

    value = composed.get("allow_targets") or [] if isinstance(composed, Mapping) else []
    on_command_line = any(override_key(a) == "allow_targets" for a in overrides)
    if not value and not on_command_line:
        return
    if not on_command_line:
        raise ConfigError(ALLOW_FROM_FILE.format(value=list(value)))
    without = compose([a for a in overrides if override_key(a) != "allow_targets"])
    from_files = without.get("allow_targets")
    if from_files:
        raise ConfigError(ALLOW_FROM_FILE.format(value=list(from_files)))


__all__ = [
    "check_allow_targets_source",
    "check_hydra_section",
    "check_user_config_files",
    "config_dir_flags",
    "normalize_overrides",
    "override_key",
    "searchpath_dirs",
]
