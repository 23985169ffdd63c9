"""A ``.serq`` model as typed data: its header (``SerqHeader``) and its decoded arrays (``SerqModel``).

``ser.runtime.model_file`` is the container (sections, packing, checksum, format version);
this module is what the container holds. The exporter builds a ``SerqModel`` in memory and
writes it (``write``); the numpy runtime reads one back (``read``) and the C generator turns one
into C, so all three work from the same header fields and the same values, and none of them
re-reads a file another just wrote. Numpy only, like the rest of ``ser.runtime``.

The header's fields are checked once, when a file is read (``SerqHeader.parse``): every layer's
grid and bit-width are ones ``ser.dsp.grid`` defines, the normalisation is one this runtime
applies, and a graph's operations are ones it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ser.dsp import grid as grids
from ser.dsp import speaker_norm, storage
from ser.dsp.feature_config import FeatureConfig
from ser.runtime import model_file
from ser.runtime.model_file import ModelFileError, Section

# The statistics a file holds: the standardisation, and a speaker-normalised model's population.
STATISTICS = (("feature_mean", "feature_std"), ("population_mean", "population_std"))
OPS = ("transpose", "unsqueeze", "conv2d", "relu", "avgpool2d", "concat", "mean", "linear")


@dataclass(frozen=True)
class LayerSpec:
    """One quantized layer of the header: its weight's shape, bits and grid, and for an MLP layer its activation
    (``None`` in a graph model, whose ops say what follows each layer)."""

    name: str
    shape: tuple[int, ...]
    bits: int
    grid: str = "symmetric"
    activation: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"name": self.name, "shape": list(self.shape), "bits": self.bits, "grid": self.grid}
        return out if self.activation is None else {**out, "activation": self.activation}


@dataclass(frozen=True)
class GraphSpec:
    """A network other than the MLP (the header's ``network``): ops on named tensors (``ser.runtime.graph``)."""

    input: tuple[int, ...]  # one utterance's features: (channels, frames)
    ops: list[dict]
    output: str = "logits"

    def to_json(self) -> dict[str, Any]:
        return {"kind": "graph", "input": list(self.input), "output": self.output, "ops": self.ops}


@dataclass(frozen=True)
class SerqHeader:
    """What a device needs besides the numbers: classes, feature settings, layers, quantizer, network, normalisation."""

    classes: list[str]
    features: FeatureConfig
    layers: list[LayerSpec]
    per_channel: bool = False
    network: GraphSpec | None = None  # None: the MLP of ``layers``
    normalize: str = "global"
    prior_weight: float = 0.0  # speaker only: pseudo-recordings of the population in a speaker's estimate

    def to_json(self) -> dict[str, Any]:
        header = {
            "classes": list(self.classes),
            "features": self.features.to_dict(),
            "layers": [layer.to_json() for layer in self.layers],
            "quantizer": {"per_channel": self.per_channel},
        }
        if self.network is not None:
            header["network"] = self.network.to_json()
        if self.normalize != "global":  # global models keep the header they always had
            header["normalize"] = {"kind": self.normalize, "prior_weight": self.prior_weight}
        return header

    @classmethod
    def parse(cls, header: dict[str, Any], path: str | Path) -> SerqHeader:
        """The header of the file at ``path``, refusing a grid, bit-width, normalisation or operation this runtime
        does not know (absent grid: symmetric; absent normalize: global)."""
        layers = []
        for spec in header["layers"]:
            name, bits, grid = spec["name"], int(spec["bits"]), spec.get("grid", "symmetric")
            if grid not in grids.GRIDS:
                raise ModelFileError(
                    f"{path}: layer {name} uses the quantization grid {grid!r}, this runtime knows "
                    f"{', '.join(grids.GRIDS)}; upgrade ser"
                )
            if not grids.MIN_BITS <= bits <= grids.MAX_BITS:
                raise ModelFileError(
                    f"{path}: layer {name} has {bits} bits, this runtime reads {grids.MIN_BITS} to {grids.MAX_BITS}"
                )
            layers.append(LayerSpec(name, tuple(spec["shape"]), bits, grid, spec.get("activation")))
        norm = header.get("normalize", {"kind": "global"})
        if norm.get("kind") not in speaker_norm.NORMALIZE:
            raise ModelFileError(
                f"{path}: normalisation {norm.get('kind')!r} is not one of "
                f"{', '.join(speaker_norm.NORMALIZE)}; upgrade ser to run this model"
            )
        network = None
        if "network" in header:
            raw = header["network"]
            if raw.get("kind") != "graph":
                raise ModelFileError(
                    f"{path}: network kind {raw.get('kind')!r} is not known to this runtime; upgrade ser"
                )
            for op in raw["ops"]:
                if op.get("op") not in OPS:
                    raise ModelFileError(
                        f"{path}: network operation {op.get('op')!r} is not known to this runtime; upgrade ser"
                    )
            network = GraphSpec(tuple(raw["input"]), list(raw["ops"]), raw["output"])
        prior_weight = float(norm.get("prior_weight", 0.0) or 0.0) if norm["kind"] == "speaker" else 0.0
        return cls(
            list(header["classes"]),
            FeatureConfig(**header["features"]),
            layers,
            bool(header.get("quantizer", {}).get("per_channel", False)),
            network,
            norm["kind"],
            prior_weight,
        )


@dataclass
class SerqModel:
    """A ``.serq`` model: its header and its sections' values by name (as ``model_file.read`` decodes them:
    statistics and biases as float32, each layer's ``<name>.codes`` as uint8 in its weight's shape and
    ``<name>.scales``, a graph's float32 per-channel arrays), in the file's section order.

    ``bias_bits`` and ``stats_bits`` say how ``write`` stores an MLP layer's bias and the standardisation
    (``ser.dsp.storage``); the values must be ones those encodings hold exactly (the quantizer made them so).
    """

    header: SerqHeader
    arrays: dict[str, np.ndarray]
    bias_bits: int = storage.FLOAT_BITS
    stats_bits: int = storage.FLOAT_BITS

    def weight(self, layer: LayerSpec) -> np.ndarray:
        """The dequantized weight (float32): what every runtime computes with (``ser.dsp.grid``, the layer's grid)."""
        return grids.dequantize(
            self.arrays[f"{layer.name}.codes"], self.arrays[f"{layer.name}.scales"], layer.bits, layer.grid
        )

    def sections(self) -> list[Section]:
        """The payload as ``model_file`` stores it: codes packed at their layer's bits, an MLP layer's bias at
        ``bias_bits``, the standardisation at ``stats_bits``, every other array as float32."""
        bits = {f"{layer.name}.codes": layer.bits for layer in self.header.layers}
        mlp_biases = set() if self.header.network is not None else {f"{l.name}.bias" for l in self.header.layers}
        narrow = {} if self.stats_bits == storage.FLOAT_BITS else storage.NARROW_STATISTICS
        sections = []
        for name, values in self.arrays.items():
            if name in bits:
                sections.append(Section(name, values, bits[name]))
            elif name in mlp_biases and self.bias_bits != storage.FLOAT_BITS:
                codes, scale = storage.encode_bias(values, self.bias_bits)
                sections.append(Section(name, codes, self.bias_bits, scale=scale))
            elif name in narrow:
                ratio, _ = storage.encode_statistics(values, self.arrays[narrow[name]])
                sections.append(Section(name, ratio, dtype="f2", unit=narrow[name]))
            elif name in narrow.values():
                mean = next(m for m, s in narrow.items() if s == name)
                _, std_bits = storage.encode_statistics(self.arrays[mean], values)
                sections.append(Section(name, std_bits, dtype="bf16"))
            else:
                sections.append(Section(name, values))
        return sections

    def write(self, path: str | Path) -> int:
        """Write the model as a ``.serq`` file; returns its size in bytes."""
        return model_file.write(path, self.header.to_json(), self.sections())

    @classmethod
    def read(cls, path: str | Path) -> SerqModel:
        raw, arrays = model_file.read(path)
        header = SerqHeader.parse(raw, path)
        missing = [
            f"{layer.name}.{part}"
            for layer in header.layers
            for part in ("codes", "scales")
            if f"{layer.name}.{part}" not in arrays
        ]
        if missing:
            raise ModelFileError(f"{path}: sections {missing} are missing; the file is not a valid model")
        for layer in header.layers:
            codes = arrays[f"{layer.name}.codes"]
            if codes.size and int(codes.max()) >= grids.n_codes(layer.bits, layer.grid):
                raise ModelFileError(
                    f"{path}: layer {layer.name} has a code outside its {layer.bits}-bit {layer.grid} "
                    "grid; the file is not a valid model"
                )
        return cls(header, arrays)
