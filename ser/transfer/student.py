"""The student of NSL: a classifier whose training loss also pulls neighbours together.

The loss is cross-entropy plus ``graph_weight`` times the edge-weighted squared L2 distance
between the student's embedding (the input to its output layer) of each training utterance
and those of its graph neighbours, averaged over the batch: NSL's graph regularisation with
its L2 distance. The embeddings are scaled to unit length first (the distance is then
2 - 2 cos): on raw ReLU embeddings the cheapest way to shrink the term is to shrink every
embedding towards zero, which on the built-in corpus collapsed the student to chance at
weight 0.1. With ``graph_weight=0`` it trains exactly like ``SERClassifier``, which is the
"without graph" arm of the comparison.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ser.errors import SERError
from ser.models.module import SERClassifier


class GraphRegularizedClassifier(SERClassifier):
    def __init__(self, *args, graph_weight: float = 0.1, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if graph_weight < 0:
            raise SERError(f"model.graph_weight={graph_weight} must be >= 0")
        self.graph_weight = float(graph_weight)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        if len(batch) == 2 or self.graph_weight == 0:
            return super().training_step(tuple(batch[:2]), batch_idx)
        x, y, neighbors, weights = batch
        size, k = weights.shape
        # One pass over the utterances and their neighbours (B * (1 + k) inputs).
        embedded = self.embed(torch.cat([x, neighbors.flatten(0, 1)]))
        own, theirs = embedded[:size], embedded[size:].view(size, k, -1)
        logits = self.net.head(own)
        direction = F.normalize(own, dim=-1)[:, None, :] - F.normalize(theirs, dim=-1)
        regularizer = (weights * direction.square().sum(dim=-1)).sum(dim=1).mean()
        loss = F.cross_entropy(logits, y) + self.graph_weight * regularizer
        self.log("train/graph_loss", regularizer, on_step=False, on_epoch=True)
        return self.log_training(loss, logits.argmax(dim=1), y)
