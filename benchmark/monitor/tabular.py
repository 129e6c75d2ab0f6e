"""Tabular windows: encoding, schema checks, feature drift and fault matching.

Filled in once the tabular modality (readers, schema checks, tabular
faults) is merged; until then a tabular window is refused in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmark.core.errors import DataError
from benchmark.core.types import EvalSet


def _unsupported() -> DataError:
    return DataError("Tabular windows need a tabular reference and model versions "
                     "(data=arrests, model=[arrests_mlp_v1,...]); none is configured.")


def read_reference_table(path: Path, spec: Any) -> EvalSet:
    raise _unsupported()


def encode_window(ref: Any, w: Any) -> Any:
    raise _unsupported()


def label_codes(ref: Any, w: Any) -> np.ndarray:
    raise _unsupported()


def tabular_checks(ref: Any, w: Any) -> list[Any]:
    raise _unsupported()


def tabular_pairs(ref: Any, w: Any) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    raise _unsupported()


def tabular_match(ref: Any, w: Any) -> Any:
    raise _unsupported()
