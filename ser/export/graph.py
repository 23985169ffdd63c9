"""A network other than the MLP (Light-SERNet) as a ``.serq`` graph: ops on named tensors (``ser.runtime.graph``).

Each convolution keeps its quantized weight; a batch norm after it is folded into a
per-output-channel scale and shift of its output (``ser.export.fold``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from ser.dsp.feature_config import FeatureConfig
from ser.errors import SERError
from ser.export.fold import fold
from ser.export.layer import ExportLayer
from ser.runtime.serq import GraphSpec


@dataclass
class ExportGraph:
    """The header's ``network`` and the float32 per-channel arrays (folded batch norm, biases) its ops name."""

    spec: GraphSpec
    arrays: dict[str, np.ndarray]


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


class _GraphBuilder:
    """Turns a module tree of Conv2d/BatchNorm2d/ReLU/AvgPool2d/Dropout into ops on named tensors."""

    def __init__(self, layers: dict[str, ExportLayer]):
        self.layers, self.ops, self.arrays = layers, [], {}

    def add(self, op: str, inputs: list[str], out: str, **fields) -> str:
        """One op; ``in`` is left out when it is the previous op's output alone, and ``out`` is dropped
        afterwards (``compact``) where no later op names it."""
        entry = {
            "op": op,
            **({} if self.ops and inputs == [self.ops[-1]["out"]] else {"in": inputs}),
            "out": out,
            **fields,
        }
        self.ops.append(entry)
        return out

    def compact(self) -> list[dict]:
        named = {name for op in self.ops for name in op.get("in", [])}
        return [
            op if op["out"] in named or i == len(self.ops) - 1 else {k: v for k, v in op.items() if k != "out"}
            for i, op in enumerate(self.ops)
        ]

    def sequence(self, module: nn.Module, x: str, prefix: str) -> str:
        children = list(module.named_children()) if isinstance(module, nn.Sequential) else [("", module)]
        i = 0
        while i < len(children):
            name, child = children[i]
            full = f"{prefix}.{name}" if name else prefix
            if isinstance(child, nn.Sequential):
                x = self.sequence(child, x, full)
            elif isinstance(child, nn.Conv2d):
                bn = (
                    children[i + 1][1]
                    if i + 1 < len(children) and isinstance(children[i + 1][1], nn.BatchNorm2d)
                    else None
                )
                x = self.conv(child, bn, x, full, f"{prefix}.{children[i + 1][0]}" if bn is not None else None)
                i += bn is not None
            elif isinstance(child, nn.ReLU):
                x = self.add("relu", [x], f"{full}.relu")
            elif isinstance(child, nn.AvgPool2d):
                kernel, stride, padding = (
                    _pair(v) for v in (child.kernel_size, child.stride or child.kernel_size, child.padding)
                )
                if padding != (0, 0) or child.divisor_override:
                    raise SERError(f"{full}: average pooling with padding or a divisor override cannot be exported")
                x = self.add(
                    "avgpool2d", [x], full, kernel=list(kernel), stride=list(stride), ceil_mode=bool(child.ceil_mode)
                )
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
        same = (
            conv.padding == "same"
            or tuple(conv.padding) == tuple((k - 1) // 2 for k in kernel)
            and all(k % 2 for k in kernel)
        )
        if (
            tuple(conv.stride) != (1, 1)
            or tuple(conv.dilation) != (1, 1)
            or conv.groups != 1
            or not same
            or conv.padding_mode != "zeros"
        ):
            raise SERError(f"{name}: only stride-1, undilated, ungrouped convolutions with 'same' zero padding export")
        scale, shift = fold(self.layers[name].bias, bn)
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


def lightsernet_graph(net: nn.Module, layers: dict[str, ExportLayer], features: FeatureConfig) -> ExportGraph:
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
    return ExportGraph(GraphSpec(tuple(features.shape), g.compact()), g.arrays)
