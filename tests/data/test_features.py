"""The torch features must equal librosa's with the same parameters, batched or not."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from ser.data.features import FeatureConfig, FeatureExtractor
from ser.dsp import filters
from ser.errors import SERError

SR = 22050


def _speechlike(seed: int, seconds: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    f0 = 120 + 40 * np.sin(2 * np.pi * 1.5 * t) + 10 * rng.standard_normal()
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 15))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    return (0.3 * voiced * envelope + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def _librosa_frames(y: np.ndarray) -> dict[str, np.ndarray]:
    mfcc = librosa.feature.mfcc(y=y, sr=SR, n_mfcc=40)
    return {
        "mfcc": mfcc,
        "chroma": librosa.feature.chroma_stft(y=y, sr=SR, tuning=0.0),
        "mel": librosa.feature.melspectrogram(y=y, sr=SR),
        "delta": librosa.feature.delta(mfcc, width=9, mode="nearest"),
    }


@pytest.fixture(scope="module")
def signals() -> list[np.ndarray]:
    """Different lengths, so batching pads and masks; one with a silent tail."""
    ys = [_speechlike(i, s) for i, s in enumerate([0.4, 1.0, 1.73, 2.5])]
    ys[2][20000:] = 0.0
    return ys


def _close(ours: np.ndarray, ref: np.ndarray, rtol: float) -> None:
    scale = np.abs(ref).max()
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=rtol * scale)


def test_mel_filterbank_matches_librosa():
    ours = filters.mel_filterbank(SR, 2048, 128)
    _close(ours, librosa.filters.mel(sr=SR, n_fft=2048, n_mels=128), 1e-5)


def test_chroma_filterbank_matches_librosa_with_tuning():
    ours = filters.chroma_filterbank(16000, 1024, 12, tuning=0.25)
    _close(ours, librosa.filters.chroma(sr=16000, n_fft=1024, tuning=0.25), 1e-5)


def test_dct_matrix_is_orthonormal_dct2():
    x = np.random.default_rng(0).standard_normal(128).astype(np.float32)
    import scipy.fft

    _close(filters.dct_matrix(40, 128) @ x, scipy.fft.dct(x, type=2, norm="ortho")[:40], 1e-5)


def test_pooled_paper_features_match_librosa(signals):
    ours = FeatureExtractor(FeatureConfig(), batch_size=3)(signals)
    ref = np.stack(
        [np.concatenate([f.mean(axis=1) for k, f in _librosa_frames(y).items() if k != "delta"]) for y in signals]
    )
    assert ours.shape == (4, 180)
    _close(ours[:, :40], ref[:, :40], 1e-4)  # MFCC
    _close(ours[:, 40:52], ref[:, 40:52], 1e-4)  # chroma
    # Mel power spans five orders of magnitude: a tolerance relative to the largest value would
    # accept anything for nearly half of the bands, so every band is held to its own value.
    np.testing.assert_allclose(ours[:, 52:], ref[:, 52:], rtol=1e-5, atol=0)  # mel


def test_std_pooling_and_deltas_match_librosa(signals):
    config = FeatureConfig(stats=("mean", "std"), deltas=True)
    ours = FeatureExtractor(config, batch_size=4)(signals)
    frames = [np.concatenate(list(_librosa_frames(y).values())) for y in signals]
    ref = np.stack([np.concatenate([f.mean(axis=1), f.std(axis=1)]) for f in frames])
    assert ours.shape == (4, config.dim) == (4, 2 * 220)
    for block in (slice(0, 40), slice(180, 220), slice(220, 260), slice(400, 440)):  # mfcc, delta, their stds
        _close(ours[:, block], ref[:, block], 1e-3)


def test_batching_does_not_change_features(signals):
    alone = np.concatenate([FeatureExtractor(batch_size=1)([y]) for y in signals])
    together = FeatureExtractor(batch_size=4)(signals)
    np.testing.assert_allclose(alone, together, rtol=1e-5, atol=1e-4)


def test_log_mel_option_gives_db_values(signals):
    mel_db = FeatureExtractor(FeatureConfig(parts=("mel",), mel_db=True))(signals[:1])
    ref = librosa.power_to_db(librosa.feature.melspectrogram(y=signals[0], sr=SR), top_db=80.0).mean(axis=1)
    _close(mel_db[0], ref, 1e-4)


def test_chroma_from_magnitude_matches_librosa(signals):
    y = signals[1]
    ours = FeatureExtractor(FeatureConfig(parts=("chroma",), chroma_power=1.0))([y])[0]
    ref = librosa.feature.chroma_stft(S=np.abs(librosa.stft(y)), sr=SR, tuning=0.0).mean(axis=1)
    _close(ours, ref, 1e-4)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"parts": ("mfcc", "formants")}, "data.features.parts"),
        ({"stats": ()}, "data.features.stats"),
        ({"deltas": True, "parts": ("mel",)}, "needs 'mfcc'"),
        ({"deltas": True, "delta_width": 4}, "delta_width=4"),
        ({"parts": ("pitch",), "f0_min": 5.0}, "data.features.f0_min=5.0"),
        ({"parts": ("spectral",), "contrast_bands": 8}, "data.features.contrast_bands=8"),
        ({"pooling": "max"}, "data.features.pooling='max'"),
        ({"crop": "end"}, "data.features.crop='end'"),
        ({"frames": 0}, "data.features.frames=0"),
    ],
)
def test_invalid_feature_options_name_the_option(options, message):
    with pytest.raises(SERError, match=message):
        FeatureConfig(**options)


FRAMES = {"parts": ("mfcc",), "pooling": "none", "frames": 40}


def test_fixed_length_frames_of_a_short_utterance_are_librosa_on_audio_padded_with_silence(signals):
    y = signals[0]  # 0.4 s: 18 frames of speech
    ours = FeatureExtractor(FeatureConfig(**FRAMES))([y])[0]
    padded = np.pad(y, (0, 39 * 512 - len(y)))
    assert ours.shape == (40, 40) == FeatureConfig(**FRAMES).shape
    _close(ours, librosa.feature.mfcc(y=padded, sr=SR, n_mfcc=40)[:, :40], 1e-4)


def test_fixed_length_frames_of_a_long_utterance_are_its_centre_or_its_start(signals):
    y = signals[3]  # 2.5 s: 108 frames
    ref = librosa.feature.mfcc(y=y, sr=SR, n_mfcc=40)
    centre = FeatureExtractor(FeatureConfig(**FRAMES))([y])[0]
    start = FeatureExtractor(FeatureConfig(**FRAMES, crop="start"))([y])[0]
    _close(centre, ref[:, 34:74], 1e-4)
    _close(start, ref[:, :40], 1e-4)


def test_fixed_length_frames_do_not_depend_on_the_batch(signals):
    extractor = FeatureExtractor(FeatureConfig(**FRAMES), batch_size=4)
    together = extractor(signals)
    np.testing.assert_allclose(together, np.stack([extractor([y])[0] for y in signals]), rtol=1e-5, atol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_gpu_features_equal_cpu_features(signals):
    cpu = FeatureExtractor()(signals)
    gpu = FeatureExtractor(device=torch.device("cuda"))(signals)
    np.testing.assert_allclose(cpu, gpu, rtol=1e-4, atol=1e-3)


def test_batches_in_worker_threads_give_the_same_features(signals):
    extractor = FeatureExtractor(batch_size=1)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial, parallel = extractor(signals), extractor(signals, workers=2)
    finally:
        torch.set_num_threads(before)
    assert parallel.shape == (4, 180)
    np.testing.assert_array_equal(parallel, serial)


def test_band_limited_filterbank_products_equal_the_whole_filterbank_product_bit_for_bit(signals):
    extractor = FeatureExtractor()
    audio = torch.from_numpy(np.stack([y[:SR] for y in signals[1:]]))  # 3 clips of 1 s: 132 frames
    mel, chroma, spectra = extractor.filterbank_powers(audio)
    framed = torch.nn.functional.pad(audio, (1024, 1024)).unfold(-1, 2048, 512)
    spectrum = torch.fft.rfft(framed * torch.hann_window(2048))
    power = spectrum.real.square().addcmul_(spectrum.imag, spectrum.imag)
    banks = np.concatenate([filters.mel_filterbank(SR, 2048, 128), filters.chroma_filterbank(SR, 2048, 12)])
    whole = (power @ torch.from_numpy(banks.T.copy())).transpose(1, 2)
    assert mel.shape == (3, 128, 44) and chroma.shape == (3, 12, 44) and torch.equal(spectra, power)
    assert torch.equal(mel, whole[:, :128]) and torch.equal(chroma, whole[:, 128:])


def test_absolute_db_floor_depends_on_the_frame_only(signals):
    """db_floor=absolute floors at −top_db dB: halving the audio lowers every unfloored value by 6.02 dB, and a
    frame's value does not depend on the loudest part of the utterance (peak: it does)."""
    config = FeatureConfig(parts=("mel",), mel_db=True, db_floor="absolute", top_db=80.0)
    y = signals[1]
    loud, quiet = (
        FeatureExtractor(config).frames(torch.from_numpy(a)[None], torch.tensor([len(y)]))[0][0].numpy()
        for a in (y, 0.5 * y)
    )
    free = quiet > -80 + 1e-3
    np.testing.assert_allclose((loud - quiet)[free], 10 * np.log10(4), atol=1e-3)
    silence = FeatureExtractor(config).frames(torch.zeros(1, SR), torch.tensor([SR]))[0]
    assert torch.all(silence == -80.0)


def test_options_added_later_are_left_out_of_the_settings_at_their_default():
    assert "db_floor" not in FeatureConfig().to_dict() and "yin_acf" not in FeatureConfig().to_dict()
    streaming = FeatureConfig(db_floor="absolute", yin_acf="stft").to_dict()
    assert streaming["db_floor"] == "absolute" and streaming["yin_acf"] == "stft"
    assert FeatureConfig(**streaming) == FeatureConfig(db_floor="absolute", yin_acf="stft")


@pytest.mark.parametrize(
    "option, message",
    [
        ({"db_floor": "running"}, "db_floor='running' must be one of peak, absolute"),
        ({"yin_acf": "fft"}, "yin_acf='fft' must be one of frame, stft"),
        ({"parts": ("pitch",), "yin_acf": "stft", "f0_min": 20.0}, "half the n_fft"),
    ],
)
def test_bad_streaming_options_are_refused(option, message):
    with pytest.raises(SERError, match=message):
        FeatureConfig(**option)
