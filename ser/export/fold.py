"""Batch norm folded into the convolution before it, as a per-output-channel scale and shift."""

from __future__ import annotations

import numpy as np
from torch import nn

from ser.errors import SERError


def fold(bias: np.ndarray | None, bn: nn.BatchNorm2d | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per-output-channel (scale, shift) with conv(x, W_q)·scale + shift = BN(conv(x, W_q) + b) (eval mode),
    ``b`` the convolution's shipped bias.

    scale = γ/√(σ² + ε), shift = β + (b − μ)·scale, in float64 then float32; without a batch
    norm, (None, b). The quantized weight is left alone: the scale multiplies the output, so the
    codes stay as LAQ chose them and the deployed network computes what the fake-quantized torch
    model computes.
    """
    if bn is None:
        return None, None if bias is None else bias.astype(np.float32)
    if not bn.track_running_stats or bn.running_mean is None:
        raise SERError("a batch norm without running statistics cannot be folded")
    bias = None if bias is None else bias.astype(np.float64)
    mean, var = bn.running_mean.double().numpy(), bn.running_var.double().numpy()
    gamma = bn.weight.detach().double().numpy() if bn.affine else np.ones_like(mean)
    beta = bn.bias.detach().double().numpy() if bn.affine else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + bn.eps)
    shift = beta + ((0.0 if bias is None else bias) - mean) * scale
    return scale.astype(np.float32), shift.astype(np.float32)
