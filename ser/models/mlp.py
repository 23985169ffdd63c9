"""The paper's classifier: a small fully connected network on pooled features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ser.errors import SERError


class MLP(nn.Sequential):
    """Linear → ReLU → Dropout per hidden layer, then a linear output layer.

    Default widths are the paper's 3-hidden-layer model (256-512-64, Table 2); its other
    depths are just other ``hidden`` lists.
    """

    def __init__(self, n_features: int, n_classes: int, hidden: Sequence[int] = (256, 512, 64), dropout: float = 0.1):
        if not isinstance(n_features, int):
            raise SERError(
                f"the MLP needs pooled feature vectors, got frame sequences of shape {tuple(n_features)}; "
                "use data.features.pooling=stats"
            )
        layers: list[nn.Module] = []
        width = n_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, n_classes))
        super().__init__(*layers)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Output of the last hidden layer (after its dropout)."""
        for layer in list(self)[:-1]:
            x = layer(x)
        return x

    def head(self, embedded: torch.Tensor) -> torch.Tensor:
        return self[-1](embedded)
