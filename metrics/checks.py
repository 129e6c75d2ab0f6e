"""The validation checks with the built-in ones registered: import from here.

``metrics.checks_registry`` holds the registry and stays a leaf; importing
this module imports the check modules, which register their checks on import.
``list_checks`` orders data checks before model checks whatever the import
order.
"""

from __future__ import annotations

import metrics.data_checks  # noqa: F401  (registers the data checks)
import metrics.model_checks  # noqa: F401  (registers the model checks)
from metrics.checks_registry import (
    CHECK_KINDS,
    CheckFn,
    CheckKind,
    RegisteredCheck,
    get_check,
    list_checks,
    register_check,
)

__all__ = ["CHECK_KINDS", "CheckFn", "CheckKind", "RegisteredCheck", "get_check", "list_checks",
           "register_check"]
