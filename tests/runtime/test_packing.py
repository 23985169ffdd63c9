"""Bit-packing: exact round trip at every width, the advertised size, and loud misuse."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ser.runtime.packing import pack, packed_size, unpack


@pytest.mark.parametrize("bits", range(1, 9))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_round_trip_and_size_at_every_width(bits, data):
    codes = data.draw(hnp.arrays(np.uint8, st.integers(0, 3000), elements=st.integers(0, (1 << bits) - 1)))
    blob = pack(codes, bits)
    assert len(blob) == packed_size(codes.size, bits) == math.ceil(codes.size * bits / 8)
    decoded = unpack(blob, bits, codes.size)
    assert decoded.dtype == np.uint8 and decoded.shape == codes.shape
    np.testing.assert_array_equal(decoded, codes)


def test_codes_form_one_little_endian_stream_without_per_value_padding():
    assert pack(np.array([1, 2, 3]), 2) == bytes([0b00111001])
    # 3-bit codes straddle bytes: 5 = 101, 6 = 011 (LSB first), 7 = 111 → 101 011 11|1 + zero padding.
    assert pack(np.array([5, 6, 7]), 3) == bytes([0b11110101, 0b00000001])
    np.testing.assert_array_equal(unpack(memoryview(b"\xf5\x01"), 3, 3), [5, 6, 7])


def test_unpack_reads_only_the_bytes_it_needs():
    np.testing.assert_array_equal(unpack(pack(np.array([9, 4]), 4) + b"\xff", 4, 2), [9, 4])


@pytest.mark.parametrize("bits", [0, 9])
def test_bits_outside_one_to_eight_are_refused(bits):
    for call in (
        lambda: pack(np.zeros(3, np.uint8), bits),
        lambda: unpack(b"\0", bits, 1),
        lambda: packed_size(1, bits),
    ):
        with pytest.raises(ValueError, match="bits must be between 1 and 8"):
            call()


@pytest.mark.parametrize("codes", [[0, 4], [-1, 0], [0.5, 1.0]])
def test_codes_that_do_not_fit_are_refused(codes):
    with pytest.raises(ValueError, match="codes must"):
        pack(np.array(codes), 2)


def test_short_data_names_the_sizes():
    with pytest.raises(ValueError, match="need 2 bytes, got 1"):
        unpack(b"\0", 3, 5)
