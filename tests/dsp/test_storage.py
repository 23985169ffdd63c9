"""How biases and statistics are stored: power-of-two bias codes and float16 statistics."""

from __future__ import annotations

import numpy as np
import pytest

from ser.dsp import storage


def test_bias_codes_use_the_smallest_power_of_two_scale_that_holds_the_largest_bias():
    codes, scale = storage.encode_bias(np.array([0.5, -0.25, 0.0], dtype=np.float32), 8)
    assert scale == 2.0**-7  # 0.5 / 127 = 0.0039… → 2^-7 = 0.0078125 (2^-8 would need level 128)
    assert codes.dtype == np.uint8 and codes.tolist() == [127 + 64, 127 - 32, 127]


def test_decoded_bias_is_within_half_a_step_and_exact_in_float32():
    bias = np.random.default_rng(0).normal(0, 0.3, 100).astype(np.float32)
    codes, scale = storage.encode_bias(bias, 6)
    decoded = storage.decode_bias(codes, scale, 6)
    assert decoded.dtype == np.float32
    assert np.max(np.abs(decoded - bias)) <= scale / 2
    assert np.array_equal(decoded.astype(np.float64), (codes.astype(np.float64) - 31) * scale)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_encoding_a_stored_bias_again_gives_the_same_codes_and_scale(bits):
    rng = np.random.default_rng(bits)
    for magnitude in (1e-5, 0.01, 3.0, 400.0):
        bias = (rng.normal(size=37) * magnitude).astype(np.float32)
        stored = storage.round_bias(bias, bits)
        assert np.array_equal(storage.round_bias(stored, bits), stored)
        assert storage.encode_bias(stored, bits)[1] == storage.encode_bias(bias, bits)[1]


def test_a_zero_bias_stores_as_zero():
    assert storage.round_bias(np.zeros(4, dtype=np.float32), 8).tolist() == [0.0] * 4


def test_32_bits_leave_biases_and_statistics_unchanged():
    values = np.array([0.1234567, 7.654321], dtype=np.float32)
    assert np.array_equal(storage.round_bias(values, 32), values)
    mean, std = storage.round_statistics(-values, values, 32)
    assert np.array_equal(mean, -values) and np.array_equal(std, values)


def test_16_bit_deviations_are_within_two_to_the_minus_8_relative_across_ten_decades():
    std = np.array([96.38, 1.1683e-5, 3.3e-9, 1e-10, 0.5], dtype=np.float32)
    _, stored = storage.round_statistics(np.zeros(5), std, 16)
    assert stored.dtype == np.float32 and np.all(stored > 0)
    assert np.all(np.abs(stored - std) <= 2.0**-8 * std)


def test_16_bit_means_are_within_two_to_the_minus_11_of_their_ratio_in_standard_deviations():
    """Only (x - mean) / std is used: a tiny mean of a tiny-deviation feature keeps its precision."""
    mean = np.array([-248.96, 99.81, 4.3e-9, 0.0, 3.0], dtype=np.float32)
    std = np.array([50.1, 1.0, 1.2e-9, 2.0, 1e-4], dtype=np.float32)
    stored_mean, stored_std = storage.round_statistics(mean, std, 16)
    ratio = np.abs(mean / stored_std)
    assert np.all(np.abs(stored_mean - mean) / stored_std <= 2.0**-11 * np.maximum(ratio, 2.0**-14))


def test_16_bit_statistics_stored_again_are_unchanged():
    rng = np.random.default_rng(0)
    std = (10 ** rng.uniform(-10, 3, 200)).astype(np.float32)
    mean = (rng.normal(size=200) * std * 10 ** rng.uniform(-3, 2, 200)).astype(np.float32)
    once = storage.round_statistics(mean, std, 16)
    twice = storage.round_statistics(*once, 16)
    assert np.array_equal(once[0], twice[0]) and np.array_equal(once[1], twice[1])


def test_a_mean_beyond_float16_in_standard_deviations_is_refused_with_the_way_out():
    with pytest.raises(ValueError, match="overflows float16; store the statistics at 32 bits"):
        storage.round_statistics(np.array([1.0, 1e5]), np.array([1.0, 1.0]), 16)


@pytest.mark.parametrize("bits", [1, 9, 16])
def test_bias_widths_outside_2_to_8_or_32_are_refused(bits):
    with pytest.raises(ValueError, match="2..8"):
        storage.round_bias(np.ones(3), bits)


def test_statistics_widths_other_than_16_or_32_are_refused():
    with pytest.raises(ValueError, match="16 .* or 32"):
        storage.round_statistics(np.ones(3), np.ones(3), 8)
