"""One quantized layer as export ships it: codes on a grid, their scales and the stored bias (numpy)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ser.dsp import grid as grids
from ser.dsp import storage


@dataclass
class ExportLayer:
    """One quantized layer as shipped: integer codes on a grid, their scales, and the bias (float32 values;
    stored as codes at ``bias_bits`` below 32, ``ser.dsp.storage``)."""

    name: str
    bits: int
    grid: str
    codes: np.ndarray  # uint8, the weight's shape
    scales: np.ndarray  # float32, 1 or one per output row
    bias: np.ndarray | None
    bias_bits: int = storage.FLOAT_BITS

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.codes.shape)

    def weight(self) -> np.ndarray:
        """The dequantized weight (float32): what the runtime and the ONNX graph compute with."""
        return grids.dequantize(self.codes, self.scales, self.bits, self.grid)
