"""Light-SERNet: a small fully convolutional SER network on MFCC frames.

Aftab, Morsali, Ghaemmaghami and Champagne, "Light-SERNet: A lightweight fully convolutional
neural network for speech emotion recognition", ICASSP 2022 (arXiv:2110.03435). The layer
list follows the authors' public TensorFlow definition (github.com/AryaAftab/LIGHT-SERNET,
``Light_SERNet_V1``):

- three parallel paths on the (time, coefficient) image, 32 filters each with kernels
  11×1 (along time), 1×9 (along the coefficients) and 3×3, each with batch norm, ReLU and
  2×2 average pooling, concatenated to 96 channels;
- local feature-learning blocks: 3×3 convolutions with 64, 96, 128 and 160 filters (no bias),
  batch norm, ReLU and average pooling of 2×2, 2×2, 2×1 and 2×1, then a 1×1 convolution to
  320 channels with batch norm and ReLU;
- global average pooling, dropout 0.3 and a linear classifier.

That is 461,703 parameters for 7 classes (1846.8 KB in fp32), of which 1,728 are batch-norm
scales and shifts; the 1,728 running statistics are buffers and not counted (a deployed model
folds them into the convolutions).

Keras' "same" padding is ``padding="same"`` here; its "same" average pooling, which averages
only the cells inside the input at odd sizes, is ``ceil_mode=True`` without padding. The
original's L2 penalty of 1e-6 on the block convolutions is left to the optimizer's
``weight_decay``. Global pooling makes the network independent of the number of frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ser.errors import SERError

PATH_KERNELS = ((11, 1), (1, 9), (3, 3))


def _conv_block(in_channels: int, out_channels: int, kernel, pool, bias: bool) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, padding="same", bias=bias),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.AvgPool2d(pool, ceil_mode=True),
    )


class LightSERNet(nn.Module):
    """Input (batch, coefficients, frames), as the datamodule gives frame sequences; output logits."""

    def __init__(
        self,
        n_features: Sequence[int],
        n_classes: int,
        path_channels: int = 32,
        block_channels: Sequence[int] = (64, 96, 128, 160),
        block_pools: Sequence[Sequence[int]] = ((2, 2), (2, 2), (2, 1), (2, 1)),
        head_channels: int = 320,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        if isinstance(n_features, int):
            raise SERError(
                "Light-SERNet needs frame sequences, got pooled vectors; use data.features.pooling=none "
                "(model=lightsernet sets it)"
            )
        if len(block_channels) != len(block_pools):
            raise SERError(
                f"model.net.block_channels ({len(block_channels)}) and block_pools ({len(block_pools)}) "
                "must have the same length"
            )
        self.paths = nn.ModuleList(_conv_block(1, path_channels, k, (2, 2), bias=True) for k in PATH_KERNELS)
        blocks: list[nn.Module] = []
        width = path_channels * len(PATH_KERNELS)
        for channels, pool in zip(block_channels, block_pools):
            blocks.append(_conv_block(width, channels, (3, 3), tuple(pool), bias=False))
            width = channels
        blocks += [
            nn.Conv2d(width, head_channels, 1, bias=False),
            nn.BatchNorm2d(head_channels),
            nn.ReLU(),
        ]
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(head_channels, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled ``head_channels`` vector the classifier sees."""
        image = x.transpose(1, 2).unsqueeze(1)  # (batch, 1, frames, coefficients): time first, as in the paper
        maps = self.blocks(torch.cat([path(image) for path in self.paths], dim=1))
        return maps.mean(dim=(2, 3))  # global average pooling; a plain mean stays deterministic on GPUs

    def head(self, embedded: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(embedded))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))
