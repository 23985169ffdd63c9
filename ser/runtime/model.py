"""Run a ``.serq`` model with numpy: dequantize once (``ser.dsp.grid``, each layer's own grid), then
[speaker z-score →] standardise → network → softmax.

The network is the MLP of the file's ``layers`` (in order), or, when the header has a
``network`` graph (Light-SERNet), its list of operations on named tensors: ``transpose``,
``unsqueeze``, ``conv2d`` (stride 1, "same" zero padding; the folded batch norm as a
per-output-channel ``scale`` and ``shift`` applied to the output of the convolution with the
dequantized weight), ``relu``, ``avgpool2d`` (no padding, ``ceil_mode``: a window that runs
past the input averages only the cells inside it), ``concat``, ``mean`` and ``linear``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ser.dsp import speaker_norm
from ser.dsp.feature_config import FeatureConfig
from ser.dsp.speaker_norm import RunningSpeakerStats, SpeakerStats
from ser.errors import SERError
from ser.dsp import grid as grids  # numpy only (ser.quant's __init__ imports nothing)
from ser.runtime import model_file

NORMALIZE = speaker_norm.NORMALIZE


def _layer_weight(path, spec: dict, codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """One layer's weight, refusing a grid, width or code this runtime does not know (absent grid: symmetric)."""
    name, bits, grid = spec["name"], int(spec["bits"]), spec.get("grid", "symmetric")
    if grid not in grids.GRIDS:
        raise model_file.ModelFileError(f"{path}: layer {name} uses the quantization grid {grid!r}, this runtime knows "
                                        f"{', '.join(grids.GRIDS)}; upgrade ser")
    if not grids.MIN_BITS <= bits <= grids.MAX_BITS:
        raise model_file.ModelFileError(f"{path}: layer {name} has {bits} bits, this runtime reads 1 to 8")
    if codes.size and int(codes.max()) >= grids.n_codes(bits, grid):
        raise model_file.ModelFileError(f"{path}: layer {name} has a code outside its {bits}-bit {grid} grid; "
                                        "the file is not a valid model")
    return grids.dequantize(codes, scales, bits, grid)  # the quantizer's own code <-> level mapping


@dataclass
class Layer:
    weight: np.ndarray
    bias: np.ndarray | None
    relu: bool


OPS = ("transpose", "unsqueeze", "conv2d", "relu", "avgpool2d", "concat", "mean", "linear")


