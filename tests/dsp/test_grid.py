"""The code ↔ level grids shared by the quantizer, the exporter and the numpy runtime."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from ser.dsp import grid
from ser.quant.quantizer import QuantizerConfig, quantize_tensor


def test_symmetric_levels_are_the_papers():
    assert grid.levels(1, "symmetric").tolist() == [-1, 1]
    assert grid.levels(2, "symmetric").tolist() == [-1, 0, 1]
    assert grid.levels(3, "symmetric").tolist() == [-3, -2, -1, 0, 1, 2, 3]
    assert grid.n_codes(8, "symmetric") == 255


@pytest.mark.parametrize("bits", range(1, 9))
def test_full_grid_uses_every_code(bits):
    lv = grid.levels(bits, "full")
    assert len(lv) == 2**bits and lv[0] == -lv[-1] and np.all(np.diff(lv) == 1)
    assert grid.levels(2, "full").tolist() == [-1.5, -0.5, 0.5, 1.5]


@pytest.mark.parametrize("name", grid.GRIDS)
@pytest.mark.parametrize("bits", [1, 2, 3, 8])
@pytest.mark.parametrize("per_channel", [False, True])
def test_codes_and_scales_dequantize_to_the_quantized_weight(name, bits, per_channel):
    w = torch.randn(12, 9, generator=torch.Generator().manual_seed(bits))
    for scale in ("max", "mse"):
        t = quantize_tensor(w, bits, QuantizerConfig(per_channel=per_channel, grid=name, scale=scale))
        assert t.codes.dtype == torch.uint8 and t.codes.shape == w.shape
        assert int(t.codes.max()) < grid.n_codes(bits, name)
        back = grid.dequantize(t.codes.numpy(), t.scales.numpy(), bits, name)
        np.testing.assert_array_equal(back, t.weight.numpy())
        codes = grid.quantize_codes(w.numpy(), t.scales.numpy(), bits, name)
        np.testing.assert_array_equal(codes, t.codes.numpy())
        np.testing.assert_array_equal(
            grid.encode(back.reshape(w.shape[0], -1) / t.scales.numpy().reshape(-1, 1), bits, name), t.codes.numpy()
        )


def test_grid_module_needs_no_torch():
    code = "import sys, ser.dsp.grid as g; g.dequantize(g.quantize_codes([[0.3]], [1.0], 2, 'full'), [1.0], 2, 'full'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_unknown_grid_and_bits_are_rejected():
    with pytest.raises(ValueError, match="grid"):
        grid.levels(2, "asymmetric")
    with pytest.raises(ValueError, match="1..8"):
        grid.levels(9)
