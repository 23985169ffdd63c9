"""Weight-only fake quantization of Linear and Conv layers at 1 to 8 bits.

Every quantized weight is ``level(code) · scale``: an unsigned integer code per weight, a grid
that maps codes to levels (``ser.dsp.grid``, the single numpy-only definition the runtime
shares), and one scale per layer or per output channel (``per_channel``).

Grids (``grid``):

* ``symmetric`` — the paper's: levels −(2^(b−1)−1) … 2^(b−1)−1 (2^b − 1 values, zero included)
  for b ≥ 2, sign · α at b = 1 (α = mean|w|, the least-squares binary magnitude of XNOR-Net).
* ``full`` — all 2^b codes, half-integer levels k − (2^b − 1)/2 (4 levels at 2 bits, not 3).

Scales (``scale``):

* ``max`` — the paper's: max|w| onto the top level (1 bit: α = mean|w|).
* ``mse`` — the scale minimising the reconstruction error ‖w − q‖²: the best of a sweep of
  clipping ratios, refined by alternating code assignment and the least-squares scale
  s = ⟨w, l⟩ / ⟨l, l⟩ (Lloyd iterations, which never increase the error).
* ``mse_clip=true`` (legacy, kept to reproduce earlier numbers): the best of 36 clipping ratios
  0.3 … 1 of max|w| on the symmetric grid, no refinement.

Biases are under 1 % of the parameters, but errors in them shift every output of a layer.
``bias_bits`` 2–8 (default 8) stores a quantized layer's bias as codes with a power-of-two
scale, 32 as float32 (the paper's), and ``stats_bits=16`` (the default; 32: float32) stores the
feature standardisation (mean and standard deviation) in 16 bits per value (``ser.dsp.storage``;
``NARROW_STATISTICS``): a 1-bit MLP's file is then mostly weights. Every quantized model is
scored with its biases and statistics as they will be stored; full precision keeps float32.
Sizes count biases at ``bias_bits`` (plus a 32-bit scale) and every weight scale at 32 bits.
``bias_correction`` (in ``QuantizedWeights``) folds the mean output shift that quantization
causes back into the bias before it is stored:
b ← b + (W − W_q)·E[x], E[x] the layer's mean input on the training data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ser.dsp import grid as grids
from ser.dsp import storage
from ser.errors import SERError
from ser.quant.config import DEFAULTS, QuantizerConfig
from ser.quant.evaluation import batch_rows

QUANTIZABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CLIP_RATIOS = torch.linspace(0.3, 1.0, 36)
_MSE_RATIOS = torch.linspace(0.05, 1.0, 40)
_LLOYD_STEPS = 8
_FOLDED = (nn.modules.batchnorm._BatchNorm,)  # running statistics a deployed model folds away


@dataclass(frozen=True)
class QuantizedTensor:
    """One quantized weight: integer codes, scales, and the dequantized float weight."""

    codes: torch.Tensor  # uint8, the weight's shape
    scales: torch.Tensor  # float32, one per group (layer or output channel)
    bits: int
    grid: str
    weight: torch.Tensor  # levels(codes) · scales, the weight's shape and dtype


def _channels(weight: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """The weight as (groups, values): one group per output channel, or the whole layer."""
    return weight.reshape(weight.shape[0], -1) if per_channel else weight.reshape(1, -1)


def _levels(bits: int, grid: str, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(grids.levels(bits, grid), dtype=like.dtype, device=like.device)


def _codes(w: torch.Tensor, scale: torch.Tensor, bits: int, grid: str) -> torch.Tensor:
    """Nearest-level codes (int64) of grouped weights ``w`` (G, n) at scales (G, 1); see grid.quantize_codes."""
    x = w / scale.clamp_min(torch.finfo(w.dtype).tiny)
    top = grids.n_codes(bits, grid) - 1
    if grid == "full":
        k = torch.floor(x + 2**bits / 2)
    elif bits == 1:
        k = (x >= 0).to(w.dtype)
    else:
        k = x.round() + (2 ** (bits - 1) - 1)
    return k.clamp(0, top).long()


def _uniform(w: torch.Tensor, bits: int, max_abs: torch.Tensor) -> torch.Tensor:
    """The paper's symmetric quantizer with max|w| (or a clipped range) on the top level."""
    top = 2 ** (bits - 1) - 1
    scale = (max_abs / top).clamp_min(torch.finfo(w.dtype).tiny)
    return (w / scale).round().clamp(-top, top) * scale


