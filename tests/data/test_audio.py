"""Decoding: by content, any rate, and one-line errors for audio that cannot be used."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from ser.data.audio import AudioChecks, load_audio
from ser.errors import DataError


def _tone(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_aiff_data_named_wav_is_decoded_by_content(tmp_path):
    path = tmp_path / "really_aiff.wav"
    sf.write(path, _tone(0.5, 16000), 16000, format="AIFF")
    assert sf.info(path).format == "AIFF"
    audio = load_audio(path, 16000)
    np.testing.assert_allclose(audio, _tone(0.5, 16000), atol=1e-4)


def test_stereo_is_averaged_to_mono(tmp_path):
    path = tmp_path / "stereo.wav"
    left, right = _tone(0.5, 16000), np.zeros(8000, dtype=np.float32)
    sf.write(path, np.stack([left, right], axis=1), 16000)
    np.testing.assert_allclose(load_audio(path, 16000), left / 2, atol=1e-4)


def test_unusual_rate_is_resampled_to_the_target(tmp_path):
    path = tmp_path / "at_8k.wav"
    sf.write(path, _tone(1.0, 8000), 8000)
    audio = load_audio(path, 16000)
    assert len(audio) == 16000
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.argmax(spectrum) == 220  # 1 Hz bins: the 220 Hz tone survives resampling


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda p: p.write_bytes(b"RIFF\x00\x00garbage that is not audio"), "cannot decode audio"),
        (lambda p: p.write_bytes(b""), "cannot decode audio"),
        (lambda p: sf.write(p, _tone(0.02, 16000), 16000), "shorter than the minimum"),
        (lambda p: sf.write(p, np.zeros(16000, dtype=np.float32), 16000), "silent"),
    ],
    ids=["corrupt", "empty", "too-short", "silence"],
)
def test_bad_audio_gives_one_line_error_naming_the_file(tmp_path, write, message):
    path = tmp_path / "bad.wav"
    write(path)
    with pytest.raises(DataError, match=message) as info:
        load_audio(path, 16000)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_minimum_duration_is_configurable(tmp_path):
    path = tmp_path / "short.wav"
    sf.write(path, _tone(0.05, 16000), 16000)
    assert len(load_audio(path, 16000, AudioChecks(min_duration_s=0.01))) == 800
