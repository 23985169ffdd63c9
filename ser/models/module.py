"""LightningModule for utterance classification, with the SER field's metrics.

Unweighted average recall (macro recall) is reported next to accuracy because emotion
corpora are unbalanced (EMODB has almost three times more anger than disgust), and a model
can buy accuracy by favouring the large classes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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

from ser.errors import SERError  # noqa: E402


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
            ax.text(
                j, i, f"{int(counts[i, j])}", ha="center", va="center", color="white" if rates[i, j] > 0.5 else "black"
            )
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class Regularization:
    """Training-time regularisers (``model.regularization``); all off in the paper's recipe.

    ``input_noise`` adds Gaussian noise of that std to the standardised features and
    ``mixup_alpha`` > 0 trains on mixup pairs (Zhang et al., 2018: inputs and targets mixed
    with a Beta(α, α) weight), two cheap augmentations for corpora of a few hundred
    utterances; ``label_smoothing`` keeps the model from growing over-confident, which also
    keeps early stopping on validation loss from firing too soon.
    """

    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    input_noise: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.label_smoothing < 1:
            raise SERError(f"model.regularization.label_smoothing={self.label_smoothing} must be in [0, 1)")
        if self.mixup_alpha < 0 or self.input_noise < 0:
            raise SERError("model.regularization.mixup_alpha and input_noise must be >= 0")


class SERClassifier(L.LightningModule):
    """Wraps any network mapping standardised features to class logits.

    Networks split into ``embed`` (to the last hidden representation) and ``head`` (to the
    logits), which knowledge transfer needs.

    ``net``, ``optimizer`` and the optional ``scheduler`` (stepped once per epoch) are
    factories (Hydra ``_partial_``) because their sizes and parameters are only known once
    the data is set up.
    """

    def __init__(
        self,
        net: Callable[[int, int], nn.Module],
        optimizer: Callable[..., torch.optim.Optimizer],
        n_features: int | Sequence[int],
        classes: Sequence[str],
        feature_mean: torch.Tensor | None = None,
        feature_std: torch.Tensor | None = None,
        speaker_population: tuple[torch.Tensor, torch.Tensor] | None = None,
        speaker_prior_weight: float = 0.0,
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
        regularization: Regularization | Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        # Plain types only: Hydra hands lists over as ListConfig, which checkpoints must not pickle.
        self.classes = [str(c) for c in classes]
        n_features = int(n_features) if isinstance(n_features, int) else tuple(int(n) for n in n_features)
        self.normalize = "global" if speaker_population is None else "speaker"
        self.save_hyperparameters(
            {
                "n_features": n_features if isinstance(n_features, int) else list(n_features),
                "classes": self.classes,
                "normalize": self.normalize,
                "speaker_prior_weight": float(speaker_prior_weight),
            }
        )
        self.net = net(n_features, len(self.classes))
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.regularization = (
            regularization
            if isinstance(regularization, Regularization)
            else Regularization(**dict(regularization or {}))
        )
        # One statistic per feature, or per channel of a (channels, frames) sequence.
        shape = (n_features,) if isinstance(n_features, int) else (n_features[0], 1)
        mean = torch.zeros(shape) if feature_mean is None else torch.as_tensor(feature_mean, dtype=torch.float32)
        std = torch.ones(shape) if feature_std is None else torch.as_tensor(feature_std, dtype=torch.float32)
        # Lets Lightning's model summary measure input/output sizes and FLOPs (else "Total FLOPs: 0").
        self.example_input_array = torch.zeros(1, *(shape if len(shape) == 1 else (n_features[0], n_features[1])))
        self.register_buffer("feature_mean", mean)
        self.register_buffer("feature_std", std)
        if speaker_population is not None:
            # Inputs arrive z-scored per speaker (data.normalize=speaker). The training population's
            # raw statistics travel with the model: deployment falls back on them (and shrinks a
            # new speaker's few enrolment recordings toward them, speaker_prior_weight).
            self.register_buffer("population_mean", torch.as_tensor(speaker_population[0], dtype=torch.float32))
            self.register_buffer("population_std", torch.as_tensor(speaker_population[1], dtype=torch.float32))
        n = len(self.classes)
        self.train_acc = MulticlassAccuracy(n, average="micro")
        self.val_acc = MulticlassAccuracy(n, average="micro")
        self.val_uar = MulticlassRecall(n, average="macro")
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
        x, y = batch
        r = self.regularization
        z = self.standardize(x)
        if r.input_noise > 0:
            z = z + r.input_noise * torch.randn_like(z)
        partner = None
        if r.mixup_alpha > 0:
            lam = float(torch.distributions.Beta(r.mixup_alpha, r.mixup_alpha).sample())
            partner = torch.randperm(len(y), device=y.device)
            z = lam * z + (1 - lam) * z[partner]
        logits = self.net(z)
        loss = F.cross_entropy(logits, y, label_smoothing=r.label_smoothing)
        if partner is not None:
            loss = lam * loss + (1 - lam) * F.cross_entropy(logits, y[partner], label_smoothing=r.label_smoothing)
        return self.log_training(loss, logits.argmax(dim=1), y)

    def log_training(self, loss: torch.Tensor, preds: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.train_acc(preds, y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        loss, preds, y = self._step(batch)
        self.val_acc(preds, y)
        self.val_uar(preds, y)
        self.log("val/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val/uar", self.val_uar, on_step=False, on_epoch=True)

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

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "epoch"},
        }
