"""The ``.serq`` file: a quantized model, bit-packed at each layer's own bit-width.

Layout (all integers little-endian)::

    b"SERQ" | u16 format version | u32 header length | header (UTF-8 JSON) | payload | SHA-256

The header holds what a device needs besides the weights: the feature settings, the class
names, the network's layers (shape, bits, activation) and a table of payload sections
(offset, size, type), and for a model trained with speaker normalisation a ``normalize`` entry
(``{"kind": "speaker", "prior_weight": w}``; absent means global). The payload holds the
standardisation statistics (and then the population's, ``population_mean``/``population_std``),
per-layer scales and biases as float32, and the weights as integer codes packed into a
continuous bit stream. Float sections may be stored narrower (``ser.dsp.storage``): a section
entry with ``"dtype": "bf16"`` holds bfloat16 values (standard deviations), one with ``"dtype":
"f2"`` float16 values, which with ``"unit": <section>`` are in units of that section's values
(a mean in standard deviations), and one with ``bits`` and a ``scale`` a bias as codes on the
symmetric grid times that power-of-two scale; all decode to float32. The SHA-256 of everything
before it is checked on load, so a truncated or corrupted file is refused instead of silently
mispredicting.

Each layer names its quantization ``grid`` (``ser.dsp.grid``: ``symmetric``, the paper's, or
``full``); a layer without one is ``symmetric``, as every file from before grids were recorded.

A model other than the MLP (Light-SERNet) carries a ``network`` entry: ``{"kind": "graph",
"input": [channels, frames], "ops": [...]}``, the network as a list of operations on named
tensors (``ser.runtime.model`` runs them; ``docs/deploying.md`` lists them). Its ``layers``
are the quantized layers the ops refer to (shape, bits, grid); float32 per-channel sections
(batch norm folded into a ``scale`` and ``shift``, biases) are named by the ops that use them.
Without ``network`` the layers are an MLP, in order, each with its ``activation``.

Version 2 is version 1 plus the ``normalize`` entry; version 3 is version 2 plus layers on a
grid other than ``symmetric``; version 4 is version 3 plus ``network``. Each file is written at
the lowest version that describes it, so a runtime from before speaker normalisation refuses a
speaker-normalised model (instead of running it on unnormalised features), a runtime from
before grids refuses a ``full``-grid model (instead of dequantizing its codes on the symmetric
grid), one from before graphs refuses a convolutional model, and all still read every other model.
Version 5 is version 4 plus narrow float sections (16-bit statistics, biases as codes): a
runtime from before them would misread those bytes as float32, so it refuses the file.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ser.dsp import storage
from ser.errors import SERError
from ser.runtime import packing

MAGIC = b"SERQ"
FORMAT_VERSION = 5  # the newest this runtime writes and reads
READS = (1, 2, 3, 4, 5)
_PREAMBLE = struct.Struct("<4sHI")
_DIGEST = 32


class ModelFileError(SERError):
    """A model file that cannot be trusted: truncated, corrupted, or of another format."""


FLOAT_DTYPES = {"f4": "<f4", "f2": "<f2", "bf16": "<u2"}  # bfloat16: its 16 bits (ser.dsp.storage.bfloat16_bits)


@dataclass
class Section:
    """One payload entry: float values (float32; float16 with ``dtype="f2"``, in units of section
    ``unit``'s values if given; bfloat16 bits with ``dtype="bf16"``), integer codes packed at
    ``bits`` bits, or, with ``bits`` and a ``scale``, float values stored as such codes on the
    symmetric grid (``data`` holds the codes; they decode to level(code) · scale)."""

    name: str
    data: np.ndarray
    bits: int | None = None  # None: floats
    scale: float | None = None  # with bits: the codes are a float section's
    dtype: str = "f4"  # floats only: "f4", "f2" or "bf16"
    unit: str | None = None  # "f2" only: the section whose values this one's are in units of

    def __post_init__(self) -> None:
        if self.dtype not in FLOAT_DTYPES or (self.dtype != "f4" and self.bits is not None):
            raise ValueError(f"section {self.name}: dtype {self.dtype!r} (floats: {', '.join(FLOAT_DTYPES)})")
        if self.scale is not None and self.bits is None:
            raise ValueError(f"section {self.name}: a scale needs codes (bits)")
        if self.unit is not None and self.dtype != "f2":
            raise ValueError(f"section {self.name}: only float16 values are stored in units of another section")

    def encode(self) -> bytes:
        if self.bits is None:
            return np.ascontiguousarray(self.data, dtype=FLOAT_DTYPES[self.dtype]).tobytes()
        return packing.pack(self.data.ravel(), self.bits)

    def entry(self) -> dict[str, Any]:
        """The section table's fields besides name, offset and size."""
        return {
            "shape": list(self.data.shape),
            **({"bits": self.bits} if self.bits is not None else {}),
            **({"scale": float(self.scale)} if self.scale is not None else {}),
            **({"dtype": self.dtype} if self.dtype != "f4" else {}),
            **({"unit": self.unit} if self.unit is not None else {}),
        }


def version_of(header: dict[str, Any]) -> int:
    """The lowest format version that describes ``header`` (with its ``sections`` table): 5 with narrow float
    sections, 4 with a ``network`` graph, 3 with a non-symmetric grid, 2 with ``normalize``, else 1."""
    if any("scale" in entry or "dtype" in entry for entry in header.get("sections", [])):
        return 5
    if "network" in header:
        return 4
    if any(layer.get("grid", "symmetric") != "symmetric" for layer in header.get("layers", [])):
        return 3
    return 2 if "normalize" in header else 1


def write(path: str | Path, header: dict[str, Any], sections: list[Section]) -> int:
    """Write the file atomically; returns its size in bytes."""
    from ser.io import atomic_path

    payload, table, offset = [], [], 0
    for section in sections:
        blob = section.encode()
        table.append({"name": section.name, "offset": offset, "nbytes": len(blob), **section.entry()})
        payload.append(blob)
        offset += len(blob)
    header = {**header, "sections": table}
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    version = version_of(header)
    body = _PREAMBLE.pack(MAGIC, version, len(header_bytes)) + header_bytes + b"".join(payload)
    blob = body + hashlib.sha256(body).digest()
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)
    return len(blob)


