"""The .serq container: round trip, and refusal of damaged files."""

from __future__ import annotations

import numpy as np
import pytest

from ser.runtime import model_file
from ser.runtime.model import dequantize
from ser.runtime.model_file import ModelFileError, Section


@pytest.fixture
def written(tmp_path):
    path = tmp_path / "m.serq"
    codes = np.array([[0, 1, 2], [3, 4, 5]], dtype=np.uint8)
    model_file.write(path, {"classes": ["a", "b"]}, [Section("scales", np.array([0.5], dtype=np.float32)),
                                                      Section("w.codes", codes, bits=3)])
    return path, codes


def test_round_trip_keeps_header_floats_and_packed_codes(written):
    path, codes = written
    header, arrays = model_file.read(path)
    assert header["classes"] == ["a", "b"]
    np.testing.assert_array_equal(arrays["w.codes"], codes)
    assert arrays["scales"].tolist() == [0.5]


@pytest.mark.parametrize("damage", ["flip", "truncate", "magic"])
def test_damaged_file_is_refused_with_a_clear_error(written, damage):
    path, _ = written
    blob = bytearray(path.read_bytes())
    if damage == "flip":
        blob[len(blob) // 2] ^= 0x01
    elif damage == "truncate":
        blob = blob[:-7]
    else:
        blob[:4] = b"RIFF"
    path.write_bytes(bytes(blob))
    with pytest.raises(ModelFileError, match=str(path)) as info:
        model_file.read(path)
    assert "\n" not in str(info.value)


def test_dequantize_maps_codes_back_to_symmetric_levels():
    assert dequantize(np.array([[0, 1, 2]], dtype=np.uint8), np.array([0.5], dtype=np.float32), 2).tolist() == [[-0.5, 0.0, 0.5]]
    assert dequantize(np.array([[0, 1]], dtype=np.uint8), np.array([0.25], dtype=np.float32), 1).tolist() == [[-0.25, 0.25]]