def _mse_scale(w: torch.Tensor, bits: int, grid: str) -> torch.Tensor:
    """Per-group scale (G, 1) minimising ‖w − level(code)·s‖²: ratio sweep, then Lloyd refinement."""
    if grid == "symmetric" and bits == 1:
        return w.abs().mean(dim=1, keepdim=True)  # exact optimum
    lv = _levels(bits, grid, w)
    top = float(lv[-1])
    max_abs = w.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
    ratios = _MSE_RATIOS.to(w)[:, None, None]
    scales = ratios * max_abs / top  # (R, G, 1)
    errors = torch.stack([(lv[_codes(w, s, bits, grid)] * s - w).square().sum(dim=1) for s in scales])  # (R, G)
    best_err, best = errors.min(dim=0)
    scale = scales[best, torch.arange(w.shape[0])]  # (G, 1)
    for _ in range(_LLOYD_STEPS):
        l = lv[_codes(w, scale, bits, grid)]
        new = ((w * l).sum(dim=1, keepdim=True) / l.square().sum(dim=1, keepdim=True).clamp_min(1e-30)).clamp_min(1e-30)
        err = (lv[_codes(w, new, bits, grid)] * new - w).square().sum(dim=1)
        better = err < best_err
        if not bool(better.any()):
            break
        scale = torch.where(better[:, None], new, scale)
        best_err = torch.minimum(err, best_err)
    return scale


def quantize_tensor(
    weight: torch.Tensor, bits: int, config: QuantizerConfig = DEFAULTS.quantizer, scales: torch.Tensor | None = None
) -> QuantizedTensor:
    """Codes, scales and dequantized weight of ``weight`` at ``bits`` (``scales`` given: keep them)."""
    grids.check_bits(bits)
    w = _channels(weight.detach(), config.per_channel)
    grid = config.grid
    if scales is not None:
        scale = scales.to(w).reshape(-1, 1)
    elif config.mse_clip and grid == "symmetric" and bits >= 2:  # legacy path, exactly as before
        max_abs = w.abs().amax(dim=1, keepdim=True)
        candidates = torch.stack([_uniform(w, bits, r * max_abs) for r in _CLIP_RATIOS])
        best = (candidates - w).square().sum(dim=2).argmin(dim=0)
        max_abs = _CLIP_RATIOS.to(w.device)[best][:, None] * max_abs
        scale = max_abs / (2 ** (bits - 1) - 1)
        q = _uniform(w, bits, max_abs)
        codes = _codes(w, scale, bits, grid)
        return QuantizedTensor(
            codes.to(torch.uint8).reshape(weight.shape), scale.flatten(), bits, grid, q.reshape(weight.shape)
        )
    elif grid == "symmetric" and bits == 1:
        scale = w.abs().mean(dim=1, keepdim=True)
    elif config.scale == "mse" or config.mse_clip:
        scale = _mse_scale(w, bits, grid)
    else:  # max|w| onto the top level
        scale = w.abs().amax(dim=1, keepdim=True) / grids.max_level(bits, grid)
    codes = _codes(w, scale, bits, grid)
    if grid == "symmetric" and bits == 1:
        q = torch.where(w >= 0, scale, -scale)
    elif grid == "symmetric" and scales is None and config.scale == "max" and not config.mse_clip:
        q = _uniform(w, bits, w.abs().amax(dim=1, keepdim=True))  # the paper's arithmetic, bit for bit
    else:
        q = _levels(bits, grid, w)[codes] * scale
    return QuantizedTensor(
        codes.to(torch.uint8).reshape(weight.shape), scale.flatten(), bits, grid, q.reshape(weight.shape)
    )