def _pool_length(size: int, kernel: int, stride: int, ceil_mode: bool) -> int:
    """Output length of torch's pooling without padding (a last window must start inside the input)."""
    out = (size - kernel + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size:
        out -= 1
    return out


def conv2d_same(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Convolution (cross-correlation, as torch) of ``x`` (batch, in, H, W) with ``weight`` (out, in, kh, kw),
    stride 1, zero "same" padding (torch's split: the smaller half before). One matmul per kernel offset."""
    batch, channels, height, width = x.shape
    out, _, kh, kw = weight.shape
    top, left = (kh - 1) // 2, (kw - 1) // 2
    padded = np.pad(x, ((0, 0), (0, 0), (top, kh - 1 - top), (left, kw - 1 - left)))
    y = np.zeros((batch, out, height * width), dtype=np.float32)
    for i in range(kh):
        for j in range(kw):
            window = np.ascontiguousarray(padded[:, :, i : i + height, j : j + width]).reshape(batch, channels, -1)
            y += weight[:, :, i, j] @ window
    return y.reshape(batch, out, height, width)


def avgpool2d(x: np.ndarray, kernel, stride, ceil_mode: bool) -> np.ndarray:
    """torch's AvgPool2d without padding; with ``ceil_mode`` a window past the edge averages the cells inside."""
    (kh, kw), (sh, sw) = kernel, stride
    height, width = x.shape[2:]
    oh, ow = _pool_length(height, kh, sh, ceil_mode), _pool_length(width, kw, sw, ceil_mode)
    need_h, need_w = (oh - 1) * sh + kh, (ow - 1) * sw + kw
    pad = ((0, 0), (0, 0), (0, max(need_h - height, 0)), (0, max(need_w - width, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(x, pad), (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    total = windows[:, :, :oh, :ow].sum(axis=(4, 5), dtype=np.float32)
    rows = np.minimum(np.arange(oh) * sh + kh, height) - np.arange(oh) * sh
    cols = np.minimum(np.arange(ow) * sw + kw, width) - np.arange(ow) * sw
    return total / (rows[:, None] * cols[None, :]).astype(np.float32)


@dataclass
class Graph:
    """A network as a list of operations on named tensors (the header's ``network``)."""

    input: tuple[int, ...]  # one utterance's features: (channels, frames)
    output: str
    ops: list[dict]
    weights: dict[str, np.ndarray]  # dequantized layer weights by layer name
    arrays: dict[str, np.ndarray]  # float32 sections: folded batch norm (scale, shift), biases

    @classmethod
    def load(cls, path, network: dict, weights: dict[str, np.ndarray], arrays: dict[str, np.ndarray]) -> "Graph":
        if network.get("kind") != "graph":
            raise model_file.ModelFileError(f"{path}: network kind {network.get('kind')!r} is not known to this runtime; "
                                            "upgrade ser")
        ops = list(network["ops"])
        for op in ops:
            if op.get("op") not in OPS:
                raise model_file.ModelFileError(f"{path}: network operation {op.get('op')!r} is not known to this "
                                                "runtime; upgrade ser")
            if op["op"] in ("conv2d", "linear") and op["layer"] not in weights:
                raise model_file.ModelFileError(f"{path}: a {op['op']} uses layer {op['layer']}, which the file does "
                                                "not hold")
            if op["op"] == "conv2d" and (op.get("padding") != "same" or list(op.get("stride", [1, 1])) != [1, 1]
                                         or list(op.get("kernel", [])) != list(weights[op["layer"]].shape[2:])):
                raise model_file.ModelFileError(f"{path}: convolution {op['layer']}: this runtime runs stride-1 'same' "
                                                "convolutions of its weight's kernel; upgrade ser")
            missing = [op[key] for key in ("scale", "shift", "bias") if op.get(key) and op[key] not in arrays]
            if missing:
                raise model_file.ModelFileError(f"{path}: a {op['op']} needs sections {missing}, which the file does "
                                                "not hold")
        return cls(tuple(network["input"]), network["output"], ops, weights,
                   {k: v for k, v in arrays.items() if not k.endswith((".codes", ".scales"))})

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Logits ``(batch, classes)`` of standardised inputs ``(batch, *input)``."""
        tensors = {"input": x}
        y = x
        for op in self.ops:  # without "in": the previous op's output; without "out": no later op names it
            y = self._run(op, *([tensors[name] for name in op["in"]] if "in" in op else [y]))
            if "out" in op:
                tensors[op["out"]] = y
        return tensors[self.output]

    def _run(self, op: dict, *args: np.ndarray) -> np.ndarray:
        kind, x = op["op"], args[0]
        if kind == "transpose":
            return np.ascontiguousarray(x.transpose(op["perm"]))
        if kind == "unsqueeze":
            return np.expand_dims(x, op["axis"])
        if kind == "conv2d":
            y = conv2d_same(x, self.weights[op["layer"]])
            if op.get("scale"):
                y *= self.arrays[op["scale"]][None, :, None, None]
            if op.get("shift"):
                y += self.arrays[op["shift"]][None, :, None, None]
            return y
        if kind == "relu":
            return np.maximum(x, np.float32(0.0))
        if kind == "avgpool2d":
            return avgpool2d(x, op["kernel"], op["stride"], bool(op.get("ceil_mode", False)))
        if kind == "concat":
            return np.concatenate(args, axis=op["axis"])
        if kind == "mean":
            return x.mean(axis=tuple(op["axes"]), dtype=np.float32)
        # linear
        y = x @ self.weights[op["layer"]].T
        return y + self.arrays[op["bias"]] if op.get("bias") else y


@dataclass
class QuantizedModel:
    """Everything needed to go from a feature vector to class probabilities.

    ``normalize`` is how the model was trained: ``"global"`` (features go straight into the
    standardisation) or ``"speaker"`` (each utterance is first z-scored with its speaker's
    ``SpeakerStats``; ``population`` and ``prior_weight`` are the training population's
    statistics and the shrinkage toward them that a speaker's own estimate gets).
    """

    classes: list[str]
    features: FeatureConfig
    mean: np.ndarray
    std: np.ndarray
    layers: list[Layer]
    header: dict
    normalize: str = "global"
    population: SpeakerStats | None = None
    prior_weight: float = 0.0
    graph: Graph | None = None  # a convolutional network (the header's ``network``); None: the MLP of ``layers``

    @classmethod
    def load(cls, path: str | Path) -> "QuantizedModel":
        header, arrays = model_file.read(path)
        layers = []
        for spec in header["layers"]:
            name = spec["name"]
            weight = _layer_weight(path, spec, arrays[f"{name}.codes"], arrays[f"{name}.scales"])
            layers.append(Layer(weight, arrays.get(f"{name}.bias"), spec.get("activation") == "relu"))
        graph = None
        if "network" in header:
            weights = {spec["name"]: layer.weight for spec, layer in zip(header["layers"], layers)}
            graph = Graph.load(path, header["network"], weights, arrays)
        norm = header.get("normalize", {"kind": "global"})
        if norm.get("kind") not in NORMALIZE:
            raise model_file.ModelFileError(f"{path}: normalisation {norm.get('kind')!r} is not one of "
                                            f"{', '.join(NORMALIZE)}; upgrade ser to run this model")
        population = prior_weight = None
        if norm["kind"] == "speaker":
            population = SpeakerStats(arrays["population_mean"], arrays["population_std"], 0.0)
            prior_weight = float(norm.get("prior_weight", 0.0))
        return cls(list(header["classes"]), FeatureConfig(**header["features"]), arrays["feature_mean"],
                   arrays["feature_std"], layers, header, norm["kind"], population, prior_weight or 0.0, graph)

    @property
    def speaker_normalized(self) -> bool:
        return self.normalize == "speaker"

    # -- speaker statistics (speaker-normalised models) ------------------------------------

    def _require_speaker(self) -> None:
        if not self.speaker_normalized:
            raise SERError("this model was trained with global normalisation (data.normalize=global) and takes no "
                           "speaker statistics")

    def _batch(self, features: np.ndarray) -> np.ndarray:
        """Features as a batch: ``(n, dim)`` for the MLP, ``(n, channels, frames)`` for a graph; one utterance
        may come without its batch axis."""
        x = np.asarray(features, dtype=np.float32)
        if self.graph is None:
            return np.atleast_2d(x)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[1] != self.graph.input[0]:
            raise SERError(f"this model takes frame sequences ({self.graph.input[0]}, frames) or a batch of them, "
                           f"got shape {x.shape}")
        return x

    def enrol(self, features: np.ndarray) -> SpeakerStats:
        """A speaker's statistics from the features ``(recordings, dim)`` (or ``(recordings, channels, frames)``)
        of several of their recordings.

        The training estimator: shrunk toward the population by ``prior_weight`` recordings;
        with one recording and no prior weight it is the population's statistics.
        """
        self._require_speaker()
        features = np.asarray(features, dtype=np.float32)
        want = 2 if self.graph is None else 3
        if features.ndim != want or features.shape[1] != self.mean.shape[0]:
            shape = f"(recordings, {self.mean.size})" if self.graph is None else f"(recordings, {self.mean.shape[0]}, frames)"
            raise SERError(f"enrolment features must have shape {shape}, got {features.shape}")
        return speaker_norm.statistics(features, self.population, self.prior_weight, self.features.block_slices())

    def running(self) -> RunningSpeakerStats:
        """An estimate to update one recording at a time (``.update(features)`` returns the current one)."""
        self._require_speaker()
        return RunningSpeakerStats(self.population, self.prior_weight, self.features.block_slices())

    def check_speaker(self, speaker: SpeakerStats | None) -> None:
        """Raise ``SERError`` unless ``speaker`` fits this model (given iff it is speaker-normalised)."""
        if speaker is not None:
            self._require_speaker()
            if np.shape(speaker.mean) != self.mean.shape or np.shape(speaker.std) != self.mean.shape:
                raise SERError(f"speaker statistics have shape {np.shape(speaker.mean)}, the model's features "
                               f"{self.mean.shape}")
        elif self.speaker_normalized:
            raise SERError("this model was trained with speaker normalisation (data.normalize=speaker) and needs "
                           "the speaker's statistics (or model.population for none)")

    # -- inference ---------------------------------------------------------------------------

    def logits(self, features: np.ndarray, speaker: SpeakerStats | None = None) -> np.ndarray:
        self.check_speaker(speaker)
        x = self._batch(features)
        if speaker is not None:
            x = speaker.apply(x)
        x = (x - self.mean) / self.std
        if self.graph is not None:  # one utterance at a time keeps the convolutions' buffers small
            return np.concatenate([self.graph(row[None]) for row in x]) if len(x) else np.zeros((0, len(self.classes)), np.float32)
        for layer in self.layers:
            x = x @ layer.weight.T
            if layer.bias is not None:
                x = x + layer.bias
            if layer.relu:
                x = np.maximum(x, 0.0)
        return x

    def probabilities(self, features: np.ndarray, speaker: SpeakerStats | None = None) -> np.ndarray:
        """Class probabilities ``(n, classes)`` of features ``(dim,)`` or ``(n, dim)`` (a graph model:
        ``(channels, frames)`` or ``(n, channels, frames)``).

        A speaker-normalised model needs ``speaker`` (from ``enrol``, ``running`` or a file
        written by ``ser enroll``; ``self.population`` when nothing of the speaker is known);
        a global model refuses one.
        """
        logits = self.logits(features, speaker).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
