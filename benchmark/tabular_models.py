"""A tabular model version: an MLP whose module takes the raw feature matrix
of a ``TabularSchema`` (numbers as they are, categories as codes, NaN for
missing) and folds its preprocessing in, as ``Normalized`` does for images.

The preprocessing is fitted on the training part and stored as buffers, so
the checkpoint (a plain state_dict, loaded weights-only) carries it and
every threat works on raw feature values:

1. impute: NaN becomes the column's training median (numbers) or mode
   (categories);
2. standardise: numeric columns as ``(x - mean) / std`` of the training part;
3. one-hot: a category code ``c`` of a column with ``k`` categories becomes
   ``max(0, 1 - |c - j|)`` for ``j`` in ``0..k-1``, which is the one-hot
   vector at every valid code (and all zeros for a code outside the list).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

#: What the record says about the preprocessing folded into the module.
PREPROCESSING = ("impute NaN with the training median (numeric) or mode (categorical); "
                 "standardise numeric columns with the training mean and std; one-hot "
                 "categorical codes")


def cardinalities(schema: Any) -> list[int]:
    """Per column of a ``TabularSchema``: 0 for a number, else its number of categories
    (the ``cardinalities`` argument of ``TabularMLP``)."""
    return [0 if c.is_numeric else len(c.categories) for c in schema.columns]


class TabularMLP(nn.Module):
    """Raw feature matrix -> logits, preprocessing folded in (see the module doc).

    ``cardinalities`` has one entry per raw column: 0 for a numeric column,
    ``k`` for a categorical one with ``k`` categories.
    """

    #: ``benchmark.models.load_model`` hands raw features to this module as
    #: they are (no pixel normalisation around it).
    takes_raw_features = True

    fill: torch.Tensor
    center: torch.Tensor
    scale: torch.Tensor
    levels: torch.Tensor

    def __init__(self, cardinalities: Sequence[int], hidden: Sequence[int] = (64, 32),
                 num_classes: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        card = [int(k) for k in cardinalities]
        if not card or any(k < 0 or k == 1 for k in card):
            raise ValueError(f"Expected `cardinalities` to be 0 (numeric) or at least 2 per "
                             f"column, but got {list(cardinalities)}.")
        self.cardinalities = card
        self.numeric = [j for j, k in enumerate(card) if k == 0]
        self.categorical = [j for j, k in enumerate(card) if k > 0]
        n = len(card)
        self.register_buffer("fill", torch.zeros(n))
        self.register_buffer("center", torch.zeros(len(self.numeric)))
        self.register_buffer("scale", torch.ones(len(self.numeric)))
        # one row per one-hot output: the level j it stands for
        self.register_buffer("levels", torch.tensor(
            [float(j) for k in card if k for j in range(k)], dtype=torch.float32))
        self._repeat = [k for k in card if k]
        width = len(self.numeric) + int(sum(self._repeat))
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = int(h)
        layers.append(nn.Linear(width, int(num_classes)))
        self.net = nn.Sequential(*layers)

    @property
    def preprocessing(self) -> str:
        return PREPROCESSING

    def fit_preprocessing(self, x_train: np.ndarray) -> None:
        """Set the imputation, standardisation buffers from the raw training matrix."""
        x = np.asarray(x_train, dtype=np.float64)
        fill = np.zeros(x.shape[1])
        for j, k in enumerate(self.cardinalities):
            col = x[:, j][np.isfinite(x[:, j])]
            if not col.size:
                continue
            if k == 0:
                fill[j] = float(np.median(col))
            else:
                codes, counts = np.unique(np.rint(col), return_counts=True)
                fill[j] = float(codes[np.argmax(counts)])  # the lowest code among ties
        imputed = np.where(np.isfinite(x), x, fill)
        num = imputed[:, self.numeric]
        std = num.std(axis=0) if len(num) else np.ones(len(self.numeric))
        self.fill.copy_(torch.from_numpy(fill).float())
        self.center.copy_(torch.from_numpy(num.mean(axis=0) if len(num) else
                                           np.zeros(len(self.numeric))).float())
        self.scale.copy_(torch.from_numpy(np.where(std > 0, std, 1.0)).float())

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The preprocessed input of the first layer: standardised numbers,
        then the one-hot columns, in column order."""
        x = x.to(self.fill.dtype)
        x = torch.where(torch.isnan(x), self.fill.expand_as(x), x)
        parts = [(x[:, self.numeric] - self.center) / self.scale]
        if self.categorical:
            codes = x[:, self.categorical].repeat_interleave(
                torch.tensor(self._repeat, device=x.device), dim=1)
            parts.append((1.0 - (codes - self.levels).abs()).clamp_min(0.0))
        return torch.cat(parts, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.features(x))
