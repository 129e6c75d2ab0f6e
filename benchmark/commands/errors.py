"""How every ``rtb`` command reports a mistake: one line on stderr."""

from __future__ import annotations

import sys


def error(message: str, code: int = 2) -> int:
    """Print ``rtb: error: message`` to stderr and return the exit status ``code``."""
    print(f"rtb: error: {message}", file=sys.stderr)
    return code
