"""Run a ``.serq`` model with numpy: dequantize once, then standardise → MLP → softmax."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ser.data.feature_config import FeatureConfig
from ser.runtime import model_file


def dequantize(codes: np.ndarray, scales: np.ndarray, bits: int) -> np.ndarray:
    """Weights from unsigned codes: 1 bit → ±α; b bits → (code − (2^(b−1)−1)) · scale, per row."""
    scales = scales.reshape(-1, *([1] * (codes.ndim - 1)))  # one per layer or per output row
    if bits == 1:
        return np.where(codes == 1, scales, -scales).astype(np.float32)
    offset = 2 ** (bits - 1) - 1
    return ((codes.astype(np.float32) - offset) * scales).astype(np.float32)


@dataclass
class Layer:
    weight: np.ndarray
    bias: np.ndarray | None
    relu: bool


@dataclass
class QuantizedModel:
    """Everything needed to go from a feature vector to class probabilities."""

    classes: list[str]
    features: FeatureConfig
    mean: np.ndarray
    std: np.ndarray
    layers: list[Layer]
    header: dict

    @classmethod
    def load(cls, path: str | Path) -> "QuantizedModel":
        header, arrays = model_file.read(path)
        layers = []
        for spec in header["layers"]:
            name = spec["name"]
            weight = dequantize(arrays[f"{name}.codes"], arrays[f"{name}.scales"], spec["bits"])
            layers.append(Layer(weight, arrays.get(f"{name}.bias"), spec["activation"] == "relu"))
        return cls(list(header["classes"]), FeatureConfig(**header["features"]), arrays["feature_mean"],
                   arrays["feature_std"], layers, header)

    def logits(self, features: np.ndarray) -> np.ndarray:
        x = (np.atleast_2d(features).astype(np.float32) - self.mean) / self.std
        for layer in self.layers:
            x = x @ layer.weight.T
            if layer.bias is not None:
                x = x + layer.bias
            if layer.relu:
                x = np.maximum(x, 0.0)
        return x

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        logits = self.logits(features).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
