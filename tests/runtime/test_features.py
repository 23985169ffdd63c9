"""The numpy runtime features must equal the torch training features, option by option."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ser.data.features import FeatureConfig, FeatureExtractor
from ser.runtime.features import Extractor, extract
from tests.conftest import REPO
from tests.data.test_features import _speechlike


@pytest.fixture(scope="module")
def signals() -> list[np.ndarray]:
    """Different lengths, and one silent tail so that some chroma frames are all zero."""
    ys = [_speechlike(i, s) for i, s in enumerate([0.4, 1.0, 1.73, 2.5])]
    ys[2][20000:] = 0.0
    return ys


@pytest.mark.parametrize(
    "config",
    [
        FeatureConfig(),
        FeatureConfig(stats=("mean", "std"), deltas=True),
        FeatureConfig(mel_db=True, parts=("mel", "mfcc")),
        FeatureConfig(chroma_power=1.0, tuning=0.3),
        FeatureConfig(
            sample_rate=16000,
            n_fft=512,
            hop_length=160,
            n_mels=64,
            n_mfcc=20,
            fmin=50.0,
            fmax=7000.0,
            top_db=60.0,
            stats=("std", "mean"),
            deltas=True,
            delta_width=5,
        ),
        FeatureConfig(stats=("mean", "std"), mel_db=True, parts=("mfcc", "mel", "pitch", "spectral")),
        FeatureConfig(
            sample_rate=16000,
            n_fft=512,
            hop_length=160,
            f0_min=80.0,
            f0_max=400.0,
            contrast_fmin=100.0,
            contrast_bands=5,
            stats=("mean", "std"),
            parts=("pitch", "spectral"),
        ),
        FeatureConfig(
            stats=("mean", "std"),
            mel_db=True,
            parts=("mfcc", "chroma", "mel", "pitch", "spectral"),
            db_floor="absolute",
            yin_acf="stft",
        ),
        FeatureConfig(
            sample_rate=16000,
            n_fft=512,
            hop_length=160,
            f0_min=80.0,
            f0_max=400.0,
            contrast_fmin=100.0,
            contrast_bands=5,
            stats=("mean", "std"),
            parts=("mfcc", "pitch", "spectral"),
            top_db=60.0,
            db_floor="absolute",
            yin_acf="stft",
        ),
    ],
    ids=[
        "default",
        "std-deltas",
        "mel-db",
        "chroma-magnitude",
        "16k-small",
        "pitch-spectral",
        "16k-pitch-spectral",
        "streaming",
        "16k-streaming",
    ],
)
def test_features_equal_the_torch_extractor(signals, config):
    # The signals are made at 22.05 kHz; at 16 kHz they are just other test signals.
    for y in signals:
        ours, ref = extract(y, config), FeatureExtractor(config)([y])[0]
        assert ours.dtype == np.float32 and ours.shape == (config.dim,)
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_frames_follow_parts_order_then_deltas(signals):
    config = FeatureConfig(parts=("chroma", "mfcc"), deltas=True)
    frames = Extractor(config).frames(signals[0])
    alone = {p: Extractor(FeatureConfig(parts=(p,))).frames(signals[0]) for p in ("chroma", "mfcc")}
    assert frames.shape == (1 + len(signals[0]) // config.hop_length, config.frame_dim)
    np.testing.assert_array_equal(frames[:, :12], alone["chroma"])
    np.testing.assert_array_equal(frames[:, 12:52], alone["mfcc"])


def test_multichannel_input_is_refused():
    with pytest.raises(ValueError, match="mono"):
        extract(np.zeros((2, 4000), np.float32), FeatureConfig())


def test_runtime_imports_without_torch():
    code = "import sys; sys.modules['torch'] = None; import ser.runtime.features, ser.runtime.packing, ser.runtime.serq, ser.runtime.graph, ser.runtime.model, ser.runtime.c_export, ser.runtime.enroll, ser.runtime.predict"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
