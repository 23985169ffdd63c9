"""The ``.serq`` file: a quantized model, bit-packed at each layer's own bit-width.

Layout (all integers little-endian)::

    b"SERQ" | u16 format version | u32 header length | header (UTF-8 JSON) | payload | SHA-256

The header holds what a device needs besides the weights: the feature settings, the class
names, the network's layers (shape, bits, activation) and a table of payload sections
(offset, size, type), and for a model trained with speaker normalisation a ``normalize`` entry
(``{"kind": "speaker", "prior_weight": w}``; absent means global). The payload holds the
standardisation statistics (and then the population's, ``population_mean``/``population_std``),
per-layer scales and biases as float32, and the weights as integer codes packed into a
continuous bit stream. The SHA-256 of everything before it is checked on load, so a truncated
or corrupted file is refused instead of silently mispredicting.

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
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ser.errors import SERError
from ser.runtime import packing

MAGIC = b"SERQ"
FORMAT_VERSION = 4  # the newest this runtime writes and reads
READS = (1, 2, 3, 4)
_PREAMBLE = struct.Struct("<4sHI")
_DIGEST = 32


class ModelFileError(SERError):
    """A model file that cannot be trusted: truncated, corrupted, or of another format."""


@dataclass
class Section:
    """One payload entry: float32 values, or integer codes packed at ``bits`` bits."""

    name: str
    data: np.ndarray
    bits: int | None = None  # None: float32

    def encode(self) -> bytes:
        if self.bits is None:
            return np.ascontiguousarray(self.data, dtype="<f4").tobytes()
        return packing.pack(self.data.ravel(), self.bits)


def version_of(header: dict[str, Any]) -> int:
    """The lowest format version that describes ``header``: 4 with a ``network`` graph, 3 with a non-symmetric grid,
    2 with ``normalize``, else 1."""
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
        table.append({"name": section.name, "offset": offset, "nbytes": len(blob), "shape": list(section.data.shape),
                      **({"bits": section.bits} if section.bits is not None else {})})
        payload.append(blob)
        offset += len(blob)
    header_bytes = json.dumps({**header, "sections": table}, separators=(",", ":")).encode()
    version = version_of(header)
    body = _PREAMBLE.pack(MAGIC, version, len(header_bytes)) + header_bytes + b"".join(payload)
    blob = body + hashlib.sha256(body).digest()
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)
    return len(blob)


def read(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Header and decoded sections (float32 arrays, or uint8 codes in their shape)."""
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
        raise ModelFileError(f"{path}: format version {version}, this runtime reads versions "
                             f"{', '.join(map(str, READS))}; upgrade ser")
    start = _PREAMBLE.size + header_len
    header = json.loads(body[_PREAMBLE.size : start])
    payload = memoryview(body)[start:]
    arrays = {}
    for entry in header["sections"]:
        raw = payload[entry["offset"] : entry["offset"] + entry["nbytes"]]
        shape = tuple(entry["shape"])
        if "bits" in entry:
            arrays[entry["name"]] = packing.unpack(raw, entry["bits"], int(np.prod(shape))).reshape(shape)
        else:
            arrays[entry["name"]] = np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
    return header, arrays
