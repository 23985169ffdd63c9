"""The .serq container: round trip, and refusal of damaged files."""

from __future__ import annotations

import numpy as np
import pytest

from ser.dsp.grid import dequantize
from ser.runtime import model_file
from ser.runtime.model_file import ModelFileError, Section


@pytest.fixture
def written(tmp_path):
    path = tmp_path / "m.serq"
    codes = np.array([[0, 1, 2], [3, 4, 5]], dtype=np.uint8)
    model_file.write(
        path,
        {"classes": ["a", "b"]},
        [Section("scales", np.array([0.5], dtype=np.float32)), Section("w.codes", codes, bits=3)],
    )
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
    assert dequantize(np.array([[0, 1, 2]], dtype=np.uint8), np.array([0.5], dtype=np.float32), 2).tolist() == [
        [-0.5, 0.0, 0.5]
    ]
    assert dequantize(np.array([[0, 1]], dtype=np.uint8), np.array([0.25], dtype=np.float32), 1).tolist() == [
        [-0.25, 0.25]
    ]


def test_dequantize_maps_codes_to_the_full_grids_half_integer_levels_per_row():
    codes = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], dtype=np.uint8)
    scales = np.array([1.0, 2.0], dtype=np.float32)
    assert dequantize(codes, scales, 2, "full").tolist() == [[-1.5, -0.5, 0.5, 1.5], [3.0, 1.0, -1.0, -3.0]]
    assert dequantize(np.array([[0, 1]], dtype=np.uint8), np.array([0.5], dtype=np.float32), 1, "full").tolist() == [
        [-0.25, 0.25]
    ]


def _tiny_model(path, layer: dict, codes, bits=2):
    """A complete one-layer model file (3 features, 2 classes) with ``layer``'s extra header keys."""
    from dataclasses import asdict

    from ser.dsp.feature_config import FeatureConfig

    header = {
        "classes": ["a", "b"],
        "features": asdict(FeatureConfig()),
        "quantizer": {"per_channel": False},
        "layers": [{"name": "net.0", "shape": [2, 3], "bits": bits, "activation": "none", **layer}],
    }
    sections = [
        Section("feature_mean", np.zeros(3, np.float32)),
        Section("feature_std", np.ones(3, np.float32)),
        Section("net.0.scales", np.array([0.5], np.float32)),
        Section("net.0.codes", codes, bits),
        Section("net.0.bias", np.zeros(2, np.float32)),
    ]
    model_file.write(path, header, sections)
    return path


def test_a_layer_without_a_grid_is_symmetric_and_a_full_grid_layer_makes_the_file_version_3(tmp_path):
    from ser.runtime.model import QuantizedModel

    codes = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    old = _tiny_model(tmp_path / "old.serq", {}, codes)
    full = _tiny_model(tmp_path / "full.serq", {"grid": "full"}, codes)
    sym = _tiny_model(tmp_path / "sym.serq", {"grid": "symmetric"}, codes)
    assert QuantizedModel.load(old).layers[0].weight.tolist() == [[-0.5, 0.0, 0.5], [0.5, 0.0, -0.5]]
    assert QuantizedModel.load(sym).layers[0].weight.tolist() == [[-0.5, 0.0, 0.5], [0.5, 0.0, -0.5]]
    assert QuantizedModel.load(full).layers[0].weight.tolist() == [[-0.75, -0.25, 0.25], [0.25, -0.25, -0.75]]
    versions = {p.name: p.read_bytes()[4:6] for p in (old, sym, full)}
    assert versions == {"old.serq": b"\x01\x00", "sym.serq": b"\x01\x00", "full.serq": b"\x03\x00"}, (
        "only a non-symmetric grid needs a runtime that knows grids"
    )


@pytest.mark.parametrize("grid_name", ["symmetric", "full"])
@pytest.mark.parametrize("bits", range(1, 9))
def test_runtime_weights_are_the_grids_levels_times_the_scale(tmp_path, grid_name, bits):
    """One mapping for quantizer, exporter and runtime: ``ser.dsp.grid``, read back from a file."""
    from ser.dsp import grid
    from ser.runtime.model import QuantizedModel

    codes = np.random.default_rng(bits).integers(0, grid.n_codes(bits, grid_name), size=(2, 3)).astype(np.uint8)
    model = QuantizedModel.load(_tiny_model(tmp_path / "m.serq", {"grid": grid_name}, codes, bits))
    levels = np.asarray(grid.levels(bits, grid_name), dtype=np.float32)
    np.testing.assert_array_equal(model.layers[0].weight, levels[codes] * np.float32(0.5))


