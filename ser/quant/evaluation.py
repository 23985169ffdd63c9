"""Fast accuracy of a LightningModule on one split, without building a Trainer.

The search asks for hundreds of evaluations; the split's tensors are collected once and
each evaluation is a few forward passes, so a candidate costs milliseconds for the MLP.

Forward passes take ``batch_rows`` utterances at a time: at most ``BATCH_ELEMENTS`` input
numbers per batch. A convolutional network's activations are hundreds of times its input,
and a whole split in one batch (960 Light-SERNet inputs: ~1 GB per layer) runs from memory
instead of cache: 8 utterances per batch computed the same logits, bit for bit, 3.4× faster
on 2 cores. Each utterance's output does not depend on the batch it is in (measured equal
for the MLP and Light-SERNet), so results are the same as with one batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import multiclass_recall


@dataclass
class SplitTensors:
    inputs: torch.Tensor
    targets: torch.Tensor

    @classmethod
    def collect(cls, loader: DataLoader, device: torch.device) -> SplitTensors:
        """Concatenate a loader's ``(inputs, targets, ...)`` batches."""
        xs, ys = [], []
        for batch in loader:
            xs.append(batch[0])
            ys.append(batch[1])
        return cls(torch.cat(xs).to(device), torch.cat(ys).to(device))


BATCH_ELEMENTS = 2**16  # input numbers per forward pass: 364 pooled 180-d vectors, 8 frame sequences of 40 × 188


def batch_rows(inputs: torch.Tensor) -> int:
    """Utterances per forward pass: as many as fit ``BATCH_ELEMENTS`` input numbers (at least one)."""
    return max(1, BATCH_ELEMENTS // max(1, inputs[0].numel())) if len(inputs) else 1


@torch.no_grad()
def predict(model: nn.Module, data: SplitTensors) -> torch.Tensor:
    return logits(model, data).argmax(dim=1)


def accuracy(model: nn.Module, data: SplitTensors) -> float:
    return float((predict(model, data) == data.targets).float().mean())


def scores(preds: torch.Tensor, targets: torch.Tensor, n_classes: int) -> tuple[float, float]:
    """Accuracy (WA) and unweighted average recall (UAR) of predictions."""
    acc = float((preds == targets).float().mean())
    uar = float(multiclass_recall(preds, targets, num_classes=n_classes, average="macro"))
    return acc, uar


@torch.no_grad()
def logits(model: nn.Module, data: SplitTensors) -> torch.Tensor:
    """Class logits of the whole split in eval mode, ``batch_rows`` utterances at a time."""
    was_training = model.training
    model.eval()
    rows = batch_rows(data.inputs)
    out = torch.cat([model(data.inputs[i : i + rows]) for i in range(0, len(data.inputs), rows)])
    model.train(was_training)
    return out
