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


def test_only_a_file_with_a_normalisation_entry_is_version_2(tmp_path):
    """Runtimes from before speaker normalisation read version 1 only: they must refuse a speaker model."""
    sections = [Section("scales", np.array([0.5], dtype=np.float32))]
    model_file.write(tmp_path / "global.serq", {"classes": ["a"]}, sections)
    model_file.write(tmp_path / "speaker.serq", {"classes": ["a"], "normalize": {"kind": "speaker"}}, sections)
    assert (tmp_path / "global.serq").read_bytes()[4:6] == (1).to_bytes(2, "little")
    assert (tmp_path / "speaker.serq").read_bytes()[4:6] == (2).to_bytes(2, "little")
    assert model_file.read(tmp_path / "speaker.serq")[0]["normalize"] == {"kind": "speaker"}


def test_a_newer_format_version_is_refused(tmp_path):
    import hashlib

    path = tmp_path / "m.serq"
    model_file.write(path, {"classes": ["a"]}, [])
    body = bytearray(path.read_bytes()[:-32])
    body[4:6] = (3).to_bytes(2, "little")
    path.write_bytes(bytes(body) + hashlib.sha256(bytes(body)).digest())
    with pytest.raises(ModelFileError, match="format version 3, this runtime reads versions 1, 2"):
        model_file.read(path)