def read(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Header and decoded sections (float32 arrays, or uint8 codes in their shape; a float section stored as
    codes or float16 decodes to float32)."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read model file ({exc.strerror or exc})") from exc
    if len(blob) < _PREAMBLE.size + _DIGEST or blob[:4] != MAGIC:
        raise ModelFileError(f"{path}: not a ser model file (expected a .serq file written by `ser export`)")
    body, digest = blob[:-_DIGEST], blob[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise ModelFileError(f"{path}: checksum mismatch, the file is truncated or corrupted; export it again")
    _, version, header_len = _PREAMBLE.unpack_from(body)
    if version not in READS:
        raise ModelFileError(
            f"{path}: format version {version}, this runtime reads versions {', '.join(map(str, READS))}; upgrade ser"
        )
    start = _PREAMBLE.size + header_len
    header = json.loads(body[_PREAMBLE.size : start])
    payload = memoryview(body)[start:]
    arrays = {}
    for entry in header["sections"]:
        raw = payload[entry["offset"] : entry["offset"] + entry["nbytes"]]
        shape = tuple(entry["shape"])
        if "bits" in entry:
            codes = packing.unpack(raw, entry["bits"], int(np.prod(shape))).reshape(shape)
            arrays[entry["name"]] = (
                codes if "scale" not in entry else storage.decode_bias(codes, entry["scale"], entry["bits"])
            )
        elif entry.get("dtype") == "bf16":
            arrays[entry["name"]] = storage.from_bfloat16(np.frombuffer(raw, dtype="<u2").reshape(shape))
        elif entry.get("dtype") == "f2":
            arrays[entry["name"]] = np.frombuffer(raw, dtype="<f2").reshape(shape)  # float32 below
        else:
            arrays[entry["name"]] = np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
    for entry in header["sections"]:
        if entry.get("dtype") == "f2":
            unit = entry.get("unit")
            if unit is not None and (unit not in arrays or arrays[unit].shape != arrays[entry["name"]].shape):
                raise ModelFileError(f"{path}: section {entry['name']} is in units of {unit!r}, which it lacks")
            ratio = arrays[entry["name"]]
            arrays[entry["name"]] = ratio.astype(np.float32) if unit is None else storage.in_units(ratio, arrays[unit])
    return header, arrays
