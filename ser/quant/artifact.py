"""The quantized model a run ships (``quantized.pt``), as typed data: written by the LAQ callback, read by export.

One ``QuantizedArtifact`` holds each quantized layer as LAQ evaluated it (bits, grid, integer
codes, scales, the shipped bias and the dequantized weight), the model's whole state (the
statistics as the file stores them), the quantizer's settings and the metadata a deployment
needs (``ArtifactMetadata``: classes, feature settings, normalisation, the network and its
constructor settings), so that the artifact exports alone. On disk it stays the plain dict of
tensors it always was (``torch.load(..., weights_only=True)`` reads it); ``FORMAT`` names it.

The bit range and grid of every layer are checked when an artifact is read (``load``): past
that boundary a layer's ``bits`` and ``grid`` are known to be ones ``ser.dsp.grid`` defines.
``validate`` checks the rest against the network the artifact claims to hold. Torch only: no
Lightning, so export can read an artifact without pulling in the training stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ser.dsp import grid as grids
from ser.dsp import storage
from ser.dsp.feature_config import FeatureConfig
from ser.errors import SERError
from ser.quant.config import QuantizerConfig, recorded_quantizer

FORMAT = "ser-quant-v2"
LEGACY_FORMATS = ("ser-fakequant-v1",)  # weights only, no codes: read as no artifact
FILENAME = "quantized.pt"


def check_bits(bits: int, where: str) -> int:
    """``bits`` if ``ser.dsp.grid`` defines it (1..8), else a one-line error naming ``where``."""
    if not grids.MIN_BITS <= bits <= grids.MAX_BITS:
        raise SERError(f"{where}: bit-widths must be {grids.MIN_BITS}..{grids.MAX_BITS}, got {bits}")
    return bits


def quantizer_config(stored: dict[str, Any], where: str | Path) -> QuantizerConfig:
    """The quantizer an artifact (or a run config's ``quant`` section) recorded (``recorded_quantizer``),
    or a one-line error naming ``where``."""
    try:
        return recorded_quantizer(stored)
    except (ValueError, TypeError) as exc:
        raise SERError(f"{where}: {exc}") from exc


@dataclass
class ArtifactLayer:
    """One quantized layer as LAQ evaluated it: ``weight`` is ``grid.dequantize(codes, scales, bits, grid)``."""

    bits: int
    grid: str
    per_channel: bool
    codes: torch.Tensor  # uint8, the weight's shape
    scales: torch.Tensor  # float32, 1 or one per output row
    bias: torch.Tensor | None  # as the file stores it (``bias_bits``)
    weight: torch.Tensor

    @property
    def shape(self) -> list[int]:
        return list(self.codes.shape)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bits": self.bits,
            "grid": self.grid,
            "per_channel": self.per_channel,
            "shape": self.shape,
            "codes": self.codes,
            "scales": self.scales,
            "bias": self.bias,
            "weight": self.weight,
        }


@dataclass
class ArtifactMetadata:
    """What a deployment needs besides the weights, so the artifact stands alone (no results.json, no .hydra/)."""

    classes: list[str]
    n_features: Any  # the network's input size: an int (MLP) or [channels, frames]
    normalize: str = "global"
    speaker_prior_weight: float = 0.0
    features: FeatureConfig | None = None
    network: str = ""  # the network's class, module-qualified
    net_config: dict[str, Any] | None = None  # its constructor settings (the run's model.net), to rebuild it

    def to_dict(self) -> dict[str, Any]:
        return {
            "classes": list(self.classes),
            "n_features": self.n_features,
            "normalize": self.normalize,
            "speaker_prior_weight": float(self.speaker_prior_weight),
            "features": None if self.features is None else self.features.to_dict(),
            "network": self.network,
            "net_config": self.net_config,
        }

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> ArtifactMetadata:
        features = stored.get("features")
        return cls(
            list(stored.get("classes") or []),
            stored.get("n_features"),
            stored.get("normalize", "global"),
            float(stored.get("speaker_prior_weight", 0.0) or 0.0),
            None if features is None else FeatureConfig(**features),
            stored.get("network", ""),
            stored.get("net_config"),
        )


@dataclass
class QuantizedArtifact:
    """The shipped LAQ model: its quantized layers (in network order), the model's state with those weights,
    the quantizer that made it and, once the callback knows them, the deployment metadata."""

    layers: dict[str, ArtifactLayer]
    state_dict: dict[str, torch.Tensor]
    quantizer: QuantizerConfig  # bias_correction included
    metadata: ArtifactMetadata | None = None

    @property
    def bits(self) -> dict[str, int]:
        return {name: layer.bits for name, layer in self.layers.items()}

    def to_dict(self) -> dict[str, Any]:
        """The on-disk form: plain tensors, lists and numbers (``weights_only`` loading reads it)."""
        out = {
            "format": FORMAT,
            "layers": {name: layer.to_dict() for name, layer in self.layers.items()},
            "state_dict": self.state_dict,
            "quantizer": self.quantizer.as_dict(),
        }
        if self.metadata is not None:
            out["metadata"] = self.metadata.to_dict()
        return out

    def save(self, path: str | Path) -> None:
        from ser.io import atomic_path

        with atomic_path(path) as tmp:
            torch.save(self.to_dict(), tmp)

    @classmethod
    def from_dict(cls, stored: dict[str, Any], where: str | Path) -> QuantizedArtifact:
        """An artifact of this ``FORMAT``, its layers' bits and grids checked (the one boundary that checks them)."""
        layers = {}
        try:
            for name, entry in (stored.get("layers") or {}).items():
                bits, grid = int(entry["bits"]), str(entry.get("grid", "symmetric"))
                if grid not in grids.GRIDS or not grids.MIN_BITS <= bits <= grids.MAX_BITS:
                    raise SERError(
                        f"{where}: layer {name} has grid {grid!r} at {bits} bits, which this ser cannot "
                        "export; upgrade ser"
                    )
                bias = entry.get("bias")
                layers[name] = ArtifactLayer(
                    bits,
                    grid,
                    bool(entry.get("per_channel", False)),
                    entry["codes"],
                    entry["scales"],
                    None if bias is None else bias.detach(),
                    entry["weight"],
                )
            quantizer = stored.get("quantizer") or {}
            metadata = stored.get("metadata")
            return cls(
                layers,
                {k: v.detach().cpu() for k, v in stored["state_dict"].items()},
                quantizer_config(quantizer, where),
                ArtifactMetadata.from_dict(metadata) if metadata else None,
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise SERError(
                f"{where}: not a complete {FORMAT} artifact ({exc.__class__.__name__}: {exc}); train the run again"
            ) from exc

    @classmethod
    def load(cls, path: str | Path) -> QuantizedArtifact | None:
        """The artifact at ``path``; None when there is none or it is of a format from before codes were saved."""
        path = Path(path)
        if not path.is_file():
            return None
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise SERError(
                f"{path}: cannot read the quantized model ({exc.__class__.__name__}); train the run again"
            ) from exc
        fmt = stored.get("format") if isinstance(stored, dict) else None
        if fmt == FORMAT:
            return cls.from_dict(stored, path)
        if fmt is None or fmt in LEGACY_FORMATS:
            return None
        raise SERError(f"{path}: format {fmt!r}, this ser exports {FORMAT}; upgrade ser")

    def validate(self, names: list[str], where: str | Path) -> None:
        """Check that the artifact holds exactly the layers ``names`` and that each is self-consistent: codes of
        its weight's shape and within its grid, a scale per row or one, codes and scales that give the stored
        weight, and a bias on the quantizer's bias grid."""
        if set(self.layers) != set(names):
            raise SERError(
                f"{where}: quantized layers {sorted(self.layers)} are not the network's {names}; train the run again"
            )
        bias_bits = self.quantizer.bias_bits
        for name in names:
            layer = self.layers[name]
            codes = layer.codes.numpy()
            scales = layer.scales.float().numpy().reshape(-1)
            shape = tuple(self.state_dict[f"{name}.weight"].shape)
            if codes.dtype != np.uint8 or codes.shape != shape:
                raise SERError(
                    f"{where}: layer {name}'s codes ({codes.dtype}, {codes.shape}) do not fit its weight {shape}"
                )
            if scales.size not in (1, shape[0]):
                raise SERError(f"{where}: layer {name} has {scales.size} scales for {shape[0]} output rows")
            if codes.size and int(codes.max()) >= grids.n_codes(layer.bits, layer.grid):
                raise SERError(f"{where}: layer {name} has a code outside its {layer.bits}-bit {layer.grid} grid")
            weight = grids.dequantize(codes, scales, layer.bits, layer.grid)
            if not np.allclose(weight, layer.weight.float().numpy(), rtol=1e-6, atol=0.0):
                raise SERError(
                    f"{where}: layer {name}'s codes and scales do not give its stored weight; train the run again"
                )
            if layer.bias is not None:
                bias = layer.bias.float().numpy()
                if not np.array_equal(storage.round_bias(bias, bias_bits), bias):
                    raise SERError(
                        f"{where}: layer {name}'s bias is not on its {bias_bits}-bit grid; train the run again"
                    )
