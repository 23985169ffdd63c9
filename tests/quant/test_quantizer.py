"""Quantizer levels, scales, sizes and the average bit-width on models with known sizes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from ser.quant.quantizer import QuantizedWeights, QuantizerConfig, average_bits, model_size_kb, quantize

# The paper's quantizer (conf/quant/laq_paper.yaml): symmetric grid, max|w| scale, float32 biases and statistics.
PAPER = QuantizerConfig(grid="symmetric", scale="max", bias_bits=32, stats_bits=32)


@pytest.fixture
def weight() -> torch.Tensor:
    return torch.randn(64, 50, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("bits", range(2, 9))
def test_symmetric_levels_are_integer_steps_from_minus_to_plus_2_to_the_bits_minus_1_minus_1(weight, bits):
    q, (scale,) = quantize(weight, bits, PAPER)
    levels = torch.unique(q)
    top = 2 ** (bits - 1) - 1
    assert scale == pytest.approx(float(weight.abs().max()) / top)
    steps = levels / scale
    torch.testing.assert_close(steps, torch.round(steps))  # integer multiples of the step
    assert set(torch.round(steps).int().tolist()) <= set(range(-top, top + 1))  # 2^b - 1 levels, zero included
    if bits <= 3:  # 3200 Gaussian weights fill every level of a coarse grid
        assert len(levels) == 2**bits - 1
    assert float(q.abs().max()) == pytest.approx(float(weight.abs().max()), rel=1e-6)


def test_one_bit_gives_plus_minus_mean_absolute_weight(weight):
    q, (alpha,) = quantize(weight, 1, PAPER)
    assert alpha == pytest.approx(float(weight.abs().mean()))
    assert torch.unique(q).tolist() == pytest.approx([-float(alpha), float(alpha)])
    assert torch.equal(q > 0, weight >= 0)


def test_two_bits_use_minus_one_zero_one_times_the_scale():
    w = torch.tensor([[-1.0, -0.6, -0.4, 0.0, 0.3, 0.51, 1.0]])
    q, _ = quantize(w, 2, PAPER)
    assert q.tolist() == [[-1.0, -1.0, 0.0, 0.0, 0.0, 1.0, 1.0]]


def test_per_channel_scales_follow_each_output_row():
    w = torch.tensor([[1.0, -0.5], [10.0, 5.0]])
    _, scales = quantize(w, 3, replace(PAPER, per_channel=True))
    assert scales.tolist() == pytest.approx([1 / 3, 10 / 3])


def test_mse_clipping_reduces_reconstruction_error(weight):
    plain, _ = quantize(weight, 2, PAPER)
    clipped, _ = quantize(weight, 2, replace(PAPER, mse_clip=True))
    assert (clipped - weight).square().sum() < 0.8 * (plain - weight).square().sum()


def test_bits_outside_1_to_8_are_rejected(weight):
    with pytest.raises(ValueError, match="1..8"):
        quantize(weight, 9)


def _known_model() -> nn.Module:
    # 10·20 + 20 = 220 and 20·5 + 5 = 105 parameters: 325 in all.
    return nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))


def test_average_bits_is_the_parameter_weighted_mean_of_eq6():
    model = _known_model()
    assert average_bits(model, {"0": 2, "2": 8}) == pytest.approx((220 * 2 + 105 * 8) / 325)
    assert average_bits(model, {}) == 32


def test_size_counts_weights_at_their_bits_and_biases_and_scales_at_32():
    model = _known_model()
    bits = {"0": 2, "2": 8}
    expected_bits = 200 * 2 + 20 * 32 + 32 + 100 * 8 + 5 * 32 + 32
    assert model_size_kb(model, bits, PAPER) == pytest.approx(expected_bits / 8 / 1000)
    assert model_size_kb(model, bits, replace(PAPER, per_channel=True)) == pytest.approx(
        (expected_bits - 64 + 32 * (20 + 5)) / 8 / 1000
    )
    assert model_size_kb(model, {}) == pytest.approx(325 * 4 / 1000)


def test_size_counts_parameters_outside_linear_and_conv_at_32_bits():
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.Flatten(), nn.Linear(8, 2))
    bits = {"0": 4, "3": 4}
    conv, linear = 12 * 4 + 4 * 32 + 32, 16 * 4 + 2 * 32 + 32
    assert model_size_kb(model, bits, PAPER) == pytest.approx((conv + linear + 8 * 32) / 8 / 1000)


def test_quantized_weights_apply_and_restore_exactly():
    model = _known_model()
    original = model[0].weight.detach().clone()
    swap = QuantizedWeights(model)
    swap.apply({"0": 1})
    assert len(torch.unique(model[0].weight)) == 2
    swap.restore()
    assert torch.equal(model[0].weight, original)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_mse_scales_on_the_full_grid_reconstruct_better_than_the_papers(weight, bits):
    paper, _ = quantize(weight, bits, PAPER)
    ours, _ = quantize(weight, bits, QuantizerConfig(grid="full", scale="mse"))
    assert (ours - weight).square().sum() <= (paper - weight).square().sum() + 1e-6
    if bits == 2:  # 4 levels instead of 3
        assert len(torch.unique(ours)) == 4
        assert (ours - weight).square().sum() < 0.7 * (paper - weight).square().sum()


def test_mse_scale_is_not_worse_than_any_scale_of_a_sweep(weight):
    from ser.quant.quantizer import quantize_tensor

    best = quantize_tensor(weight, 3, QuantizerConfig(grid="full", scale="mse"))
    err = float((best.weight - weight).square().sum())
    for s in torch.linspace(0.2, 2.0, 40) * best.scales:
        other = quantize_tensor(weight, 3, QuantizerConfig(grid="full"), scales=s.reshape(1))
        assert err <= 1.001 * float((other.weight - weight).square().sum())  # Lloyd: a local optimum, within 0.1 %


def test_bias_correction_keeps_each_layers_mean_output():
    from ser.quant.quantizer import mean_inputs

    torch.manual_seed(0)
    model = _known_model()
    x = torch.randn(256, 10) + 0.5
    means = mean_inputs(model, x)
    with torch.no_grad():
        hidden = torch.relu(model[0](x))
        reference = model[2](hidden).mean(dim=0)
        float_biases = QuantizerConfig(bias_bits=32)  # stored as corrected, not rounded to 8-bit codes
        swap = QuantizedWeights(model, float_biases, means)
        swap.apply({"2": 1})
        corrected = model[2](hidden).mean(dim=0)
        swap.restore()
        QuantizedWeights(model, float_biases).apply({"2": 1})
        uncorrected = model[2](hidden).mean(dim=0)
    torch.testing.assert_close(corrected, reference, atol=1e-5, rtol=1e-5)
    assert float((uncorrected - reference).abs().max()) > 1e-3
    assert torch.allclose(means["0"], x.mean(dim=0))


def test_restore_brings_biases_back_after_bias_correction():
    from ser.quant.quantizer import mean_inputs

    model = _known_model()
    before = [p.detach().clone() for p in model.parameters()]
    swap = QuantizedWeights(model, QuantizerConfig(), mean_inputs(model, torch.randn(32, 10)))
    swap.apply({"0": 2, "2": 1})
    assert not torch.equal(model[2].bias, before[3])
    swap.restore()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_file_size_adds_the_standardisation_buffers_and_the_header_to_the_weights():
    from ser.quant.quantizer import FILE_OVERHEAD_KB, file_size_kb, model_size_kb

    net = nn.Sequential(nn.Linear(10, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    net.register_buffer("feature_mean", torch.zeros(10))
    net.register_buffer("feature_std", torch.ones(10))
    bits = {"0": 2, "2": 2}
    # 20 float32 standardisation values; the batch norm's running statistics are folded away.
    assert file_size_kb(net, bits, PAPER) == pytest.approx(
        model_size_kb(net, bits, PAPER) + 20 * 4 / 1000 + FILE_OVERHEAD_KB
    )


def test_quantize_sets_each_named_layer_to_its_width_and_leaves_the_others():
    from ser.dsp import grid
    from ser.quant.quantizer import quantize_

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    untouched = net[2].weight.detach().clone()
    config = QuantizerConfig(grid="full", scale="mse")
    (tensor,) = quantize_(net, {"0": 2}, config).values()
    assert len(torch.unique(net[0].weight)) <= 4 and torch.equal(net[2].weight, untouched)
    expected = grid.dequantize(tensor.codes.numpy(), tensor.scales.numpy(), 2, "full")
    assert torch.equal(net[0].weight, torch.from_numpy(expected)) and tensor.bits == 2


def test_quantize_names_a_layer_the_model_does_not_have():
    from ser.errors import SERError
    from ser.quant.quantizer import quantize_

    with pytest.raises(SERError, match="no quantizable layer named 9"):
        quantize_(nn.Sequential(nn.Linear(2, 2)), {"9": 4})


# -- narrow biases and statistics (ser.dsp.storage) ----------------------------------------------------------------

NARROW = QuantizerConfig(grid="full", scale="mse", bias_bits=8, stats_bits=16)


def _standardised_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    net.register_buffer("feature_mean", torch.tensor([0.1234567, -3.3, 250.01, 1e-5, 7.0, 0.0]))
    net.register_buffer("feature_std", torch.tensor([1.0001, 2.2, 30.3, 3e-6, 0.5, 1.0]))
    return net


def test_sizes_count_a_quantized_layers_bias_at_bias_bits_plus_its_scale_and_statistics_at_stats_bits():
    from ser.quant.quantizer import FILE_OVERHEAD_KB, file_size_kb, model_size_kb, stored_bits

    net = _standardised_net()
    assert stored_bits(net[0].weight, net[0].bias, 2, NARROW) == 30 * 2 + 32 + 5 * 8 + 32
    assert stored_bits(net[0].weight, net[0].bias, 32, NARROW) == 35 * 32  # full precision stays float32
    bits = {"0": 2, "2": 1}
    assert model_size_kb(net, bits, NARROW) == pytest.approx((60 + 32 + 72 + 15 + 32 + 56) / 8000)
    assert file_size_kb(net, bits, NARROW) == pytest.approx(
        model_size_kb(net, bits, NARROW) + 12 * 2 / 1000 + FILE_OVERHEAD_KB
    )
    net.register_buffer("unpaired", torch.ones(3))  # not a mean/std pair: float32
    assert file_size_kb(net, bits, NARROW) == pytest.approx(
        model_size_kb(net, bits, NARROW) + (24 + 12) / 1000 + FILE_OVERHEAD_KB
    )


def test_a_quantized_allocation_holds_stored_biases_and_statistics_and_full_precision_the_originals():
    from ser.dsp import storage

    net = _standardised_net()
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    swap = QuantizedWeights(net, NARROW)
    swap.apply({"0": 3})
    np.testing.assert_array_equal(net[0].bias.detach().numpy(), storage.round_bias(before["0.bias"].numpy(), 8))
    assert torch.equal(net[2].bias, before["2.bias"]), "a layer left at full precision keeps its float32 bias"
    stored = storage.round_statistics(before["feature_mean"].numpy(), before["feature_std"].numpy(), 16)
    for name, values in zip(("feature_mean", "feature_std"), stored):
        np.testing.assert_array_equal(getattr(net, name).numpy(), values)
        assert not torch.equal(getattr(net, name), before[name])
    swap.restore()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())


def test_quantize_stores_the_named_layers_biases_and_the_statistics():
    from ser.dsp import storage
    from ser.quant.quantizer import quantize_

    net = _standardised_net()
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    quantize_(net, {"2": 2}, NARROW)
    np.testing.assert_array_equal(net[2].bias.detach().numpy(), storage.round_bias(before["2.bias"].numpy(), 8))
    assert torch.equal(net[0].bias, before["0.bias"])
    _, std = storage.round_statistics(before["feature_mean"].numpy(), before["feature_std"].numpy(), 16)
    np.testing.assert_array_equal(net.feature_std.numpy(), std)


@pytest.mark.parametrize("field, value", [("bias_bits", 1), ("bias_bits", 16), ("stats_bits", 8)])
def test_storage_widths_a_file_cannot_hold_are_refused_naming_the_option(field, value):
    from ser.errors import SERError

    with pytest.raises(SERError, match=f"quant.quantizer.{field}={value}"):
        QuantizerConfig(**{field: value})
