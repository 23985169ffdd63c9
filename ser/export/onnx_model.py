"""An ``ExportSource`` as an ONNX graph: [speaker z-score →] standardise → network → softmax.

The weights are ``ser.dsp.grid.dequantize`` of the exported codes and the biases and per-channel
arrays the exported ones: the same numbers as the ``.serq`` file. A graph network runs the ops of
``ser.runtime.graph`` with torch primitives. A speaker-normalised model takes the speaker's
statistics as two more inputs, one row per feature row, so that raw features can never be fed to
it by mistake.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ser.export.source import ExportSource
from ser.models.mlp import MLP
from ser.runtime import graph as graph_ops


class TorchOps:
    """``ser.runtime.graph``'s primitives in torch (traceable for ONNX)."""

    @staticmethod
    def transpose(x, perm):
        return x.permute(*perm)

    @staticmethod
    def unsqueeze(x, axis):
        return x.unsqueeze(axis)

    @staticmethod
    def conv2d_same(x, weight):
        return F.conv2d(x, weight, padding="same")

    @staticmethod
    def relu(x):
        return torch.relu(x)

    @staticmethod
    def avgpool2d(x, kernel, stride, ceil_mode):
        return F.avg_pool2d(x, kernel, stride, ceil_mode=ceil_mode)

    @staticmethod
    def concat(xs, axis):
        return torch.cat(xs, dim=axis)

    @staticmethod
    def mean(x, axes):
        return x.mean(dim=tuple(axes))

    @staticmethod
    def linear(x, weight, bias):
        return F.linear(x, weight, bias)


def _mlp(source: ExportSource) -> MLP:
    """The run's MLP holding the dequantized weights and the exported biases."""
    layers = list(source.layers.values())
    net = MLP(layers[0].shape[1], layers[-1].shape[0], hidden=[layer.shape[0] for layer in layers[:-1]])
    state = {}
    for layer in layers:
        index = layer.name[len("net.") :]
        state[f"{index}.weight"] = torch.from_numpy(layer.weight())
        if layer.bias is not None:
            state[f"{index}.bias"] = torch.from_numpy(np.asarray(layer.bias, dtype=np.float32).copy())
    net.load_state_dict(state)
    return net


class GraphNetwork(nn.Module):
    """The ``.serq`` graph's ops (``ser.runtime.graph.run``) in torch: each convolution with the dequantized
    weight, then the folded batch norm's scale and shift."""

    def __init__(self, source: ExportSource):
        super().__init__()
        self.spec = source.graph.spec
        self._names: dict[str, str] = {}
        values = {**{name: layer.weight() for name, layer in source.layers.items()}, **source.graph.arrays}
        for i, (name, value) in enumerate(values.items()):
            key = f"t{i}"  # buffers under plain names (layer names hold dots)
            self.register_buffer(key, torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))
            self._names[name] = key

    def _value(self, name: str) -> torch.Tensor:
        return getattr(self, self._names[name])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return graph_ops.run(self.spec.ops, x, TorchOps, self._value, self.spec.output)


class Deployed(nn.Module):
    """[Speaker z-score →] standardise → the exported network (the MLP, or the graph's ops) → softmax."""

    def __init__(self, source: ExportSource):
        super().__init__()
        self.speaker = source.normalize == "speaker"
        self.register_buffer("mean", source.state["feature_mean"].clone().float())
        self.register_buffer("std", source.state["feature_std"].clone().float())
        self.net = _mlp(source) if source.graph is None else GraphNetwork(source)
        self.eval()

    def forward(
        self, features: torch.Tensor, speaker_mean: torch.Tensor | None = None, speaker_std: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.speaker:
            features = (features - speaker_mean) / speaker_std
        return torch.softmax(self.net((features - self.mean) / self.std), dim=1)


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
    model = Deployed(source)
    names = onnx_inputs(source)
    dim = source.state["feature_mean"].numel()
    if source.graph is None:
        shapes = {name: (2, dim) for name in names}
    else:  # frames are fixed by the feature settings (the graph's pooling sizes follow them)
        shapes = {"features": (2, *source.graph.spec.input), "speaker_mean": (2, dim, 1), "speaker_std": (2, dim, 1)}
    dummy = tuple((torch.ones if name == "speaker_std" else torch.zeros)(*shapes[name]) for name in names)
    batch = torch.export.Dim("batch")
    with atomic_path(path) as tmp:
        torch.onnx.export(
            model,
            dummy,
            str(tmp),
            input_names=names,
            output_names=["probabilities"],
            dynamic_shapes=tuple({0: batch} for _ in names),
            external_data=False,
            verbose=False,
        )