def store_bias(bias: torch.Tensor, config: QuantizerConfig) -> torch.Tensor:
    """A quantized layer's bias as the file stores it (``config.bias_bits``), same dtype and device."""
    if config.bias_bits == storage.FLOAT_BITS:
        return bias
    stored = storage.round_bias(bias.detach().cpu().double().numpy(), config.bias_bits)
    return torch.from_numpy(stored).to(bias)


def statistics(model: nn.Module) -> dict[str, torch.Tensor]:
    """The float buffers a deployed model keeps outside its layers (feature standardisation, speaker
    population statistics), by name: every floating buffer except batch norm's, which export folds away."""
    folded = {id(b) for m in model.modules() if isinstance(m, _FOLDED) for b in m.buffers(recurse=False)}
    return {name: b for name, b in model.named_buffers() if b.is_floating_point() and id(b) not in folded}


NARROW_STATISTICS = storage.NARROW_STATISTICS  # the statistics stored at ``stats_bits``


def _pairs(names) -> dict[str, str]:
    """{mean buffer: std buffer} of the ``NARROW_STATISTICS`` the model has."""
    return {mean: std for mean, std in NARROW_STATISTICS.items() if mean in names and std in names}


def store_statistics(values: Mapping[str, torch.Tensor], config: QuantizerConfig) -> dict[str, torch.Tensor]:
    """``values`` (tensors by name: a model's ``statistics``, or a whole state dict) with the
    standardisation's mean/std pair as the file of a quantized model stores it (``config.stats_bits``,
    ``ser.dsp.storage``); every other entry is passed through as it is."""
    out = dict(values)
    if config.stats_bits == storage.FLOAT_BITS:
        return out
    for mean, std in _pairs(values).items():
        try:
            m, s = storage.round_statistics(values[mean].cpu().numpy(), values[std].cpu().numpy(), config.stats_bits)
        except ValueError as exc:
            raise SERError(f"quant.quantizer.stats_bits={config.stats_bits}: {mean}/{std}: {exc}") from None
        out[mean], out[std] = torch.from_numpy(m).to(values[mean]), torch.from_numpy(s).to(values[std])
    return out


def stored_statistics(model: nn.Module, config: QuantizerConfig) -> dict[str, torch.Tensor]:
    """The model's ``statistics`` as the file of a quantized model stores them: the standardisation
    at ``config.stats_bits``, any other buffer at 32."""
    return store_statistics({name: b.detach() for name, b in statistics(model).items()}, config)


def statistics_bytes(model: nn.Module, config: QuantizerConfig) -> int:
    """Bytes the file spends on the model's ``statistics`` at ``config.stats_bits``."""
    values = statistics(model)
    paired = {name for pair in _pairs(values).items() for name in pair}
    narrow = sum(b.numel() for name, b in values.items() if name in paired)
    wide = sum(b.numel() for name, b in values.items() if name not in paired)
    return storage.statistics_bits(narrow, wide, config.stats_bits) // 8


def quantize(
    weight: torch.Tensor, bits: int, config: QuantizerConfig = DEFAULTS.quantizer
) -> tuple[torch.Tensor, torch.Tensor]:
    """The quantized weight (same shape) and its scales (one per group: α for symmetric 1 bit, the step otherwise)."""
    t = quantize_tensor(weight, bits, config)
    return t.weight, t.scales


