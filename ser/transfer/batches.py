"""Training batches that carry each utterance's graph neighbours, for the NSL student.

The graph belongs to knowledge transfer, not to the data: ``GraphDataModule`` wraps any
``SERDataModule`` and changes only its training batches, so the data package knows nothing of
NSL and every other stage (validation, test, quantization) sees the plain datamodule.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from ser.data.datamodule import SERDataModule
from ser.errors import DataError
from ser.transfer.graph import Graph


class WithNeighbours(Dataset):
    """(features, label, neighbours' features (k, ...), edge weights (k,)) per training utterance.

    Neighbours are looked up per item rather than copied k times up front, so memory stays
    that of the features. A missing edge (index -1) points at row 0 with weight 0.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, graph: Graph) -> None:
        if len(graph.neighbors) != len(x):
            raise DataError(f"the graph has {len(graph.neighbors)} rows for {len(x)} training utterances")
        self.x, self.y = x, y
        self.neighbors = torch.from_numpy(graph.neighbors).clamp_min(0)
        self.weights = torch.from_numpy(graph.weights)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        return self.x[i], self.y[i], self.x[self.neighbors[i]], self.weights[i]


class GraphDataModule(L.LightningDataModule):
    """``data`` with training batches of ``WithNeighbours``; everything else is ``data``'s own."""

    def __init__(self, data: SERDataModule, graph: Graph) -> None:
        super().__init__()
        self.data, self.graph = data, graph

    def setup(self, stage: str | None = None) -> None:
        self.data.setup(stage)

    def train_dataloader(self) -> DataLoader:
        return self.data.loader(WithNeighbours(*self.data.tensors("train"), self.graph), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.data.val_dataloader()

    def test_dataloader(self) -> DataLoader:
        return self.data.test_dataloader()

    def __getattr__(self, name: str) -> Any:  # feature_config, classes, prepared, … of the wrapped data
        if name == "data":
            raise AttributeError(name)
        return getattr(self.data, name)