def test_an_unknown_grid_or_a_code_off_the_grid_is_refused(tmp_path):
    from ser.runtime.model import QuantizedModel

    codes = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    path = _tiny_model(tmp_path / "nf4.serq", {"grid": "nf4"}, codes)
    with pytest.raises(ModelFileError, match="grid 'nf4'.*upgrade ser"):
        QuantizedModel.load(path)
    path = _tiny_model(tmp_path / "off.serq", {"grid": "symmetric"}, np.array([[0, 1, 3], [2, 1, 0]], dtype=np.uint8))
    with pytest.raises(ModelFileError, match="outside its 2-bit symmetric grid"):
        QuantizedModel.load(path)


def test_the_runtime_and_the_grid_module_import_without_torch():
    import subprocess
    import sys

    from tests.conftest import REPO

    code = (
        "import sys; sys.modules.update(dict.fromkeys(['torch', 'lightning', 'hydra', 'omegaconf', 'scipy'])); "
        "import ser.dsp.grid, ser.runtime.model, ser.runtime.predict; "
        "assert not any(m.startswith(('torch', 'lightning')) and sys.modules[m] for m in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


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
    body[4:6] = (6).to_bytes(2, "little")
    path.write_bytes(bytes(body) + hashlib.sha256(bytes(body)).digest())
    with pytest.raises(ModelFileError, match="format version 6, this runtime reads versions 1, 2, 3, 4, 5"):
        model_file.read(path)


def test_narrow_float_sections_decode_to_float32_and_make_the_file_version_5(tmp_path):
    """16-bit statistics and biases stored as power-of-two codes: a runtime before them must refuse the file."""
    from ser.dsp import storage

    mean = np.array([-248.96, 0.333, 1.2e-9], dtype=np.float32)
    std = np.array([50.1, 2.0, 3e-9], dtype=np.float32)
    bias = np.array([0.5, -0.25, 0.01], dtype=np.float32)
    codes, scale = storage.encode_bias(bias, 8)
    ratio, std_bits = storage.encode_statistics(mean, std)
    path = tmp_path / "narrow.serq"
    model_file.write(
        path,
        {"classes": ["a"]},
        [
            Section("feature_mean", ratio, dtype="f2", unit="feature_std"),
            Section("feature_std", std_bits, dtype="bf16"),
            Section("net.0.bias", codes, 8, scale=scale),
        ],
    )
    header, arrays = model_file.read(path)
    assert path.read_bytes()[4:6] == (5).to_bytes(2, "little")
    assert [s["nbytes"] for s in header["sections"]] == [6, 6, 3]
    assert all(arrays[name].dtype == np.float32 for name in arrays)
    stored_mean, stored_std = storage.round_statistics(mean, std, 16)
    np.testing.assert_array_equal(arrays["feature_mean"], stored_mean)
    np.testing.assert_array_equal(arrays["feature_std"], stored_std)
    np.testing.assert_array_equal(arrays["net.0.bias"], storage.round_bias(bias, 8))


def test_a_mean_in_units_of_a_missing_section_is_refused(tmp_path):
    path = tmp_path / "m.serq"
    model_file.write(
        path, {"classes": ["a"]}, [Section("feature_mean", np.zeros(3, np.float16), dtype="f2", unit="std")]
    )
    with pytest.raises(ModelFileError, match="in units of 'std', which it lacks"):
        model_file.read(path)


def test_a_file_without_narrow_sections_keeps_its_older_version(tmp_path):
    model_file.write(tmp_path / "m.serq", {"classes": ["a"]}, [Section("feature_mean", np.zeros(3, np.float32))])
    assert (tmp_path / "m.serq").read_bytes()[4:6] == (1).to_bytes(2, "little")


def test_a_scale_without_codes_or_float16_codes_are_refused_when_written():
    with pytest.raises(ValueError, match="a scale needs codes"):
        Section("b", np.zeros(2, np.float32), scale=0.5)
    with pytest.raises(ValueError, match="dtype 'f2'"):
        Section("b", np.zeros(2, np.uint8), 4, dtype="f2")
    with pytest.raises(ValueError, match="only float16 values are stored in units"):
        Section("b", np.zeros(2, np.uint16), dtype="bf16", unit="std")
