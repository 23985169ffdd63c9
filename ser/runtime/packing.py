"""Integer codes packed into one continuous little-endian bit stream.

A b-bit layer stored one code per byte would waste 8 − b bits per weight, which is most of
the file at low bit-widths; packing code i into bits ``i*b … i*b + b − 1`` (least
significant first) and padding only the last byte keeps a file at its theoretical size.
Both directions go through a (count, bits) bit matrix so that numpy does the work in bulk.
"""

from __future__ import annotations

import numpy as np

from ser.dsp import grid as grids

__all__ = ["pack", "packed_size", "unpack"]


def packed_size(count: int, bits: int) -> int:
    """Bytes that ``count`` codes of ``bits`` bits take: ``ceil(count * bits / 8)``."""
    grids.check_bits(bits)
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    return (count * bits + 7) // 8


def pack(codes: np.ndarray, bits: int) -> bytes:
    """Pack unsigned integer codes in ``[0, 2**bits)``, flattened in C order."""
    grids.check_bits(bits)
    codes = np.asarray(codes)
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"codes must be integers, got dtype {codes.dtype}")
    codes = codes.ravel()
    if codes.size and (codes.min() < 0 or codes.max() >= 1 << bits):
        raise ValueError(f"codes must lie in [0, {1 << bits}) for {bits} bits, got [{codes.min()}, {codes.max()}]")
    matrix = np.unpackbits(codes.astype(np.uint8)[:, None], axis=1, bitorder="little")[:, :bits]
    return np.packbits(matrix.ravel(), bitorder="little").tobytes()


def unpack(data: bytes | memoryview, bits: int, count: int) -> np.ndarray:
    """The first ``count`` codes of ``data`` as uint8, shape ``(count,)``.

    Only the bytes the codes need are read, so ``data`` may be the start of a larger buffer.
    """
    need = packed_size(count, bits)
    have = memoryview(data).nbytes
    if have < need:
        raise ValueError(f"{count} codes at {bits} bits need {need} bytes, got {have}")
    stream = np.unpackbits(np.frombuffer(data, dtype=np.uint8, count=need), count=count * bits, bitorder="little")
    return np.packbits(stream.reshape(count, bits), axis=1, bitorder="little").reshape(count)