def fake_quantize(weight: torch.Tensor, bits: int, grid: str, scales: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """Differentiable-by-STE quantization at fixed scales (for recovery training)."""
    w = _channels(weight, per_channel)
    s = scales.to(w).reshape(-1, 1)
    q = _levels(bits, grid, w)[_codes(w.detach(), s, bits, grid)] * s
    return weight + (q.reshape(weight.shape) - weight).detach()


def quantize_(
    module: nn.Module,
    allocation: Mapping[str, int],
    config: QuantizerConfig = DEFAULTS.quantizer,
    scales: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, QuantizedTensor]:
    """Quantize ``module``'s layers in place, each to its width in ``allocation`` ({layer name: bits},
    the per-layer configuration, as torchao's ``quantize_`` takes a config per module name);
    layers not named are left alone. ``scales`` keeps given scales per layer (recovery trains at
    fixed scales). The named layers' biases and the module's statistics become what the file
    stores (``bias_bits``, ``stats_bits``). Returns each layer's codes, scales and dequantized weight."""
    layers = quantizable_layers(module)
    unknown = sorted(set(allocation) - set(layers))
    if unknown:
        raise SERError(f"no quantizable layer named {', '.join(unknown)}; the model has {', '.join(layers)}")
    out = {}
    with torch.no_grad():
        for name, bits in allocation.items():
            tensor = quantize_tensor(layers[name].weight, bits, config, scales=(scales or {}).get(name))
            layers[name].weight.copy_(tensor.weight)
            if getattr(layers[name], "bias", None) is not None:
                layers[name].bias.copy_(store_bias(layers[name].bias, config))
            out[name] = tensor
        if allocation:
            stored = stored_statistics(module, config)
            for name, buffer in statistics(module).items():
                buffer.copy_(stored[name])
    return out


def quantizable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every Linear/Conv layer of ``model`` by qualified name, in definition order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, QUANTIZABLE)}


def stored_bits(weight: torch.Tensor, bias: torch.Tensor | None, bits: int, config: QuantizerConfig) -> int:
    """Bits needed to store one layer: weights at ``bits`` (32 = unquantized) and their scales at 32; the
    bias of a quantized layer at ``config.bias_bits`` (plus its 32-bit scale below 32), else at 32."""
    if bits >= 32:
        return (weight.numel() + (bias.numel() if bias is not None else 0)) * 32
    scales = weight.shape[0] if config.per_channel else 1
    return storage.layer_bits(weight.numel(), bits, scales, None if bias is None else bias.numel(), config.bias_bits)


def model_size_kb(model: nn.Module, bits: dict[str, int], config: QuantizerConfig = DEFAULTS.quantizer) -> float:
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


# What an exported model file holds beyond the weights and buffers: its JSON header (feature
# settings, class names, layer and section tables) and checksum, measured at 1.5-2.05 KB for the
# models here (the paper's MLP with narrow biases and statistics: 2.03 KB).
FILE_OVERHEAD_KB = 2.1


def file_size_kb(model: nn.Module, bits: dict[str, int], config: QuantizerConfig = DEFAULTS.quantizer) -> float:
    """What a deployed model file needs, in KB: ``model_size_kb`` plus the buffers the model
    computes with outside its layers (``statistics``: feature standardisation, speaker population)
    at ``config.stats_bits`` (``statistics_bytes``) plus ``FILE_OVERHEAD_KB``. Size budgets
    (``quant.search.target_kb``) are held to this, because edge users budget the file, not the weights."""
    return model_size_kb(model, bits, config) + statistics_bytes(model, config) / 1000 + FILE_OVERHEAD_KB


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


@torch.no_grad()
def mean_inputs(model: nn.Module, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each Linear/Conv layer's mean input on ``inputs`` (full precision, eval mode): per feature or channel."""
    layers = quantizable_layers(model)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name):
        def record(_module, args, _output):
            x = args[0].detach()
            x = x.reshape(-1, x.shape[-1]) if x.ndim == 2 else x.transpose(0, 1).reshape(x.shape[1], -1).T
            sums[name] = sums.get(name, 0) + x.double().sum(dim=0)
            counts[name] = counts.get(name, 0) + x.shape[0]

        return record

    handles = [layer.register_forward_hook(hook(name)) for name, layer in layers.items()]
    was_training = model.training
    model.eval()
    try:
        rows = batch_rows(inputs)
        for i in range(0, len(inputs), rows):
            model(inputs[i : i + rows])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {name: (sums[name] / counts[name]).float() for name in sums}


