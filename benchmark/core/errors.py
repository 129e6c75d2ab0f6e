"""Typed exceptions with one message style: what was wrong, what was expected,
what arrived. The CLI turns a ``UserError`` into one line and exit status 2."""

from __future__ import annotations

from typing import Any


class UserError(Exception):
    """A mistake in the user's own config, files, data or checkpoints.

    Shown as one line without a traceback; the CLI exits with status 2.
    """

    exit_code = 2


class ConfigError(UserError):
    """The composed configuration is invalid."""


class DataError(UserError):
    """A dataset is missing, unreadable or malformed."""


class CheckpointError(UserError):
    """A checkpoint is missing, untrusted, corrupt or does not fit its architecture."""


class StoreError(UserError):
    """The results store cannot answer the request (unknown run, version, ...)."""


class RunDirError(StoreError):
    """A run directory or run reference cannot be read or resolved (the run
    directories are the store's source of truth, hence a ``StoreError``)."""


def expected(what: str, wanted: str, got: Any) -> str:
    """Format the house message: ``"Expected `what` to be wanted, but got got."``"""
    return f"Expected `{what}` to be {wanted}, but got {got!r}."
