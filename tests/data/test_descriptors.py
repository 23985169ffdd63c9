"""The pitch and spectral-shape parts must equal librosa's functions on the same frames."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from ser.data.features import FeatureConfig, FeatureExtractor
from ser.dsp import filters
from tests.data.test_features import SR, _speechlike

CONFIG = FeatureConfig(parts=("pitch", "spectral"), stats=("mean", "std"))
INNER = slice(2, -2)  # librosa pads zero_crossing_rate's edges differently (edge values, not zeros)


@pytest.fixture(scope="module")
def clip() -> tuple[np.ndarray, np.ndarray]:
    """A 1.5 s voiced signal gliding around 120 Hz, and its frames (channels, T) from the extractor."""
    y = _speechlike(3, 1.5)
    frames, n_frames = FeatureExtractor(CONFIG).frames(torch.from_numpy(y)[None], torch.tensor([len(y)]))
    return y, frames[0, :, : int(n_frames[0])].numpy()


def _channel(frames: np.ndarray, part: str, name: str) -> np.ndarray:
    return frames[CONFIG.channel(part, name)]


def _magnitude(y: np.ndarray) -> np.ndarray:
    return np.abs(librosa.stft(y, n_fft=2048, hop_length=512))


def test_log_f0_is_librosa_yin(clip):
    y, frames = clip
    ref = librosa.yin(y, fmin=60.0, fmax=500.0, sr=SR, frame_length=2048, hop_length=512)
    np.testing.assert_allclose(_channel(frames, "pitch", "log_f0"), np.log(ref), rtol=1e-5)


def test_pitch_of_the_glide_is_near_its_true_f0(clip):
    _, frames = clip
    f0 = np.exp(np.median(_channel(frames, "pitch", "log_f0")[INNER]))
    assert 90 < f0 < 150


def test_a_steady_vowel_is_voiced_and_noise_is_not():
    rng = np.random.default_rng(0)
    t = np.arange(SR) / SR
    vowel = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 10)).astype(np.float32)
    noise = (0.1 * rng.standard_normal(SR)).astype(np.float32)
    audio = torch.from_numpy(np.stack([vowel, noise]))
    frames, _ = FeatureExtractor(CONFIG).frames(audio, torch.tensor([SR, SR]))
    voiced = frames[:, CONFIG.channel("pitch", "voiced"), 2:-2].mean(dim=1)
    assert voiced[0] > 0.9 and voiced[1] < 0.1


def test_silence_is_aperiodic():
    frames, _ = FeatureExtractor(CONFIG).frames(torch.zeros(1, SR), torch.tensor([SR]))
    assert frames[0, CONFIG.channel("pitch", "periodicity")].abs().max() == 0


@pytest.mark.parametrize(
    "name, reference",
    [
        ("rms_db", lambda y: librosa.amplitude_to_db(librosa.feature.rms(S=_magnitude(y), frame_length=2048))[0]),
        ("centroid", lambda y: librosa.feature.spectral_centroid(S=_magnitude(y), sr=SR)[0]),
        ("bandwidth", lambda y: librosa.feature.spectral_bandwidth(S=_magnitude(y), sr=SR)[0]),
        ("rolloff", lambda y: librosa.feature.spectral_rolloff(S=_magnitude(y), sr=SR)[0]),
        ("flatness", lambda y: librosa.feature.spectral_flatness(S=_magnitude(y))[0]),
    ],
)
def test_spectral_shape_is_librosa(clip, name, reference):
    y, frames = clip
    np.testing.assert_allclose(_channel(frames, "spectral", name), reference(y), rtol=1e-4, atol=1e-6)


def test_zero_crossing_rate_is_librosa_inside_the_utterance(clip):
    y, frames = clip
    ref = librosa.feature.zero_crossing_rate(y, frame_length=2048, hop_length=512)[0]
    np.testing.assert_allclose(_channel(frames, "spectral", "zcr")[INNER], ref[INNER], atol=1e-7)


def test_contrast_is_librosa(clip):
    y, frames = clip
    first = CONFIG.channel("spectral", "flatness") + 1
    ref = librosa.feature.spectral_contrast(S=_magnitude(y), sr=SR)
    np.testing.assert_allclose(frames[first:], ref, atol=0.05)  # dB, of values up to ~50 dB


def test_silent_frames_have_no_spectral_contrast():
    """Valleys share the peaks' dB floor: in digital silence after a tone, peak and valley both sit on
    it (a floor of the valleys' own would leave ~20 dB of contrast made of nothing)."""
    t = np.arange(SR) / SR
    y = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    y[SR // 2 :] = 0.0
    frames, _ = FeatureExtractor(CONFIG).frames(torch.from_numpy(y)[None], torch.tensor([SR]))
    first = CONFIG.channel("spectral", "flatness") + 1
    assert frames[0, first:, -5:].abs().max() == 0


def test_contrast_bands_are_librosa_octaves():
    bands = filters.contrast_bands(SR, 2048)
    assert [(start, stop) for start, stop, _ in bands] == [
        (0, 18),
        (18, 37),
        (37, 74),
        (74, 148),
        (148, 297),
        (297, 594),
        (594, 1025),
    ]
    assert [count for *_, count in bands] == [1, 1, 1, 2, 3, 6, 9]


def test_log_f0_is_pooled_over_voiced_frames_only():
    """Half a voiced clip, half silence: the mean pitch is the voiced half's, not dragged by the silence."""
    y = _speechlike(2, 2.0)
    y[SR:] = 0.0
    extractor = FeatureExtractor(CONFIG)
    frames, n_frames = extractor.frames(torch.from_numpy(y)[None], torch.tensor([len(y)]))
    pooled = extractor.pool(frames, n_frames)[0]
    log_f0, voiced = frames[0, CONFIG.channel("pitch", "log_f0")], frames[0, CONFIG.channel("pitch", "voiced")] > 0
    assert pooled[CONFIG.channel("pitch", "log_f0")] == pytest.approx(float(log_f0[voiced].mean()), rel=1e-6)
    assert pooled[CONFIG.channel("pitch", "voiced")] == pytest.approx(float(voiced.float().mean()), rel=1e-6)


STFT = FeatureConfig(parts=("pitch",), yin_acf="stft")


def test_yin_on_the_stft_finds_the_pitch_of_the_glide_as_yin_does(clip):
    y, frames = clip
    stft, _ = FeatureExtractor(STFT).frames(torch.from_numpy(y)[None], torch.tensor([len(y)]))
    ours = stft[0, STFT.channel("pitch", "log_f0"), : frames.shape[1]].numpy()[INNER]
    cents = 1200 / np.log(2) * np.abs(ours - _channel(frames, "pitch", "log_f0")[INNER])
    assert np.median(cents) < 30 and cents.max() < 100  # periods in steps of 4 samples, refined


def test_yin_on_the_stft_of_a_steady_vowel_is_its_f0_and_voiced():
    t = np.arange(SR) / SR
    vowel = torch.from_numpy(sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 10)).astype(np.float32))
    frames, _ = FeatureExtractor(STFT).frames(vowel[None], torch.tensor([SR]))
    inner = frames[0, :, 2:-2]
    assert np.exp(inner[STFT.channel("pitch", "log_f0")].numpy()) == pytest.approx(150, rel=0.01)
    assert inner[STFT.channel("pitch", "voiced")].min() == 1


def test_yin_stft_lags_search_the_f0_range_in_a_band_of_five_harmonics():
    assert filters.yin_stft_lags(22050, 2048, 60.0, 500.0) == (4, 11, 92)  # 0-2.76 kHz; 44..368 samples
    assert filters.yin_stft_lags(16000, 1024, 60.0, 500.0) == (2, 16, 134)  # 0-4 kHz
    step, lo, hi = filters.yin_stft_lags(16000, 512, 80.0, 400.0)
    assert 16000 / (2 * step) >= 5 * 400 and lo * step <= 16000 / 400 and hi * step >= 16000 / 80
