"""The graph operations of a ``.serq`` network (Light-SERNet), defined once for every backend.

A graph is a list of operations on named tensors: ``transpose``, ``unsqueeze``, ``conv2d``
(stride 1, "same" zero padding; the folded batch norm as a per-output-channel ``scale`` and
``shift`` applied to the output of the convolution with the dequantized weight), ``relu``,
``avgpool2d`` (no padding, ``ceil_mode``: a window that runs past the input averages only the
cells inside it), ``concat``, ``mean`` and ``linear``. An op without ``in`` takes the previous
op's output; one without ``out`` is named by no later op.

``run`` is what each op means; a backend supplies the primitives it is made of: ``NUMPY`` here
(the runtime), torch in ``ser.export.onnx_model`` (the ONNX graph), so that the two cannot drift
apart. Numpy only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ser.runtime.model_file import ModelFileError
from ser.runtime.serq import GraphSpec


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


class NumpyOps:
    """The primitives in numpy (float32 throughout)."""

    @staticmethod
    def transpose(x, perm):
        return np.ascontiguousarray(x.transpose(perm))

    @staticmethod
    def unsqueeze(x, axis):
        return np.expand_dims(x, axis)

    conv2d_same = staticmethod(conv2d_same)

    @staticmethod
    def relu(x):
        return np.maximum(x, np.float32(0.0))

    @staticmethod
    def avgpool2d(x, kernel, stride, ceil_mode):
        return avgpool2d(x, kernel, stride, ceil_mode)

    @staticmethod
    def concat(xs, axis):
        return np.concatenate(xs, axis=axis)

    @staticmethod
    def mean(x, axes):
        return x.mean(axis=tuple(axes), dtype=np.float32)

    @staticmethod
    def linear(x, weight, bias):
        y = x @ weight.T
        return y if bias is None else y + bias


NUMPY = NumpyOps()


def run(ops: list[dict], x: Any, backend: Any, value: Callable[[str], Any], output: str) -> Any:
    """The ``output`` tensor of ``ops`` on the standardised input ``x`` (batch first), with ``backend``'s primitives;
    ``value(name)`` is a layer's dequantized weight or a named per-channel array."""
    tensors = {"input": x}
    y = x
    for op in ops:
        args = [tensors[name] for name in op["in"]] if "in" in op else [y]
        y = _apply(op, args, backend, value)
        if "out" in op:
            tensors[op["out"]] = y
    return tensors[output]


def _apply(op: dict, args: list, ops: Any, value: Callable[[str], Any]) -> Any:
    kind, x = op["op"], args[0]
    if kind == "transpose":
        return ops.transpose(x, op["perm"])
    if kind == "unsqueeze":
        return ops.unsqueeze(x, op["axis"])
    if kind == "conv2d":
        y = ops.conv2d_same(x, value(op["layer"]))
        if op.get("scale"):
            y = y * value(op["scale"])[None, :, None, None]
        if op.get("shift"):
            y = y + value(op["shift"])[None, :, None, None]
        return y
    if kind == "relu":
        return ops.relu(x)
    if kind == "avgpool2d":
        return ops.avgpool2d(x, op["kernel"], op["stride"], bool(op.get("ceil_mode", False)))
    if kind == "concat":
        return ops.concat(args, op["axis"])
    if kind == "mean":
        return ops.mean(x, op["axes"])
    if kind == "linear":
        return ops.linear(x, value(op["layer"]), value(op["bias"]) if op.get("bias") else None)
    raise ValueError(f"unknown graph operation {kind!r}")  # SerqHeader.parse refuses these in files


@dataclass
class Graph:
    """A network as a list of operations on named tensors (the header's ``network``), run with numpy."""

    spec: GraphSpec
    weights: dict[str, np.ndarray]  # dequantized layer weights by layer name
    arrays: dict[str, np.ndarray]  # float32 sections: folded batch norm (scale, shift), biases

    @property
    def input(self) -> tuple[int, ...]:
        return self.spec.input

    @classmethod
    def load(
        cls, path: str | Path, spec: GraphSpec, weights: dict[str, np.ndarray], arrays: dict[str, np.ndarray]
    ) -> Graph:
        """Refuses ops that name layers or sections the file lacks, or convolutions this runtime cannot run."""
        for op in spec.ops:
            if op["op"] in ("conv2d", "linear") and op["layer"] not in weights:
                raise ModelFileError(f"{path}: a {op['op']} uses layer {op['layer']}, which the file does not hold")
            if op["op"] == "conv2d" and (
                op.get("padding") != "same"
                or list(op.get("stride", [1, 1])) != [1, 1]
                or list(op.get("kernel", [])) != list(weights[op["layer"]].shape[2:])
            ):
                raise ModelFileError(
                    f"{path}: convolution {op['layer']}: this runtime runs stride-1 'same' "
                    "convolutions of its weight's kernel; upgrade ser"
                )
            missing = [op[key] for key in ("scale", "shift", "bias") if op.get(key) and op[key] not in arrays]
            if missing:
                raise ModelFileError(f"{path}: a {op['op']} needs sections {missing}, which the file does not hold")
        return cls(spec, weights, {k: v for k, v in arrays.items() if not k.endswith((".codes", ".scales"))})

    def _value(self, name: str) -> np.ndarray:
        return self.weights[name] if name in self.weights else self.arrays[name]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Logits ``(batch, classes)`` of standardised inputs ``(batch, *input)``."""
        return run(self.spec.ops, x, NUMPY, self._value, self.spec.output)
