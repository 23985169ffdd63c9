"""Turn a training run into a deployable model: a bit-packed ``.serq`` file and/or ONNX.

Without ``--bits`` the exported model is the run's LAQ model exactly as the callback evaluated
and saved it (``<run>/quantized.pt``, format ``ser-quant-v2``): each layer's bits, grid,
integer codes, scales and shipped (recovered, possibly bias-corrected) bias, and the rest of
the state (standardisation, population statistics). Codes are copied, never recomputed from
float weights, and every weight the ``.serq`` file and the ONNX graph hold is
``ser.dsp.grid.dequantize`` of them, so the deployed model predicts what ``results.json``'s
``laq`` row measured.

Light-SERNet runs export as a graph of operations (``ser.runtime.model``): each batch norm is
folded into the convolution before it as a per-output-channel scale and shift applied to the
output of the convolution with the *dequantized* weight (the quantized codes stay as LAQ chose
them), so the deployed network computes what the fake-quantized torch model computes.

``--bits N`` quantizes the best checkpoint at one width for every layer, with the run's
quantizer settings (``quantized.pt``'s ``quantizer``, else the ``quant`` section of
``.hydra/config.yaml``) through ``ser.quant.quantizer.quantize_tensor``. Runs without a
``ser-quant-v2`` artifact (``quant=none``/``fixed``, or runs from before it) fall back to that
path with results.json's LAQ allocation, as before, unless their LAQ model was recovered or
bias-corrected (then only ``quantized.pt`` holds it, and export refuses to guess).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from ser.errors import SERError
from ser.models.mlp import MLP
from ser.dsp import grid as grids
from ser.dsp import storage
from ser.dsp.feature_config import FeatureConfig
from ser.quant.config import recorded_quantizer
from ser.quant.quantizer import NARROW_STATISTICS, QuantizerConfig, quantizable_layers, quantize_tensor, store_statistics
from ser.results import FILENAME, RunResults
from ser.runtime import model_file
from ser.runtime.model_file import Section

log = logging.getLogger(__name__)

MLP_TARGET = "ser.models.mlp.MLP"
LIGHTSERNET_TARGET = "ser.models.lightsernet.LightSERNet"
TARGETS = (MLP_TARGET, LIGHTSERNET_TARGET)
ARTIFACT = "quantized.pt"
ARTIFACT_FORMAT = "ser-quant-v2"  # ser.quant.callback.FORMAT (not imported: that pulls in Lightning)
LEGACY_FORMATS = ("ser-fakequant-v1",)  # weights only, no codes: treated as absent


@dataclass
class ExportLayer:
    """One Linear layer as shipped: integer codes on a grid, their scales, and the bias (float32 values;
    stored as codes at ``bias_bits`` below 32, ``ser.dsp.storage``)."""

    name: str
    bits: int
    grid: str
    codes: np.ndarray  # uint8, the weight's shape
    scales: np.ndarray  # float32, 1 or one per output row
    bias: np.ndarray | None
    bias_bits: int = storage.FLOAT_BITS

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.codes.shape)

    def weight(self) -> np.ndarray:
        """The dequantized weight (float32): what the runtime and the ONNX graph compute with."""
        return grids.dequantize(self.codes, self.scales, self.bits, self.grid)

    def stored_bits(self) -> int:
        bias = 0 if self.bias is None else self.bias.size * self.bias_bits + (32 if self.bias_bits < 32 else 0)
        return self.codes.size * self.bits + 32 * self.scales.size + bias

    def bias_section(self) -> Section:
        if self.bias_bits == storage.FLOAT_BITS:
            return Section(f"{self.name}.bias", self.bias)
        codes, scale = storage.encode_bias(self.bias, self.bias_bits)
        return Section(f"{self.name}.bias", codes, self.bias_bits, scale=scale)


@dataclass
class ExportGraph:
    """A network other than the MLP as the ``.serq`` header's ``network``: ops on named tensors, and the
    float32 per-channel arrays (folded batch norm, biases) they name."""

    input: list[int]  # one utterance's features: (channels, frames)
    ops: list[dict]
    arrays: dict[str, np.ndarray]
    output: str = "logits"

    def header(self) -> dict:
        return {"kind": "graph", "input": list(self.input), "output": self.output, "ops": self.ops}


@dataclass
class ExportSource:
    """A finished run, ready to export: its metadata, statistics and quantized layers.

    ``origin`` says where the layers come from: ``"quantized.pt"`` (the run's LAQ artifact)
    or ``"checkpoint"`` (quantized here from the checkpoint's weights).
    """

    run_dir: Path
    checkpoint: Path | None
    state: dict[str, torch.Tensor]  # the model's state: statistics (feature_*, population_*) and net.*
    classes: list[str]
    features: dict
    layers: dict[str, ExportLayer]  # in network order
    quantizer: QuantizerConfig
    normalize: str = "global"  # "speaker": inputs are z-scored per speaker first (data.normalize=speaker)
    prior_weight: float = 0.0  # speaker only: pseudo-recordings of the population in a speaker's estimate
    origin: str = "checkpoint"
    graph: ExportGraph | None = None  # None: the MLP of ``layers``
    network: str = MLP_TARGET

    @property
    def layer_names(self) -> list[str]:
        return list(self.layers)

    @property
    def bits(self) -> dict[str, int]:
        return {name: layer.bits for name, layer in self.layers.items()}

    @classmethod
    def load(cls, source: str | Path, bits: int | None = None) -> "ExportSource":
        source = Path(source)
        if source.is_file():
            run_dir, checkpoint = source.parent.parent, source
        else:
            run_dir, checkpoint = source, source / "checkpoints" / "best.ckpt"
        config_file = run_dir / ".hydra" / "config.yaml"
        results = _results(run_dir)
        artifact = _artifact(run_dir)
        use_artifact = artifact is not None and bits is None
        if use_artifact and source.is_file() and not _is_best(checkpoint, run_dir, results):
            raise SERError(f"{source}: the run's LAQ model ({run_dir / ARTIFACT}) is quantized from its best checkpoint; "
                           "pass the run directory, or --bits N to quantize this checkpoint")
        metadata = (artifact or {}).get("metadata") or {}
        standalone = use_artifact and bool(metadata.get("net_config"))  # quantized.pt describes itself
        if not standalone and (not config_file.is_file() or not (checkpoint.is_file() or use_artifact)):
            raise SERError(f"{source}: not a training run (expected {checkpoint} and {config_file}); pass a run "
                           "directory written by train.py or its checkpoints/best.ckpt")
        cfg = OmegaConf.load(config_file) if config_file.is_file() else _config_of(artifact)
        target = cfg.model.net.get("_target_")
        if target not in TARGETS:
            raise SERError(f"{source}: export supports the MLP ({MLP_TARGET}) and Light-SERNet ({LIGHTSERNET_TARGET}); "
                           f"this run used {target}")
        if bits is not None and not 1 <= bits <= 8:
            raise SERError(f"bit-widths must be 1..8, got [{bits}]")

        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True) if checkpoint.is_file() else None
        if use_artifact:
            state = {k: v.detach().cpu() for k, v in artifact["state_dict"].items()}
            origin = ARTIFACT
        else:
            state = ckpt["state_dict"]
            origin = "checkpoint"
        # Canonical order: the run's YAML and the artifact's metadata list the same settings differently.
        features = FeatureConfig(**OmegaConf.to_container(cfg.data.features, resolve=True)).to_dict()
        if ckpt is None and standalone:  # no checkpoint: the artifact's own metadata has the hyper-parameters
            classes, normalize, prior_weight = _metadata({"hyper_parameters": metadata}, run_dir / ARTIFACT, state,
                                                         results, cfg, run_dir)
        else:
            classes, normalize, prior_weight = _metadata(ckpt, checkpoint, state, results, cfg, run_dir)
        net = None
        if target == MLP_TARGET:
            names = _layer_names(state)
        else:
            net = _network(cfg, ckpt, artifact, features, classes, state, run_dir)
            names = [f"net.{name}" for name in quantizable_layers(net)]
        if artifact is not None:
            quantizer = _config(artifact.get("quantizer") or {})
        else:
            quantizer = _config(OmegaConf.to_container(cfg.quant, resolve=False) if cfg.get("quant") else {})

        if use_artifact:
            layers = _artifact_layers(artifact, names, run_dir, quantizer)
            laq = results.laq if results is not None else None
            if laq and laq.bits != {n: l.bits for n, l in layers.items()}:
                raise SERError(f"{run_dir}: {ARTIFACT} and results.json disagree on the LAQ bits; the run is "
                               "inconsistent, train it again")
        else:
            if bits is not None:
                allocation = {name: int(bits) for name in names}
            else:
                laq = results.laq if results is not None else None
                if not laq:
                    raise SERError(f"{run_dir}: has no LAQ result (trained with quant=none or fixed?); pass --bits N for "
                                   "a fixed bit-width")
                if laq.recovery or (laq.quantizer is not None and laq.quantizer.bias_correction):
                    raise SERError(f"{run_dir}: the LAQ model was fine-tuned (recovery) or bias-corrected after "
                                   f"quantization and only {ARTIFACT} holds it, which is missing or from an older ser; "
                                   "train the run again, or pass --bits N for a fixed bit-width")
                allocation = laq.bits
                if set(allocation) != set(names):
                    raise SERError(f"{run_dir}: results.json's LAQ layers {sorted(allocation)} are not the network's "
                                   f"{names}")
            if not 1 <= min(allocation.values()) <= max(allocation.values()) <= 8:
                raise SERError(f"bit-widths must be 1..8, got {sorted(set(allocation.values()))}")
            if bits is not None and artifact is not None and (artifact.get("quantizer") or {}).get("bias_correction"):
                log.warning("%s: the run's quantizer corrects biases with training statistics; a --bits export keeps "
                            "the checkpoint's biases", run_dir)
            layers = {name: _quantize(name, state, allocation[name], quantizer) for name in names}

        state = _stored_statistics(state, quantizer, run_dir, stored=use_artifact)
        graph = None if net is None else _lightsernet_graph(net, layers, features)
        return cls(run_dir, checkpoint if checkpoint.is_file() else None, state, classes, features, layers, quantizer,
                   normalize, prior_weight, origin, graph, target)


def _results(run_dir: Path) -> RunResults | None:
    path = run_dir / FILENAME
    return RunResults.load(path) if path.is_file() else None


def _artifact(run_dir: Path) -> dict | None:
    """The run's ``quantized.pt`` if it is a ``ser-quant-v2`` artifact; older formats count as absent."""
    path = run_dir / ARTIFACT
    if not path.is_file():
        return None
    try:
        artifact = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same error to the user
        raise SERError(f"{path}: cannot read the quantized model ({exc.__class__.__name__}); train the run again") from exc
    fmt = artifact.get("format") if isinstance(artifact, dict) else None
    if fmt == ARTIFACT_FORMAT:
        return artifact
    if fmt is None or fmt in LEGACY_FORMATS:
        return None
    raise SERError(f"{path}: format {fmt!r}, this ser exports {ARTIFACT_FORMAT}; upgrade ser")


def _is_best(checkpoint: Path, run_dir: Path, results: RunResults | None) -> bool:
    best = [run_dir / "checkpoints" / "best.ckpt"]
    if results is not None and results.best_checkpoint:
        best.append(Path(results.best_checkpoint))
    return any(b.is_file() and b.resolve() == checkpoint.resolve() for b in best)


def _layer_names(state: dict[str, torch.Tensor]) -> list[str]:
    return sorted({k[: -len(".weight")] for k in state if k.startswith("net.") and k.endswith(".weight")},
                  key=lambda n: int(n.split(".")[1]))


def _network(cfg, ckpt: dict | None, artifact: dict | None, features: dict, classes: list[str],
             state: dict[str, torch.Tensor], run_dir: Path) -> nn.Module:
    """The run's network (``model.net`` of its config) holding ``state``'s weights, in eval mode."""
    import hydra


    n_features = (ckpt or {}).get("hyper_parameters", {}).get("n_features") \
        or ((artifact or {}).get("metadata") or {}).get("n_features") or list(FeatureConfig(**features).shape)
    try:
        net = hydra.utils.instantiate(cfg.model.net)(n_features, len(classes))
        net.load_state_dict({k[len("net."):]: v for k, v in state.items() if k.startswith("net.")})
    except (RuntimeError, TypeError, ValueError, SERError) as exc:
        raise SERError(f"{run_dir}: the network of its config does not hold its weights "
                       f"({str(exc).splitlines()[0]}); train the run again") from exc
    return net.eval()


def _fold(bias: np.ndarray | None, bn: nn.BatchNorm2d | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per-output-channel (scale, shift) with conv(x, W_q)·scale + shift = BN(conv(x, W_q) + b) (eval mode),
    ``b`` the convolution's shipped bias.

    scale = γ/√(σ² + ε), shift = β + (b − μ)·scale, in float64 then float32; without a batch
    norm, (None, b). The quantized weight is left alone: the scale multiplies the output.
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


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


class _GraphBuilder:
    """Turns a module tree of Conv2d/BatchNorm2d/ReLU/AvgPool2d/Dropout into ops on named tensors."""

    def __init__(self, layers: dict[str, ExportLayer]):
        self.layers, self.ops, self.arrays = layers, [], {}

    def add(self, op: str, inputs: list[str], out: str, **fields) -> str:
        """One op; ``in`` is left out when it is the previous op's output alone, and ``out`` is dropped
        afterwards (``compact``) where no later op names it."""
        entry = {"op": op, **({} if self.ops and inputs == [self.ops[-1]["out"]] else {"in": inputs}), "out": out, **fields}
        self.ops.append(entry)
        return out

    def compact(self) -> list[dict]:
        named = {name for op in self.ops for name in op.get("in", [])}
        return [op if op["out"] in named or i == len(self.ops) - 1 else {k: v for k, v in op.items() if k != "out"}
                for i, op in enumerate(self.ops)]

    def sequence(self, module: nn.Module, x: str, prefix: str) -> str:
        children = list(module.named_children()) if isinstance(module, nn.Sequential) else [("", module)]
        i = 0
        while i < len(children):
            name, child = children[i]
            full = f"{prefix}.{name}" if name else prefix
            if isinstance(child, nn.Sequential):
                x = self.sequence(child, x, full)
            elif isinstance(child, nn.Conv2d):
                bn = children[i + 1][1] if i + 1 < len(children) and isinstance(children[i + 1][1], nn.BatchNorm2d) else None
                x = self.conv(child, bn, x, full, f"{prefix}.{children[i + 1][0]}" if bn is not None else None)
                i += bn is not None
            elif isinstance(child, nn.ReLU):
                x = self.add("relu", [x], f"{full}.relu")
            elif isinstance(child, nn.AvgPool2d):
                kernel, stride, padding = (_pair(v) for v in (child.kernel_size, child.stride or child.kernel_size, child.padding))
                if padding != (0, 0) or child.divisor_override:
                    raise SERError(f"{full}: average pooling with padding or a divisor override cannot be exported")
                x = self.add("avgpool2d", [x], full, kernel=list(kernel), stride=list(stride), ceil_mode=bool(child.ceil_mode))
            elif isinstance(child, (nn.Dropout, nn.Identity)):
                pass  # inference: nothing
            else:
                raise SERError(f"{full}: {type(child).__name__} cannot be exported")
            i += 1
        return x

    def conv(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None, x: str, name: str, bn_name: str | None) -> str:
        if name not in self.layers:
            raise SERError(f"{name}: a convolution that was not quantized cannot be exported")
        kernel = tuple(conv.kernel_size)
        same = conv.padding == "same" or tuple(conv.padding) == tuple((k - 1) // 2 for k in kernel) and all(k % 2 for k in kernel)
        if (tuple(conv.stride) != (1, 1) or tuple(conv.dilation) != (1, 1) or conv.groups != 1 or not same
                or conv.padding_mode != "zeros"):
            raise SERError(f"{name}: only stride-1, undilated, ungrouped convolutions with 'same' zero padding export")
        scale, shift = _fold(self.layers[name].bias, bn)
        fields = {"layer": name, "kernel": list(kernel), "padding": "same"}  # stride 1
        where = bn_name or name
        if scale is not None:
            fields["scale"] = f"{where}.scale"
            self.arrays[fields["scale"]] = scale
        if shift is not None:
            fields["shift"] = f"{where}.shift" if bn is not None else f"{name}.bias"
            self.arrays[fields["shift"]] = shift
        return self.add("conv2d", [x], name, **fields)

    def linear(self, name: str, x: str, out: str) -> str:
        layer = self.layers[name]
        fields = {"layer": name}
        if layer.bias is not None:
            fields["bias"] = f"{name}.bias"
            self.arrays[fields["bias"]] = layer.bias.astype(np.float32)
        return self.add("linear", [x], out, **fields)


def _lightsernet_graph(net: nn.Module, layers: dict[str, ExportLayer], features: dict) -> ExportGraph:
    """Light-SERNet (``ser.models.lightsernet``) as ops: the (coefficients, frames) input turned into a
    (frames, coefficients) image, three parallel paths, their concatenation, the blocks, global average
    pooling and the classifier (dropout is the identity at inference)."""

    g = _GraphBuilder(layers)
    image = g.add("unsqueeze", [g.add("transpose", ["input"], "frames", perm=[0, 2, 1])], "image", axis=1)
    paths = [g.sequence(path, image, f"net.paths.{i}") for i, path in enumerate(net.paths)]
    x = g.sequence(net.blocks, g.add("concat", paths, "net.paths", axis=1), "net.blocks")
    x = g.add("mean", [x], "net.pool", axes=[2, 3])
    g.linear("net.classifier", x, "logits")
    used = {op["layer"] for op in g.ops if "layer" in op}
    if used != set(layers):
        raise SERError(f"the exported graph uses layers {sorted(used)}, the network quantized {sorted(layers)}")
    return ExportGraph(list(FeatureConfig(**features).shape), g.compact(), g.arrays)


def _config(quant: dict) -> QuantizerConfig:
    """The quantizer of a run (an artifact's ``quantizer`` or a config's ``quant`` section): ``recorded_quantizer``."""
    try:
        return recorded_quantizer(quant)
    except ValueError as exc:
        raise SERError(str(exc)) from exc


STATISTICS = ("feature_mean", "feature_std", "population_mean", "population_std")


def _stored_statistics(state: dict[str, torch.Tensor], config: QuantizerConfig, run_dir: Path,
                       stored: bool) -> dict[str, torch.Tensor]:
    """``state`` with its statistics as the file stores them (``stats_bits``): the rounding the fixed-width
    rows measured, for a ``--bits`` export of the checkpoint; a LAQ artifact's (``stored``) must be so
    already, as the quantizer scored them."""
    try:
        out = store_statistics(state, config)
    except SERError as exc:
        raise SERError(f"{run_dir}: {exc}") from None
    changed = [k for k in out if out[k] is not state[k] and not torch.equal(out[k], state[k])]
    if stored and changed:
        raise SERError(f"{run_dir / ARTIFACT}: its {'/'.join(changed)} are not stored at {config.stats_bits} bits as "
                       "its quantizer says; train the run again")
    return out


def _quantize(name: str, state: dict[str, torch.Tensor], bits: int, config: QuantizerConfig) -> ExportLayer:
    t = quantize_tensor(state[f"{name}.weight"].float(), bits, config)
    bias = state.get(f"{name}.bias")
    return ExportLayer(name, bits, t.grid, t.codes.numpy().astype(np.uint8), t.scales.float().numpy(),
                       None if bias is None else storage.round_bias(bias.double().numpy(), config.bias_bits),
                       config.bias_bits)


def _artifact_layers(artifact: dict, names: list[str], run_dir: Path, config: QuantizerConfig) -> dict[str, ExportLayer]:
    """The artifact's layers, checked against the network and against their own dequantized weights."""
    where = run_dir / ARTIFACT
    stored = artifact.get("layers") or {}
    if set(stored) != set(names):
        raise SERError(f"{where}: quantized layers {sorted(stored)} are not the network's {names}; train the run again")
    state = artifact["state_dict"]
    layers = {}
    for name in names:
        entry = stored[name]
        bits, grid = int(entry["bits"]), str(entry.get("grid", "symmetric"))
        if grid not in grids.GRIDS or not grids.MIN_BITS <= bits <= grids.MAX_BITS:
            raise SERError(f"{where}: layer {name} has grid {grid!r} at {bits} bits, which this ser cannot export; upgrade ser")
        codes = entry["codes"].numpy()
        scales = entry["scales"].float().numpy().reshape(-1)
        shape = tuple(state[f"{name}.weight"].shape)
        if codes.dtype != np.uint8 or codes.shape != shape or tuple(entry.get("shape", shape)) != shape:
            raise SERError(f"{where}: layer {name}'s codes ({codes.dtype}, {codes.shape}) do not fit its weight {shape}")
        if scales.size not in (1, shape[0]):
            raise SERError(f"{where}: layer {name} has {scales.size} scales for {shape[0]} output rows")
        if codes.size and int(codes.max()) >= grids.n_codes(bits, grid):
            raise SERError(f"{where}: layer {name} has a code outside its {bits}-bit {grid} grid")
        bias = entry.get("bias")
        layer = ExportLayer(name, bits, grid, codes, scales, None if bias is None else bias.detach().float().numpy(),
                            config.bias_bits)
        if not np.allclose(layer.weight(), entry["weight"].float().numpy(), rtol=1e-6, atol=0.0):
            raise SERError(f"{where}: layer {name}'s codes and scales do not give its stored weight; train the run again")
        if bias is not None and not np.array_equal(storage.round_bias(layer.bias, config.bias_bits), layer.bias):
            raise SERError(f"{where}: layer {name}'s bias is not on its {config.bias_bits}-bit grid; train the run again")
        layers[name] = layer
    return layers


def _config_of(artifact: dict):
    """The parts of a run's config that export reads, from a self-describing quantized.pt."""
    metadata = artifact["metadata"]
    return OmegaConf.create({"model": {"net": metadata["net_config"]},
                             "data": {"features": metadata["features"],
                                      "speaker_prior_weight": metadata.get("speaker_prior_weight", 0.0)},
                             "quant": artifact.get("quantizer") or {}})


def _metadata(ckpt: dict | None, checkpoint: Path, state: dict[str, torch.Tensor], results: RunResults | None, cfg,
              run_dir: Path) -> tuple[list[str], str, float]:
    """Classes, normalisation and prior weight: the checkpoint's hyper-parameters (never its weights when the
    artifact is exported), else results.json, the state's statistics and the config."""
    if ckpt is not None:
        hparams = ckpt["hyper_parameters"]
        classes = list(hparams["classes"])
        normalize = hparams.get("normalize", "global")  # older checkpoints predate speaker normalisation
        prior_weight = float(hparams.get("speaker_prior_weight", 0.0))
        where = checkpoint
    else:
        if results is None:
            raise SERError(f"{run_dir}: neither {checkpoint} nor results.json to read the class names from")
        classes = list(results.classes)
        normalize = "speaker" if "population_mean" in state else "global"
        prior_weight = float(cfg.data.get("speaker_prior_weight", 0.0) or 0.0)
        where = run_dir
    if normalize not in ("global", "speaker"):
        raise SERError(f"{where}: normalisation {normalize!r} cannot be exported (global or speaker)")
    if normalize == "speaker" and not {"population_mean", "population_std"} <= state.keys():
        raise SERError(f"{where}: a speaker-normalised run without population_mean/population_std; train it again")
    return classes, normalize, prior_weight


def theoretical_bytes(source: ExportSource) -> float:
    """What the model must store: weights at their bits, biases (at ``bias_bits``), scales and
    standardisation at ``stats_bits`` (and, for a speaker-normalised model, the population's statistics
    at 32)."""
    statistics = 2 if source.normalize == "global" else 4  # standardisation (+ population for speaker models)
    if source.graph is None:
        total_bits = sum(layer.stored_bits() for layer in source.layers.values())
    else:  # conv biases are folded into the shifts: the graph's arrays hold every float32 per-channel number
        total_bits = sum(l.codes.size * l.bits + 32 * l.scales.size for l in source.layers.values())
        total_bits += 32 * sum(a.size for a in source.graph.arrays.values())
    dim = source.state["feature_mean"].numel()
    return (total_bits + 2 * dim * source.quantizer.stats_bits + (statistics - 2) * dim * 32) / 8


def _statistics_sections(source: ExportSource) -> list[Section]:
    """Feature (and population) mean and std: float32, or for the feature standardisation at 16 bits the
    std as bfloat16 and the mean in units of it (``ser.dsp.storage``; ``source.state`` already holds the
    values those decode to)."""
    pairs = list(zip(STATISTICS[::2], STATISTICS[1::2]))[: 2 if source.normalize == "speaker" else 1]
    sections = []
    for mean, std in pairs:
        m, s = source.state[mean].float().numpy(), source.state[std].float().numpy()
        if source.quantizer.stats_bits == storage.FLOAT_BITS or mean not in NARROW_STATISTICS:
            sections += [Section(mean, m), Section(std, s)]
        else:
            ratio, std_bits = storage.encode_statistics(m, s)
            sections += [Section(mean, ratio, dtype="f2", unit=std), Section(std, std_bits, dtype="bf16")]
    return sections


def write_serq(source: ExportSource, path: str | Path) -> int:
    layers, sections = [], _statistics_sections(source)
    for i, layer in enumerate(source.layers.values()):
        sections += [Section(f"{layer.name}.scales", layer.scales), Section(f"{layer.name}.codes", layer.codes, layer.bits)]
        if source.graph is not None:  # biases and batch norm live in the graph's arrays
            layers.append({"name": layer.name, "shape": list(layer.shape), "bits": layer.bits, "grid": layer.grid})
            continue
        if layer.bias is not None:
            sections.append(layer.bias_section())
        layers.append({"name": layer.name, "shape": list(layer.shape), "bits": layer.bits, "grid": layer.grid,
                       "activation": "relu" if i < len(source.layers) - 1 else "none"})
    header = {"classes": source.classes, "features": source.features, "layers": layers,
              "quantizer": {"per_channel": source.quantizer.per_channel}}
    if source.graph is not None:
        header["network"] = source.graph.header()
        sections += [Section(name, array) for name, array in source.graph.arrays.items()]
    if source.normalize == "speaker":  # global models keep the header they always had
        header["normalize"] = {"kind": "speaker", "prior_weight": source.prior_weight}
    return model_file.write(path, header, sections)


class _Deployed(nn.Module):
    """[Speaker z-score →] standardise → the run's MLP with dequantized weights → softmax, as one graph for ONNX.

    The weights are ``ser.dsp.grid.dequantize`` of the exported codes and the biases the
    exported ones: the same numbers as the ``.serq`` file. A speaker-normalised model takes the
    speaker's statistics as two more inputs, one row per feature row, so that raw features can
    never be fed to it by mistake.
    """

    def __init__(self, source: ExportSource):
        super().__init__()
        self.speaker = source.normalize == "speaker"
        self.register_buffer("mean", source.state["feature_mean"].clone().float())
        self.register_buffer("std", source.state["feature_std"].clone().float())
        layers = list(source.layers.values())
        self.net = MLP(layers[0].shape[1], layers[-1].shape[0], hidden=[layer.shape[0] for layer in layers[:-1]])
        state = {}
        for layer in layers:
            index = layer.name[len("net."):]
            state[f"{index}.weight"] = torch.from_numpy(layer.weight())
            if layer.bias is not None:
                state[f"{index}.bias"] = torch.from_numpy(layer.bias.copy())
        self.net.load_state_dict(state)

    def forward(self, features: torch.Tensor, speaker_mean: torch.Tensor | None = None,
                speaker_std: torch.Tensor | None = None) -> torch.Tensor:
        if self.speaker:
            features = (features - speaker_mean) / speaker_std
        return torch.softmax(self.net((features - self.mean) / self.std), dim=1)


class _DeployedGraph(nn.Module):
    """[Speaker z-score →] standardise → the ``.serq`` graph's ops in torch → softmax, for ONNX.

    Built from the same ops, dequantized weights and float32 arrays as the ``.serq`` file; each
    convolution runs with the dequantized weight and then the folded batch norm's scale and shift.
    """

    def __init__(self, source: ExportSource):
        super().__init__()
        self.speaker = source.normalize == "speaker"
        self.register_buffer("mean", source.state["feature_mean"].clone().float())
        self.register_buffer("std", source.state["feature_std"].clone().float())
        self.ops = source.graph.ops
        self.output = source.graph.output
        self._names: dict[str, str] = {}
        values = {**{name: layer.weight() for name, layer in source.layers.items()}, **source.graph.arrays}
        for i, (name, value) in enumerate(values.items()):
            key = f"t{i}"  # buffers under plain names (layer names hold dots)
            self.register_buffer(key, torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))
            self._names[name] = key

    def _t(self, name: str) -> torch.Tensor:
        return getattr(self, self._names[name])

    def forward(self, features: torch.Tensor, speaker_mean: torch.Tensor | None = None,
                speaker_std: torch.Tensor | None = None) -> torch.Tensor:
        import torch.nn.functional as F

        if self.speaker:
            features = (features - speaker_mean) / speaker_std
        tensors = {"input": (features - self.mean) / self.std}
        y = tensors["input"]
        for op in self.ops:
            args = [tensors[name] for name in op["in"]] if "in" in op else [y]
            kind, x = op["op"], args[0]
            if kind == "transpose":
                y = x.permute(*op["perm"])
            elif kind == "unsqueeze":
                y = x.unsqueeze(op["axis"])
            elif kind == "conv2d":
                y = F.conv2d(x, self._t(op["layer"]), padding="same")
                if op.get("scale"):
                    y = y * self._t(op["scale"])[None, :, None, None]
                if op.get("shift"):
                    y = y + self._t(op["shift"])[None, :, None, None]
            elif kind == "relu":
                y = torch.relu(x)
            elif kind == "avgpool2d":
                y = F.avg_pool2d(x, op["kernel"], op["stride"], ceil_mode=op["ceil_mode"])
            elif kind == "concat":
                y = torch.cat(args, dim=op["axis"])
            elif kind == "mean":
                y = x.mean(dim=tuple(op["axes"]))
            else:  # linear
                y = F.linear(x, self._t(op["layer"]), self._t(op["bias"]) if op.get("bias") else None)
            if "out" in op:
                tensors[op["out"]] = y
        return torch.softmax(tensors[self.output], dim=1)


def onnx_inputs(source: ExportSource) -> list[str]:
    """The ONNX graph's inputs, each of shape (batch, features), or (batch, channels, frames) and
    (batch, channels, 1) for the speaker's statistics of a frame-sequence model."""
    return ["features", "speaker_mean", "speaker_std"] if source.normalize == "speaker" else ["features"]


def write_onnx(source: ExportSource, path: str | Path) -> None:
    import warnings

    from ser.io import atomic_path

    # The exporter logs a warning per torchvision operator it cannot register; we use none.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")
    # Speaker models: all three inputs share the batch axis, which the exporter remarks on.
    warnings.filterwarnings("ignore", message=r".*axis name: batch will not be used")
    model = (_Deployed(source) if source.graph is None else _DeployedGraph(source)).eval()
    names = onnx_inputs(source)
    dim = source.state["feature_mean"].numel()
    if source.graph is None:
        shapes = {name: (2, dim) for name in names}
    else:  # frames are fixed by the feature settings (the graph's pooling sizes follow them)
        shapes = {"features": (2, *source.graph.input), "speaker_mean": (2, dim, 1), "speaker_std": (2, dim, 1)}
    dummy = tuple((torch.ones if name == "speaker_std" else torch.zeros)(*shapes[name]) for name in names)
    batch = torch.export.Dim("batch")
    with atomic_path(path) as tmp:
        torch.onnx.export(model, dummy, str(tmp), input_names=names, output_names=["probabilities"],
                          dynamic_shapes=tuple({0: batch} for _ in names), external_data=False, verbose=False)


def write_c(source: ExportSource, out_dir: str | Path, serq: str | Path | None = None, window_s: float = 2.0,
            hop_s: float = 0.5) -> dict:
    """The C library of the model: generated from its ``.serq`` file (written first, to a temporary file
    when ``serq`` is None), so that the C constants are exactly the file's; streaming windows as ``ser listen``'s."""
    import tempfile

    from ser.runtime import c_export

    if serq is not None:
        return c_export.generate(serq, out_dir, window_s=window_s, hop_s=hop_s)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.serq"
        write_serq(source, path)
        return c_export.generate(path, out_dir, window_s=window_s, hop_s=hop_s)


def _grids(source: ExportSource) -> str:
    names = sorted({layer.grid for layer in source.layers.values()})
    return names[0] if len(names) == 1 else "/".join(names)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ser export", description="Export a trained run as a bit-packed .serq file and/or ONNX.")
    parser.add_argument("source", type=Path, help="run directory written by train.py, or its checkpoints/best.ckpt")
    parser.add_argument("-o", "--output", type=Path, help="the .serq file to write")
    parser.add_argument("--onnx", type=Path, help="also (or only) write an ONNX model: features in (and, for a speaker-normalised run, "
                        "the speaker's mean and std), probabilities out")
    parser.add_argument("--bits", type=int, help="fixed bit-width for every layer instead of the run's LAQ allocation")
    parser.add_argument("--c", type=Path, metavar="DIR", dest="c_dir",
                        help="also (or only) write a self-contained C99 library of the model (ser_predict, no heap, "
                        "libm only) and its CLI into DIR (docs/deploying.md)")
    parser.add_argument("--window", type=float, default=2.0, help="with --c: seconds per decision of the streaming API, "
                        "as `ser listen --window` (default 2)")
    parser.add_argument("--hop", type=float, default=0.5, help="with --c: seconds between decisions, rounded to whole "
                        "feature frames as `ser listen --hop` (default 0.5)")
    args = parser.parse_args(argv)
    if args.output is None and args.onnx is None and args.c_dir is None:
        parser.error("give -o model.serq, --onnx model.onnx and/or --c DIR")
    if args.window <= 0 or args.hop <= 0:
        parser.error("--window and --hop must be positive")
    try:
        source = ExportSource.load(args.source, args.bits)
        if args.c_dir is not None and source.graph is not None:
            raise SERError(f"{args.source}: the C runtime runs the MLP only, this run is {source.network.rsplit('.', 1)[-1]}; "
                           "export it with -o model.serq (numpy runtime) or --onnx")
        if args.output is not None:
            size = write_serq(source, args.output)
            print(f"wrote {args.output}: {size} bytes ({size / 1000:.1f} KB; weights, biases, scales and "
                  f"standardisation need {theoretical_bytes(source) / 1000:.1f} KB); bits {source.bits}, "
                  f"grid {_grids(source)}, from {source.origin}")
        if args.onnx is not None:
            write_onnx(source, args.onnx)
            print(f"wrote {args.onnx}")
        if args.c_dir is not None:
            summary = write_c(source, args.c_dir, args.output, args.window, args.hop)
            print(f"wrote {args.c_dir}/: the C library (ser.h, ser.c, ser_model.[ch]) and its CLI (main.c; make)"
                  + (f"; streaming, a decision every {summary['hop']} samples over {summary['window']}, and a project for "
                     "the B-L475E-IOT01A board (stm32l4/)" if summary["streaming"] else
                     "; whole clips only (dB floors below each clip's peak: data.features.db_floor=peak)"))
    except SERError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
