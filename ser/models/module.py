"""LightningModule for utterance classification, with the SER field's metrics.

Unweighted average recall (macro recall) is reported next to accuracy because emotion
corpora are unbalanced (EMODB has almost three times more anger than disgust), and a model
can buy accuracy by favouring the large classes.
"""

from __future__ import annotations

from typing import Callable, Sequence

import lightning as L
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torchmetrics import MetricCollection  # noqa: E402
from torchmetrics.classification import (  # noqa: E402
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassRecall,
)


def classification_metrics(n_classes: int) -> MetricCollection:
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(n_classes, average="micro"),
            "uar": MulticlassRecall(n_classes, average="macro"),
            "f1": MulticlassF1Score(n_classes, average="macro"),
        }
    )


def confusion_figure(matrix: torch.Tensor, classes: Sequence[str], title: str = "test confusion matrix"):
    """Row-normalised confusion matrix with counts, as a matplotlib figure."""
    counts = matrix.cpu().numpy()
    rates = counts / counts.sum(axis=1, keepdims=True).clip(min=1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(classes), 0.75 + 0.7 * len(classes)))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return fig


class SERClassifier(L.LightningModule):
    """Wraps any network mapping standardised features to class logits.

    Networks split into ``embed`` (to the last hidden representation) and ``head`` (to the
    logits), which knowledge transfer needs.

    ``net`` and ``optimizer`` are factories (Hydra ``_partial_``) because their sizes and
    parameters are only known once the data is set up.
    """

    def __init__(
        self,
        net: Callable[[int, int], nn.Module],
        optimizer: Callable[..., torch.optim.Optimizer],
        n_features: int | Sequence[int],
        classes: Sequence[str],
        feature_mean: torch.Tensor | None = None,
        feature_std: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        # Plain types only: Hydra hands lists over as ListConfig, which checkpoints must not pickle.
        self.classes = [str(c) for c in classes]
        n_features = int(n_features) if isinstance(n_features, int) else tuple(int(n) for n in n_features)
        self.save_hyperparameters({"n_features": n_features if isinstance(n_features, int) else list(n_features),
                                   "classes": self.classes})
        self.net = net(n_features, len(self.classes))
        self.optimizer_factory = optimizer
        # One statistic per feature, or per channel of a (channels, frames) sequence.
        shape = (n_features,) if isinstance(n_features, int) else (n_features[0], 1)
        mean = torch.zeros(shape) if feature_mean is None else torch.as_tensor(feature_mean, dtype=torch.float32)
        std = torch.ones(shape) if feature_std is None else torch.as_tensor(feature_std, dtype=torch.float32)
        self.register_buffer("feature_mean", mean)
        self.register_buffer("feature_std", std)
        n = len(self.classes)
        self.train_acc = MulticlassAccuracy(n, average="micro")
        self.val_acc = MulticlassAccuracy(n, average="micro")
        self.test_metrics = classification_metrics(n)
        self.test_confusion = MulticlassConfusionMatrix(n)
        self.last_confusion: torch.Tensor | None = None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(self.standardize(features))

    def standardize(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.feature_mean) / self.feature_std

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """The network's last hidden representation (``net.embed``), the input of its output layer."""
        return self.net.embed(self.standardize(features))

    def n_params(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = self(x)
        return F.cross_entropy(logits, y), logits.argmax(dim=1), y

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self.log_training(*self._step(batch))

    def log_training(self, loss: torch.Tensor, preds: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.train_acc(preds, y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        loss, preds, y = self._step(batch)
        self.val_acc(preds, y)
        self.log("val/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)

    def test_step(self, batch, batch_idx: int) -> None:
        loss, preds, y = self._step(batch)
        self.test_metrics.update(preds, y)
        self.test_confusion.update(preds, y)
        self.log("test/loss", loss, on_step=False, on_epoch=True)

    def on_test_epoch_end(self) -> None:
        self.log_dict({f"test/{k}": v for k, v in self.test_metrics.compute().items()})
        self.test_metrics.reset()
        self.last_confusion = self.test_confusion.compute()
        self.test_confusion.reset()
        experiment = getattr(self.logger, "experiment", None)
        if hasattr(experiment, "add_figure"):
            figure = confusion_figure(self.last_confusion, self.classes)
            experiment.add_figure("test/confusion_matrix", figure, global_step=self.global_step)
            plt.close(figure)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.parameters())
