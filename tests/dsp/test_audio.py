"""Decoding: by content, any rate, and one-line errors for audio that cannot be used."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from ser.dsp.audio import AudioChecks, load_audio
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
        (lambda p: p.write_bytes(b""), r"bad.wav: empty file \(0 bytes\)$"),
        (lambda p: None, r"bad.wav: file does not exist$"),
        (lambda p: p.mkdir(), r"bad.wav: is a directory, not an audio file$"),
        (lambda p: sf.write(p, _tone(0.02, 16000), 16000), "shorter than the minimum"),
        (lambda p: sf.write(p, np.zeros(16000, dtype=np.float32), 16000), "silent"),
    ],
    ids=["corrupt", "empty", "missing", "directory", "too-short", "silence"],
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


def _half_of(path, tone):
    sf.write(path, tone, 16000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_wav_cut_to_half_its_bytes_is_refused_as_truncated(tmp_path):
    path = tmp_path / "cut.wav"
    _half_of(path, _tone(2.0, 16000))  # 44-byte header + 64000 bytes of audio: 31978 bytes of audio remain
    assert sf.info(path).frames < 32000, "libsndfile alone would decode the half that is there"
    with pytest.raises(DataError) as info:
        load_audio(path, 16000)
    assert str(info.value) == (
        f"{path}: truncated WAV file: its header promises 32000 frames (2.00 s) but the file "
        f"holds 15989 (1.00 s); copy or export it again"
    )


def test_stereo_wav_cut_short_is_counted_in_frames_not_bytes(tmp_path):
    path = tmp_path / "cut_stereo.wav"
    _half_of(path, np.stack([_tone(1.0, 16000)] * 2, axis=1))
    with pytest.raises(DataError, match="promises 16000 frames .* holds 7994 "):
        load_audio(path, 16000)


def test_complete_wav_with_chunks_after_the_audio_is_not_called_truncated(tmp_path):
    path = tmp_path / "tagged.wav"
    sf.write(path, _tone(0.5, 16000), 16000, subtype="PCM_16")
    with sf.SoundFile(path, "r+") as fh:
        fh.title = "a LIST chunk after the data"
    assert len(load_audio(path, 16000)) == 8000


def test_streamed_wav_with_unknown_data_size_still_loads(tmp_path):
    path = tmp_path / "streamed.wav"
    sf.write(path, _tone(0.5, 16000), 16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    at = data.index(b"data")
    data[at + 4 : at + 8] = b"\xff\xff\xff\xff"  # a writer that could not seek back to fill in the size
    path.write_bytes(bytes(data))
    np.testing.assert_allclose(load_audio(path, 16000), _tone(0.5, 16000), atol=1e-4)
