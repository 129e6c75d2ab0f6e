"""What ``rtb run`` prints besides its tables, kept to what a person reads.

Library warnings become one line each, shown once (torch's TorchScript
deprecation, which a user of a TorchScript checkpoint cannot act on, is
dropped); the per-group "too small" warnings of the group metrics collapse
into one line; and the console shows warnings only, unless ``-v`` asks for
the informational log (the job's log file keeps it either way)."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

log = logging.getLogger(__name__)

#: Set by ``rtb run -v`` / ``--all``; the job (and launcher subprocesses) read it.
VERBOSE_ENV = "RTB_VERBOSE"
#: Library warnings nobody running a benchmark can act on.
IGNORED_WARNINGS = (
    (FutureWarning, r"`torch\.jit\.\w+` is (deprecated|not supported)"),
    (DeprecationWarning, r"`torch\.jit\.\w+` is deprecated"),
)
#: How many small groups the collapsed warning names.
LISTED_GROUPS = 6
#: The logger whose per-group size warnings collapse into one line.
GROUPS_LOGGER = "metrics.groups"


def verbose() -> bool:
    """Whether this job was asked for the detailed console output."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


#: Loggers whose INFO lines the concise console keeps (a sweep's "job k/N done, ETA").
KEEP_INFO = ("benchmark.sweep",)


class ConciseConsole(logging.Filter):
    """Passes warnings and worse, the INFO lines of ``KEEP_INFO``, and INFO
    records logged with ``extra={"console": True}`` (e.g. a resumed run's
    "Reusing N finished piece(s)")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return (record.levelno >= logging.WARNING or record.name.startswith(KEEP_INFO)
                or bool(getattr(record, "console", False)))


def console_log_level(detailed: bool) -> None:
    """Console log handlers show the INFO log when ``detailed``, else only
    warnings (and a sweep's progress); file handlers (the job's log) are left
    as they are."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler):
            for f in [f for f in handler.filters if isinstance(f, ConciseConsole)]:
                handler.removeFilter(f)
            if not detailed:
                handler.addFilter(ConciseConsole())


class TooSmallGroups(logging.Filter):
    """Swallows "Group F=G has N samples (< M): reported as too small" records
    and keeps their groups, for one summary line."""

    def __init__(self) -> None:
        super().__init__()
        self.groups: dict[tuple[str, str], int] = {}
        self.min_size: Any = None

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if "reported as too small" in str(record.msg) and isinstance(args, tuple) \
                and len(args) == 4:
            feature, group, n, min_size = args
            self.groups[(str(feature), str(group))] = int(str(n))
            self.min_size = min_size
            return False
        return True

    def summary(self) -> str | None:
        if not self.groups:
            return None
        listed = ", ".join(f"{f}={g} (n={n})" for (f, g), n in
                           list(self.groups.items())[:LISTED_GROUPS])
        more = len(self.groups) - LISTED_GROUPS
        return (f"{len(self.groups)} group(s) have fewer than {self.min_size} samples and are "
                f"reported as too small: {listed}{f' and {more} more' if more > 0 else ''}.")


def _first_line(message: Warning | str) -> str:
    lines = str(message).strip().splitlines()
    return lines[0] if lines else ""


@contextmanager
def quiet_run() -> Iterator[None]:
    """Within: library warnings as one log line each (once per distinct
    message), the ignorable ones dropped, small-group warnings collected;
    on exit, the one line about small groups."""
    too_small = TooSmallGroups()
    groups_log = logging.getLogger(GROUPS_LOGGER)
    groups_log.addFilter(too_small)
    seen: set[tuple[type[Warning], str]] = set()

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:
        text = _first_line(message) or category.__name__
        if (category, text) in seen:
            return
        seen.add((category, text))
        log.warning("%s: %s", category.__name__, text)

    try:
        with warnings.catch_warnings():
            for category, pattern in IGNORED_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern, category=category)
            warnings.showwarning = show
            yield
    finally:
        groups_log.removeFilter(too_small)
        if (line := too_small.summary()) is not None:
            log.warning("%s", line)