def output_shift(weight_delta: torch.Tensor, mean_input: torch.Tensor) -> torch.Tensor:
    """(W − W_q)·E[x] per output: for convolutions the kernel's taps share their channel's mean."""
    delta = weight_delta.reshape(weight_delta.shape[0], weight_delta.shape[1], -1).sum(dim=2)
    return delta @ mean_input.to(delta)


class QuantizedWeights:
    """Swaps quantized weights (and bias-corrected biases) into a model and back, without copying it.

    Quantized tensors are computed once per (layer, bits) and reused, which is what makes
    hundreds of search candidates cost seconds. With ``input_means`` (``mean_inputs`` on the
    training data), each quantized layer's bias becomes b + (W − W_q)·E[x].
    """

    def __init__(
        self,
        model: nn.Module,
        config: QuantizerConfig = DEFAULTS.quantizer,
        input_means: dict[str, torch.Tensor] | None = None,
    ):
        self.model = model
        self.config = config
        self.layers = quantizable_layers(model)
        self.original = {name: layer.weight.detach().clone() for name, layer in self.layers.items()}
        self.original_bias = {
            name: layer.bias.detach().clone()
            for name, layer in self.layers.items()
            if getattr(layer, "bias", None) is not None
        }
        self.input_means = input_means or {}
        self.statistics = statistics(model)  # the buffers themselves: found once, not on every apply
        self.original_statistics = {name: b.detach().clone() for name, b in self.statistics.items()}
        self.stored_statistics = {name: b.clone() for name, b in stored_statistics(model, config).items()}
        self._cache: dict[tuple[str, int], QuantizedTensor] = {}
        self._biases: dict[tuple[str, int], torch.Tensor] = {}  # (layer, bits) -> the bias as stored

    def tensor(self, name: str, bits: int) -> QuantizedTensor:
        key = (name, bits)
        if key not in self._cache:
            self._cache[key] = quantize_tensor(self.original[name], bits, self.config)
        return self._cache[key]

    def quantized(self, name: str, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.tensor(name, bits)
        return t.weight, t.scales

    def bias(self, name: str, bits: int | None) -> torch.Tensor | None:
        """The layer's bias at ``bits``: corrected for the quantization's mean shift when input means are
        known, and as the file stores it (``bias_bits``)."""
        if name not in self.original_bias:
            return None
        b = self.original_bias[name]
        if bits is None or bits >= 32:
            return b
        key = (name, bits)
        if key not in self._biases:
            if name in self.input_means:
                b = b + output_shift(self.original[name] - self.tensor(name, bits).weight, self.input_means[name])
            self._biases[key] = store_bias(b, self.config)
        return self._biases[key]

    @torch.no_grad()
    def apply(self, bits: dict[str, int]) -> None:
        """Set each layer to its bit-width in ``bits``; layers not named go back to full precision. A model
        with any quantized layer holds its statistics as stored (``stats_bits``), full precision the originals."""
        for name, layer in self.layers.items():
            b = bits.get(name)
            layer.weight.copy_(self.original[name] if b is None or b >= 32 else self.tensor(name, b).weight)
            if name in self.original_bias:
                layer.bias.copy_(self.bias(name, b))
        self.hold_statistics(stored=any(b is not None and b < 32 for name, b in bits.items() if name in self.layers))

    @torch.no_grad()
    def hold_statistics(self, stored: bool) -> None:
        """Put the statistics as the file stores them (``stored``) or the originals into the model."""
        for name, buffer in self.statistics.items():
            buffer.copy_(self.stored_statistics[name] if stored else self.original_statistics[name])

    def restore(self) -> None:
        self.apply({})
