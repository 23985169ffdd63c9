"""The quantization grids: which real level each unsigned integer code stands for.

This module is the one place that defines the code ↔ level mapping. It needs numpy only, so
the torch-free runtime and the exporter can dequantize exactly what the quantizer produced:

    weight ≈ dequantize(codes, scales, bits, grid) = levels(bits, grid)[codes] · scale

with one scale per layer (``scales`` of length 1) or per output channel (length = rows).

Grids (``b`` = bits, codes ``k`` = 0 … n_codes(b, grid) − 1, stored as uint8):

* ``symmetric`` (the paper's quantizer): for b ≥ 2 the 2^b − 1 integer levels
  −(2^(b−1)−1) … 2^(b−1)−1, zero included (level = k − (2^(b−1)−1), code 2^b − 1 unused);
  for b = 1 the two levels −1, +1 (level = 2k − 1; the scale is α = mean|w|).
* ``full``: all 2^b codes, the half-integer levels k − (2^b − 1)/2, i.e. ±0.5, ±1.5, … (no
  zero level). At 2 bits that is 4 levels instead of 3; at 1 bit it is ±0.5 (scale 2α).
"""

from __future__ import annotations

import numpy as np

GRIDS = ("symmetric", "full")
MIN_BITS, MAX_BITS = 1, 8


def check_bits(bits: int) -> None:
    """A ValueError unless the grids define ``bits`` (packing, quantizing and decoding all need it)."""
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits must be between {MIN_BITS} and {MAX_BITS} ({MIN_BITS}..{MAX_BITS}), got {bits}")


def _check(bits: int, grid: str) -> None:
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {GRIDS}, got {grid!r}")
    check_bits(bits)


def n_codes(bits: int, grid: str = "symmetric") -> int:
    """How many codes are in use: 2^b − 1 for symmetric b ≥ 2, else 2^b."""
    _check(bits, grid)
    return 2**bits - 1 if grid == "symmetric" and bits >= 2 else 2**bits


def levels(bits: int, grid: str = "symmetric") -> np.ndarray:
    """The level of every code, as float64 (index = code), ascending."""
    _check(bits, grid)
    k = np.arange(n_codes(bits, grid), dtype=np.float64)
    if grid == "full":
        return k - (2**bits - 1) / 2
    if bits == 1:
        return 2 * k - 1
    return k - (2 ** (bits - 1) - 1)


def max_level(bits: int, grid: str = "symmetric") -> float:
    """The largest level (the scale maps max|w| onto it when scales are taken at the maximum)."""
    return float(levels(bits, grid)[-1])


def encode(levels_: np.ndarray, bits: int, grid: str = "symmetric") -> np.ndarray:
    """Codes (uint8) of values that are already levels of the grid (any float array)."""
    _check(bits, grid)
    lv = np.asarray(levels_, dtype=np.float64)
    if grid == "full":
        k = lv + (2**bits - 1) / 2
    elif bits == 1:
        k = (lv + 1) / 2
    else:
        k = lv + (2 ** (bits - 1) - 1)
    return np.clip(np.rint(k), 0, n_codes(bits, grid) - 1).astype(np.uint8)


def quantize_codes(weight: np.ndarray, scales: np.ndarray, bits: int, grid: str = "symmetric") -> np.ndarray:
    """Nearest-level codes of ``weight`` (rows = output channels) given its scales (1 or one per row)."""
    _check(bits, grid)
    w = np.asarray(weight, dtype=np.float64)
    rows = w.reshape(w.shape[0], -1)
    s = np.asarray(scales, dtype=np.float64).reshape(-1, 1)
    x = rows / np.maximum(s, np.finfo(np.float64).tiny)
    if grid == "full":
        k = np.floor(x + 2**bits / 2)  # nearest half-integer level
    elif bits == 1:
        k = (x >= 0).astype(np.float64)
    else:
        k = np.rint(x) + (2 ** (bits - 1) - 1)
    return np.clip(k, 0, n_codes(bits, grid) - 1).astype(np.uint8).reshape(w.shape)


def dequantize(
    codes: np.ndarray, scales: np.ndarray, bits: int, grid: str = "symmetric", dtype=np.float32
) -> np.ndarray:
    """The weight the codes stand for: level(code) · scale of its row (or of the whole layer)."""
    codes = np.asarray(codes)
    lv = levels(bits, grid)[codes.astype(np.int64)]
    rows = lv.reshape(codes.shape[0], -1) * np.asarray(scales, dtype=np.float64).reshape(-1, 1)
    return rows.reshape(codes.shape).astype(dtype)
