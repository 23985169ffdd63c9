"""Layer-wise adaptive quantization (LAQ) of your own Lightning model with ser's callback.

    python docs/examples/laq_callback.py [--epochs 20] [--out DIR]

Neither the model nor the data is ser's: a small MLP (``Classifier``) learns to tell four
Gaussian clusters in 16 dimensions apart (``Clusters``, made here with torch). The only ser line
is the callback handed to the Trainer. When ``trainer.fit`` ends, the callback loads the best
checkpoint, quantizes every Linear layer to the fewest bits that keep validation accuracy within
the margin (most important layer first), and writes the quantized model to ``DIR/quantized.pt``;
this script prints the bits it chose per layer. docs/quantization-api.md explains what the
callback needs from the module and the data, and what it writes.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from ser.quant.callback import LayerwiseAdaptiveQuantization
from ser.quant.config import LAQConfig


class Clusters(L.LightningDataModule):
    """Four Gaussian clusters in 16 dimensions: 600 training, 200 validation and 200 test points.

    The callback reads ``val_dataloader`` (the search's accuracy), ``test_dataloader`` (scored,
    never used to choose) and ``train_dataloader`` (recovery training), each batch ``(x, y)``."""

    def __init__(self, features: int = 16, classes: int = 4, batch_size: int = 32, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        centres = 0.5 * torch.randn(classes, features, generator=generator)
        y = torch.randint(0, classes, (1000,), generator=generator)
        x = centres[y] + torch.randn(1000, features, generator=generator)
        self.splits = {
            "train": TensorDataset(x[:600], y[:600]),
            "val": TensorDataset(x[600:800], y[600:800]),
            "test": TensorDataset(x[800:], y[800:]),
        }
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["train"], batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["val"], batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["test"], batch_size=self.batch_size)


class Classifier(L.LightningModule):
    """16 → 64 → 32 → 4. Its ``forward`` returns logits, which is all the callback asks of it;
    its three ``nn.Linear`` layers (``body.0``, ``body.2``, ``head``) are what it quantizes."""

    def __init__(self, features: int = 16, classes: int = 4, lr: float = 1e-2):
        super().__init__()
        self.save_hyperparameters()
        self.body = nn.Sequential(nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU())
        self.head = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None, help="where quantized.pt goes (default: a temporary folder)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="laq_example_"))

    L.seed_everything(0, verbose=False)
    # The defaults are ser's shipped ones (the same as `python train.py`); each step's settings are
    # a dataclass of ser.quant.config, e.g. a tighter margin for the search:
    laq = LayerwiseAdaptiveQuantization(search=LAQConfig(t_margin=2.0), save_dir=str(out))
    trainer = L.Trainer(
        max_epochs=args.epochs,
        callbacks=[laq],
        default_root_dir=out,
        accelerator="cpu",
        deterministic=True,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Classifier(), datamodule=Clusters())  # LAQ runs when fit ends

    found = laq.results.laq
    print(f"{'layer':<8} {'params':>6} {'importance':>10} {'bits':>4}")
    for layer in found.layers:
        print(f"{layer.name:<8} {layer.params:>6} {layer.importance:>10.4f} {layer.bits:>4}")
    widest = laq.results.fixed[0].scores  # every layer at 8 bits
    print(
        f"LAQ: {found.scores.avg_bits:.2f} average bits, {found.scores.size_kb:.2f} KB; validation accuracy "
        f"{found.scores.val_acc:.3f} (8 bits: {widest.val_acc:.3f}), test accuracy {found.scores.test_acc:.3f}"
    )
    print(f"quantized model: {out / 'quantized.pt'}")


if __name__ == "__main__":
    main()
