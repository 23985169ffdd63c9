"""Graph batches for the NSL student: a wrapper around any datamodule, training batches only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ser.data.datamodule import SERDataModule
from ser.errors import DataError
from ser.transfer.batches import GraphDataModule, WithNeighbours
from ser.transfer.graph import Graph

FEATURES = {"sample_rate": 16000, "n_fft": 512, "hop_length": 256, "n_mels": 40, "n_mfcc": 13}


def _module(manifest, cache_dir, **kwargs) -> SERDataModule:
    dm = SERDataModule(corpus="manifest", manifest=str(manifest), cache_dir=str(cache_dir), features=FEATURES, **kwargs)
    dm.setup()
    return dm


def test_with_a_graph_training_batches_carry_each_utterances_neighbours(tiny_manifest, cache_dir):
    dm = _module(tiny_manifest, cache_dir, batch_size=70)
    x = dm.tensors("train")[0]
    n = len(x)
    neighbors = np.stack([(np.arange(n) + 1) % n, np.full(n, -1)], axis=1)
    data = GraphDataModule(dm, Graph(neighbors, np.tile(np.float32([0.9, 0.0]), (n, 1))))
    batch_x, _, batch_neighbors, weights = next(iter(data.train_dataloader()))
    assert batch_neighbors.shape == (70, 2, 65) and weights.shape == (70, 2)
    rows = [int(torch.nonzero((x == row).all(dim=1))[0]) for row in batch_x[:5]]
    for i, row in enumerate(rows):
        torch.testing.assert_close(batch_neighbors[i, 0], x[(row + 1) % n])
    assert weights[:, 1].eq(0).all(), "a missing edge has weight 0"
    x_val, _ = next(iter(data.val_dataloader()))
    assert x_val.shape[1:] == (65,), "only training batches carry neighbours"
    assert data.classes == dm.classes and data.feature_config == dm.feature_config, (
        "everything else is the datamodule's"
    )


def test_a_graph_of_another_size_than_the_training_split_is_refused():
    graph = Graph(np.zeros((3, 1), dtype=np.int64), np.ones((3, 1), dtype=np.float32))
    with pytest.raises(DataError, match="the graph has 3 rows for 4 training utterances"):
        WithNeighbours(torch.zeros(4, 2), torch.zeros(4, dtype=torch.int64), graph)
