"""Layer importance, Eq. 1–4 of the paper.

N_P(l) = parameters of l / parameters of the model                          (Eq. 1)
N_E(l) = H(l) / 32, H the Shannon entropy in bits of a histogram of l's weights (Eq. 2)
N_V(l) = log(e − 1 + var(l) / max_k var(k))                                 (Eq. 3)
I(l)   = w_P·N_P(l) + w_E·(1 − N_E(l)) + w_V·N_V(l)                          (Eq. 4)

The paper leaves the entropy estimator open. We histogram the layer's weights into
``bins`` equal-width bins between their min and max (256 by default, the resolution of an
8-bit code), so H ≤ log2(bins) ≤ 32 bits and 0 ≤ N_E ≤ 1 as the paper requires. N_V lies in
[log(e − 1), 1] ≈ [0.54, 1]. Parameters count weights and biases, as in the paper's
169K-parameter total; entropy and variance use the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ser.errors import SERError
from ser.quant.config import DEFAULTS, ImportanceWeights
from ser.quant.quantizer import quantizable_layers

MODEL_BITS = 32


@dataclass(frozen=True)
class LayerImportance:
    name: str
    params: int
    n_p: float
    n_e: float
    n_v: float
    importance: float


def weight_entropy(weight: torch.Tensor, bins: int = 256) -> float:
    """Shannon entropy (bits) of the histogram of ``weight`` over ``bins`` equal-width bins."""
    w = weight.detach().flatten().double().cpu()
    low, high = float(w.min()), float(w.max())
    if high <= low:
        return 0.0
    counts = torch.histc(w, bins=bins, min=low, max=high)
    p = counts[counts > 0] / w.numel()
    return float(-(p * torch.log2(p)).sum())


def layer_importance(
    model: nn.Module, weights: ImportanceWeights = DEFAULTS.search.weights, bins: int = 256
) -> list[LayerImportance]:
    """Importance of every Linear/Conv layer of ``model``, in definition order."""
    if not 2 <= bins <= 2**MODEL_BITS:
        raise SERError(f"quant.search.entropy_bins={bins} must be in 2..2^32")
    layers = quantizable_layers(model)
    total = sum(p.numel() for p in model.parameters())
    variances = {name: float(layer.weight.detach().double().var(unbiased=False)) for name, layer in layers.items()}
    max_var = max(variances.values())
    result = []
    for name, layer in layers.items():
        params = sum(p.numel() for p in layer.parameters(recurse=False))
        n_p = params / total
        n_e = weight_entropy(layer.weight, bins) / MODEL_BITS
        n_v = math.log(math.e - 1 + (variances[name] / max_var if max_var > 0 else 0.0))
        importance = weights.w_p * n_p + weights.w_e * (1 - n_e) + weights.w_v * n_v
        result.append(LayerImportance(name, params, n_p, n_e, n_v, importance))
    return result
