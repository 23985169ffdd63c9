"""Weight-only fake quantization of Linear and Conv layers at 1 to 8 bits.

For b ≥ 2 bits the quantizer is uniform and symmetric: integer levels -(2^(b-1)-1) … 2^(b-1)-1
(2^b - 1 values, zero included, so the grid is the same on both sides) times one scale per
layer, or per output channel as an option. The scale maps the largest |w| onto the top level,
or, with ``mse_clip``, a clipped range chosen to minimise the reconstruction error. At b = 1
a weight keeps only its sign and the layer (or channel) one magnitude α = mean|w|, the
least-squares optimal choice used by XNOR-Net and binary-weight networks.

Biases are not quantized: they are under 1 % of the parameters, errors in them shift every
output of a layer, and integer kernels keep them in 32 bits anyway. Sizes count them at 32
bits, and count every scale at 32 bits too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

MIN_BITS, MAX_BITS = 1, 8
QUANTIZABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CLIP_RATIOS = torch.linspace(0.3, 1.0, 36)


@dataclass(frozen=True)
class QuantizerConfig:
    per_channel: bool = False
    mse_clip: bool = False


def _channels(weight: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """The weight as (groups, values): one group per output channel, or the whole layer."""
    return weight.reshape(weight.shape[0], -1) if per_channel else weight.reshape(1, -1)


def _uniform(w: torch.Tensor, bits: int, max_abs: torch.Tensor) -> torch.Tensor:
    top = 2 ** (bits - 1) - 1
    scale = (max_abs / top).clamp_min(torch.finfo(w.dtype).tiny)
    return (w / scale).round().clamp(-top, top) * scale


def quantize(weight: torch.Tensor, bits: int, config: QuantizerConfig = QuantizerConfig()) -> tuple[torch.Tensor, torch.Tensor]:
    """The quantized weight (same shape) and its scales (one per group: α for 1 bit, the step otherwise)."""
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits must be in {MIN_BITS}..{MAX_BITS}, got {bits}")
    w = _channels(weight.detach(), config.per_channel)
    if bits == 1:
        alpha = w.abs().mean(dim=1, keepdim=True)
        q = torch.where(w >= 0, alpha, -alpha)
        return q.reshape(weight.shape), alpha.flatten()
    max_abs = w.abs().amax(dim=1, keepdim=True)
    if config.mse_clip:
        candidates = torch.stack([_uniform(w, bits, r * max_abs) for r in _CLIP_RATIOS])
        errors = (candidates - w).square().sum(dim=2)  # (ratios, groups)
        best = errors.argmin(dim=0)
        max_abs = _CLIP_RATIOS.to(w.device)[best][:, None] * max_abs
    q = _uniform(w, bits, max_abs)
    return q.reshape(weight.shape), (max_abs / (2 ** (bits - 1) - 1)).flatten()


def quantizable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every Linear/Conv layer of ``model`` by qualified name, in definition order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, QUANTIZABLE)}


def stored_bits(weight: torch.Tensor, bias: torch.Tensor | None, bits: int, config: QuantizerConfig) -> int:
    """Bits needed to store one layer: weights at ``bits`` (32 = unquantized), bias and scales at 32."""
    scales = (weight.shape[0] if config.per_channel else 1) if bits < 32 else 0
    return weight.numel() * bits + 32 * ((bias.numel() if bias is not None else 0) + scales)


def model_size_kb(model: nn.Module, bits: dict[str, int], config: QuantizerConfig = QuantizerConfig()) -> float:
    """Storage of the whole model in KB (1000 bytes): every parameter and buffer the net needs.

    Layers absent from ``bits`` and parameters outside Linear/Conv layers count at 32 bits.
    """
    layers = quantizable_layers(model)
    total = 0
    counted: set[int] = set()
    for name, layer in layers.items():
        total += stored_bits(layer.weight, getattr(layer, "bias", None), bits.get(name, 32), config)
        counted.update(id(p) for p in layer.parameters(recurse=False))
    total += 32 * sum(p.numel() for p in model.parameters() if id(p) not in counted)
    return total / 8 / 1000


def average_bits(model: nn.Module, bits: dict[str, int]) -> float:
    """Eq. 6: Σ_l N_P(l)·b(l), with N_P the layer's share of the model's parameters.

    Parameters of layers that are not quantized count at 32 bits.
    """
    layers = quantizable_layers(model)
    total = sum(p.numel() for p in model.parameters())
    weighted = 0.0
    counted = 0
    for name, layer in layers.items():
        n = sum(p.numel() for p in layer.parameters(recurse=False))
        weighted += n * bits.get(name, 32)
        counted += n
    return (weighted + 32 * (total - counted)) / total


class QuantizedWeights:
    """Swaps quantized weights into a model and back, without copying the model.

    Quantized tensors are computed once per (layer, bits) and reused, which is what makes
    hundreds of search candidates cost seconds.
    """

    def __init__(self, model: nn.Module, config: QuantizerConfig = QuantizerConfig()):
        self.model = model
        self.config = config
        self.layers = quantizable_layers(model)
        self.original = {name: layer.weight.detach().clone() for name, layer in self.layers.items()}
        self._cache: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def quantized(self, name: str, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = (name, bits)
        if key not in self._cache:
            self._cache[key] = quantize(self.original[name], bits, self.config)
        return self._cache[key]

    @torch.no_grad()
    def apply(self, bits: dict[str, int]) -> None:
        """Set each layer to its bit-width in ``bits``; layers not named go back to full precision."""
        for name, layer in self.layers.items():
            b = bits.get(name)
            layer.weight.copy_(self.original[name] if b is None or b >= 32 else self.quantized(name, b)[0])

    def restore(self) -> None:
        self.apply({})
