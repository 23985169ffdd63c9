"""Fast accuracy of a LightningModule on one split, without building a Trainer.

The search asks for hundreds of evaluations; the split's tensors are collected once and
each evaluation is a single forward pass, so a candidate costs milliseconds.
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
    def collect(cls, loader: DataLoader, device: torch.device) -> "SplitTensors":
        """Concatenate a loader's ``(inputs, targets, ...)`` batches."""
        xs, ys = [], []
        for batch in loader:
            xs.append(batch[0])
            ys.append(batch[1])
        return cls(torch.cat(xs).to(device), torch.cat(ys).to(device))


@torch.no_grad()
def predict(model: nn.Module, data: SplitTensors, batch_size: int = 4096) -> torch.Tensor:
    was_training = model.training
    model.eval()
    preds = torch.cat([model(data.inputs[i : i + batch_size]).argmax(dim=1) for i in range(0, len(data.inputs), batch_size)])
    model.train(was_training)
    return preds


def accuracy(model: nn.Module, data: SplitTensors) -> float:
    return float((predict(model, data) == data.targets).float().mean())


def scores(preds: torch.Tensor, targets: torch.Tensor, n_classes: int) -> tuple[float, float]:
    """Accuracy (WA) and unweighted average recall (UAR) of predictions."""
    acc = float((preds == targets).float().mean())
    uar = float(multiclass_recall(preds, targets, num_classes=n_classes, average="macro"))
    return acc, uar



@torch.no_grad()
def logits(model: nn.Module, data: SplitTensors, batch_size: int = 4096) -> torch.Tensor:
    """Class logits of the whole split in eval mode."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(data.inputs[i : i + batch_size]) for i in range(0, len(data.inputs), batch_size)])
    model.train(was_training)
    return out
